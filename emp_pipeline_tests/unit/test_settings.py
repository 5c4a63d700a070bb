"""Settings: sections built once from the environment, every bad value refused at start-up by name, and URLs
printed with their passwords masked."""

import io
from datetime import date
from pathlib import Path

import pytest

from emp_pipeline.cli import main
from emp_pipeline.demo import write_locations
from emp_pipeline.domain.timeframes import Timeframe
from emp_pipeline.settings import SAMPLE_UNIVERSE_FILE, Settings, SettingsError, masked_url


def settings(tmp_path: Path, **variables: str) -> Settings:
    return Settings.from_env({"EMP_HOME": str(tmp_path), **variables})


def test_defaults_fill_every_section(tmp_path: Path) -> None:
    built = settings(tmp_path)
    assert built.database_url == f"sqlite:///{tmp_path / 'registry.sqlite'}"
    assert (built.data.source, built.data.universe_file, built.data.timeframe) == (
        "sample",
        SAMPLE_UNIVERSE_FILE,
        Timeframe.D1,
    )
    assert (built.research.population, built.research.generations, built.research.seed) == (200, 50, 7)
    assert (built.research.costs.fee_bps, built.research.capital) == (1.0, 100_000.0)
    assert (built.gates.min_sharpe, built.gates.max_champions) == (0.5, 3)
    assert (built.live.broker, built.live.max_position_fraction) == ("paper", 0.25)
    assert built.token.client_id is None


def test_variables_reach_their_sections(tmp_path: Path) -> None:
    built = settings(
        tmp_path,
        EMP_TIMEFRAME="h1",
        EMP_DATA_START_DATE="2015-03-02",
        EMP_FEE_BPS="2.5",
        EMP_SLIPPAGE_BPS="0",
        EMP_CAPITAL="25000",
        EMP_MAX_POSITION_FRACTION="1",
        EMP_GATE_MIN_TRADES="0",
        EMP_EVOLUTION_POPULATION="4",
        CTRADER_REFRESH_MARGIN_SECONDS="600",
    )
    assert built.data.timeframe is Timeframe.H1 and built.data.start_date == date(2015, 3, 2)
    assert (built.research.costs.fee_bps, built.research.costs.slippage_bps) == (2.5, 0.0)
    assert built.research.capital == 25_000.0
    assert built.live.max_position_fraction == 1.0 and built.gates.min_trades == 0
    assert built.research.population == 4 and built.token.refresh_margin_s == 600.0


def test_the_ctrader_symbol_map_reaches_the_data_section(tmp_path: Path) -> None:
    built = settings(tmp_path, CTRADER_SYMBOL_MAP=" GOLD = XAUUSD ,SPX500=US500")
    assert built.data.ctrader_symbol_map == (("GOLD", "XAUUSD"), ("SPX500", "US500"))
    assert settings(tmp_path).data.ctrader_symbol_map == ()


def test_an_empty_variable_means_unset(tmp_path: Path) -> None:
    assert settings(tmp_path, EMP_MAX_GROSS_EXPOSURE="", EMP_BROKER="").live.max_gross_exposure == 1.0


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"EMP_MAX_POSITION_FRACTION": "40"}, "EMP_MAX_POSITION_FRACTION=40 is outside (0, 1]"),
        ({"EMP_MAX_POSITION_FRACTION": "0"}, "EMP_MAX_POSITION_FRACTION=0 is outside (0, 1]"),
        ({"EMP_MAX_GROSS_EXPOSURE": "40"}, "EMP_MAX_GROSS_EXPOSURE=40 is outside (0, 10]"),
        ({"EMP_DAILY_LOSS_LIMIT": "nan"}, "EMP_DAILY_LOSS_LIMIT=nan is outside (0, 1]"),
        ({"EMP_DAILY_LOSS_LIMIT": "5%"}, "EMP_DAILY_LOSS_LIMIT=5% is not a number: use a decimal in (0, 1]"),
        ({"EMP_GATE_MAX_DRAWDOWN": "15"}, "EMP_GATE_MAX_DRAWDOWN=15 is outside [0, 1]"),
        ({"EMP_GATE_MIN_DEFLATED_SHARPE": "-0.1"}, "EMP_GATE_MIN_DEFLATED_SHARPE=-0.1 is outside [0, 1]"),
        ({"EMP_GATE_MIN_SHARPE": "inf"}, "EMP_GATE_MIN_SHARPE=inf is outside [-10, 10]"),
        (
            {"EMP_GATE_MIN_TRADES": "2.5"},
            "EMP_GATE_MIN_TRADES=2.5 is not a whole number: use an integer >= 0",
        ),
        ({"EMP_MAX_CHAMPIONS": "0"}, "EMP_MAX_CHAMPIONS=0 is below 1: use an integer >= 1"),
        ({"EMP_EVOLUTION_POPULATION": "3"}, "EMP_EVOLUTION_POPULATION=3 is below 4"),
        ({"EMP_EVOLUTION_GENERATIONS": "ten"}, "EMP_EVOLUTION_GENERATIONS=ten is not a whole number"),
        ({"EMP_FEE_BPS": "-1"}, "EMP_FEE_BPS=-1 is outside [0, 1000]"),
        ({"EMP_CAPITAL": "0"}, "EMP_CAPITAL=0 is outside (0, inf)"),
        ({"CTRADER_ACCOUNT_ID": "abc"}, "CTRADER_ACCOUNT_ID=abc is not a whole number"),
        (
            {"CTRADER_REFRESH_MARGIN_SECONDS": "-5"},
            "CTRADER_REFRESH_MARGIN_SECONDS=-5 is outside (0, 2.592e+06]",
        ),
        ({"EMP_BROKER": "ib"}, "EMP_BROKER='ib' is not one of paper, ctrader"),
        ({"EMP_DATA_SOURCE": "ftp"}, "EMP_DATA_SOURCE='ftp' is not one of sample, csv, yahoo"),
        ({"EMP_REGIME_CLASSIFIER": "magic"}, "EMP_REGIME_CLASSIFIER='magic' is not one of rules, hmm"),
        (
            {"EMP_TIMEFRAME": "H2"},
            "EMP_TIMEFRAME=H2 is not a timeframe: use one of M1, M5, M15, M30, H1, H4, D1, W1",
        ),
        (
            {"EMP_DATA_START_DATE": "2010-13-45"},
            "EMP_DATA_START_DATE=2010-13-45 is not a date: use YYYY-MM-DD",
        ),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL='http://cache:6379' is not a redis:// or rediss://"),
        (
            {"CTRADER_API_URL": "demo.ctraderapi.com"},
            "CTRADER_API_URL=demo.ctraderapi.com must be a wss:// URL",
        ),
        ({"CTRADER_TOKEN_URL": "https://host:port"}, "CTRADER_TOKEN_URL='https://host:port' is not a URL"),
        ({"EMP_ALERT_WEBHOOK_URL": "hooks.example/x"}, "EMP_ALERT_WEBHOOK_URL='hooks.example/x' is not a"),
        ({"EMP_DATA_SOURCE": "csv"}, "EMP_DATA_SOURCE=csv needs EMP_CSV_DIR"),
        (
            {"EMP_DATA_SOURCE": "csv", "EMP_CSV_DIR": "/no/such/folder"},
            "EMP_CSV_DIR='/no/such/folder' is not",
        ),
        (
            {"EMP_UNIVERSE_FILE": "/no/such/universe.yaml"},
            "EMP_UNIVERSE_FILE='/no/such/universe.yaml' does not exist",
        ),
        (
            {"EMP_DATA_SOURCE": "ctrader", "CTRADER_CLIENT_ID": "app"},
            "EMP_DATA_SOURCE=ctrader needs CTRADER_CLIENT_SECRET, CTRADER_ACCOUNT_ID: the Open API",
        ),
        (
            {
                "EMP_DATA_SOURCE": "ctrader",
                "CTRADER_CLIENT_ID": "app",
                "CTRADER_CLIENT_SECRET": "secret",
                "CTRADER_ACCOUNT_ID": "0",
            },
            "CTRADER_ACCOUNT_ID=0 is below 1",
        ),
        (
            {
                "EMP_DATA_SOURCE": "ctrader",
                "CTRADER_CLIENT_ID": "app",
                "CTRADER_CLIENT_SECRET": "secret",
                "CTRADER_ACCOUNT_ID": "4242",
            },
            "EMP_DATA_SOURCE=ctrader needs EMP_UNIVERSE_FILE",
        ),
        ({"CTRADER_SYMBOL_MAP": "GOLD"}, "CTRADER_SYMBOL_MAP: 'GOLD' is not OURS=BROKERS (e.g. GOLD=XAUUSD)"),
        ({"CTRADER_SYMBOL_MAP": "=XAUUSD"}, "CTRADER_SYMBOL_MAP: '=XAUUSD' is not OURS=BROKERS"),
        (
            {"CTRADER_SYMBOL_MAP": "GOLD=XAUUSD, GOLD=XAUEUR"},
            "CTRADER_SYMBOL_MAP: 'GOLD' is mapped twice ('XAUUSD' and 'XAUEUR')",
        ),
    ],
)
def test_a_bad_value_is_refused_by_name_value_and_accepted_range(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(tmp_path, **variables)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        (
            "DATABASE_URL",
            "postgresql://emp:hunter2@db:notaport/emp",
            "DATABASE_URL='postgresql://emp:***@db:notaport/emp' is not a database URL",
        ),
        ("EMP_DATABASE_URL", "registry.sqlite", "EMP_DATABASE_URL='registry.sqlite' is not a database URL"),
        (
            "EMP_DATABASE_URL",
            "mysql://emp:hunter2@db/emp",
            "EMP_DATABASE_URL='mysql://emp:***@db/emp' uses 'mysql': the registry supports "
            "sqlite, postgresql",
        ),
    ],
)
def test_a_bad_database_url_is_named_by_its_variable_without_its_password(
    tmp_path: Path, variable: str, url: str, message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(tmp_path, **{variable: url})
    assert str(raised.value).startswith(message)
    assert "hunter2" not in str(raised.value)


def test_the_emp_command_prints_the_one_line_error_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    monkeypatch.setenv("EMP_MAX_POSITION_FRACTION", "40")
    out = io.StringIO()

    assert main(["kill-switch", "status"], out=out) == 2

    assert capsys.readouterr().err == "emp: EMP_MAX_POSITION_FRACTION=40 is outside (0, 1]\n"
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://emp:s3cret@db.internal:5432/emp", "postgresql://emp:***@db.internal:5432/emp"),
        ("postgresql+psycopg2://emp:p%40ss@host/db", "postgresql+psycopg2://emp:***@host/db"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("sqlite:////var/emp/registry.sqlite", "sqlite:////var/emp/registry.sqlite"),
    ],
)
def test_masked_url_hides_only_the_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_repr_masks_urls_and_leaves_secrets_out(tmp_path: Path) -> None:
    built = settings(
        tmp_path,
        DATABASE_URL="postgresql://emp:db-secret@host/db",
        REDIS_URL="redis://:redis-secret@host:6379/0",
        CTRADER_CLIENT_ID="app-id",
        CTRADER_CLIENT_SECRET="client-secret",
        CTRADER_REFRESH_TOKEN="refresh-secret",
        EMP_TOKEN_KEY="key-secret",
        EMP_ALERT_WEBHOOK_URL="https://hooks.example/services/webhook-secret",
        FRED_API_KEY="fred-secret",
    )
    shown = repr(built)
    assert "postgresql://emp:***@host/db" in shown and "redis://:***@host:6379/0" in shown
    assert "app-id" in shown  # not a secret: it names the application
    for secret in (
        "db-secret",
        "redis-secret",
        "client-secret",
        "refresh-secret",
        "key-secret",
        "webhook-secret",
        "fred-secret",
    ):
        assert secret not in shown, secret
    assert built.database_url == "postgresql://emp:db-secret@host/db"  # the value itself is intact


def test_the_demo_prints_the_registry_url_masked(tmp_path: Path) -> None:
    out = io.StringIO()
    write_locations(out, settings(tmp_path, EMP_DATABASE_URL="postgresql://emp:db-secret@db/emp"))
    assert "registry:      postgresql://emp:***@db/emp\n" in out.getvalue()
    assert "db-secret" not in out.getvalue()
