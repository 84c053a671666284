"""The schedule model: the immutable :class:`Schedule` (a contiguous list of
:class:`~schedules.registry.Interval`) and its fingerprint, which checkpoints compare.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from schedules.errors import ScheduleError
from schedules.registry import Interval

NETWORKS: tuple[str, ...] = ("encoder", "actor", "critic")


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
