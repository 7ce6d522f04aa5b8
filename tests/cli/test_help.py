"""Every subcommand's --help renders (argparse %-formats help text, so a bare % used to crash
``bebkit --help``) and shows percent signs as written, not doubled."""

from __future__ import annotations

import argparse

import pytest

from bebkit.cli import build_parser, main


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_top_level_help_renders(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "best-of-n" in out and "%%" not in out
    assert "% good" in out


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_subcommand_help_renders_without_doubled_percent(name: str) -> None:
    text = _subparsers()[name].format_help()
    assert "%%" not in text, f"`bebkit {name} --help` shows a doubled percent sign"
