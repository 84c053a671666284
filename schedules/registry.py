"""What a shape is: the :class:`Shape` base class, the registry of shapes by name
(:func:`register`, :func:`shape_of`) and the :class:`Interval` record every shape computes on.
The built-in shapes are in :mod:`schedules.shapes` (registered when :mod:`schedules` is imported).

A shape class is everything the engine knows about a shape: the interval keys it reads with
their defaults (the config schema and the validation read them from :attr:`Shape.keys`), its
value at a step, where it is flat, and how a warmup cuts it. Adding a shape is one class
decorated with :func:`register`. A type that is not registered is refused, never computed as
another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from schedules.errors import ScheduleError, _accepted

DEFAULT_TYPE = "step_decay"
# The source documents' type names, translated at compile time into this project's shapes.
TYPE_ALIASES = {"exponential": "exponential_decay", "step": "exponential_decay"}
# Documented defaults for keys a shape needs but an interval lacks (e.g. after a `type` switch).
DEFAULT_LAST_FINAL_FACTOR = 0.1  # last interval's final_lr = init_lr x this
DEFAULT_DECAY_STEPS = 100  # exponential_decay: decay_interval = interval length / this
WARMUP_CHORDS = 16  # a smooth shape under a warmup is followed at this many points
WARMUP_MAX_STAIRS = 256  # more stairs than this under a warmup: followed like a smooth shape

SHAPES: dict[str, type[Shape]] = {}


@dataclass(frozen=True)
class Key:
    """An interval key a shape reads: its default (``None``: derived, as ``doc`` says) and a
    one-line description (also the config schema's)."""

    default: Any
    doc: str


@dataclass(frozen=True)
class Layout:
    """What the compiler knows of an interval when its shape reads the interval's keys."""

    path: str  # the interval's key path, e.g. lr_schedule.actor.intervals[1]
    start: int
    span_end: int | None  # where the shape's span ends (None: unknown run length)
    init_lr: float
    final_lr: float  # as given, or the documented default (the next interval's LR, or / 10)
    spelled: Mapping[str, str]  # this project's key -> the spelling the user wrote


def register(cls: type[Shape]) -> type[Shape]:
    """Class decorator: make ``cls`` the shape named ``cls.name``. A name is registered once."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if name in SHAPES or name in TYPE_ALIASES:
        raise ValueError(f"interval type '{name}' is already registered ({SHAPES.get(name)})")
    SHAPES[name] = cls
    return cls


def shape_of(kind: str) -> type[Shape]:
    """The shape registered as ``kind`` (an alias is not a shape: see :func:`_interval_type`)."""
    try:
        return SHAPES[kind]
    except KeyError:
        raise ScheduleError(
            "type", f"unknown interval type '{kind}'{_accepted(kind, tuple(SHAPES))}"
        ) from None


def _interval_type(value: Any, path: str) -> str:
    """A ``type`` value from a config: a registered shape's name, or an alias of one."""
    if not isinstance(value, str):
        raise ScheduleError(path, f"expected an interval type name, got {value!r}")
    kind = TYPE_ALIASES.get(value, value)
    if kind not in SHAPES:
        choices = tuple(SHAPES) + tuple(TYPE_ALIASES)
        raise ScheduleError(path, f"unknown interval type '{value}'{_accepted(value, choices)}")
    return kind


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True, init=False)
class Interval:
    """One piece of a schedule, active on ``[start, end)`` (``end=None``: open-ended).

    ``type`` names its :class:`Shape`; ``params`` holds that shape's own values (``final_lr``,
    ``decay_rate``, ...), readable as attributes (``iv.final_lr``: ``None`` where the shape has
    none). ``ramp_end`` is where a shape with a span (linear, cosine, ...) ends it; it equals
    ``end`` except for pieces cut out of a longer one. ``origin`` is the step the shape's clock
    counts from when it is not ``start`` (a piece a warmup cut out of a one_cycle).
    Immutable and picklable: the shape's value function is rebuilt, never pickled.
    """

    type: str
    start: int
    end: int | None
    init_lr: float
    ramp_end: int | None
    origin: int | None
    params: tuple[tuple[str, Any], ...]

    def __init__(
        self,
        type: str,  # noqa: A002 (the config's key)
        start: int,
        end: int | None,
        init_lr: float,
        *,
        ramp_end: int | None = None,
        origin: int | None = None,
        **params: Any,
    ):
        shape = shape_of(type)
        unknown = sorted(set(params) - set(shape.params))
        if unknown:
            raise TypeError(f"a {type} interval takes {list(shape.params)}, not {unknown}")
        set_ = object.__setattr__
        for name, value in (("type", type), ("start", start), ("end", end), ("init_lr", init_lr),
                            ("ramp_end", ramp_end), ("origin", origin)):  # fmt: skip
            set_(self, name, value)
        set_(self, "params", tuple(sorted((k, v) for k, v in params.items() if v is not None)))
        set_(self, "shape", shape)
        set_(self, "at", shape.function(self))
        # Past this step the shape is flat: the interval's end, or where an open span finishes.
        set_(self, "_flat_from", end if end is not None else ramp_end)

    def __getattr__(self, name: str) -> Any:  # only called for names that are not fields
        if name.startswith("__") or name in ("params", "shape", "at", "_flat_from"):
            raise AttributeError(name)
        for key, value in self.params:
            if key == name:
                return value
        if any(name in shape.params for shape in SHAPES.values()):
            return None
        raise AttributeError(f"'Interval' object has no attribute {name!r}")

    def __reduce__(self):
        return (_interval, (self.type, self.start, self.end, self.init_lr, self.ramp_end,
                            self.origin, dict(self.params)))  # fmt: skip

    def __repr__(self) -> str:
        core = f"{self.type!r}, {self.start}, {self.end}, {self.init_lr!r}"
        extra = [f"{k}={v!r}" for k, v in (("ramp_end", self.ramp_end), ("origin", self.origin))
                 if v is not None] + [f"{k}={v!r}" for k, v in self.params]  # fmt: skip
        return f"Interval({', '.join([core, *extra])})"

    @property
    def clock(self) -> int:
        """The step the shape's clock counts from (``origin``, else ``start``)."""
        return self.start if self.origin is None else self.origin

    def replace(self, **changes: Any) -> Interval:
        """A copy with ``changes`` (fields or shape params) applied."""
        values = {"ramp_end": self.ramp_end, "origin": self.origin, **dict(self.params)}
        core = [changes.pop(k, getattr(self, k)) for k in ("type", "start", "end", "init_lr")]
        return Interval(*core, **{**values, **changes})

    def shifted(self, offset: int, end: int | None) -> Interval:
        """The same piece ``offset`` steps later, ending at ``end`` (what :func:`join` does)."""
        return self.replace(
            start=self.start + offset, end=end,
            ramp_end=None if self.ramp_end is None else self.ramp_end + offset,
            origin=None if self.origin is None else self.origin + offset,
        )  # fmt: skip

    def value(self, t: int) -> float:
        """LR at global step ``t`` (steps past ``end`` give the value at ``end``)."""
        flat = self._flat_from
        return self.at(t if flat is None or t < flat else flat)

    def stable_until(self, t: int) -> int | float:
        """First step after ``t`` at which :meth:`value` may differ from ``value(t)``."""
        return self.shape.stable_until(self, t)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, without fields this shape does not use (what the fingerprint hashes)."""
        out = {k: v for k in _CORE_FIELDS if (v := getattr(self, k)) is not None}
        out.update(self.params)
        return out


_CORE_FIELDS = tuple(f.name for f in fields(Interval) if f.name != "params")


def _interval(kind, start, end, init_lr, ramp_end, origin, params) -> Interval:
    return Interval(kind, start, end, init_lr, ramp_end=ramp_end, origin=origin, **params)


# --------------------------------------------------------------------------- the base class


class Shape:
    """What a shape is. Subclass it, set :attr:`name`, :attr:`keys` and :attr:`params`, write
    :meth:`read` and :meth:`function`, override what differs, and decorate with
    :func:`register`."""

    name: ClassVar[str]
    # Interval keys this shape reads (besides type, start, end, lr / init_lr).
    keys: ClassVar[Mapping[str, Key]] = {}
    # What it stores on the Interval (Interval.params), read back by function() and cut().
    params: ClassVar[tuple[str, ...]] = ()
    # Its value depends on the interval's length: it needs an end or a known run length, and
    # the Interval gets ramp_end.
    spans: ClassVar[bool] = False

    @classmethod
    def read(cls, item: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
        """The shape's params from an interval's keys (``item``, this project's spelling, null
        values removed), checked, with the defaults of :attr:`keys` for those not given."""
        return {}

    @classmethod
    def function(cls, iv: Interval) -> Callable[[int], float]:
        """The LR of ``iv`` as a function of the step, constants bound (callers keep the step
        within the interval, see :meth:`Interval.value`)."""
        raise NotImplementedError

    @classmethod
    def constant(cls, iv: Interval) -> bool:
        """Whether ``iv`` holds one value over its whole interval."""
        return False

    @classmethod
    def every_step(cls, iv: Interval) -> bool:
        """Whether ``iv``'s value may change at every step (else :meth:`stable_until` says
        where it next may)."""
        return not cls.constant(iv)

    @classmethod
    def stable_until(cls, iv: Interval, t: int) -> int | float:
        """First step after ``t`` at which ``iv``'s value may change."""
        if cls.constant(iv):
            return math.inf if iv.end is None else iv.end
        return t + 1

    @classmethod
    def knots(cls, iv: Interval, stop: int) -> tuple[list[int], bool]:
        """Steps of ``[iv.start, stop]`` a warmup ramp follows ``iv`` at, and whether ``iv`` is
        constant between them (else it is smooth and followed by chords)."""
        if cls.constant(iv):
            return [iv.start, stop], True
        grid = np.linspace(iv.start, stop, WARMUP_CHORDS + 1).round().astype(int)
        return sorted(set(grid.tolist())), False

    @classmethod
    def cut(cls, iv: Interval, at: int) -> list[Interval]:
        """The part of ``iv`` from ``at`` on, as intervals starting at ``at`` (a warmup that
        ends inside ``iv``). By default the curve goes on exactly: the clock keeps its origin."""
        return [iv.replace(start=at, origin=iv.clock)]
