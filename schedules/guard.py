"""The KL guard: ``lr = schedule(step) x scale``, the scale steered by each update's approximate
KL inside ``[min_scale, 1]`` (LR_SCHEDULING.md, "KL guard").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from schedules.errors import ScheduleError, _accepted, _given, _number
from schedules.model import NETWORKS

KL_GUARD_KEYS = ("enabled", "target", "high", "low", "factor", "min_scale", "networks")


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
    knobs = [key for key in KL_GUARD_KEYS if key != "enabled" and key in given]
    if knobs and not enabled:  # a knob of a guard that is off would be ignored: say so
        raise ScheduleError(
            f"{path}.{knobs[0]}", f"set while the KL guard is off ({path}.enabled is false); "
            f"accepted: {path}.enabled=true to use it, or leave {', '.join(knobs)} out",
        )  # fmt: skip
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
