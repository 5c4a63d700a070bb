"""The market-regimes aggregate: one causal label and its probabilities per symbol, day and classifier."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from emp_pipeline.registry.errors import InvalidRegistryInputError
from emp_pipeline.registry.models import MarketRegime
from emp_pipeline.registry.statements import copy_upsert_postgresql, upsert_rows


def upsert_market_regimes(session: Session, frame: pd.DataFrame, classifier: str) -> int:
    """Store a regime frame (domain.regimes contract) for one classifier, replacing rows with the same keys.

    Probabilities are taken from every `prob_<label>` column. Rows are written in bulk with
    `ON CONFLICT DO UPDATE`, so re-materialising a partition rewrites it and never duplicates it.
    """
    missing = {"date", "symbol", "regime"} - set(frame.columns)
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    if missing or not prob_columns:
        raise InvalidRegistryInputError(
            f"regime frame lacks columns {sorted(missing) or 'prob_<label>'}: pass the frame produced by "
            "emp_pipeline.domain.regimes (date, symbol, regime, prob_<label>..., warmup)"
        )
    if frame.empty:
        return 0
    if frame.duplicated(["symbol", "date"]).any():
        duplicates = frame.loc[frame.duplicated(["symbol", "date"], keep=False), ["symbol", "date"]].head(3)
        raise InvalidRegistryInputError(
            f"regime frame has several rows per (symbol, date), e.g. {duplicates.to_dict('records')}: "
            "a classifier emits one label per symbol and day; de-duplicate the frame first"
        )
    dates = pd.DatetimeIndex(frame["date"])
    if dates.tz is not None:
        dates = dates.tz_convert("UTC")
    day_values = dates.date
    labels = [c.removeprefix("prob_") for c in prob_columns]
    probabilities = frame[prob_columns].to_numpy(dtype=np.float64)
    probabilities = np.where(np.isfinite(probabilities), probabilities, np.nan)
    warmup = frame["warmup"].to_numpy(dtype=bool) if "warmup" in frame.columns else np.zeros(len(frame), bool)
    probability_maps = [
        {label: (None if math.isnan(p) else p) for label, p in zip(labels, row, strict=True)}
        for row in probabilities.tolist()
    ]
    keys = ("symbol", "date", "classifier")
    bind = session.get_bind()
    if bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg2":
        staged = pd.DataFrame(
            {
                "symbol": frame["symbol"].astype(str).to_numpy(),
                "date": day_values,
                "classifier": classifier,
                "regime": frame["regime"].astype(str).to_numpy(),
                "probabilities": [json.dumps(m) for m in probability_maps],
                "warmup": warmup,
            }
        )
        return copy_upsert_postgresql(session, MarketRegime, staged, keys)
    rows = [
        {
            "symbol": symbol,
            "date": day,
            "classifier": classifier,
            "regime": str(regime),
            "probabilities": probability_map,
            "warmup": bool(is_warmup),
        }
        for symbol, day, regime, probability_map, is_warmup in zip(
            frame["symbol"].astype(str).tolist(),
            day_values,
            frame["regime"].tolist(),
            probability_maps,
            warmup,
            strict=True,
        )
    ]
    return upsert_rows(session, MarketRegime, rows, keys=keys)
