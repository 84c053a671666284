"""Preset knobs every network follows: the warmup (a multiplicative ramp into each network's own
schedule) and the decay phase (``decay``, ``decay_steps`` / ``decay_frac``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schedules.errors import ScheduleError, _fraction, _step
from schedules.model import Schedule
from schedules.registry import Interval, _interval_type

DEFAULT_WARMUP_INIT = 0.01  # a warmup starts at this fraction of the schedule's LR


def _one_of(knobs: Mapping[str, Any], steps_key: str, frac_key: str, path: str) -> tuple:
    if knobs.get(steps_key) is not None and knobs.get(frac_key) is not None:
        raise ScheduleError(
            f"{path}.{steps_key}",
            f"{frac_key} and {steps_key} both given; give one (or set the other to null)",
        )
    return knobs.get(steps_key), knobs.get(frac_key)


def _knob_steps(
    knobs: Mapping[str, Any], steps_key: str, frac_key: str, total_steps: int | None, path: str
) -> int | None:
    """A length given in steps (``steps_key``) or as a fraction of the run (``frac_key``)."""
    steps, frac = _one_of(knobs, steps_key, frac_key, path)
    if steps is not None:
        return _step(steps, f"{path}.{steps_key}")
    if frac is None:
        return None
    frac = _fraction(frac, f"{path}.{frac_key}")
    if total_steps is None:
        raise ScheduleError(f"{path}.{frac_key}", "needs the run length (num_train_frames)")
    return int(round(frac * total_steps))


def warmup_length(
    knobs: Mapping[str, Any], total_steps: int | None, path: str = "lr_schedule"
) -> int:
    """Warmup length in steps from ``warmup_steps`` or ``warmup_frac`` (0: no warmup)."""
    return _knob_steps(knobs, "warmup_steps", "warmup_frac", total_steps, path) or 0


def _apply_decay_knobs(
    spec: dict[str, Any], knobs: Mapping[str, Any], total_steps: int | None, path: str
) -> None:
    """``decay`` sets the type and ``decay_steps``/``decay_frac`` the end of every network's
    last interval (its decay phase); the LR holds the last value after."""
    decay = knobs.get("decay")
    if decay is not None:
        _interval_type(decay, f"{path}.decay")
    decay_end = _knob_steps(knobs, "decay_steps", "decay_frac", total_steps, path)
    if decay is None and decay_end is None:
        return
    for name, net in spec.items():
        if not isinstance(net, Mapping):
            continue
        which = "decay" if decay is not None else _one_of_name(knobs, "decay_steps", "decay_frac")
        if net.get("_target_") is not None:
            raise ScheduleError(
                f"{path}.{which}",
                f"{name} is built by _target_; give the decay to its function instead",
            )
        intervals = net.get("intervals")
        if not isinstance(intervals, list) or not intervals or not isinstance(intervals[-1], dict):
            continue  # reported by _compile_network
        last = intervals[-1]
        if decay is not None and net.get("type") is None and last.get("type") is None:
            last["type"] = decay  # a type set on the network or the interval wins
        if decay_end is not None:
            start = last.get("start")
            if isinstance(start, (int, float)) and decay_end <= start:
                key = _one_of_name(knobs, "decay_steps", "decay_frac")
                raise ScheduleError(
                    f"{path}.{key}",
                    f"the decay would end at step {decay_end}, at or before {name}'s last "
                    f"interval starts ({start}); it must end after that",
                )
            last["end"] = decay_end


def _one_of_name(knobs: Mapping[str, Any], a: str, b: str) -> str:
    return a if knobs.get(a) is not None else b


def _ramp(t: float, length: int, init: float) -> float:
    return init + (1.0 - init) * t / length


def with_warmup(schedule: Schedule, steps: int, init: float = DEFAULT_WARMUP_INIT) -> Schedule:
    """``schedule`` with a multiplicative linear warmup over ``[0, steps)``:
    ``lr(t) = schedule(t) * (init + (1 - init) * t / steps)``, and ``schedule(t)`` from
    ``steps`` on. Each network ramps into its own schedule.

    Exact where the schedule is constant (step_decay, exponential stairs); a smooth piece
    (linear, cosine, ...) under the ramp is followed at ``WARMUP_CHORDS`` points. An interval
    the warmup end cuts keeps its shape after the cut, as its :meth:`Shape.cut` says (a ramp
    restarts from its value there and still reaches its final_lr at its end)."""
    if steps <= 0 or init == 1.0:
        return schedule
    pieces: list[Interval] = []
    for iv in schedule.intervals:
        if iv.start >= steps:
            pieces.append(iv)
            continue
        stop = steps if iv.end is None else min(iv.end, steps)
        knots, flat = iv.shape.knots(iv, stop)
        for a, b in zip(knots, knots[1:], strict=False):
            v0 = iv.value(a) * _ramp(a, steps, init)
            v1 = (iv.value(a) if flat else iv.value(b)) * _ramp(b, steps, init)
            pieces.append(Interval("linear", a, b, v0, final_lr=v1, ramp_end=b))
        if iv.end is None or iv.end > steps:
            pieces.extend(iv.shape.cut(iv, steps))
    if schedule.end is not None and schedule.end < steps:  # the held value ramps too
        hold = schedule(schedule.end)
        v0 = hold * _ramp(schedule.end, steps, init)
        pieces.append(Interval("linear", schedule.end, steps, v0, final_lr=hold, ramp_end=steps))
    return Schedule(pieces)
