"""`emp ... --help` shows every option's default."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from emp_pipeline.cli import build_parser


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_every_option_with_a_default_shows_it_in_the_help():
    checked = 0
    for parser in _parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
                continue
            if action.default == "" or "default" in (action.help or "").lower():
                continue
            assert f"(default: {action.default})" in text, (parser.prog, action.dest)
            checked += 1
    assert checked >= 10  # demo --periods, db upgrade --revision, token --scope, metrics, parity, ...


def _help_of(prog: str) -> str:
    return " ".join(next(p for p in _parsers(build_parser()) if p.prog == prog).format_help().split())


def test_a_default_of_zero_is_shown_and_a_flag_is_not():
    assert "random cut/audit points (default: 0)" in _help_of("emp parity")
    assert "(default: False)" not in _help_of("emp demo")
