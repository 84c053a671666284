"""The compiled schedules of one run (:class:`ScheduleSet`), and the plan that builds them
again as the curriculum enters the stages some intervals start at."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from schedules.guard import KLGuardSpec
from schedules.intervals import Stages, _compile_network
from schedules.knobs import with_warmup
from schedules.model import Schedule, _fingerprint


def _stages_named(net: Any) -> tuple[int, ...]:
    """The stages a network's intervals start at (``start: {stage: k}``), in order."""
    raw = net.get("intervals") if isinstance(net, Mapping) else None
    if not isinstance(raw, list):
        return ()
    return tuple(iv["start"].get("stage") for iv in raw
                 if isinstance(iv, Mapping) and isinstance(iv.get("start"), Mapping))  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """A compiled preset: the networks without stage starts as schedules, built once, and the
    plain data of those with stage starts, built again at each entry (their intervals start at
    the entry steps, so their shapes are laid out from there)."""

    fixed: Mapping[str, Schedule]
    named: tuple[str, ...]  # the networks the preset names, in its order
    staged: Mapping[str, Any]  # network -> its plain config
    stage_starts: Mapping[str, tuple[int, ...]]  # network -> the stages its intervals start at
    path: str
    total_steps: int | None
    networks: tuple[str, ...]
    warmup: int
    warmup_init: float
    stage_count: int | None

    @classmethod
    def compile(
        cls,
        nets: Mapping[str, Any],
        *,
        path: str,
        total_steps: int | None,
        base: Mapping[str, float],
        networks: Sequence[str],
        warmup: int,
        warmup_init: float,
        stage_count: int | None,
    ) -> _Plan:
        """Check every network's intervals and build those without stage starts. Intervals
        after a stage start are checked now too, at made-up entry steps: the build before any
        entry (:meth:`build`) cuts a network's list at its first stage start, so it could not
        check them."""
        stage_starts = {k: used for k, v in nets.items() if (used := _stages_named(v))}
        used = sorted({k for v in stage_starts.values() for k in v if isinstance(k, int)})
        span = total_steps or 1_000_000
        made_up = Stages(
            stage_count, {k: max(1, span * (i + 1) // (len(used) + 1)) for i, k in enumerate(used)}
        )
        plan = cls(
            {}, tuple(nets), {k: nets[k] for k in stage_starts}, stage_starts, path, total_steps,
            tuple(networks), warmup, warmup_init, stage_count,
        )  # fmt: skip
        fixed: dict[str, Schedule] = {}
        for name, net in nets.items():
            stages = made_up if name in stage_starts else Stages(stage_count)
            schedule = _compile_network(net, f"{path}.{name}", total_steps, stages)
            if name not in stage_starts:
                fixed[name] = plan._warm(schedule)
        for name in networks:
            if name not in nets:
                fixed[name] = plan._warm(Schedule.constant(base[name]))
        object.__setattr__(plan, "fixed", MappingProxyType(fixed))
        return plan

    @property
    def scheduled(self) -> tuple[str, ...]:
        """The networks whose LR the preset moves (the rest keep the base lr)."""
        if self.warmup and self.warmup_init != 1.0:
            return self.networks  # every network follows the warmup
        return self.named

    def _warm(self, schedule: Schedule) -> Schedule:
        if self.warmup and self.warmup_init != 1.0:
            return with_warmup(schedule, self.warmup, self.warmup_init)
        return schedule

    def build(self, entries: Mapping[int, int]) -> dict[str, Schedule]:
        """Every network's schedule given the stage entries so far (stage -> step)."""
        stages = Stages(self.stage_count, MappingProxyType(dict(entries)))
        built = {
            name: self._warm(_compile_network(net, f"{self.path}.{name}", self.total_steps, stages))
            for name, net in self.staged.items()
        }
        return {n: built[n] if n in built else self.fixed[n] for n in self.networks}


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
        if self._plan is None or dict(entries) == self.stage_entries:
            return self  # nothing to lay out again (a fresh start: no stage entered yet)
        return ScheduleSet(
            self._plan.build(entries), base_lr=self.base_lr, total_steps=self.total_steps,
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
        """network -> its intervals as plain data (what the checkpoint's spec holds)."""
        return {name: s.to_spec() for name, s in self._schedules.items()}

    def boundaries(self) -> tuple[int, ...]:
        """Every interval boundary of every network, sorted."""
        return tuple(sorted({b for s in self._schedules.values() for b in s.boundaries}))
