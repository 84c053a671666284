"""The schedule model: :class:`Interval` shapes, the immutable :class:`Schedule`, the one error
type, and the checks every value of a config goes through (each names its key path).
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

NETWORKS: tuple[str, ...] = ("encoder", "actor", "critic")
INTERVAL_TYPES: tuple[str, ...] = ("step_decay", "exponential_decay", "linear", "cosine")
# The source documents' type names, translated at compile time into this project's shapes.
TYPE_ALIASES = {"exponential": "exponential_decay", "step": "exponential_decay"}
DEFAULT_TYPE = "step_decay"


class ScheduleError(ValueError):
    """A schedule is malformed. The message names the config key path and what is accepted."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ScheduleMismatchError(ScheduleError):
    """A checkpoint was written with a different schedule than the one being resumed."""


# --------------------------------------------------------------------------- values


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


def _step(value: Any, path: str, what: str = "a global step (whole number >= 0)") -> int:
    number = _number(value, path, what)
    if not math.isfinite(number) or number != int(number) or number < 0:
        raise ScheduleError(path, f"expected {what}, got {value!r}")
    return int(number)


def _interval_type(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ScheduleError(path, f"expected an interval type name, got {value!r}")
    kind = TYPE_ALIASES.get(value, value)
    if kind not in INTERVAL_TYPES:
        choices = INTERVAL_TYPES + tuple(TYPE_ALIASES)
        raise ScheduleError(path, f"unknown interval type '{value}'{_accepted(value, choices)}")
    return kind


def _given(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The keys that hold a value: ``null`` (what the config schema fills in) means not given."""
    return {k: v for k, v in mapping.items() if v is not None}


def _fraction(value: Any, path: str, low_open: bool = True) -> float:
    frac = _number(value, path, "a fraction of the run such as 0.05")
    if not math.isfinite(frac) or not (0 < frac <= 1 if low_open else 0 <= frac <= 1):
        raise ScheduleError(path, f"expected a fraction in (0, 1], got {value!r}")
    return frac


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Interval:
    """One piece of a schedule, active on ``[start, end)`` (``end=None``: open-ended).

    ``ramp_end`` is where a linear/cosine ramp reaches ``final_lr``; it equals ``end`` except
    for pieces cut out of a longer ramp by :func:`join`. The shape is evaluated by one function
    built from these fields (:func:`_shape`), which the schedule, the plots and the controller
    all call.
    """

    type: str
    start: int
    end: int | None
    init_lr: float
    final_lr: float | None = None
    decay_rate: float | None = None
    decay_interval: int | None = None
    min_lr: float | None = None
    ramp_end: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _shape(self))
        # Past this step the shape is flat: the interval's end, or where an open ramp finishes.
        object.__setattr__(self, "_flat_from", self.end if self.end is not None else self.ramp_end)

    def __reduce__(self):  # the shape function is rebuilt, not pickled
        return (Interval, tuple(getattr(self, f.name) for f in fields(self)))

    def value(self, t: int) -> float:
        """LR at global step ``t`` (steps past ``end`` give the value at ``end``)."""
        flat = self._flat_from
        return self.at(t if flat is None or t < flat else flat)

    def stable_until(self, t: int) -> int | float:
        """First step after ``t`` at which :meth:`value` may differ from ``value(t)``."""
        end = math.inf if self.end is None else self.end
        if self.type == "step_decay" or (
            self.type != "exponential_decay" and self.init_lr == self.final_lr
        ):
            return end
        if self.type == "exponential_decay":
            if self.decay_rate == 1.0 or (
                self.min_lr is not None and self.value(t) <= self.min_lr and self.decay_rate < 1
            ):
                return end
            stair = (t - self.start) // self.decay_interval + 1
            return min(self.start + stair * self.decay_interval, end)
        return t + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data, without fields this shape does not use."""
        return {k: v for k in _INTERVAL_FIELDS if (v := getattr(self, k)) is not None}


_INTERVAL_FIELDS = tuple(f.name for f in fields(Interval))


def _shape(iv: Interval):
    """The LR of ``iv`` as a function of the step, constants bound (the one evaluator of the
    interval shapes; callers keep ``t`` within the interval, see :meth:`Interval.value`)."""
    start, init = iv.start, iv.init_lr
    if iv.type == "step_decay" or (iv.type != "exponential_decay" and init == iv.final_lr):
        return lambda t: init
    if iv.type == "exponential_decay":
        rate, every, floor = iv.decay_rate, iv.decay_interval, iv.min_lr
        if floor is None:
            return lambda t: init * rate ** ((t - start) // every)
        return lambda t: max(init * rate ** ((t - start) // every), floor)
    span, final = iv.ramp_end - start, iv.final_lr
    if iv.type == "linear":
        delta = final - init
        return lambda t: init + delta * ((t - start) / span)
    half, cos, pi = (init - final) * 0.5, math.cos, math.pi
    return lambda t: final + half * (1.0 + cos(pi * ((t - start) / span)))


class Schedule:
    """An immutable, contiguous list of :class:`Interval` starting at step 0.

    Call it with a global step to get the LR. After the last interval the LR holds the value
    the last interval reaches at its ``end``.
    """

    __slots__ = ("intervals", "_starts", "_hold")

    def __init__(self, intervals: Sequence[Interval]):
        intervals = tuple(intervals)
        if not intervals:
            raise ScheduleError("", "a schedule needs at least one interval")
        if intervals[0].start != 0:
            raise ScheduleError("", f"the first interval must start at 0, not {intervals[0].start}")
        for prev, cur in zip(intervals, intervals[1:], strict=False):
            if prev.end != cur.start:
                raise ScheduleError(
                    "", f"interval starting at {cur.start} must start at {prev.end}"
                )
        object.__setattr__(self, "intervals", intervals)
        object.__setattr__(self, "_starts", [iv.start for iv in intervals])
        last = intervals[-1]
        object.__setattr__(self, "_hold", None if last.end is None else last.value(last.end))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Schedule is immutable")

    def __reduce__(self):
        return (Schedule, (self.intervals,))

    @classmethod
    def constant(cls, lr: float) -> Schedule:
        """A schedule that is ``lr`` at every step."""
        return cls([Interval("step_decay", 0, None, float(lr))])

    def __call__(self, step: int) -> float:
        return self.intervals[self.index(step)].value(step)

    def index(self, step: int) -> int:
        """Index of the interval that covers ``step`` (the last one past the end)."""
        if step < 0:
            raise ValueError(f"global step must be >= 0, got {step}")
        return bisect.bisect_right(self._starts, step) - 1

    def values(self, steps: Sequence[int] | np.ndarray) -> np.ndarray:
        """LR at every step of a sequence (for plots and checks)."""
        steps = np.asarray(steps, dtype=np.int64)
        return np.fromiter((self(int(t)) for t in steps.ravel()), np.float64, steps.size).reshape(
            steps.shape
        )

    @property
    def end(self) -> int | None:
        """Step where the last interval ends (``None``: open-ended)."""
        return self.intervals[-1].end

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Interval starts plus the last end, if any."""
        ends = () if self.end is None else (self.end,)
        return tuple(self._starts) + ends

    def to_spec(self) -> list[dict[str, Any]]:
        """Plain-data description (what the fingerprint hashes)."""
        return [iv.to_dict() for iv in self.intervals]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.intervals == other.intervals

    def __hash__(self) -> int:
        return hash(self.intervals)

    def __repr__(self) -> str:
        return f"Schedule({list(self.intervals)!r})"


def _fingerprint(
    schedules: Mapping[str, Schedule], disabled: bool = False, extra: Mapping | None = None
) -> str:
    payload = {name: s.to_spec() for name, s in sorted(schedules.items())}
    # ``extra`` (stage starts, a KL guard) only when present: older fingerprints stay valid.
    blob = json.dumps({"schedules": payload, "disabled": disabled, **(extra or {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
