"""FredSource against a local HTTP server that answers like FRED's fred/series/observations endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest

from emp_pipeline.data.fred import (
    FredApiKeyError,
    FredNotConfiguredError,
    FredRequestError,
    FredSeries,
    FredSource,
    FredUnavailableError,
)
from emp_pipeline.domain.instruments import AssetClass, InstrumentMeta
from emp_pipeline.domain.sensory import SensoryCortex, macro_coverage
from emp_pipeline.domain.synthetic import generate_market

GOOD_KEY = "abcdefghijklmnopqrstuvwxyz123456"
BAD_KEY_MESSAGE = (
    "Bad Request.  The value for variable api_key is not registered.  Read "
    "https://fred.stlouisfed.org/docs/api/api_key.html for more information."
)

Responder = Callable[[dict[str, str]], tuple[int, dict]]


def _observations_body(rows: list[dict], params: dict[str, str], count: int | None = None) -> dict:
    """FRED's JSON envelope around a page of observations."""
    return {
        "realtime_start": params.get("realtime_start", "2024-01-10"),
        "realtime_end": params.get("realtime_end", "2024-01-10"),
        "observation_start": params.get("observation_start", "1776-07-04"),
        "observation_end": params.get("observation_end", "9999-12-31"),
        "units": "lin",
        "output_type": int(params.get("output_type", 1)),
        "file_type": "json",
        "order_by": "observation_date",
        "sort_order": "asc",
        "count": len(rows) if count is None else count,
        "offset": int(params.get("offset", 0)),
        "limit": int(params.get("limit", 100000)),
        "observations": rows,
    }


class FakeFred:
    """Serves FRED-shaped answers from a responder function and records every query it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.responder: Responder = lambda params: (404, {"error_code": 404, "error_message": "Not Found"})
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                params = {key: values[0] for key, values in parse_qs(parsed.query).items()}
                fake.requests.append(params)
                fake.paths.append(parsed.path)
                status, body = fake.responder(params)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/fred"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def fred() -> Iterator[FakeFred]:
    server = FakeFred()
    yield server
    server.close()


def _source(fred: FakeFred, series: tuple[FredSeries, ...], key: str | None = GOOD_KEY) -> FredSource:
    return FredSource(key, series=series, base_url=fred.base_url, timeout_seconds=5, backoff_seconds=0.01)


def test_daily_series_with_missing_values_and_release_lag(fred: FakeFred) -> None:
    rows = [
        {"realtime_start": "2024-01-10", "realtime_end": "2024-01-10", "date": "2024-01-02", "value": "3.95"},
        {"realtime_start": "2024-01-10", "realtime_end": "2024-01-10", "date": "2024-01-03", "value": "."},
        {"realtime_start": "2024-01-10", "realtime_end": "2024-01-10", "date": "2024-01-04", "value": "3.99"},
    ]
    fred.responder = lambda params: (200, _observations_body(rows, params))
    source = _source(fred, (FredSeries("DGS10", release_lag_days=1),))
    frame = source.fetch("2024-01-01", "2024-01-05").frame

    assert fred.paths == ["/fred/series/observations"]
    sent = fred.requests[0]
    assert sent["series_id"] == "DGS10" and sent["api_key"] == GOOD_KEY and sent["file_type"] == "json"
    assert sent["observation_start"] == "2024-01-01" and sent["observation_end"] == "2024-01-05"
    assert "output_type" not in sent
    assert list(frame.columns) == ["series", "date", "available_from", "value"]
    assert frame["value"].tolist() == [3.95, 3.99]  # "." is FRED's missing value
    assert frame["date"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-02", "2024-01-04"]
    assert frame["available_from"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-03", "2024-01-05"]
    assert str(frame["available_from"].dtype) == "datetime64[ns, UTC]"


def test_vintage_series_are_dated_by_first_release(fred: FakeFred) -> None:
    rows = [
        {"realtime_start": "2023-11-03", "realtime_end": "2023-12-07", "date": "2023-10-01", "value": "3.9"},
        {"realtime_start": "2023-12-08", "realtime_end": "2024-01-04", "date": "2023-11-01", "value": "3.7"},
    ]
    fred.responder = lambda params: (200, _observations_body(rows, params))
    series = FredSeries("UNRATE", use_vintages=True)
    frame = _source(fred, (series,)).fetch("2023-10-01", "2023-11-30").frame
    sent = fred.requests[0]
    assert sent["output_type"] == "4"
    assert sent["realtime_start"] == "1776-07-04" and sent["realtime_end"] == "9999-12-31"
    assert frame["available_from"].dt.strftime("%Y-%m-%d").tolist() == ["2023-11-03", "2023-12-08"]


def test_pages_are_followed_until_count(fred: FakeFred) -> None:
    dates = pd.bdate_range("2020-01-01", periods=5)
    rows = [{"date": day.strftime("%Y-%m-%d"), "value": str(index)} for index, day in enumerate(dates)]

    def paged(params: dict[str, str]) -> tuple[int, dict]:
        offset = int(params["offset"])
        return 200, _observations_body(rows[offset : offset + 2], params, count=len(rows))

    fred.responder = paged
    frame = _source(fred, (FredSeries("DFF"),)).fetch("2020-01-01", "2020-01-31").frame
    assert [request["offset"] for request in fred.requests] == ["0", "2", "4"]
    assert frame["value"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_transient_errors_are_retried(fred: FakeFred) -> None:
    answers = iter(
        [
            (503, {"error_code": 503, "error_message": "Service Unavailable"}),
            (429, {"error_code": 429, "error_message": "Too Many Requests.  Exceeded Rate Limit"}),
            (200, _observations_body([{"date": "2024-01-02", "value": "5.33"}], {})),
        ]
    )
    fred.responder = lambda params: next(answers)
    fetched = _source(fred, (FredSeries("DFF"),)).fetch("2024-01-01", "2024-01-05")
    frame = fetched.frame
    assert fetched.status == "complete"
    assert len(fred.requests) == 3
    assert frame["value"].tolist() == [5.33]


def test_persistent_errors_give_up_with_a_clear_error(fred: FakeFred) -> None:
    fred.responder = lambda params: (500, {"error_code": 500, "error_message": "Internal Server Error"})
    with pytest.raises(FredUnavailableError, match=r"after 4 attempts \(HTTP 500\)"):
        _source(fred, (FredSeries("DFF"),)).observations(FredSeries("DFF"), "2024-01-01", "2024-01-05")
    assert len(fred.requests) == 4


def test_an_outage_degrades_why_to_neutral_and_says_so_instead_of_blocking(fred: FakeFred) -> None:
    """FRED down with FRED_API_KEY set: the update gets the series it can and a status naming the rest."""
    good_rows = [{"date": "2024-01-02", "value": "5.33"}]
    fred.responder = lambda params: (
        (200, _observations_body(good_rows, params))
        if params["series_id"] == "DFF"
        else (503, {"error_code": 503, "error_message": "Service Unavailable"})
    )
    source = _source(fred, (FredSeries("DFF"), FredSeries("DGS10"), FredSeries("VIXCLS")))
    fetched = source.fetch("2024-01-01", "2024-01-05")
    assert fetched.frame["series"].tolist() == ["DFF"] and fetched.frame["value"].tolist() == [5.33]
    assert list(fetched.unavailable) == ["DGS10", "VIXCLS"]
    assert fetched.status.startswith(
        "degraded: FRED unavailable for DGS10, VIXCLS (FRED did not answer for series 'DGS10' after 4 "
        "attempts (HTTP 503)"
    )
    assert "for observations 2024-01-01 .. 2024-01-05" in fetched.status
    assert [request["series_id"] for request in fred.requests] == ["DFF"] + ["DGS10"] * 4  # VIXCLS not tried
    assert GOOD_KEY not in fetched.status

    market = generate_market(n_instruments=1, n_bars=60, seed=3, start="2023-11-01")
    instrument = InstrumentMeta("SYN00", "s", AssetClass.INDEX, "USD", 0.01, 2, 1.0, 1.0, 1.0, "24x5")
    features = SensoryCortex([instrument]).compute(market.bars, fetched.frame)
    assert macro_coverage(features)["vix"] == 0.0 and macro_coverage(features)["yield_10y"] == 0.0
    assert (features["why_vix_level"] == 0.0).all() and features["why_vix_rank_252"].notna().all()


def test_bad_key_is_reported_without_the_key(fred: FakeFred) -> None:
    fred.responder = lambda params: (400, {"error_code": 400, "error_message": BAD_KEY_MESSAGE})
    with pytest.raises(FredApiKeyError, match="FRED_API_KEY") as caught:
        _source(fred, (FredSeries("DFF"),), key="wrongkey0000000000000000000000zz").fetch(
            "2024-01-01", "2024-01-05"
        )
    assert "wrongkey" not in str(caught.value)
    assert len(fred.requests) == 1  # a bad key is not retried


def test_unknown_series_is_a_request_error(fred: FakeFred) -> None:
    message = "Bad Request.  The series does not exist."
    fred.responder = lambda params: (400, {"error_code": 400, "error_message": message})
    with pytest.raises(FredRequestError, match=r"NOPE.*does not exist"):
        _source(fred, (FredSeries("NOPE"),)).fetch("2024-01-01", "2024-01-05")


def test_unreachable_server_does_not_leak_the_key() -> None:
    source = FredSource(
        GOOD_KEY, base_url="http://127.0.0.1:9/fred", timeout_seconds=1, max_retries=1, backoff_seconds=0
    )
    with pytest.raises(FredUnavailableError) as caught:
        source.observations(FredSeries("DFF"), "2024-01-01", "2024-01-05")
    assert GOOD_KEY not in str(caught.value)
    assert GOOD_KEY not in source.fetch("2024-01-01", "2024-01-05").status


def test_without_a_key_nothing_is_fetched(fred: FakeFred) -> None:
    source = _source(fred, (FredSeries("DFF"),), key=None)
    assert not source.is_configured
    with pytest.raises(FredNotConfiguredError, match="FRED_API_KEY"):
        source.fetch("2024-01-01", "2024-01-05")
    assert fred.requests == []


def test_fred_macro_feeds_the_why_dimension(fred: FakeFred) -> None:
    """End to end: FRED-shaped answers -> FredSource -> SensoryCortex WHY columns, released values only."""
    market = generate_market(n_instruments=1, n_bars=300, seed=9, start="2021-01-04")
    days = pd.bdate_range("2019-06-01", "2022-03-01")
    rng = np.random.default_rng(1)
    levels = {
        "DGS10": 1.5 + np.cumsum(rng.normal(0, 0.03, len(days))),
        "VIXCLS": 20 + rng.normal(0, 2, len(days)),
    }

    def by_series(params: dict[str, str]) -> tuple[int, dict]:
        values = levels[params["series_id"]]
        rows = [
            {"date": day.strftime("%Y-%m-%d"), "value": f"{value:.2f}"}
            for day, value in zip(days, values, strict=True)
        ]
        return 200, _observations_body(rows, params)

    fred.responder = by_series
    source = _source(fred, (FredSeries("DGS10"), FredSeries("VIXCLS")))
    macro = source.fetch("2019-06-01", "2022-03-01").frame
    instrument = InstrumentMeta("SYN00", "s", AssetClass.INDEX, "USD", 0.01, 2, 1.0, 1.0, 1.0, "24x5")
    features = SensoryCortex([instrument]).compute(market.bars, macro)
    coverage = macro_coverage(features)
    assert coverage["yield_10y"] == 1.0 and coverage["vix"] == 1.0 and coverage["policy_rate"] == 0.0
    # The value on each bar is the previous business day's (released one day later), never the same day's.
    by_date = pd.Series(np.round(levels["DGS10"], 2), index=days.tz_localize("UTC"))
    bar_dates = pd.DatetimeIndex(features["date"])
    expected = by_date.reindex(bar_dates - pd.offsets.BDay(1)).to_numpy()
    np.testing.assert_allclose(features["why_yield_10y_level"].to_numpy(), expected)
