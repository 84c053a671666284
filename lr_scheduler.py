"""Per-network learning-rate schedules that are pure functions of the global step.

The data path is one line: a config (OmegaConf node or plain dict) goes through
:func:`compile_schedules`, which validates it and returns a :class:`ScheduleSet` of immutable
:class:`Schedule` objects, one per network; an :class:`LRController` binds those to optimizer
param groups and writes ``schedule(global_step)`` into them. Nothing is counted anywhere, so a
resumed run cannot jump: the step is the only state.

Relative values use OmegaConf resolvers registered on import:

* ``${base_lr:0.5}``  -> 0.5 x the base learning rate (top-level ``lr``)
* ``${run_frac:0.25}`` -> 25 % of the run, in global steps (``num_train_frames / action_repeat``);
  ``${run_frac:f,s}`` is ``f x s`` of the run (e.g. a fraction of a preset knob)
* ``${warmup_end:}`` -> the warmup's end in steps (``lr_schedule.warmup_steps`` or
  ``warmup_frac`` of the run); ``${warmup_end:0.1}`` a tenth of it

Library users without Hydra can use the functional API :func:`get_lr_scheduler`,
:func:`get_combined_lr_scheduler`, :func:`get_multi_step_lr_scheduler`, the builders
:func:`warmup_decay`, :func:`join`, :func:`multi_step` and :func:`with_warmup`, the
``torch.optim`` adapter :class:`ScheduledLR`; the preview table and plots are in
:mod:`lr_preview` (which imports this module, never the other way round).
"""

from __future__ import annotations

import bisect
import copy
import difflib
import hashlib
import importlib
import json
import logging
import math
import os
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

DISABLE_ENV_VAR = "LR_SCHEDULE_DISABLE"
NETWORKS: tuple[str, ...] = ("encoder", "actor", "critic")
INTERVAL_TYPES: tuple[str, ...] = ("step_decay", "exponential_decay", "linear", "cosine")
# The source documents' type names, translated at compile time into this project's shapes.
TYPE_ALIASES = {"exponential": "exponential_decay", "step": "exponential_decay"}
DEFAULT_TYPE = "step_decay"
INTERVAL_KEYS = (
    "type", "start", "end", "lr", "init_lr", "final_lr", "decay_rate", "decay_interval", "min_lr",
    "gamma", "step_size", "final_lr_fraction", "eta_min_fraction",
)  # fmt: skip
# Two spellings of one value: the source documents' key -> this project's key.
KEY_SYNONYMS = {"gamma": "decay_rate", "step_size": "decay_interval"}
# Keys that give final_lr as a fraction of the interval's init_lr.
FINAL_FRACTION_KEYS = ("final_lr_fraction", "eta_min_fraction")
NETWORK_KEYS = ("type", "intervals")
# Parameters of the builder functions a network may name with `_target_` (flat, as Hydra).
TARGET_KEYS = (
    "_target_", "max_lr", "min_lr", "warmup_steps", "max_steps", "decay_type", "final_div_factor",
    "total_tokens", "tokens_per_step", "step_milestones", "step_factors", "verbose",
)  # fmt: skip
# Scalar keys next to the networks. `vars` holds a custom preset's own values (interpolation).
PRESET_KNOBS = (
    "warmup_frac", "warmup_steps", "warmup_init", "decay", "decay_steps", "decay_frac",
    "stage_fracs", "vars", "kl_guard",
)  # fmt: skip
KL_GUARD_KEYS = ("enabled", "target", "high", "low", "factor", "min_scale", "networks")
# Documented defaults for keys a shape needs but an interval lacks (e.g. after a `type` switch).
DEFAULT_LAST_FINAL_FACTOR = 0.1  # last interval's final_lr = init_lr x this
DEFAULT_DECAY_STEPS = 100  # exponential_decay: decay_interval = interval length / this
DEFAULT_WARMUP_INIT = 0.01  # a warmup starts at this fraction of the schedule's LR
WARMUP_CHORDS = 16  # a smooth shape under a warmup is followed at this many points
WARMUP_MAX_STAIRS = 256  # more stairs than this under a warmup: followed like a smooth shape


class ScheduleError(ValueError):
    """A schedule is malformed. The message names the config key path and what is accepted."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)


class ScheduleMismatchError(ScheduleError):
    """A checkpoint was written with a different schedule than the one being resumed."""


# --------------------------------------------------------------------------- resolvers


def _run_steps(root: Any) -> int:
    frames = root.get("num_train_frames")
    if frames is None:
        raise ValueError("${run_frac:...} needs the run length (num_train_frames)")
    return int(frames) // int(root.get("action_repeat", 1) or 1)


def _resolve_base_lr(factor: Any = 1.0, *, _root_: Any) -> float:
    return float(factor) * float(_root_.lr)


def _resolve_run_frac(frac: Any, scale: Any = 1.0, *, _root_: Any) -> int:
    return int(round(float(frac) * float(scale) * _run_steps(_root_)))


def _resolve_warmup_end(scale: Any = 1.0, *, _root_: Any) -> int:
    knobs = _root_.get("lr_schedule") or {}
    steps = warmup_length(knobs, _run_steps(_root_) if "num_train_frames" in _root_ else None)
    return int(round(float(scale) * steps))


for _name, _fn in (
    ("base_lr", _resolve_base_lr), ("run_frac", _resolve_run_frac),
    ("warmup_end", _resolve_warmup_end),
):  # fmt: skip
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


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


class ScheduleSet(Mapping[str, Schedule]):
    """The compiled schedules of one run: network name -> :class:`Schedule`, plus context."""

    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        *,
        base_lr: float | Mapping[str, float],
        total_steps: int | None = None,
        scheduled: Sequence[str] = (),
        disabled: bool = False,
        knobs: Mapping[str, Any] | None = None,
        kl_guard: KLGuardSpec | None = None,
        stage_starts: Mapping[str, tuple[int, ...]] | None = None,
        plan: _Plan | None = None,
        stage_entries: Mapping[int, int] | None = None,
        fingerprint: str | None = None,
    ):
        self._schedules = dict(schedules)
        self.base_lr = base_lr
        self.total_steps = total_steps
        self.scheduled = tuple(scheduled)  # networks the config named (others keep base lr)
        self.disabled = disabled
        self.knobs = dict(knobs or {})
        self.kl_guard = kl_guard  # None: the LR is the schedule's
        self.stage_starts = dict(stage_starts or {})  # network -> stages its intervals start at
        self.stage_entries = dict(stage_entries or {})  # stage -> global step it was entered
        self._plan = plan
        extra: dict[str, Any] = {}
        if self.stage_starts:
            extra["stage_starts"] = {n: list(v) for n, v in sorted(self.stage_starts.items())}
        if kl_guard is not None:
            extra["kl_guard"] = kl_guard.to_dict()
        # The preset's identity: the same before and after stages resolve (checkpoints compare it).
        self.fingerprint = fingerprint or _fingerprint(self._schedules, disabled, extra)

    def at_stages(self, entries: Mapping[int, int]) -> ScheduleSet:
        """The same preset once the curriculum has entered ``entries`` (stage -> step): stage
        starts become those steps. The LR before the newest entry does not change."""
        if self._plan is None:
            return self
        schedules = self._plan.build(entries)
        return ScheduleSet(
            schedules, base_lr=self.base_lr, total_steps=self.total_steps,
            scheduled=self.scheduled, disabled=self.disabled, knobs=self.knobs,
            kl_guard=self.kl_guard, stage_starts=self.stage_starts, plan=self._plan,
            stage_entries=entries, fingerprint=self.fingerprint,
        )  # fmt: skip

    @property
    def stages_used(self) -> tuple[int, ...]:
        """Every stage some network's interval starts at, sorted."""
        return tuple(sorted({k for v in self.stage_starts.values() for k in v}))

    def __getitem__(self, name: str) -> Schedule:
        return self._schedules[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._schedules)

    def __len__(self) -> int:
        return len(self._schedules)

    def to_spec(self) -> dict[str, list[dict[str, Any]]]:
        return {name: s.to_spec() for name, s in self._schedules.items()}

    def boundaries(self) -> tuple[int, ...]:
        """Every interval boundary of every network, sorted."""
        return tuple(sorted({b for s in self._schedules.values() for b in s.boundaries}))


# --------------------------------------------------------------------------- compile + validate


_DISABLE_ON, _DISABLE_OFF = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _is_disabled() -> bool:
    """The kill switch: ``LR_SCHEDULE_DISABLE`` = 1/true/yes/on disables every schedule,
    0/false/no/off/empty (or unset) keeps them; any other value is an error, not a guess."""
    value = os.environ.get(DISABLE_ENV_VAR, "").strip().lower()
    if value in _DISABLE_ON:
        return True
    if value in _DISABLE_OFF:
        return False
    raise ScheduleError(
        DISABLE_ENV_VAR,
        f"environment variable set to {os.environ[DISABLE_ENV_VAR]!r}; accepted: "
        f"{'/'.join(_DISABLE_ON)} (run at the base lr) or {'/'.join(_DISABLE_OFF[1:])} or "
        "empty (follow the schedule)",
    )


def _accepted(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; accepted: {', '.join(choices)}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _resolve(node: Any, path: str) -> Any:
    """Plain python from an OmegaConf node, resolving interpolations one key at a time so a
    failing ``${...}`` is reported at its own key path."""
    if isinstance(node, DictConfig):
        out = {}
        for key in node.keys():
            sub = f"{path}.{key}" if path else str(key)
            try:
                value = node[key]
            except Exception as exc:  # OmegaConf raises several types; all mean "unresolvable"
                raw = OmegaConf.to_container(node, resolve=False).get(key)
                raise ScheduleError(sub, f"cannot resolve {raw!r}: {_first_line(exc)}") from None
            out[key] = _resolve(value, sub)
        return out
    if isinstance(node, ListConfig):
        out_list = []
        for i in range(len(node)):
            try:
                value = node[i]
            except Exception as exc:
                raise ScheduleError(f"{path}[{i}]", f"cannot resolve: {_first_line(exc)}") from None
            out_list.append(_resolve(value, f"{path}[{i}]"))
        return out_list
    return node


def _has_interpolation(value: Any) -> bool:
    """Whether a plain config holds any ``${...}`` (only then is OmegaConf needed to resolve)."""
    try:
        return "${" in json.dumps(value, default=str)
    except ValueError:  # a circular structure: let OmegaConf report it
        return True


def _copy_plain(value: Any) -> Any:
    """A copy of nested dicts and lists (the leaves are immutable): deepcopy, minus its cost."""
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_plain(v) for v in value]
    return value


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


def _interval_keys(item: Mapping[str, Any], ipath: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The interval in this project's keys, plus the key each value was spelled with (so an
    error names what the user wrote). Two spellings of one value are an error."""
    for key in item:
        if key not in INTERVAL_KEYS:
            raise ScheduleError(
                f"{ipath}.{key}", f"unknown key{_accepted(str(key), INTERVAL_KEYS)}"
            )
    out, spelled = _given(item), {}
    for theirs, ours in KEY_SYNONYMS.items():
        if theirs in out:
            if ours in out:
                raise ScheduleError(
                    f"{ipath}.{theirs}",
                    f"{theirs} and {ours} both given (two names of one value); give one, "
                    "or set the other to null",
                )
            out[ours], spelled[ours] = out.pop(theirs), theirs
    fractions = [k for k in ("final_lr", *FINAL_FRACTION_KEYS) if k in out]
    if len(fractions) > 1:
        raise ScheduleError(
            f"{ipath}.{fractions[1]}",
            f"{' and '.join(fractions)} both given (each sets final_lr); give one, "
            "or set the other to null",
        )
    return out, spelled


def _interval_ends(raw: Sequence[Any], path: str) -> list[int | None]:
    """Each interval's ``end``: as given, else the next interval's ``start`` (None: the last)."""
    ends: list[int | None] = []
    for i, item in enumerate(raw):
        ipath = f"{path}.intervals[{i}]"
        if not isinstance(item, Mapping):
            raise ScheduleError(
                ipath, f"expected a mapping like {{start: 0, lr: 1.0e-4}}, got {item!r}"
            )
        if item.get("end") is not None:
            ends.append(_step(item["end"], f"{ipath}.end"))
        elif i + 1 < len(raw) and isinstance(raw[i + 1], Mapping):
            nxt = f"{path}.intervals[{i + 1}].start"
            if raw[i + 1].get("start") is None:
                raise ScheduleError(nxt, "missing required key")
            ends.append(_step(raw[i + 1]["start"], nxt))
        else:
            ends.append(None)
    return ends


@dataclass(frozen=True)
class Stages:
    """What a stage start (``start: {stage: k}``) is resolved against: how many stages the run's
    curriculum has (0: the run has no curriculum; None: not checked) and the global step at
    which each stage entered so far was entered."""

    count: int | None = None
    entries: Mapping[int, int] = field(default_factory=dict)


def _stage_number(start: Mapping[str, Any], path: str, count: int | None) -> int:
    for key in start:
        if key != "stage":
            raise ScheduleError(f"{path}.{key}", f"unknown key{_accepted(str(key), ('stage',))}")
    stage = start.get("stage")
    if isinstance(stage, bool) or not isinstance(stage, int) or stage < 1:
        raise ScheduleError(
            f"{path}.stage",
            f"expected a curriculum stage index >= 1 (stage 0 is where the run starts), "
            f"got {stage!r}",
        )
    if count == 0:
        raise ScheduleError(
            f"{path}.stage",
            "starts at a curriculum stage, but this run has no curriculum (the env has none, "
            "or curriculum is null); accepted: a step number, or an env with a curriculum "
            "(env=gimbal); lr_schedule=stage_based_fixed uses fixed fractions of the run",
        )
    if count is not None and stage >= count:
        raise ScheduleError(
            f"{path}.stage",
            f"stage {stage} does not exist: the selected curriculum has {count} stages "
            f"(0..{count - 1}); accepted: 1..{count - 1}",
        )
    return stage


def _stage_starts(
    raw: Sequence[Any], path: str, stages: Stages
) -> tuple[list[Any], tuple[int, ...], set[int]]:
    """Intervals whose ``start`` is ``{stage: k}``, checked and resolved: an entered stage's
    start becomes its entry step, and the list is cut before the first stage not yet entered
    (the interval before it runs on, open-ended).

    Returns the intervals, the stage numbers used, and the indices (into the intervals
    returned) of those that end at a stage start. Their length is unknown in advance, so a
    shape that needs it is laid out over the rest of the run, toward the next interval's LR,
    and cut where the stage begins: the LR before an entry never depends on when it comes.
    Stage starts come after any fixed starts, in increasing stage order. A stage entered before
    the fixed start in front of it begins there instead, and that interval is skipped."""
    out: list[Any] = []
    cut: set[int] = set()
    used: list[int] = []
    pending = False
    for i, item in enumerate(raw):
        start = item.get("start") if isinstance(item, Mapping) else None
        ipath = f"{path}.intervals[{i}]"
        if not isinstance(start, Mapping):
            if used and start is not None:
                raise ScheduleError(
                    f"{ipath}.start",
                    f"a fixed step after a stage start (intervals[{i - 1}]): which comes first "
                    "is not known before the run; start it at a later stage too ({stage: N})",
                )
            if not pending:
                out.append(item)
            continue
        stage = _stage_number(start, f"{ipath}.start", stages.count)
        if i == 0:
            raise ScheduleError(f"{ipath}.start", "the first interval must start at 0")
        if used and stage <= used[-1]:
            raise ScheduleError(
                f"{ipath}.start.stage",
                f"stage {stage} after stage {used[-1]}: stages are entered in order, so each "
                f"stage start must name a later stage than the one before (> {used[-1]})",
            )
        prev = raw[i - 1]
        if isinstance(prev, Mapping) and prev.get("end") is not None:
            raise ScheduleError(
                f"{path}.intervals[{i - 1}].end",
                f"leave it out: this interval ends when the curriculum enters stage {stage}",
            )
        used.append(stage)
        if pending:
            continue
        if out and isinstance(out[-1], Mapping):  # the interval this stage start ends
            last = dict(out[-1])
            if not any(last.get(k) is not None for k in ("final_lr", *FINAL_FRACTION_KEYS)):
                nxt = item.get("lr") if item.get("lr") is not None else item.get("init_lr")
                if nxt is not None:
                    last["final_lr"] = nxt
            out[-1] = last
            cut.add(len(out) - 1)
        if stage not in stages.entries:
            pending = True
            continue
        entry = int(stages.entries[stage])
        before = out[-1].get("start") if out and isinstance(out[-1], Mapping) else None
        if isinstance(before, (int, float)) and entry <= before:
            out.pop()  # the stage came before this interval's fixed start: it never ran
            cut.discard(len(out))
            entry = int(before)
        out.append({**item, "start": entry})
    return out, tuple(used), cut


def _compile_network(
    spec: Any, path: str, total_steps: int | None, stages: Stages | None = None
) -> Schedule:
    if not isinstance(spec, Mapping):
        raise ScheduleError(path, f"expected a mapping with 'intervals', got {spec!r}")
    spec = _given(spec)
    if "_target_" in spec:
        return _build_target(spec, path)
    for key in spec:
        if key not in NETWORK_KEYS:
            accepted = NETWORK_KEYS + ("_target_",)
            raise ScheduleError(f"{path}.{key}", f"unknown key{_accepted(str(key), accepted)}")
    default_type = _interval_type(spec.get("type", DEFAULT_TYPE), f"{path}.type")
    raw = spec.get("intervals")
    if raw is None:
        raise ScheduleError(f"{path}.intervals", "missing required key: a list of intervals")
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence) or not raw:
        raise ScheduleError(f"{path}.intervals", f"expected a non-empty list, got {raw!r}")
    raw, _, cut_by_stage = _stage_starts(raw, path, stages or Stages())

    # Pass 1: keys, types and boundaries of every interval.
    ends = _interval_ends(raw, path)
    rows = []
    prev_end: int | None = 0
    for i, raw_item in enumerate(raw):
        ipath = f"{path}.intervals[{i}]"
        item, spelled = _interval_keys(raw_item, ipath)
        kind = _interval_type(item["type"], f"{ipath}.type") if "type" in item else default_type
        if "start" not in item:
            raise ScheduleError(f"{ipath}.start", "missing required key")
        start = _step(item["start"], f"{ipath}.start")
        end = ends[i]
        if end is not None and start >= end:
            if "end" in item:
                raise ScheduleError(f"{ipath}.start", f"start ({start}) must be < end ({end})")
            raise ScheduleError(
                f"{path}.intervals[{i + 1}].start",
                f"intervals are not sorted: starts at {end}, not after interval {i} ({start})",
            )
        if i == 0 and start != 0:
            raise ScheduleError(
                f"{ipath}.start", f"the first interval must start at 0, got {start}"
            )
        if i > 0 and start != prev_end:
            prev_start = rows[-1][2]
            if start < prev_start:
                problem = (
                    f"intervals are not sorted: starts at {start}, "
                    f"before interval {i - 1} ({prev_start})"
                )
            elif start < prev_end:
                problem = f"overlaps interval {i - 1}, which ends at {prev_end}"
            else:
                problem = f"leaves a gap after interval {i - 1}, which ends at {prev_end}"
            raise ScheduleError(f"{ipath}.start", f"{problem}; must start at {prev_end}")
        if "lr" in item and "init_lr" in item and item["lr"] != item["init_lr"]:
            raise ScheduleError(
                f"{ipath}.init_lr",
                "'lr' and 'init_lr' name the same value; give one (or set the other to null)",
            )
        lr_key = "init_lr" if "init_lr" in item else "lr"
        if lr_key not in item:
            raise ScheduleError(
                f"{ipath}.lr",
                "missing required key (the interval's learning rate; 'init_lr' also accepted)",
            )
        init_lr = _lr(item[lr_key], f"{ipath}.{lr_key}")
        rows.append((ipath, kind, start, end, init_lr, item, spelled))
        prev_end = end

    # Pass 2: shapes, with documented defaults for keys the shape needs but the interval lacks.
    intervals = []
    for i, (ipath, kind, start, end, init_lr, item, spelled) in enumerate(rows):
        final_lr = _final_lr(item, init_lr, ipath)
        min_lr = _lr(item["min_lr"], f"{ipath}.min_lr") if "min_lr" in item else None
        if final_lr is None:
            final_lr = rows[i + 1][4] if i + 1 < len(rows) else init_lr * DEFAULT_LAST_FINAL_FACTOR
        span_end = None if i in cut_by_stage else end
        if span_end is None and total_steps is not None:
            span_end = max(total_steps, start + 1)  # open-ended: "runs to the end of training"
        fields: dict[str, Any] = {}
        if kind in ("linear", "cosine"):
            if span_end is None:
                raise ScheduleError(
                    f"{ipath}.end", f"a {kind} interval needs an end (or a known run length)"
                )
            fields = {"final_lr": final_lr, "ramp_end": span_end}
        elif kind == "exponential_decay":
            fields = _exponential_fields(item, spelled, ipath, start, span_end, init_lr, final_lr)
            fields["min_lr"] = min_lr
        intervals.append(Interval(kind, start, end, init_lr, **fields))
    return Schedule(intervals)


def _final_lr(item: Mapping[str, Any], init_lr: float, ipath: str) -> float | None:
    if "final_lr" in item:
        return _lr(item["final_lr"], f"{ipath}.final_lr")
    for key in FINAL_FRACTION_KEYS:
        if key in item:
            fraction = _number(item[key], f"{ipath}.{key}", "a fraction of init_lr such as 0.1")
            if not math.isfinite(fraction) or fraction <= 0:
                raise ScheduleError(
                    f"{ipath}.{key}",
                    f"must be a finite number > 0 (the LR never reaches 0), got {item[key]!r}",
                )
            return init_lr * fraction
    return None


def _exponential_fields(item, spelled, ipath, start, span_end, init_lr, final_lr) -> dict:
    """decay_rate and decay_interval of an exponential_decay interval, given or defaulted.

    ``gamma`` without ``step_size``/``decay_interval`` is a factor per step (as the source
    document's ``exponential``); otherwise the defaults documented in LR_SCHEDULING.md."""
    rate_key = spelled.get("decay_rate", "decay_rate")
    every_key = spelled.get("decay_interval", "decay_interval")
    if "decay_interval" in item:
        decay_interval = _step(
            item["decay_interval"], f"{ipath}.{every_key}", "a whole number of steps > 0"
        )
        if decay_interval <= 0:
            raise ScheduleError(
                f"{ipath}.{every_key}", f"must be > 0 steps, got {item['decay_interval']!r}"
            )
    elif rate_key == "gamma":
        decay_interval = 1
    elif span_end is None:
        raise ScheduleError(
            f"{ipath}.decay_interval",
            "missing: required for an open-ended interval when the run length is unknown",
        )
    else:
        decay_interval = max(1, (span_end - start) // DEFAULT_DECAY_STEPS)
    if "decay_rate" in item:
        decay_rate = _number(
            item["decay_rate"], f"{ipath}.{rate_key}", "a number > 0 such as 0.999"
        )
        if not math.isfinite(decay_rate) or decay_rate <= 0:
            raise ScheduleError(
                f"{ipath}.{rate_key}", f"must be a finite number > 0, got {item['decay_rate']!r}"
            )
    elif span_end is None:
        raise ScheduleError(
            f"{ipath}.decay_rate",
            "missing: required for an open-ended interval when the run length is unknown",
        )
    else:
        # Reach the target (final_lr) at the end of the interval.
        decay_rate = (final_lr / init_lr) ** (decay_interval / (span_end - start))
    return {"decay_rate": decay_rate, "decay_interval": decay_interval}


def _build_target(spec: Mapping[str, Any], path: str) -> Schedule:
    """A network given as ``{_target_: lr_scheduler.get_lr_scheduler, max_lr: ..., ...}``."""
    target = spec["_target_"]
    for key in spec:
        if key in NETWORK_KEYS:
            raise ScheduleError(f"{path}.{key}", "give either _target_ or intervals, not both")
    if not isinstance(target, str) or "." not in target:
        raise ScheduleError(f"{path}._target_", f"expected 'module.function', got {target!r}")
    module_name, _, attr = target.rpartition(".")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ScheduleError(
            f"{path}._target_",
            f"cannot import {target!r} ({_first_line(exc)}); accepted: any importable function "
            "returning a Schedule, e.g. lr_scheduler.get_lr_scheduler",
        ) from None
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    try:
        schedule = fn(**kwargs)
    except ScheduleError as err:
        raise ScheduleError(f"{path}.{err.path}" if err.path else path, err.problem) from None
    except TypeError as exc:
        raise ScheduleError(path, f"{target}: {_first_line(exc)}") from None
    if not isinstance(schedule, Schedule):
        raise ScheduleError(
            f"{path}._target_",
            f"{target} returned {type(schedule).__name__}, not a Schedule (a plain function "
            "cannot be bound to an optimizer or checkpointed; build it from lr_scheduler's "
            "functions)",
        )
    return schedule


# --------------------------------------------------------------------------- preset knobs


def _fraction(value: Any, path: str, low_open: bool = True) -> float:
    frac = _number(value, path, "a fraction of the run such as 0.05")
    if not math.isfinite(frac) or not (0 < frac <= 1 if low_open else 0 <= frac <= 1):
        raise ScheduleError(path, f"expected a fraction in (0, 1], got {value!r}")
    return frac


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

    Exact where the schedule is constant (step_decay, exponential stairs); a linear or cosine
    piece under the ramp is followed at ``WARMUP_CHORDS`` points. An interval the warmup end
    cuts keeps its shape after the cut (a cosine restarts from its value there and still
    reaches its final_lr at its end)."""
    if steps <= 0 or init == 1.0:
        return schedule
    pieces: list[Interval] = []
    for iv in schedule.intervals:
        if iv.start >= steps:
            pieces.append(iv)
            continue
        stop = steps if iv.end is None else min(iv.end, steps)
        knots, flat = _warmup_knots(iv, stop)
        for a, b in zip(knots, knots[1:], strict=False):
            v0 = iv.value(a) * _ramp(a, steps, init)
            v1 = (iv.value(a) if flat else iv.value(b)) * _ramp(b, steps, init)
            pieces.append(Interval("linear", a, b, v0, final_lr=v1, ramp_end=b))
        if iv.end is None or iv.end > steps:
            pieces.extend(_cut(iv, steps))
    if schedule.end is not None and schedule.end < steps:  # the held value ramps too
        hold = schedule(schedule.end)
        v0 = hold * _ramp(schedule.end, steps, init)
        pieces.append(Interval("linear", schedule.end, steps, v0, final_lr=hold, ramp_end=steps))
    return Schedule(pieces)


def _warmup_knots(iv: Interval, stop: int) -> tuple[list[int], bool]:
    """Steps of ``[iv.start, stop]`` between which ``iv`` is constant (flat) or smooth."""
    flat = iv.type == "step_decay" or (
        iv.type in ("linear", "cosine") and iv.init_lr == iv.final_lr
    )
    if flat:
        return [iv.start, stop], True
    if iv.type == "exponential_decay":
        stairs = list(range(iv.start, stop, iv.decay_interval))
        if len(stairs) <= WARMUP_MAX_STAIRS:
            return stairs + [stop], True
    grid = np.linspace(iv.start, stop, WARMUP_CHORDS + 1).round().astype(int)
    return sorted(set(grid.tolist())), False


def _cut(iv: Interval, at: int) -> list[Interval]:
    """The part of ``iv`` from ``at`` on, as intervals starting at ``at``."""
    if iv.type == "step_decay":
        return [replace(iv, start=at)]
    if iv.type in ("linear", "cosine"):
        return [replace(iv, start=at, init_lr=iv.value(at))]
    stair = iv.start + -(-(at - iv.start) // iv.decay_interval) * iv.decay_interval
    if stair == at:
        return [replace(iv, start=at, init_lr=iv.value(at))]
    head_end = stair if iv.end is None else min(stair, iv.end)
    head = [Interval("step_decay", at, head_end, iv.value(at))]
    if iv.end is not None and stair >= iv.end:
        return head
    return head + [replace(iv, start=stair, init_lr=iv.value(stair))]


def compile_schedules(
    spec: Mapping[str, Any] | DictConfig | None,
    *,
    base_lr: float | Mapping[str, float],
    total_steps: int | None = None,
    networks: Sequence[str] = NETWORKS,
    path: str = "lr_schedule",
    context: Mapping[str, Any] | DictConfig | None = None,
    num_stages: int | None = None,
) -> ScheduleSet:
    """Validate a schedule config and compile it into one :class:`Schedule` per network.

    Args:
        spec: the ``lr_schedule`` mapping (network -> ``{type, intervals}`` or
            ``{_target_, ...}``, plus the preset knobs of ``PRESET_KNOBS``), or ``None`` for a
            constant LR everywhere. ``null`` values count as not given.
        base_lr: the base LR (``lr``), or one per network; networks the spec does not name
            keep it, and ``${base_lr:x}`` multiplies it.
        total_steps: run length in global steps; resolves ``${run_frac:x}`` and open ends.
        networks: the agent's network names; any other mapping key is rejected.
        path: the key path of ``spec`` in the user's config, used in error messages.
        context: the rest of the config, so interpolations like ``${lr_schedule.decay}`` resolve.
        num_stages: stages of the run's curriculum, so ``start: {stage: k}`` is checked
            (0: the run has no curriculum, and a stage start is an error; None: unchecked).

    Raises:
        ScheduleError: with the exact key path, what is wrong and what would be accepted.
    """
    base = {n: float(base_lr[n] if isinstance(base_lr, Mapping) else base_lr) for n in networks}
    for name, value in base.items():
        _lr(value, f"base lr of {name}" if isinstance(base_lr, Mapping) else "lr")
    fresh = isinstance(spec, DictConfig)  # converted below: a copy nobody else holds
    if fresh:
        spec = OmegaConf.to_container(spec, resolve=False)
    if not _has_interpolation(spec):  # plain data (e.g. a huge exported preset): no OmegaConf
        resolved = {} if spec is None else spec if fresh else _copy_plain(spec)
    else:
        top = path.split(".")[0]  # replaced by ``spec`` below: not worth copying
        if isinstance(context, DictConfig):
            keep = [k for k in context.keys() if k != top]
            context = OmegaConf.to_container(OmegaConf.masked_copy(context, keep), resolve=False)
        root: dict[str, Any] = copy.deepcopy({k: v for k, v in (context or {}).items() if k != top})
        root.update(lr=base[networks[0]], num_train_frames=total_steps, action_repeat=1)
        parent = root
        *heads, leaf = path.split(".")
        for head in heads:
            parent = parent.setdefault(head, {})
        parent[leaf] = copy.deepcopy(spec)
        node = OmegaConf.select(OmegaConf.create(root), path)
        resolved = _resolve(node, path)
    if not isinstance(resolved, Mapping):
        raise ScheduleError(path, f"expected a mapping of network schedules, got {resolved!r}")

    nets: dict[str, Any] = {}
    knobs: dict[str, Any] = {}
    for key, value in resolved.items():
        if key in networks:
            nets[key] = value
        elif key not in PRESET_KNOBS:
            if isinstance(value, Mapping):
                raise ScheduleError(
                    f"{path}.{key}", f"unknown network '{key}'{_accepted(str(key), networks)}"
                )
            accepted = _accepted(str(key), tuple(networks) + PRESET_KNOBS)
            raise ScheduleError(f"{path}.{key}", f"unknown key '{key}'{accepted}")
        elif value is not None and value != {} and key != "kl_guard":
            knobs[key] = value
    if "vars" in knobs and not isinstance(knobs["vars"], Mapping):
        raise ScheduleError(
            f"{path}.vars", f"expected a mapping of your own values, got {knobs['vars']!r}"
        )
    _apply_decay_knobs(nets, knobs, total_steps, path)
    warmup = warmup_length(knobs, total_steps, path)
    if "warmup_init" in knobs and not warmup:
        raise ScheduleError(
            f"{path}.warmup_init", "given without a warmup: set warmup_frac or warmup_steps too"
        )
    warmup_init = DEFAULT_WARMUP_INIT
    if "warmup_init" in knobs:
        warmup_init = _fraction(knobs["warmup_init"], f"{path}.warmup_init")

    guard = _kl_guard(resolved.get("kl_guard"), f"{path}.kl_guard", networks)
    if "decay_steps" in knobs or "decay_frac" in knobs:
        for name, net in nets.items():
            last = (net or {}).get("intervals") if isinstance(net, Mapping) else None
            if isinstance(last, list) and last and isinstance(last[-1], Mapping):
                if isinstance(last[-1].get("start"), Mapping):
                    key = _one_of_name(knobs, "decay_steps", "decay_frac")
                    raise ScheduleError(
                        f"{path}.{key}",
                        f"{name}'s last interval starts at a curriculum stage, so a fixed "
                        "decay end may come before it; give that interval its own shape",
                    )
    plan = _Plan(
        nets={k: v for k, v in nets.items() if v is not None}, path=path,
        total_steps=total_steps, base=base, networks=tuple(networks), warmup=warmup,
        warmup_init=warmup_init, stage_count=num_stages,
    )  # fmt: skip
    stage_starts = plan.stage_starts()
    if stage_starts:  # check the intervals not yet entered too, now, at made-up entry steps
        used = sorted({k for v in stage_starts.values() for k in v})
        span = total_steps or 1_000_000
        plan.build({k: max(1, span * (i + 1) // (len(used) + 1)) for i, k in enumerate(used)})
    schedules = plan.build({})
    disabled = _is_disabled()
    if disabled:
        log.warning(
            "%s=%s: ignoring %s; every network uses its base lr",
            DISABLE_ENV_VAR, os.environ[DISABLE_ENV_VAR], path,
        )  # fmt: skip
        schedules = {n: Schedule.constant(base[n]) for n in networks}
        guard, stage_starts, plan = None, {}, None
    return ScheduleSet(
        schedules, base_lr=base_lr, total_steps=total_steps, scheduled=plan.scheduled if plan
        else (), disabled=disabled, knobs=knobs, kl_guard=guard, stage_starts=stage_starts,
        plan=plan if stage_starts else None,
    )  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """A compiled preset's plain data, kept so that a schedule with stage starts can be built
    again once the curriculum enters a stage (:meth:`ScheduleSet.at_stages`)."""

    nets: Mapping[str, Any]
    path: str
    total_steps: int | None
    base: Mapping[str, float]
    networks: tuple[str, ...]
    warmup: int
    warmup_init: float
    stage_count: int | None

    @property
    def scheduled(self) -> tuple[str, ...]:
        if self.warmup and self.warmup_init != 1.0:
            return self.networks  # every network follows the warmup
        return tuple(self.nets)

    def stage_starts(self) -> dict[str, tuple[int, ...]]:
        """network -> the stages its intervals start at (networks without stage starts left
        out); call it after :meth:`build` has checked the intervals."""
        out = {}
        for key, value in self.nets.items():
            raw = value.get("intervals") if isinstance(value, Mapping) else None
            if isinstance(raw, list):
                used = tuple(iv["start"].get("stage") for iv in raw if isinstance(iv, Mapping)
                             and isinstance(iv.get("start"), Mapping))  # fmt: skip
                if used:
                    out[key] = used
        return out

    def build(self, entries: Mapping[int, int]) -> dict[str, Schedule]:
        """Every network's schedule given the stage entries so far (stage -> step)."""
        stages = Stages(self.stage_count, MappingProxyType(dict(entries)))
        schedules: dict[str, Schedule] = {}
        for key, value in self.nets.items():
            schedules[key] = _compile_network(value, f"{self.path}.{key}", self.total_steps, stages)
        if self.warmup and self.warmup_init != 1.0:
            # Every network follows the warmup, including those that keep the base lr.
            schedules = {
                n: with_warmup(
                    schedules.get(n) or Schedule.constant(self.base[n]),
                    self.warmup,
                    self.warmup_init,
                )  # fmt: skip
                for n in self.networks
            }
        return {n: schedules.get(n) or Schedule.constant(self.base[n]) for n in self.networks}


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Human-readable summary of how two resolved specs (``ScheduleSet.to_spec()``) differ."""
    lines = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{name}: {'added' if a is None else 'removed'}")
            continue
        for i in range(max(len(a), len(b))):
            ia = a[i] if i < len(a) else None
            ib = b[i] if i < len(b) else None
            if ia != ib:
                lines.append(f"{name}.intervals[{i}]: {ia} -> {ib}")
                break
    return "; ".join(lines) or "the kill switch changed"


def check_schedule_state(
    current: ScheduleSet | LRController,
    saved: Mapping[str, Any] | None,
    allow_change: bool = False,
) -> None:
    """Compare a checkpoint's schedule state (``LRController.state_dict()``) with ``current``.

    A state without a fingerprint (older checkpoint) is accepted. A different schedule raises
    :class:`ScheduleMismatchError` naming what changed, unless ``allow_change``.
    """
    if not saved or "fingerprint" not in saved:
        log.info("checkpoint has no schedule state (older format); using the current schedule")
        return
    if saved["fingerprint"] == current.fingerprint:
        return
    spec = {n: s.to_spec() for n, s in getattr(current, "schedules", current).items()}
    diff = describe_difference(saved.get("spec", {}), spec)
    if not allow_change:
        raise ScheduleMismatchError(
            "lr_schedule", f"differs from the checkpoint's schedule ({diff})"
        )
    log.warning("resuming with a changed schedule (%s)", diff)


# --------------------------------------------------------------------------- KL guard


@dataclass(frozen=True)
class KLGuardSpec:
    """How the KL guard scales the LR (``lr_schedule.kl_guard``, LR_SCHEDULING.md "KL guard").

    After every update (PPO: one rollout's epochs) the guard reads that update's mean
    approximate KL: above ``target x high`` the scale is divided by ``factor`` (not below
    ``min_scale``), below ``target x low`` multiplied by it (not above 1); the next update trains
    at ``schedule(step) x scale``. The 2x / 0.5x / 1.5 band and factor are those of rl_games'
    and rsl_rl's adaptive PPO LR, kept inside the schedule instead of replacing it; ``target``
    0.01 makes the guard act from 0.02, the threshold source document 002 names. (Per
    minibatch, as rsl_rl reads it, the first minibatch of every update shows a KL near 0, so
    the scale recovered at the start of each update: LR_SCHEDULING.md has the measurement.)
    """

    target: float = 0.01
    high: float = 2.0
    low: float = 0.5
    factor: float = 1.5
    min_scale: float = 0.05
    networks: tuple[str, ...] = NETWORKS  # the networks whose LR is scaled

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in fields(self) if (v := getattr(self, f.name)) is not None}  # fmt: skip


def _kl_guard(value: Any, path: str, networks: Sequence[str]) -> KLGuardSpec | None:
    """``lr_schedule.kl_guard`` checked; None when it is absent or not enabled."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ScheduleError(path, f"expected a mapping such as {{enabled: true}}, got {value!r}")
    for key in value:
        if key not in KL_GUARD_KEYS:
            raise ScheduleError(f"{path}.{key}", f"unknown key{_accepted(str(key), KL_GUARD_KEYS)}")
    given = _given(value)
    enabled = given.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ScheduleError(f"{path}.enabled", f"expected true or false, got {enabled!r}")
    spec = KLGuardSpec()
    out: dict[str, Any] = {}
    for key, low_ok, what in (
        ("target", lambda v: v > 0, "an approximate KL > 0 such as 0.01"),
        ("high", lambda v: v >= 1, "a multiple of target >= 1 such as 2.0"),
        ("low", lambda v: 0 < v <= 1, "a multiple of target in (0, 1] such as 0.5"),
        ("factor", lambda v: v > 1, "a factor > 1 such as 1.5"),
        ("min_scale", lambda v: 0 < v <= 1, "a fraction of the schedule in (0, 1] such as 0.05"),
    ):
        if key not in given:
            continue
        number = _number(given[key], f"{path}.{key}", what)
        if not math.isfinite(number) or not low_ok(number):
            raise ScheduleError(f"{path}.{key}", f"expected {what}, got {given[key]!r}")
        out[key] = number
    if out.get("low", spec.low) >= out.get("high", spec.high):
        raise ScheduleError(
            f"{path}.low", f"must be below high ({out.get('high', spec.high)}): the guard needs a "
            "band in which it leaves the scale alone",
        )  # fmt: skip
    if "networks" in given:
        nets = given["networks"]
        if isinstance(nets, str) or not isinstance(nets, Sequence) or not nets:
            raise ScheduleError(
                f"{path}.networks", f"expected a non-empty list of networks, got {nets!r}"
            )
        for i, name in enumerate(nets):
            if name not in networks:
                raise ScheduleError(
                    f"{path}.networks[{i}]",
                    f"unknown network '{name}'{_accepted(str(name), networks)}",
                )
        out["networks"] = tuple(dict.fromkeys(nets))
    else:
        out["networks"] = tuple(networks)
    return replace(spec, **out) if enabled else None


class KLGuard:
    """The state of a KL guard: the scale it applies now and what it has done (checkpointed)."""

    def __init__(self, spec: KLGuardSpec):
        self.spec = spec
        self.scale = 1.0
        self.updates = 0  # updates observed
        self.scaled_updates = 0  # of those, updates trained at a scale below 1
        self.lowest = 1.0  # the lowest scale applied

    def observe(self, kl: float) -> bool:
        """Take one update's approximate KL; True when the scale changed."""
        spec, before = self.spec, self.scale
        self.updates += 1
        if before < 1.0:
            self.scaled_updates += 1
        if not math.isfinite(kl):
            return False  # a diverged loss stops the run elsewhere; the scale is not guessed
        if kl > spec.target * spec.high:
            self.scale = max(before / spec.factor, spec.min_scale)
        elif kl < spec.target * spec.low:
            self.scale = min(before * spec.factor, 1.0)
        self.lowest = min(self.lowest, self.scale)
        return self.scale != before

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "updates": self.updates,
                "scaled_updates": self.scaled_updates, "lowest": self.lowest}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.updates = int(state["updates"])
        self.scaled_updates = int(state["scaled_updates"])
        self.lowest = float(state["lowest"])

    def summary(self) -> dict[str, Any]:
        """What ``result.json`` reports: updates observed, updates scaled, the lowest scale."""
        return {"updates": self.updates, "scaled_updates": self.scaled_updates,
                "min_scale_reached": self.lowest, "scale": self.scale}  # fmt: skip


# --------------------------------------------------------------------------- controller


def _lr_value(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


class LRMismatchError(RuntimeError):
    """An optimizer holds a different LR than the schedule gives for the step: something other
    than the controller wrote it."""


class _Segment:
    """A stretch ``[start, end)`` of a schedule where one interval's shape gives the LR."""

    __slots__ = ("start", "end", "value", "every_step", "interval")

    def __init__(self, start: int, end: float, value, every_step: bool, interval: Interval | None):
        self.start, self.end, self.value = start, end, value
        self.every_step = every_step  # the LR may change at every step (linear / cosine ramps)
        self.interval = interval  # None for the hold after the last interval


class _Binding:
    """One schedule and the param groups that follow it (networks with equal schedules share
    one binding, so the LR is computed once per step)."""

    __slots__ = (
        "networks", "segments", "starts", "segment", "float_groups", "tensor_groups", "guarded",
    )  # fmt: skip

    def __init__(self, schedule: Schedule, guarded: bool):
        self.guarded = guarded  # the LR is schedule(t) x the KL guard's scale
        self.networks: list[str] = []
        self.segments = _segments(schedule)
        self.starts = [seg.start for seg in self.segments]
        self.segment = self.segments[0]
        self.float_groups: list[dict] = []
        self.tensor_groups: list[dict] = []  # lr is a tensor: written in place (torch.compile)


class LRController:
    """Writes ``schedule(global_step)`` into the param groups of each network's optimizer.

    Build it with :meth:`for_optimizers` (one optimizer per network, as DrQ-v2) or
    :meth:`for_named_groups` (one optimizer whose groups carry a ``name``, as PPO). It holds the
    optimizers, not their group dicts: when an optimizer loads a state dict (which replaces its
    groups) the controller finds the new groups and rewrites them at the next :meth:`apply`.
    LRs stored as tensors (``Adam(..., lr=torch.tensor(3e-4))``) are updated in place, so a
    ``torch.compile``d optimizer step sees a new value without recompiling.
    """

    def __init__(
        self,
        schedules: Mapping[str, Schedule],
        optimizers: Mapping[str, torch.optim.Optimizer] | torch.optim.Optimizer,
        *,
        group_key: str | None = None,
    ):
        """``optimizers``: network -> its optimizer; or, with ``group_key``, one optimizer whose
        param groups name their network in ``group[group_key]``."""
        self._group_key = group_key
        if group_key is None:
            self._optimizers = dict(optimizers)
        else:
            self._optimizers = {"": optimizers}
        groups = self._groups()
        unbound = [n for n in schedules if n not in groups]
        unscheduled = [n for n in groups if n not in schedules]
        if unbound or unscheduled:
            problem = (
                f"schedules for {unbound} have no param groups" if unbound
                else f"param groups {unscheduled} have no schedule"
            )  # fmt: skip
            raise ScheduleError("lr_schedule", f"{problem}; networks with groups: {list(groups)}")
        self.disabled = getattr(schedules, "disabled", False)
        if _is_disabled() and not self.disabled:
            # A schedule built without compile_schedules: "base" is the LR the groups hold now.
            log.warning(
                "%s=%s: every network keeps its current lr",
                DISABLE_ENV_VAR, os.environ[DISABLE_ENV_VAR],
            )  # fmt: skip
            schedules = {n: Schedule.constant(_lr_value(groups[n][0])) for n in schedules}
            self.disabled = True
        self.schedules: Mapping[str, Schedule] = schedules
        self.fingerprint = getattr(schedules, "fingerprint", None) or _fingerprint(schedules)
        spec = getattr(schedules, "kl_guard", None)
        self.guard: KLGuard | None = None if spec is None or self.disabled else KLGuard(spec)
        self._spec: dict[str, list[dict[str, Any]]] | None = None
        self._current: dict[str, float] = {}
        self._view = MappingProxyType(self._current)
        self._build_bindings()
        this = weakref.ref(self)
        for optimizer in {id(o): o for o in self._optimizers.values()}.values():
            optimizer.register_load_state_dict_post_hook(
                lambda _opt, ref=this: ref() is not None and ref()._bind_groups()
            )

    def _build_bindings(self) -> None:
        guarded = set(self.guard.spec.networks) if self.guard is not None else set()
        self._bindings: list[_Binding] = []
        by_schedule: dict[tuple[Schedule, bool], _Binding] = {}
        for name, schedule in self.schedules.items():
            key = (schedule, name in guarded)
            binding = by_schedule.get(key)
            if binding is None:
                binding = by_schedule[key] = _Binding(*key)
                self._bindings.append(binding)
            binding.networks.append(name)
        self._bind_groups()

    def _scale(self, name: str) -> float:
        guard = self.guard
        return guard.scale if guard is not None and name in guard.spec.networks else 1.0

    def expected(self, name: str, global_step: int) -> float:
        """The LR ``name`` should hold at ``global_step``: its schedule's, times the KL guard's
        scale where the guard acts on it."""
        return self.schedules[name](global_step) * self._scale(name)

    def observe_kl(self, approx_kl: float) -> None:
        """Feed the KL guard one update's approximate KL; a changed scale is written at the next
        :meth:`apply`. Without a guard this does nothing."""
        if self.guard is not None and self.guard.observe(float(approx_kl)):
            self._current.clear()
            self._lo, self._hi = 0, -1

    def enter_stage(self, stage: int, global_step: int) -> bool:
        """The curriculum entered ``stage`` at ``global_step``: intervals that start at that
        stage begin there. True when some schedule changed (a new boundary at the step)."""
        schedules = self.schedules
        if stage not in getattr(schedules, "stages_used", ()):
            return False
        self.schedules = schedules.at_stages({**schedules.stage_entries, stage: int(global_step)})
        self._spec = None
        self._build_bindings()
        return True

    @classmethod
    def for_optimizers(
        cls, schedules: Mapping[str, Schedule], optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> LRController:
        """Bind each network to every param group of its own optimizer."""
        return cls(schedules, optimizers)

    @classmethod
    def for_named_groups(
        cls, schedules: Mapping[str, Schedule], optimizer: torch.optim.Optimizer, key: str = "name"
    ) -> LRController:
        """Bind each network to the groups of one optimizer whose ``group[key]`` is its name."""
        return cls(schedules, optimizer, group_key=key)

    def _groups(self) -> dict[str, list[dict]]:
        """network -> the param-group dicts its optimizer holds now."""
        if self._group_key is None:
            return {name: list(opt.param_groups) for name, opt in self._optimizers.items()}
        groups: dict[str, list[dict]] = {}
        for i, group in enumerate(self._optimizers[""].param_groups):
            if self._group_key not in group:
                raise ScheduleError(
                    "", f"param_groups[{i}] has no '{self._group_key}' to match a network"
                )
            groups.setdefault(group[self._group_key], []).append(group)
        return groups

    def _bind_groups(self) -> None:
        """(Re)find the group dicts to write; the next :meth:`apply` writes every one."""
        groups = self._groups()
        for binding in self._bindings:
            binding.float_groups, binding.tensor_groups = [], []
            for name in binding.networks:
                if not groups.get(name):
                    raise ScheduleError(f"lr_schedule.{name}", "network has no param groups")
                for group in groups[name]:
                    is_tensor = isinstance(group["lr"], torch.Tensor)
                    (binding.tensor_groups if is_tensor else binding.float_groups).append(group)
        self._current.clear()
        self._lo, self._hi = 0, -1

    def apply(self, global_step: int) -> Mapping[str, float]:
        """Write the LR of every network for ``global_step``; return network -> LR (read-only).

        Groups are only written when their value changes; between changes this is a range check.
        """
        if self._lo <= global_step < self._hi:
            return self._view
        if global_step < 0:
            raise ValueError(f"global step must be >= 0, got {global_step}")
        hi: int | float = math.inf
        current = self._current
        for binding in self._bindings:
            seg = binding.segment
            if global_step < seg.start or global_step >= seg.end:
                index = bisect.bisect_right(binding.starts, global_step) - 1
                seg = binding.segment = binding.segments[index]
            value = seg.value(global_step)
            if binding.guarded:
                value *= self.guard.scale
            if seg.every_step:
                hi = global_step + 1
            elif seg.interval is None or seg.interval.type == "step_decay":
                hi = min(hi, seg.end)
            else:
                hi = min(hi, seg.interval.stable_until(global_step))
            if current.get(binding.networks[0]) != value:
                for name in binding.networks:
                    current[name] = value
                for group in binding.float_groups:
                    group["lr"] = value
                for group in binding.tensor_groups:
                    group["lr"].fill_(value)
        self._lo, self._hi = global_step, hi
        return self._view

    def read(self) -> dict[str, float]:
        """network -> the LR its optimizer holds now (first group), read from the optimizer."""
        return {name: _lr_value(groups[0]) for name, groups in self._groups().items()}

    def verify(self, global_step: int) -> dict[str, float]:
        """The LR each network's optimizer holds now, read from its param groups, after checking
        it against the schedule at ``global_step``.

        Raises:
            LRMismatchError: naming the network, the step, the expected and the actual LR, when
                something other than this controller wrote an optimizer's LR.
        """
        actual: dict[str, float] = {}
        for name, group_list in self._groups().items():
            expected = self.expected(name, global_step)
            for group in group_list:
                lr = _lr_value(group)
                if not math.isclose(lr, expected, rel_tol=1e-6):
                    raise LRMismatchError(
                        f"lr_{name} at step {global_step}: expected {expected:g} (the "
                        f"schedule{' x the KL guard' if self._scale(name) != 1 else ''}), but "
                        f"the {name} optimizer holds {lr:g}. Something other "
                        "than the LR controller wrote it (a second scheduler, or code that "
                        "sets param_groups[...]['lr']): remove that write, or express it as "
                        "a schedule"
                    )
            actual[name] = _lr_value(group_list[0])
        return actual

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the schedule's fingerprint and spec (the step lives in the trainer)."""
        if self._spec is None:  # fixed for the controller's life; huge presets are slow to dump
            self._spec = {n: s.to_spec() for n, s in self.schedules.items()}
        state: dict[str, Any] = {"fingerprint": self.fingerprint, "spec": self._spec}
        entries = getattr(self.schedules, "stage_entries", None)
        if entries:  # the curriculum's state holds them too; here for readers of the file
            state["stage_entries"] = {int(k): int(v) for k, v in entries.items()}
        if self.guard is not None:
            state["kl_guard"] = self.guard.state_dict()
        return state

    def load_state_dict(
        self, state: Mapping[str, Any] | None, *, allow_change: bool = False
    ) -> None:
        """Check a checkpoint's schedule against this one.

        A state without a fingerprint (older checkpoint) is accepted. A different schedule
        raises :class:`ScheduleMismatchError` unless ``allow_change``; the new schedule then
        rules from the resumed step on.
        """
        check_schedule_state(self, state, allow_change)
        if self.guard is not None and state and state.get("kl_guard"):
            self.guard.load_state_dict(state["kl_guard"])
        self._bind_groups()


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


def _segments(schedule: Schedule) -> list[_Segment]:
    """The schedule as stretches the controller can range-check, plus the hold at the end."""
    segments = []
    for iv in schedule.intervals:
        end = math.inf if iv.end is None else iv.end
        ramp = iv.type in ("linear", "cosine") and iv.init_lr != iv.final_lr
        if ramp and iv.end is None:  # an open-ended ramp is flat once it reaches final_lr
            segments.append(_Segment(iv.start, iv.ramp_end, iv.at, True, iv))
            segments.append(_Segment(iv.ramp_end, end, lambda t, v=iv.final_lr: v, False, None))
            continue
        segments.append(_Segment(iv.start, end, iv.at, ramp, iv))
    if schedule.end is not None:
        hold = schedule._hold
        segments.append(_Segment(schedule.end, math.inf, lambda t, v=hold: v, False, None))
    return segments


def _fingerprint(
    schedules: Mapping[str, Schedule], disabled: bool = False, extra: Mapping | None = None
) -> str:
    payload = {name: s.to_spec() for name, s in sorted(schedules.items())}
    # ``extra`` (stage starts, a KL guard) only when present: older fingerprints stay valid.
    blob = json.dumps({"schedules": payload, "disabled": disabled, **(extra or {})}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScheduledLR(torch.optim.lr_scheduler.LRScheduler):
    """A ``torch.optim.lr_scheduler.LRScheduler`` driven by :class:`Schedule` objects.

    ``.step()`` advances ``last_epoch`` (the step count) by one, so an existing loop or
    PyTorch Lightning can use it unchanged. ``schedules`` is one Schedule for every group, a
    list with one per group, or a mapping keyed by each group's ``name``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedules: Schedule | Sequence[Schedule] | Mapping[str, Schedule],
        last_epoch: int = -1,
    ):
        groups = optimizer.param_groups
        if isinstance(schedules, Schedule):
            per_group = [schedules] * len(groups)
        elif isinstance(schedules, Mapping):
            missing = [g.get("name") for g in groups if g.get("name") not in schedules]
            if missing:
                raise ScheduleError("", f"no schedule for param groups named {missing}")
            per_group = [schedules[g["name"]] for g in groups]
        else:
            per_group = list(schedules)
            if len(per_group) != len(groups):
                raise ScheduleError(
                    "", f"{len(per_group)} schedules for {len(groups)} param groups"
                )
        self._schedules = tuple(per_group)
        self.fingerprint = _fingerprint({str(i): s for i, s in enumerate(per_group)})
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        step = max(self.last_epoch, 0)
        return [s(step) for s in self._schedules]

    _get_closed_form_lr = get_lr

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in super().state_dict().items() if k != "_schedules"}
        state["fingerprint"] = self.fingerprint
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], *, allow_change: bool = False) -> None:
        state = dict(state_dict)
        fingerprint = state.pop("fingerprint", None)
        if fingerprint is not None and fingerprint != self.fingerprint and not allow_change:
            raise ScheduleMismatchError("", "state was saved with a different schedule")
        super().load_state_dict(state)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [_lr_value(g) for g in self.optimizer.param_groups]


# --------------------------------------------------------------------------- builders


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
            joined.append(
                replace(
                    iv,
                    start=start + iv.start,
                    end=None if cut == math.inf else int(start + cut),
                    ramp_end=None if iv.ramp_end is None else start + iv.ramp_end,
                )
            )
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
