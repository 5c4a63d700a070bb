"""What an evolved strategy does, in plain notation: the text the CLI and the UI tables print.

A strategy reads as up to three lines, one per event of its signal state machine (see ``genome``)::

    long when rsi_14 < 30.5 and regime in {bull_trend, range}
    short when close crosses below sma_20 and regime in {bull_trend, range}
    exit when what_ret_5 > 0.02 or regime not in {bull_trend, range}

A leaf is ``left op right`` with ``op`` one of ``<``, ``>``, ``crosses above``, ``crosses below`` and
``right`` a number (Python's shortest exact repr, so the text holds the threshold the kernel compares with)
or a feature name; ``all`` groups join with ``and``, ``any`` groups with ``or``, and a nested group is
parenthesised. The regime clause is left out when every regime is allowed. On a bar whose features are
still warming up or whose regime is unknown the strategy is flat, whatever the lines say. Exit wins over an
entry on the same bar; long and short entries on one bar cancel to flat; the risk genes (stop, take profit,
size, maximum holding) close positions too and are printed beside the rules (``risk_text``).
"""

from __future__ import annotations

from emp_pipeline.domain.genome import Condition, Genome, Rule, RuleGroup
from emp_pipeline.domain.regimes import REGIME_LABELS

OPERATOR_WORDS: dict[str, str] = {
    ">": ">",
    "<": "<",
    "crosses_above": "crosses above",
    "crosses_below": "crosses below",
}
JOINERS: dict[str, str] = {"all": " and ", "any": " or "}


def _operand(value: float | str) -> str:
    return value if isinstance(value, str) else repr(float(value))


def rule_text(rule: Rule) -> str:
    """One rule tree as text: ``a < 1.5 and (b > c or d crosses above 0.0)``."""
    if isinstance(rule, Condition):
        return f"{rule.left} {OPERATOR_WORDS[rule.op]} {_operand(rule.right)}"
    parts = [
        f"({rule_text(child)})" if isinstance(child, RuleGroup) else rule_text(child) for child in rule.rules
    ]
    return JOINERS[rule.combinator].join(parts)


def _regime_set(regimes: tuple[str, ...]) -> str:
    return "{" + ", ".join(label for label in REGIME_LABELS if label in regimes) + "}"


def strategy_lines(genome: Genome) -> tuple[str, ...]:
    """The strategy's rules, one line per event: entries (with their regime clause), then the exit."""
    restricted = set(genome.regimes) != set(REGIME_LABELS)
    allowed = f" and regime in {_regime_set(genome.regimes)}" if restricted else ""
    lines = []
    for side, rule in (("long", genome.long_entry), ("short", genome.short_entry)):
        if rule is not None:
            entry = rule_text(rule)
            # An ``or`` group before the regime clause needs brackets to keep its meaning.
            if allowed and isinstance(rule, RuleGroup) and rule.combinator == "any":
                entry = f"({entry})"
            lines.append(f"{side} when {entry}{allowed}")
    exits = []
    if genome.exit is not None:
        exit_text = rule_text(genome.exit)
        needs_brackets = restricted and isinstance(genome.exit, RuleGroup) and genome.exit.combinator == "all"
        exits.append(f"({exit_text})" if needs_brackets else exit_text)
    if restricted:
        exits.append(f"regime not in {_regime_set(genome.regimes)}")
    if exits:
        lines.append("exit when " + " or ".join(exits))
    return tuple(lines)


def risk_text(genome: Genome) -> str:
    """The risk genes in words: ``stop 2.0 ATR, take profit 4.5 ATR, size 25% of equity, hold <= 20 bars``."""
    risk = genome.risk
    return (
        f"stop {risk.stop_atr:g} ATR, take profit {risk.take_profit_atr:g} ATR, "
        f"size {100.0 * risk.position_fraction:g}% of equity, hold <= {risk.max_holding_bars} bars"
    )


def strategy_text(genome: Genome) -> str:
    """The rules on one line (``; `` between events), for table cells."""
    return "; ".join(strategy_lines(genome))
