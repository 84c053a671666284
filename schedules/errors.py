"""The one error type of the engine and the value checks that raise it (each names its key
path, what is wrong and what is accepted)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any


class ScheduleError(ValueError):
    """A schedule is malformed. The message names the config key path and what is accepted."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ScheduleMismatchError(ScheduleError):
    """A checkpoint was written with a different schedule than the one being resumed."""


def _accepted(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; accepted: {', '.join(choices)}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _number(value: Any, path: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScheduleError(path, f"expected {what}, got {value!r} ({type(value).__name__})")
    return float(value)


def _lr(value: Any, path: str) -> float:
    lr = _number(value, path, "a positive learning rate such as 1.0e-4")
    if not math.isfinite(lr) or lr <= 0:
        raise ScheduleError(path, f"learning rate must be a finite number > 0, got {value!r}")
    return lr


def _positive(value: Any, path: str, what: str) -> float:
    """A finite number > 0 (a factor, a power, a rate)."""
    number = _number(value, path, what)
    if not math.isfinite(number) or number <= 0:
        raise ScheduleError(path, f"must be a finite number > 0, got {value!r}")
    return number


def _step(value: Any, path: str, what: str = "a global step (whole number >= 0)") -> int:
    number = _number(value, path, what)
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise ScheduleError(path, f"expected {what}, got {value!r}")
    return int(number)


def _given(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that hold a value: ``null`` (what the config schema fills in) means not given."""
    return {k: v for k, v in mapping.items() if v is not None}


def _fraction(value: Any, path: str, low_open: bool = True) -> float:
    frac = _number(value, path, "a fraction of the run such as 0.05")
    if not math.isfinite(frac) or not (0 < frac <= 1 if low_open else 0 <= frac <= 1):
        raise ScheduleError(path, f"expected a fraction in (0, 1], got {value!r}")
    return frac
