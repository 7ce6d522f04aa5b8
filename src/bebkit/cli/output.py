"""Shared output helpers so every subcommand follows the same ``--json`` convention."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bebkit.io import to_jsonable


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the results as one JSON object on the last line of stdout",
    )


def emit(result: dict[str, Any], *, as_json: bool, human: str | None = None) -> None:
    """Print a human-readable text, or (``--json``) one JSON object as the last stdout line."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(result), sort_keys=False) + "\n")
    else:
        sys.stdout.write(
            (human if human is not None else json.dumps(to_jsonable(result), indent=2)) + "\n"
        )
    sys.stdout.flush()


def logger(as_json: bool, *, clock: bool = False) -> Callable[[str], None]:
    """The one CLI logger: progress lines on stdout, or on stderr under ``--json`` (so the
    last stdout line stays the JSON object); ``clock`` prefixes the elapsed seconds."""
    stream = sys.stderr if as_json else sys.stdout
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        prefix = f"[{time.perf_counter() - t0:7.1f}s] " if clock else ""
        stream.write(prefix + msg + "\n")
        stream.flush()

    return say
