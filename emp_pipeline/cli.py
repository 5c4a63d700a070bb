"""The `emp` command: the demo, registry migrations, and the operator commands of later concerns."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from dagster import BetaWarning, PreviewWarning

from emp_pipeline.auth.commands import add_token_commands
from emp_pipeline.demo_timeframes import (
    DEMO_TIMEFRAMES,
    demo_environment,
    demo_home,
    demo_paper_bars,
    demo_study_variables,
    demo_ui_command,
)
from emp_pipeline.job_runs import add_run_command
from emp_pipeline.monitoring.commands import add_metrics_commands
from emp_pipeline.parity.commands import add_parity_commands
from emp_pipeline.reporting.strategy_commands import add_strategy_commands
from emp_pipeline.settings import Settings, SettingsError


def _cmd_demo(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from emp_pipeline.demo import run_demo, write_demo_settings

    try:
        home = demo_home(settings, args.timeframe)
    except SettingsError as error:
        print(f"emp: {error}", file=sys.stderr)
        return 2
    note = write_demo_settings(home, os.environ, demo_study_variables(args.timeframe))
    # Read again: the demo runs with what it leaves for `make ui` and `emp run` (the environment wins, except
    # over another timeframe's home and study, which that demo is).
    if home == settings.home:
        settings = Settings.from_env()
    else:
        settings = Settings.from_env(demo_environment(home, args.timeframe, os.environ))
    paper_bars = args.paper_bars if args.paper_bars is not None else demo_paper_bars(args.timeframe)
    steps = run_demo(
        settings,
        out=out,
        periods=args.periods,
        settings_note=note,
        paper_bars=paper_bars,
        ui_command=demo_ui_command(home, args.timeframe),
    )
    return 0 if all(step.success for step in steps) else 1


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from emp_pipeline.registry.migrate import current_revision, upgrade_database

    upgrade_database(settings.database_url, revision=args.revision)
    out.write(f"registry at revision {current_revision(settings.database_url)}\n")
    return 0


def _cmd_kill_switch(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from emp_pipeline.live.commands import kill_switch_command

    return kill_switch_command(settings.database_url, args.action, out, reason=args.reason)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bars >= 1")
    return value


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless there is none worth showing or the text names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # Identity, not equality: a default of 0 is worth showing, False (a flag's) is not.
        no_default = any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
        if no_default or action.default == "" or "default" in text.lower():
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class EmpArgumentParser(argparse.ArgumentParser):
    """The parser class of `emp` and, through add_subparsers, of every sub-command."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = EmpArgumentParser(prog="emp", description="Evolving Market Predator pipeline")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="materialize the whole pipeline on the embedded defaults")
    demo.add_argument("--periods", type=int, default=3, help="walk-forward periods to evolve and evaluate")
    demo.add_argument(
        "--timeframe",
        default="D1",
        choices=[str(timeframe) for timeframe in DEMO_TIMEFRAMES],
        help="D1: the daily sample; H1: the hourly EURUSD 2017 sample, in EMP_HOME/h1",
    )
    demo.add_argument(
        "--paper-bars",
        type=_positive_int,
        help="paper-trade only the last N bars from the newest period's start, one live run each "
        "(default: all of them on D1, 120 = the sample's last FX week on H1)",
    )
    demo.set_defaults(handler=_cmd_demo)

    database = commands.add_parser("db", help="registry database").add_subparsers(
        dest="db_command", required=True
    )
    upgrade = database.add_parser(
        "upgrade", help="apply Alembic migrations to EMP_DATABASE_URL / DATABASE_URL"
    )
    upgrade.add_argument("--revision", default="head", help="Alembic revision to upgrade to")
    upgrade.set_defaults(handler=_cmd_db_upgrade)

    add_run_command(commands)
    add_token_commands(commands)
    add_metrics_commands(commands)
    add_parity_commands(commands)
    add_strategy_commands(commands)

    kill = commands.add_parser("kill-switch", help="on: no new live exposure; off: allow it; status: show it")
    kill.add_argument("action", choices=("on", "off", "status"))
    kill.add_argument("--reason", default="", help="why (recorded with the flag)")
    kill.set_defaults(handler=_cmd_kill_switch)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    # Dagster flags beta/preview parameters on every import; operators need the command's own output.
    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"emp: {error}", file=sys.stderr)
        return 2
    return args.handler(args, settings, out)


if __name__ == "__main__":
    raise SystemExit(main())
