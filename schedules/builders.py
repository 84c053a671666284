"""Schedules built in code: :func:`warmup_decay`, :func:`join`, :func:`multi_step`, and the
functional API of source document 003 (:func:`get_lr_scheduler`, ...), all validated like
intervals and returning a :class:`Schedule`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

from schedules.errors import ScheduleError, _lr, _number, _step
from schedules.intervals import _compile_network
from schedules.model import Schedule
from schedules.registry import Interval


def warmup_decay(
    *,
    max_lr: float,
    max_steps: int,
    warmup_steps: int = 0,
    min_lr: float | None = None,
    decay: str = "cosine",
    final_div_factor: float | None = None,
    warmup_start_lr: float | None = None,
) -> Schedule:
    """Linear warmup from ``warmup_start_lr`` (default ``min_lr``) to ``max_lr`` over
    ``warmup_steps``, then ``decay`` (``cosine``, ``linear`` or ``exponential``) down to
    ``min_lr`` at ``max_steps``; the LR holds ``min_lr`` afterwards.
    ``final_div_factor`` sets ``min_lr = max_lr / final_div_factor``."""
    max_lr = _lr(max_lr, "max_lr")
    if final_div_factor is not None:
        factor = _number(final_div_factor, "final_div_factor", "a number > 0")
        if not math.isfinite(factor) or factor <= 0:
            raise ScheduleError("final_div_factor", f"must be a finite number > 0, got {factor}")
        min_lr = max_lr / factor
    if min_lr is None:
        raise ScheduleError("min_lr", "give min_lr or final_div_factor")
    min_lr = _lr(min_lr, "min_lr")
    max_steps = _step(max_steps, "max_steps")
    warmup_steps = _step(warmup_steps, "warmup_steps")
    if warmup_steps >= max_steps:
        raise ScheduleError(
            "warmup_steps", f"must be < max_steps ({max_steps}), got {warmup_steps}"
        )
    if decay not in ("cosine", "linear", "exponential"):
        raise ScheduleError(
            "decay", f"unknown decay '{decay}'; accepted: cosine, linear, exponential"
        )
    start_lr = min_lr if warmup_start_lr is None else _lr(warmup_start_lr, "warmup_start_lr")
    intervals = []
    if warmup_steps:
        warm = {
            "type": "linear",
            "start": 0,
            "end": warmup_steps,
            "lr": start_lr,
            "final_lr": max_lr,
        }
        intervals.append(warm)
    tail = {
        "type": decay,
        "start": warmup_steps,
        "end": max_steps,
        "lr": max_lr,
        "final_lr": min_lr,
    }
    if decay == "exponential":
        tail["decay_interval"] = 1  # smooth: one decay per step
    intervals.append(tail)
    return _compile_network({"intervals": intervals}, "warmup_decay", max_steps)


def _ranges(
    segments: Mapping[tuple[int, int | None], Any] | Sequence[tuple[int, int | None, Any]],
    name: str,
) -> list[tuple[int, int | None, Any]]:
    """``(start, end, schedule)`` sorted by start, checked like intervals: from 0, contiguous,
    ``start < end``, only the last open-ended; each schedule a Schedule or a step -> lr callable."""
    if isinstance(segments, Mapping):
        items = [(key, key[0], key[1], s) for key, s in segments.items()]
    else:
        items = [((seg[0], seg[1]), *seg) for seg in segments]
    if not items:
        raise ScheduleError(name, "needs at least one (start, end) range")
    items.sort(key=lambda seg: seg[1] if isinstance(seg[1], (int, float)) else -1)
    out: list[tuple[int, int | None, Any]] = []
    expected: int | None = 0
    for key, start, end, schedule in items:
        path = f"{name}[{key!r}]"
        start = _step(start, path, "a (start, end) range of whole steps")
        end = None if end is None else _step(end, path, "a (start, end) range of whole steps")
        if not callable(schedule):
            raise ScheduleError(
                path, f"expected a Schedule or a function step -> lr, got {type(schedule).__name__}"
            )
        if expected is None:
            raise ScheduleError(path, "only the last range may leave its end open (None)")
        if start != expected:
            kind = "overlaps the previous range" if start < expected else "leaves a gap"
            raise ScheduleError(path, f"starts at {start}: {kind}; must start at {expected}")
        if end is not None and end <= start:
            raise ScheduleError(path, f"start ({start}) must be < end ({end})")
        out.append((start, end, schedule))
        expected = end
    return out


class JoinedFunction:
    """Plain step -> lr functions joined over ranges (what :func:`join` returns when a part is
    not a :class:`Schedule`): each part sees ``step - start``; past the last range the LR holds
    the last part's value at its end. It can be plotted and called, but not bound to an
    optimizer by :class:`LRController` or checkpointed: the engine cannot see inside it."""

    def __init__(self, ranges: Sequence[tuple[int, int | None, Any]]):
        self.ranges = tuple(ranges)
        self._starts = [start for start, _, _ in self.ranges]

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"global step must be >= 0, got {step}")
        start, end, fn = self.ranges[bisect.bisect_right(self._starts, step) - 1]
        return float(fn((step if end is None else min(step, end)) - start))

    @property
    def boundaries(self) -> tuple[int, ...]:
        last = self.ranges[-1][1]
        return tuple(self._starts) + (() if last is None else (last,))


def join(
    segments: Mapping[tuple[int, int | None], Any] | Sequence[tuple[int, int | None, Any]],
) -> Schedule | JoinedFunction:
    """Join schedules over step ranges ``[start, end)``; each segment's schedule is evaluated
    at ``step - start`` (its own clock restarts), and is cut at ``end``. The last segment may
    have ``end=None``. Ranges must cover ``[0, ...)`` without gaps or overlaps.

    Segments are :class:`Schedule` objects (the result is a Schedule) or any plain function
    step -> lr (the result is then a :class:`JoinedFunction`, callable and plottable only)."""
    items = _ranges(segments, "segments")
    if not all(isinstance(schedule, Schedule) for _, _, schedule in items):
        return JoinedFunction(items)
    joined: list[Interval] = []
    for start, end, schedule in items:
        length = math.inf if end is None else end - start
        for iv in schedule.intervals:
            if iv.start >= length:
                break
            local_end = iv.end if iv.end is not None else math.inf
            cut = min(local_end, length)
            joined.append(iv.shifted(start, None if cut == math.inf else int(start + cut)))
        if schedule.end is not None and schedule.end < length:
            hold_end = None if end is None else end
            joined.append(Interval("step_decay", start + schedule.end, hold_end, schedule._hold))
    return Schedule(joined)


# The functional API of source document 003, returning this project's Schedule.


def get_lr_scheduler(
    max_lr: float,
    min_lr: float | None,
    warmup_steps: int,
    max_steps: int,
    decay_type: str = "cosine",
    final_div_factor: float | None = None,
    verbose: bool = False,
) -> Schedule:
    """Linear warmup from ``min_lr`` to ``max_lr`` over ``warmup_steps``, then ``decay_type``
    (``cosine``, ``linear`` or ``exponential``) down to ``min_lr`` at ``max_steps``; the LR
    holds ``min_lr`` after. ``final_div_factor`` overrides ``min_lr`` with
    ``max_lr / final_div_factor``. ``verbose`` prints a one-line summary."""
    if decay_type not in ("cosine", "linear", "exponential"):
        raise ScheduleError(
            "decay_type", f"unknown decay '{decay_type}'; accepted: cosine, linear, exponential"
        )
    schedule = warmup_decay(
        max_lr=max_lr, max_steps=max_steps, warmup_steps=warmup_steps, min_lr=min_lr,
        decay=decay_type, final_div_factor=final_div_factor,
    )  # fmt: skip
    if verbose:
        print(
            f"get_lr_scheduler: {schedule(0):.3e} -> {max_lr:.3e} over {warmup_steps} warmup "
            f"steps, {decay_type} to {schedule(schedule.end):.3e} at step {max_steps}, held after"
        )
    return schedule


def get_combined_lr_scheduler(
    schedulers: Mapping[tuple[int, int | None], Any],
) -> Schedule | JoinedFunction:
    """``{(start, end): scheduler}`` joined into one: each scheduler sees the step relative to
    its range's start. Ranges are checked like intervals. Same as :func:`join`."""
    return join(schedulers)


def get_multi_step_lr_scheduler(
    max_lr: float,
    warmup_steps: int,
    total_tokens: int,
    tokens_per_step: int,
    step_milestones: Sequence[float],
    step_factors: Sequence[float],
    min_lr: float | None = None,
    verbose: bool = False,
) -> Schedule:
    """Linear warmup to ``max_lr`` over ``warmup_steps``, then ``max_lr x step_factors[i]``
    from milestone ``i`` on (factors relative to ``max_lr``, not compounding). Milestones are
    fractions of ``total_tokens``, at step ``round(m x total_tokens / tokens_per_step)``.
    ``min_lr`` floors every value; the warmup starts from it (without it: from the lowest
    value the schedule reaches)."""
    max_lr = _lr(max_lr, "max_lr")
    warmup_steps = _step(warmup_steps, "warmup_steps")
    total_tokens = _step(total_tokens, "total_tokens", "a whole number of tokens > 0")
    tokens_per_step = _step(tokens_per_step, "tokens_per_step", "a whole number of tokens > 0")
    if tokens_per_step <= 0:
        raise ScheduleError("tokens_per_step", f"must be > 0, got {tokens_per_step}")
    fracs = [
        _number(m, f"step_milestones[{i}]", "a fraction") for i, m in enumerate(step_milestones)
    ]
    if any(not 0 < f < 1 for f in fracs) or fracs != sorted(set(fracs)):
        raise ScheduleError(
            "step_milestones", f"expected increasing fractions in (0, 1), got {fracs}"
        )
    if len(step_factors) != len(fracs):
        raise ScheduleError(
            "step_factors", f"one factor per milestone: {len(step_factors)} for {len(fracs)}"
        )
    floor = None if min_lr is None else _lr(min_lr, "min_lr")
    lrs = [max_lr] + [
        _lr(max_lr * _number(f, f"step_factors[{i}]", "a factor > 0"), f"step_factors[{i}]")
        for i, f in enumerate(step_factors)
    ]
    if floor is not None:
        lrs = [max(lr, floor) for lr in lrs]
    total_steps = total_tokens // tokens_per_step
    starts = [0] + [int(round(f * total_tokens / tokens_per_step)) for f in fracs]
    for i, start in enumerate(starts[1:]):
        if start <= warmup_steps:
            raise ScheduleError(
                f"step_milestones[{i}]",
                f"falls at step {start}, inside the warmup (ends at {warmup_steps})",
            )
    if len(set(starts)) != len(starts):
        raise ScheduleError("step_milestones", "two milestones fall on the same step")
    intervals: list[dict[str, Any]] = []
    if warmup_steps:
        start_lr = floor if floor is not None else min(lrs)
        intervals.append({"type": "linear", "start": 0, "lr": start_lr, "final_lr": max_lr})
    for i, (start, lr) in enumerate(zip(starts, lrs, strict=True)):
        intervals.append({"start": warmup_steps if i == 0 else start, "lr": lr})
    schedule = _compile_network(
        {"intervals": intervals}, "get_multi_step_lr_scheduler", total_steps
    )
    if verbose:
        drops = ", ".join(
            f"{lr:.3e} at step {s}" for s, lr in zip(starts[1:], lrs[1:], strict=True)
        )
        print(
            f"get_multi_step_lr_scheduler: warmup {warmup_steps} steps to {max_lr:.3e}, "
            f"then {drops} ({total_steps} steps in all)"
        )
    return schedule


def multi_step(
    base_lr: float,
    milestones: Sequence[float],
    factors: float | Sequence[float] = 0.1,
    *,
    total_steps: int,
) -> Schedule:
    """Piecewise-constant decay: at each milestone (a fraction of ``total_steps``) the LR is
    multiplied by its factor (factors compound, as in ``MultiStepLR``)."""
    base_lr = _lr(base_lr, "base_lr")
    total_steps = _step(total_steps, "total_steps")
    fracs = [float(m) for m in milestones]
    if any(not 0 < f < 1 for f in fracs) or fracs != sorted(set(fracs)):
        raise ScheduleError("milestones", f"expected increasing fractions in (0, 1), got {fracs}")
    if isinstance(factors, (int, float)):
        factors = [float(factors)] * len(fracs)
    if len(factors) != len(fracs):
        raise ScheduleError("factors", f"one factor per milestone: {len(factors)} for {len(fracs)}")
    starts = [0] + [int(round(f * total_steps)) for f in fracs]
    if len(set(starts)) != len(starts):
        raise ScheduleError("milestones", f"two milestones fall on the same step of {total_steps}")
    intervals, lr = [], base_lr
    for i, start in enumerate(starts):
        if i:
            lr *= _number(factors[i - 1], f"factors[{i - 1}]", "a number > 0")
        end = starts[i + 1] if i + 1 < len(starts) else None
        intervals.append({"start": start, "end": end, "lr": lr})
    return _compile_network(
        {"type": "step_decay", "intervals": intervals}, "multi_step", total_steps
    )
