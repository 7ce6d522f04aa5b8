"""Thin command-line layer: ``bebkit SUBCOMMAND ...``.

The experiments (classify, probe, beta-sigma, prompt-distinguishability, convergence,
misalign, pretrained, …) are generated from the experiment registry
(:mod:`bebkit.cli.experiments`); the other subcommands live in :mod:`bebkit.cli.commands` as
modules exposing ``register(sub)``, discovered automatically. Conventions (shared by all):

* ``--json``: the last line of stdout is one JSON object with the results
  (estimates as ``{"value", "stderr", "n", …}``).
* Errors: one line on stderr, exit code 2 for bad input, 1 for a failed run; no traceback
  (set ``BEBKIT_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from bebkit.errors import BebkitError


class _Parser(argparse.ArgumentParser):
    """argparse exits with code 2 and a usage block; we keep code 2 but print one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"bebkit {self.prog.split(' ', 1)[-1]}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from bebkit import __version__
    from bebkit.cli import commands
    from bebkit.cli.experiments import register_all

    parser = _Parser(prog="bebkit", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"bebkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bebkit`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except BebkitError as exc:
        if os.environ.get("BEBKIT_DEBUG"):
            raise
        sys.stderr.write(f"bebkit {args.command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"bebkit {args.command}: interrupted\n")
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
