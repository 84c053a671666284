"""The built-in interval shapes, one class each: ``step_decay``, ``exponential_decay``,
``linear``, ``cosine``, ``polynomial`` and ``one_cycle`` (what a shape is, and the registry:
:mod:`schedules.registry`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from schedules.errors import ScheduleError, _accepted, _lr, _number, _positive, _step
from schedules.registry import (
    DEFAULT_DECAY_STEPS,
    SHAPES,
    WARMUP_MAX_STAIRS,
    Interval,
    Key,
    Layout,
    Shape,
    register,
)

FINAL_LR_KEY = Key(None, "LR reached at the end (default: the next interval's LR; last: / 10)")


@register
class StepDecay(Shape):
    """``lr`` over the whole interval."""

    name = "step_decay"

    @classmethod
    def function(cls, iv: Interval) -> Callable[[int], float]:
        init = iv.init_lr
        return lambda t: init

    @classmethod
    def constant(cls, iv: Interval) -> bool:
        return True

    @classmethod
    def cut(cls, iv: Interval, at: int) -> list[Interval]:
        return [iv.replace(start=at)]


@register
class ExponentialDecay(Shape):
    """``max(min_lr, init_lr * decay_rate ** floor((t - start) / decay_interval))``: stairs."""

    name = "exponential_decay"
    keys = {
        "decay_rate": Key(None, "factor per decay_interval (default: reaches final_lr at end)"),
        "decay_interval": Key(None, "steps per stair (default: 1/100 of the interval)"),
        "min_lr": Key(None, "floor of the LR (default: none)"),
        "final_lr": Key(None, "target reached at end when decay_rate is not given"),
    }
    params = ("decay_rate", "decay_interval", "min_lr")

    @classmethod
    def read(cls, item: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
        """``gamma`` without ``step_size``/``decay_interval`` is a factor per step (as the
        source document's ``exponential``); otherwise the documented defaults."""
        ipath, spelled, start, span_end = layout.path, layout.spelled, layout.start, layout.span_end
        rate_key = spelled.get("decay_rate", "decay_rate")
        every_key = spelled.get("decay_interval", "decay_interval")
        if "decay_interval" in item:
            every = _step(
                item["decay_interval"], f"{ipath}.{every_key}", "a whole number of steps > 0"
            )
            if every <= 0:
                raise ScheduleError(
                    f"{ipath}.{every_key}", f"must be > 0 steps, got {item['decay_interval']!r}"
                )
        elif rate_key == "gamma":
            every = 1
        elif span_end is None:
            raise ScheduleError(
                f"{ipath}.decay_interval",
                "missing: required for an open-ended interval when the run length is unknown",
            )
        else:
            every = max(1, (span_end - start) // DEFAULT_DECAY_STEPS)
        if "decay_rate" in item:
            rate = _positive(
                item["decay_rate"], f"{ipath}.{rate_key}", "a number > 0 such as 0.999"
            )
        elif span_end is None:
            raise ScheduleError(
                f"{ipath}.decay_rate",
                "missing: required for an open-ended interval when the run length is unknown",
            )
        else:  # reach the target (final_lr) at the end of the interval
            rate = (layout.final_lr / layout.init_lr) ** (every / (span_end - start))
        floor = _lr(item["min_lr"], f"{ipath}.min_lr") if "min_lr" in item else None
        cls._check_stairs(rate, every, layout, f"{ipath}.{rate_key}")
        return {"decay_rate": rate, "decay_interval": every, "min_lr": floor}

    @staticmethod
    def _check_stairs(rate: float, every: int, layout: Layout, path: str) -> None:
        """The LR stays finite on every stair: a rate > 1 grows, and an infinite LR makes every
        weight NaN at the next step. (A rate < 1 may reach 0.0 in floating point, as torch's
        StepLR does over a long run: allowed.)"""
        fixes = "a decay_rate closer to 1, a longer decay_interval, a shorter interval"
        if layout.span_end is None:
            if rate > 1:
                raise ScheduleError(
                    path, f"{rate!r} > 1 on an open-ended interval of a run of unknown length: "
                    "the LR would grow without bound; accepted: a decay_rate <= 1, or an end",
                )  # fmt: skip
            return
        stairs = (layout.span_end - layout.start) // every  # the last one: the value held
        try:  # as function() computes it; the stairs in between lie between start and this
            last = layout.init_lr * rate**stairs
        except OverflowError:
            last = math.inf
        if math.isinf(last):
            raise ScheduleError(
                path, f"{rate!r} every {every} step(s) from {layout.init_lr:g} takes the LR past "
                f"the largest float by step {layout.span_end}; accepted: {fixes}",
            )  # fmt: skip

    @classmethod
    def function(cls, iv: Interval) -> Callable[[int], float]:
        start, init = iv.start, iv.init_lr
        rate, every, floor = iv.decay_rate, iv.decay_interval, iv.min_lr
        if floor is None:
            return lambda t: init * rate ** ((t - start) // every)
        return lambda t: max(init * rate ** ((t - start) // every), floor)

    @classmethod
    def every_step(cls, iv: Interval) -> bool:
        return False  # stairs: stable_until finds the next one

    @classmethod
    def stable_until(cls, iv: Interval, t: int) -> int | float:
        end = math.inf if iv.end is None else iv.end
        if iv.decay_rate == 1.0 or (
            iv.min_lr is not None and iv.value(t) <= iv.min_lr and iv.decay_rate < 1
        ):
            return end
        stair = (t - iv.start) // iv.decay_interval + 1
        return min(iv.start + stair * iv.decay_interval, end)

    @classmethod
    def knots(cls, iv: Interval, stop: int) -> tuple[list[int], bool]:
        stairs = list(range(iv.start, stop, iv.decay_interval))
        if len(stairs) <= WARMUP_MAX_STAIRS:
            return stairs + [stop], True
        return super().knots(iv, stop)

    @classmethod
    def cut(cls, iv: Interval, at: int) -> list[Interval]:
        """A stair the cut falls inside becomes a step_decay piece up to the next stair."""
        stair = iv.start + -(-(at - iv.start) // iv.decay_interval) * iv.decay_interval
        if stair == at:
            return [iv.replace(start=at, init_lr=iv.value(at))]
        head_end = stair if iv.end is None else min(stair, iv.end)
        head = [Interval("step_decay", at, head_end, iv.value(at))]
        if iv.end is not None and stair >= iv.end:
            return head
        return head + [iv.replace(start=stair, init_lr=iv.value(stair))]


class _Ramp(Shape):
    """A shape from ``init_lr`` at ``start`` to ``final_lr`` at ``ramp_end``. A warmup that
    ends inside it restarts it from its value there (it still reaches final_lr at its end)."""

    keys = {"final_lr": FINAL_LR_KEY}
    params = ("final_lr",)
    spans = True

    @classmethod
    def read(cls, item: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
        return {"final_lr": layout.final_lr}

    @classmethod
    def function(cls, iv: Interval) -> Callable[[int], float]:
        if cls.constant(iv):
            init = iv.init_lr
            return lambda t: init
        return cls.ramp(iv.init_lr, iv.final_lr, iv.start, iv.ramp_end - iv.start, iv)

    @classmethod
    def ramp(cls, init: float, final: float, start: int, span: int, iv: Interval):
        """The non-constant curve: ``init`` at ``start``, ``final`` ``span`` steps later."""
        raise NotImplementedError

    @classmethod
    def constant(cls, iv: Interval) -> bool:
        return iv.init_lr == iv.final_lr

    @classmethod
    def cut(cls, iv: Interval, at: int) -> list[Interval]:
        return [iv.replace(start=at, init_lr=iv.value(at))]


@register
class Linear(_Ramp):
    """``init_lr + (final_lr - init_lr) * p``, ``p = (t - start) / (end - start)``."""

    name = "linear"

    @classmethod
    def ramp(cls, init, final, start, span, iv):
        delta = final - init
        return lambda t: init + delta * ((t - start) / span)


@register
class Cosine(_Ramp):
    """``final_lr + (init_lr - final_lr) * (1 + cos(pi * p)) / 2``."""

    name = "cosine"

    @classmethod
    def ramp(cls, init, final, start, span, iv):
        half, cos, pi = (init - final) * 0.5, math.cos, math.pi
        return lambda t: final + half * (1.0 + cos(pi * ((t - start) / span)))


@register
class Polynomial(_Ramp):
    """``final_lr + (init_lr - final_lr) * (1 - p) ** power`` (BERT-style polynomial decay;
    ``power`` 1 is linear, 2 falls fast then flattens, 0.5 holds high then drops)."""

    name = "polynomial"
    keys = {"final_lr": FINAL_LR_KEY, "power": Key(1.0, "exponent of the decay (default 1.0)")}
    params = ("final_lr", "power")

    @classmethod
    def read(cls, item: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
        power = cls.keys["power"].default
        if "power" in item:
            power = _positive(item["power"], f"{layout.path}.power", "a number > 0 such as 1.0")
        return {"final_lr": layout.final_lr, "power": power}

    @classmethod
    def ramp(cls, init, final, start, span, iv):
        gap, power = init - final, iv.power
        return lambda t: final + gap * (1.0 - (t - start) / span) ** power


_ANNEALS = ("cos", "linear")


@register
class OneCycle(Shape):
    """torch's ``OneCycleLR`` over the interval (``three_phase=False``): from
    ``lr / div_factor`` up to the peak ``lr`` over the first ``pct_start`` of it, then down to
    ``lr / (div_factor * final_div_factor)`` at its last step, both phases annealed by
    ``anneal`` (``cos`` or ``linear``). ``lr`` (``init_lr``) is the peak, torch's ``max_lr``."""

    name = "one_cycle"
    keys = {
        "pct_start": Key(0.3, "fraction of the interval spent rising to the peak lr (0.3)"),
        "div_factor": Key(25.0, "the cycle starts at lr / div_factor (25)"),
        "final_div_factor": Key(1e4, "it ends at lr / div_factor / final_div_factor (1e4)"),
        "anneal": Key("cos", "cos or linear: the curve of both phases (cos)"),
    }
    params = ("pct_start", "div_factor", "final_div_factor", "anneal")
    spans = True

    @classmethod
    def read(cls, item: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
        path = layout.path
        out = {key: item.get(key, k.default) for key, k in cls.keys.items()}
        pct = _number(out["pct_start"], f"{path}.pct_start", "a fraction such as 0.3")
        span = layout.span_end - layout.start
        if not (math.isfinite(pct) and 0 < pct < 1) or pct * span <= 1:
            raise ScheduleError(
                f"{path}.pct_start",
                f"expected a fraction in (0, 1) that leaves the rise more than one of the "
                f"interval's {span} steps, got {out['pct_start']!r}",
            )
        out["pct_start"] = pct
        for key in ("div_factor", "final_div_factor"):
            out[key] = _positive(out[key], f"{path}.{key}", f"a factor > 0 such as {out[key]}")
        if out["anneal"] not in _ANNEALS:
            raise ScheduleError(
                f"{path}.anneal",
                f"unknown anneal {out['anneal']!r}{_accepted(str(out['anneal']), _ANNEALS)}",
            )
        return out

    @classmethod
    def function(cls, iv: Interval) -> Callable[[int], float]:
        peak, origin, span = iv.init_lr, iv.clock, iv.ramp_end - iv.clock
        low = peak / iv.div_factor
        floor = low / iv.final_div_factor
        rise_end, last = iv.pct_start * span - 1.0, span - 1.0  # as torch, in steps from origin
        fall = last - rise_end
        cos, pi = math.cos, math.pi
        if iv.anneal == "cos":

            def anneal(a: float, b: float, p: float) -> float:
                return b + (a - b) * 0.5 * (cos(pi * p) + 1.0)
        else:

            def anneal(a: float, b: float, p: float) -> float:
                return a + (b - a) * p

        def value(t: int) -> float:
            k = t - origin
            if k <= rise_end:
                return anneal(low, peak, k / rise_end)
            return anneal(peak, floor, min(k - rise_end, fall) / fall)  # held from its last step

        return value


INTERVAL_TYPES: tuple[str, ...] = tuple(SHAPES)
