"""Config -> validated :class:`ScheduleSet`: interpolation resolvers, preset knobs, the kill
switch, stage starts resolved again as the curriculum enters stages, and the checks against a
checkpoint's schedule. One network's intervals are compiled in :mod:`schedules.intervals`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from schedules.guard import KLGuardSpec, _kl_guard
from schedules.intervals import (
    Stages,
    _compile_network,
)
from schedules.knobs import (
    DEFAULT_WARMUP_INIT,
    _apply_decay_knobs,
    _one_of_name,
    warmup_length,
    with_warmup,
)
from schedules.model import (
    NETWORKS,
    Schedule,
    ScheduleError,
    ScheduleMismatchError,
    _accepted,
    _fingerprint,
    _first_line,
    _fraction,
    _lr,
)

if TYPE_CHECKING:
    from schedules.controller import LRController

DISABLE_ENV_VAR = "LR_SCHEDULE_DISABLE"
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


log = logging.getLogger("lr_scheduler")  # one logger for the engine, whatever module

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


def _resolve_unless_given(other: str, default: Any, *, _root_: Any) -> Any:
    """A preset's default for a knob with two spellings: ``default``, or nothing when the other
    spelling (``lr_schedule.<other>``) is given, so one override of either replaces it."""
    knobs = _root_.get("lr_schedule") or {}
    return None if knobs.get(other) is not None else default


for _name, _fn in (
    ("base_lr", _resolve_base_lr), ("run_frac", _resolve_run_frac),
    ("warmup_end", _resolve_warmup_end), ("unless_given", _resolve_unless_given),
):  # fmt: skip
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


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
