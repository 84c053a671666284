"""Schedules bound to optimizers: :class:`LRController` writes ``schedule(step)`` (times the KL
guard's scale) into param groups; :class:`ScheduledLR` is the ``torch.optim`` adapter.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch

from schedules.compat import check_schedule_state
from schedules.errors import ScheduleError, ScheduleMismatchError
from schedules.guard import KLGuard
from schedules.killswitch import DISABLE_ENV_VAR, _is_disabled
from schedules.model import Schedule, _fingerprint
from schedules.registry import Interval

log = logging.getLogger("lr_scheduler")  # one logger for the engine, whatever module


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
        self.every_step = every_step  # the LR may change at every step (a smooth shape)
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
        """``optimizers``: network -> the optimizer holding it (an agent's
        ``agents.base.Agent.optimizers``). An optimizer named for several networks holds each
        in the param groups whose ``group["name"]`` is the network's name. Or, with
        ``group_key``, one optimizer whose param groups name their network in
        ``group[group_key]``."""
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
        key = self._group_key or "name"
        owners: dict[int, list[str]] = {}
        unique: dict[int, torch.optim.Optimizer] = {}
        for name, opt in self._optimizers.items():
            owners.setdefault(id(opt), []).append(name)
            unique[id(opt)] = opt
        groups: dict[str, list[dict]] = {}
        for ident, opt in unique.items():
            if self._group_key is None and len(owners[ident]) == 1:
                groups[owners[ident][0]] = list(opt.param_groups)  # the network's own optimizer
                continue
            for i, group in enumerate(opt.param_groups):
                if key not in group:
                    shared = f" (shared by {owners[ident]})" if self._group_key is None else ""
                    raise ScheduleError(
                        "", f"param_groups[{i}] of the optimizer{shared} has no '{key}' to "
                        "match a network"
                    )  # fmt: skip
                groups.setdefault(group[key], []).append(group)
        return groups

    def _bind_groups(self) -> None:
        """(Re)find the group dicts to write; the next :meth:`apply` writes every one."""
        groups = self._groups()
        tensor_owner: dict[int, tuple[_Binding, str]] = {}  # LR tensor -> who writes it
        for binding in self._bindings:
            binding.float_groups, binding.tensor_groups = [], []
            for name in binding.networks:
                if not groups.get(name):
                    raise ScheduleError(f"lr_schedule.{name}", "network has no param groups")
                for group in groups[name]:
                    lr = group["lr"]
                    if not isinstance(lr, torch.Tensor):
                        binding.float_groups.append(group)
                        continue
                    writer, other = tensor_owner.setdefault(id(lr), (binding, name))
                    if writer is not binding:  # another schedule writes the same tensor
                        raise ScheduleError(
                            f"lr_schedule.{name}",
                            f"its param groups and {other}'s hold one and the same LR tensor "
                            "(an optimizer built with lr=torch.tensor(...) shares it between "
                            "all its groups), so their schedules cannot differ; give each group "
                            "its own: {'params': ..., 'lr': torch.tensor(...)}",
                        )
                    binding.tensor_groups.append(group)
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
            elif seg.interval is None:
                hi = min(hi, seg.end)
            else:
                hi = min(hi, seg.end, seg.interval.stable_until(global_step))
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


def _segments(schedule: Schedule) -> list[_Segment]:
    """The schedule as stretches the controller can range-check, plus the hold at the end."""
    segments = []
    for iv in schedule.intervals:
        end = math.inf if iv.end is None else iv.end
        every_step = iv.shape.every_step(iv)
        if iv.end is None and iv.ramp_end is not None:  # an open span is flat once it ends
            settled = iv.value(iv.ramp_end)
            segments.append(_Segment(iv.start, iv.ramp_end, iv.at, every_step, iv))
            segments.append(_Segment(iv.ramp_end, end, lambda t, v=settled: v, False, None))
            continue
        segments.append(_Segment(iv.start, end, iv.at, every_step, iv))
    if schedule.end is not None:
        hold = schedule._hold
        segments.append(_Segment(schedule.end, math.inf, lambda t, v=hold: v, False, None))
    return segments


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
