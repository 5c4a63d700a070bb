"""`emp strategies list` and `emp strategies show ID`: what the GA found, in words, from the registry.

Both read the registry at EMP_DATABASE_URL only. A strategy's rules print in the notation of
`domain.rule_text` (the text the UI tables show); a Sharpe ratio measured on fewer trades than
``--min-trades`` prints as "not meaningful" (`domain.headlines`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TextIO

from emp_pipeline.domain.genome import GenomeError, genome_conditions, genome_from_dict
from emp_pipeline.domain.headlines import MIN_MEANINGFUL_TRADES, not_meaningful_reason
from emp_pipeline.domain.rule_text import risk_text, strategy_lines, strategy_text
from emp_pipeline.registry.engine import make_engine, session_scope
from emp_pipeline.registry.errors import RegistryError
from emp_pipeline.registry.models import StrategyStatus
from emp_pipeline.registry.records import PerformanceRecord
from emp_pipeline.registry.research import (
    ancestry,
    get_strategy,
    list_strategies,
    parent_ids,
    performance_records,
    status_history,
    strategy_periods,
)
from emp_pipeline.reporting.formatting import count_text, percent_text, ratio_text
from emp_pipeline.settings import Settings

WINDOW_KINDS = ("in_sample", "out_of_sample")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def sharpe_text(metrics: Mapping[str, object], min_trades: int) -> str:
    """The Sharpe ratio, or why it is not shown (too few trades behind it)."""
    trades = metrics.get("trade_count")
    reason = not_meaningful_reason(trades if isinstance(trades, int | float) else None, min_trades)
    return reason if reason is not None else ratio_text(metrics.get("sharpe"))


def _dsr_text(metrics: Mapping[str, object]) -> str:
    return f"{ratio_text(metrics.get('deflated_sharpe'))} over {count_text(metrics.get('dsr_trials'))} trials"


def _rules_text(genome: Mapping[str, object]) -> str:
    try:
        return strategy_text(genome_from_dict(genome))
    except GenomeError as error:
        return f"unreadable genome ({error})"


def _newest_by_kind(records: list[PerformanceRecord]) -> dict[tuple[str, str], PerformanceRecord]:
    """(strategy id, kind) -> the record of its newest period."""
    newest: dict[tuple[str, str], PerformanceRecord] = {}
    for record in records:
        key = (record.strategy_id, record.kind)
        if key not in newest or record.period > newest[key].period:
            newest[key] = record
    return newest


def _table(rows: list[dict[str, object]]) -> str:
    """Rows as left-aligned text columns, two spaces apart, the header first."""
    columns = list(rows[0])
    cells = [columns, *([str(row[column]) for column in columns] for row in rows)]
    widths = [max(len(line[k]) for line in cells) for k in range(len(columns))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in cells
    )


def _cmd_list(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            strategies = list_strategies(session, period=args.period, status=args.status, limit=args.limit)
            performance = _newest_by_kind(
                performance_records(session, strategy_ids=[s.id for s in strategies], kind="out_of_sample")
            )
            periods = strategy_periods(session) if not strategies else []
    except RegistryError as error:
        out.write(f"cannot list strategies: {error}\n")
        return 2
    finally:
        engine.dispose()
    if not strategies:
        known = ", ".join(periods) if periods else "none (run evolution_job first)"
        out.write(f"no strategies match (periods in the registry: {known})\n")
        return 0
    rows = []
    for strategy in strategies:
        oos = performance.get((strategy.id, "out_of_sample"))
        metrics = oos.metrics if oos is not None else {}
        rows.append(
            {
                "id": strategy.id,
                "period": strategy.period,
                "status": strategy.status,
                "gen": strategy.generation,
                "fitness": ratio_text(strategy.fitness),
                "oos_sharpe": sharpe_text(metrics, args.min_trades) if oos is not None else "not measured",
                "oos_trades": count_text(metrics.get("trade_count")),
                "dsr": _dsr_text(metrics) if oos is not None else "n/a",
                "rules": _rules_text(strategy.genome),
            }
        )
    out.write(_table(rows))
    out.write(f"{len(rows)} strategies shown (newest period first, best training fitness first)\n")
    return 0


def _window_lines(record: PerformanceRecord, min_trades: int) -> list[str]:
    metrics = record.metrics
    lines = [
        f"{record.kind.replace('_', '-')} {record.period} ({record.start} .. {record.end}): "
        f"Sharpe {sharpe_text(metrics, min_trades)}, trades {count_text(metrics.get('trade_count'))}, "
        f"return {percent_text(metrics.get('total_return'))}, "
        f"max drawdown {percent_text(metrics.get('max_drawdown'))}",
        f"    deflated Sharpe {_dsr_text(metrics)}",
    ]
    if "null_percentile" in metrics:
        lines.append(
            f"    null percentile {ratio_text(metrics.get('null_percentile'), 1)} "
            f"(p {ratio_text(metrics.get('null_p_value'), 3)}), buy-and-hold Sharpe "
            f"{ratio_text(metrics.get('buy_and_hold_sharpe'))}, return "
            f"{percent_text(metrics.get('buy_and_hold_return'))}"
        )
    return lines


def _cmd_show(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(engine) as session:
            strategy = get_strategy(session, args.strategy_id)
            parents = parent_ids(session, strategy.id)
            ancestors = ancestry(session, strategy.id)
            windows = performance_records(session, strategy_ids=[strategy.id])
            history = status_history(session, strategy.id)
    except RegistryError as error:
        out.write(f"cannot show {args.strategy_id}: {error}\n")
        return 2
    finally:
        engine.dispose()
    try:
        genome = genome_from_dict(strategy.genome)
    except GenomeError as error:
        out.write(f"strategy {strategy.id}: its stored genome is unreadable ({error})\n")
        return 2
    lines = [
        f"strategy {strategy.id}: period {strategy.period}, status {strategy.status}",
        "rules:",
        *(f"    {line}" for line in strategy_lines(genome)),
        f"    ({genome_conditions(genome)} conditions; flat while features warm up or the regime is unknown)",
        f"risk: {risk_text(genome)}",
        f"lineage: generation {strategy.generation}, {strategy.operator}"
        + (f" of {', '.join(parents)}" if parents else "")
        + f"; {len(ancestors)} ancestor{'' if len(ancestors) == 1 else 's'} back to generation "
        + f"{min((a.generation for a in ancestors), default=strategy.generation)}; "
        + f"evolution run {strategy.evolution_run_id}",
        f"training fitness: {ratio_text(strategy.fitness)}",
        f"costs: {', '.join(f'{name} {value}' for name, value in strategy.costs.to_dict().items())}",
    ]
    for kind in WINDOW_KINDS:
        measured = sorted((w for w in windows if w.kind == kind), key=lambda w: w.period)
        lines.extend(line for window in measured for line in _window_lines(window, args.min_trades))
        if not measured:
            lines.append(f"{kind.replace('_', '-')}: not measured")
    lines.append("status history:")
    lines.extend(
        f"    {change.at:%Y-%m-%d %H:%M:%S} {change.from_status or 'new'} -> {change.to_status}: "
        f"{change.reason}"
        for change in history
    )
    out.write("\n".join(lines) + "\n")
    return 0


def add_strategy_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `emp strategies list` and `emp strategies show` on the `emp` command's subparsers."""
    strategies = subparsers.add_parser(
        "strategies", help="evolved strategies in the registry: rules, lineage, metrics, status"
    ).add_subparsers(dest="strategies_command", required=True)

    listing = strategies.add_parser("list", help="one line per strategy: status, metrics and rules")
    listing.add_argument("--period", help="only this walk-forward period (e.g. 2007-10); default: all")
    listing.add_argument(
        "--status", choices=[status.value for status in StrategyStatus], help="only this status; default: all"
    )
    listing.add_argument("--limit", type=_at_least(1), default=50, help="at most this many strategies")
    listing.add_argument(
        "--min-trades",
        type=_at_least(0),
        default=MIN_MEANINGFUL_TRADES,
        help="fewer out-of-sample trades than this and the Sharpe prints as not meaningful",
    )
    listing.set_defaults(handler=_cmd_list)

    show = strategies.add_parser("show", help="one strategy in full: rules, risk, lineage, metrics, history")
    show.add_argument("strategy_id", help="registry id of the strategy (see `emp strategies list`)")
    show.add_argument(
        "--min-trades",
        type=_at_least(0),
        default=MIN_MEANINGFUL_TRADES,
        help="fewer trades than this and a window's Sharpe prints as not meaningful",
    )
    show.set_defaults(handler=_cmd_show)
