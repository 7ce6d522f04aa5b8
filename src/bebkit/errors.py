"""Error types. The CLI turns these into one stderr line (exit 2 for bad input, 1 for a failed run)."""

from __future__ import annotations


class BebkitError(Exception):
    """Base class of every error bebkit raises on purpose."""

    exit_code: int = 1


class InputError(BebkitError, ValueError):
    """Bad input from the user: a parameter out of range, an unknown behavior, a malformed file.

    Subclasses ``ValueError`` so that pure-math callers can catch the usual exception.
    """

    exit_code = 2


class RunError(BebkitError, RuntimeError):
    """A run failed for a reason that is not the user's input (e.g. a model produced NaNs)."""

    exit_code = 1


class DiskFullError(RunError):
    """A write failed because the disk is full (or not writable); nothing partial was
    published. One line naming what could not be written and where."""


class BatchOutOfMemoryError(RunError):
    """A model call ran out of memory even after splitting its batch down to one row (or in a
    call whose numbers depend on the batch layout, which is never split)."""


def check_range(
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = True,
    high_open: bool = True,
) -> float:
    """Validate ``value`` lies in the interval and return it as float.

    Raises :class:`InputError` naming the parameter and its allowed range, e.g.
    ``alpha must be in (0, 1), got 0``.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    lo_b = "(" if low_open else "["
    hi_b = ")" if high_open else "]"
    lo_s = "-inf" if low is None else f"{low:g}"
    hi_s = "inf" if high is None else f"{high:g}"
    rng = f"{lo_b}{lo_s}, {hi_s}{hi_b}"
    bad = v != v  # NaN
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        raise InputError(f"{name} must be in {rng}, got {value:g}")
    return v
