"""`emp parity` and `emp lookahead GENOME_ID`: the promotion gates, run by hand on the stored data.

Both read the lake under EMP_DATA_DIR and the registry at EMP_DATABASE_URL, print a report, and exit 0 only
when the gate passes (1 when it finds a divergence or a look-ahead, 2 when the inputs are missing).
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import TextIO

from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.environment import configured_study_windows
from emp_pipeline.parity.gates import (
    FeatureFactory,
    GateInputError,
    GateSettings,
    load_gate_data,
    lookahead_gate,
    parity_gate,
    sensory_features,
    stored_strategy,
)
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import RegistryError
from emp_pipeline.registry.research import active_strategies
from emp_pipeline.settings import Settings


def _gate_settings(args: argparse.Namespace, settings: Settings) -> GateSettings:
    """The gates as the pipeline runs them: the regimes recomputed with the universe's windows."""
    return GateSettings(
        window_bars=args.bars,
        history_bars=args.history,
        lookahead_cuts=getattr(args, "cuts", 8),
        parity_audits=getattr(args, "audit", 8),
        seed=args.seed,
        regime_kind=settings.research.regime_classifier,
        periods_per_year=configured_study_windows(settings.data, settings.research).periods_per_year,
        capital=settings.research.capital,
    )


def _cmd_lookahead(
    args: argparse.Namespace, settings: Settings, out: TextIO, features: FeatureFactory = sensory_features
) -> int:
    engine = make_engine(settings.database_url)
    try:
        genome = stored_strategy(engine, args.genome_id).genome
        gate = _gate_settings(args, settings)
        data = load_gate_data(settings.data_dir, engine, gate)
    except (GateInputError, RegistryError) as error:
        out.write(f"cannot analyse {args.genome_id}: {error}\n")
        return 2
    finally:
        engine.dispose()
    report = lookahead_gate(genome, data, gate, features)
    out.write(f"{args.genome_id}: {report.describe()}\n")
    return 0 if report.passed else 1


def _cmd_parity(
    args: argparse.Namespace, settings: Settings, out: TextIO, features: FeatureFactory = sensory_features
) -> int:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            ids = args.strategy or [record.id for record in active_strategies(session)]
        if not ids:
            out.write("no active strategy to replay: name one with --strategy\n")
            return 2
        gate = _gate_settings(args, settings)
        data = load_gate_data(settings.data_dir, engine, gate)
        strategies = {strategy_id: stored_strategy(engine, strategy_id) for strategy_id in ids}
    except (GateInputError, RegistryError) as error:
        out.write(f"cannot replay: {error}\n")
        return 2
    finally:
        engine.dispose()
    limits = RiskLimits(
        max_position_fraction=settings.live.max_position_fraction,
        max_gross_exposure=settings.live.max_gross_exposure,
        daily_loss_limit=settings.live.daily_loss_limit,
    )
    status = 0
    for strategy_id, strategy in strategies.items():
        report = parity_gate(strategy, data, gate, limits, features)
        out.write(f"{strategy_id}: {report.describe()}\n")
        if not report.passed:
            status = 1
    return status


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bars",
        type=int,
        default=None,
        help="bars in the window, the newest ones (default: a year of the universe's timeframe)",
    )
    parser.add_argument("--history", type=int, default=300, help="bars before the window (warm-up)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random cut/audit points")


def add_parity_commands(
    subparsers: argparse._SubParsersAction, features: FeatureFactory = sensory_features
) -> None:
    """Register `emp parity` and `emp lookahead` on the `emp` command's subparsers.

    `features` is the feature computation the gates judge: the pipeline's own; a test passes another."""
    parity = subparsers.add_parser(
        "parity", help="replay the live path bar by bar over stored bars and compare it with the backtest"
    )
    parity.add_argument("--strategy", action="append", help="strategy id (repeatable; default: all active)")
    parity.add_argument("--audit", type=int, default=8, help="bars recomputed point in time")
    _common(parity)
    parity.set_defaults(handler=partial(_cmd_parity, features=features))

    lookahead = subparsers.add_parser(
        "lookahead", help="features, rules and signals on full vs truncated data: name what looks ahead"
    )
    lookahead.add_argument("genome_id", help="registry id of the strategy")
    lookahead.add_argument("--cuts", type=int, default=8, help="random cut points")
    _common(lookahead)
    lookahead.set_defaults(handler=partial(_cmd_lookahead, features=features))
