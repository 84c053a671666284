"""The run around the loops: its length, its schedules, its seeding and curriculum, how it ends
(`Preempted`, `Pruned`, `Diverged`) and `result.json`. The loops' shared base class is
`training.workspace.Workspace`, the run state across stops `training.state.RunState`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import lr_scheduler
from lr_scheduler import ScheduleSet
from training.state import ResumeRefused  # noqa: F401  (raised by RunState; caught from here)

log = logging.getLogger("train")


def total_steps(cfg: DictConfig) -> int:
    """Run length in global steps (agent env steps, summed over parallel envs): the engine's
    `lr_scheduler.run_steps`, the one place it is computed (``${run_frac:}`` reads it too)."""
    return lr_scheduler.run_steps(cfg)


def curriculum_stages(cfg: DictConfig) -> int:
    """How many stages the run's curriculum has (0: none)."""
    if not (cfg.env.get("curriculum") and cfg.get("curriculum") is not None):
        return 0
    return len(cfg.curriculum.get("stages") or [])


def compile_run_schedules(cfg: DictConfig) -> ScheduleSet:
    """The one compile path shared by training, the preview and the tests. The groups a
    schedule may name are the agent's (`agents.base.Agent.groups_for`), read from its class:
    nothing is built yet."""
    from agents.base import agent_class

    agent_cls = agent_class(cfg.agent._target_)  # the CLI checked it (training.checks)
    schedules = lr_scheduler.compile_schedules(
        cfg.lr_schedule, base_lr=cfg.lr, total_steps=total_steps(cfg), context=cfg,
        num_stages=curriculum_stages(cfg), networks=agent_cls.groups_for(cfg.agent),
    )  # fmt: skip
    if schedules.kl_guard is not None and not agent_cls.reports_kl:
        raise lr_scheduler.ScheduleError(
            "lr_schedule.kl_guard.enabled",
            f"the KL guard reads the approximate KL of each update, which "
            f"{agent_cls.__name__} does not compute; accepted: agent=ppo, or "
            "lr_schedule.kl_guard.enabled=false",
        )
    return schedules


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_curriculum(cfg: DictConfig):
    """The run's CurriculumManager, or None when the env has no curriculum."""
    from envs import CurriculumManager

    if not (cfg.env.get("curriculum") and cfg.curriculum is not None):
        return None
    c = OmegaConf.to_container(cfg.curriculum, resolve=True)
    return CurriculumManager(
        c["stages"], c["window"], c["min_episodes"], c["success_threshold"],
        c.get("expected_entry_fracs"),
    )  # fmt: skip


def _strict(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def write_result(run_dir: Path, result: Mapping[str, Any]) -> None:
    """``result.json``: what the sweep summary ranks (written for failed runs too), as strict
    JSON, replaced atomically so a reader never sees half a file."""
    path = run_dir / "result.json"
    tmp = path.with_name(".result.json.tmp")
    tmp.write_text(json.dumps(_strict(result), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint has been written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Pruned(Exception):
    """The search's pruner stopped this trial at an evaluation (issue 22); a checkpoint of that
    step has been written, so the run can still be continued by hand."""

    def __init__(self, step: int):
        super().__init__(f"pruned at step {step}")
        self.step = step


class Diverged(FloatingPointError):
    """A loss became NaN or infinite: the run cannot recover, so it stops as failed."""


def check_finite(metrics: Mapping[str, float], step: int) -> None:
    """Raise `Diverged` naming the non-finite metrics, so a sweep records why the job failed."""
    bad = [f"{name}={value}" for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise Diverged(f"diverged at step {step}: {', '.join(bad)}")


def crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in ``(before, after]``."""
    return after // every > before // every
