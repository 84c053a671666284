"""One network's intervals -> a :class:`Schedule`: their keys (both spellings), boundaries
(``end`` optional, stage starts) and documented defaults, each interval's own keys read by its
shape (:mod:`schedules.shapes`), or a builder named by ``_target_``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schedules.errors import (
    ScheduleError,
    _accepted,
    _first_line,
    _given,
    _lr,
    _number,
    _step,
)
from schedules.model import Schedule
from schedules.registry import (
    DEFAULT_LAST_FINAL_FACTOR,
    DEFAULT_TYPE,
    SHAPES,
    Interval,
    Layout,
    _interval_type,
)

# Keys every interval has, whatever its shape.
CORE_KEYS = {
    "type": "shape of this interval; null: the network's type",
    "start": "first global step (the first interval: 0), or {stage: k}",
    "end": "null: the next interval's start (the last: end of training)",
    "lr": "the interval's LR (same value as init_lr: give one)",
    "init_lr": "LR at start (same value as lr)",
}
# Two spellings of one value: the source documents' key -> this project's key.
KEY_SYNONYMS = {"gamma": "decay_rate", "step_size": "decay_interval"}
# Keys that give final_lr as a fraction of the interval's init_lr.
FINAL_FRACTION_KEYS = ("final_lr_fraction", "eta_min_fraction")
_SPELLINGS = {
    "gamma": "000 spelling of decay_rate (alone: a factor per step)",
    "step_size": "000 spelling of decay_interval",
    "final_lr_fraction": "000: final_lr as a fraction of init_lr (linear)",
    "eta_min_fraction": "000: final_lr as a fraction of init_lr (cosine)",
}


def interval_key_docs() -> dict[str, str]:
    """Every key an interval may hold -> a one-line description: the core keys, then each
    registered shape's keys (a key several shapes read lists each), then the other spellings.
    The config schema (``training/schema.py``) builds its interval fields from this."""
    docs = dict(CORE_KEYS)
    by_key: dict[str, dict[str, list[str]]] = {}
    for shape in SHAPES.values():
        for key, spec in shape.keys.items():
            by_key.setdefault(key, {}).setdefault(spec.doc, []).append(shape.name)
    for key, uses in by_key.items():
        docs[key] = "; ".join(f"{'/'.join(names)}: {doc}" for doc, names in uses.items())
    docs.update(_SPELLINGS)
    return docs


INTERVAL_KEYS: tuple[str, ...] = tuple(interval_key_docs())
NETWORK_KEYS = ("type", "intervals")


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

    # Pass 2: each interval's own keys, read by its shape, with the documented defaults.
    intervals = []
    for i, (ipath, kind, start, end, init_lr, item, spelled) in enumerate(rows):
        shape = SHAPES[kind]
        final_lr = _final_lr(item, init_lr, ipath)
        if "min_lr" in item:  # an LR is checked whatever the shape (one left on a step interval)
            _lr(item["min_lr"], f"{ipath}.min_lr")
        if final_lr is None:
            final_lr = rows[i + 1][4] if i + 1 < len(rows) else init_lr * DEFAULT_LAST_FINAL_FACTOR
        span_end = None if i in cut_by_stage else end
        if span_end is None and total_steps is not None:
            span_end = max(total_steps, start + 1)  # open-ended: "runs to the end of training"
        if shape.spans and span_end is None:
            raise ScheduleError(
                f"{ipath}.end", f"a {kind} interval needs an end (or a known run length)"
            )
        params = shape.read(item, Layout(ipath, start, span_end, init_lr, final_lr, spelled))
        ramp_end = span_end if shape.spans else None
        intervals.append(Interval(kind, start, end, init_lr, ramp_end=ramp_end, **params))
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
