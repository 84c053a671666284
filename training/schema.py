"""The root structured config: every top-level knob with its type and a one-line doc.

Registered in Hydra's ConfigStore as ``train_schema`` and placed first in ``cfgs/config.yaml``'s
defaults, so every preset (shipped or a user's own) is type-checked and a misspelt top-level key
fails at compose time. Import this module before calling ``hydra.compose``.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Dict  # noqa: UP035

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from schedules.intervals import interval_key_docs

MAX_DIRNAME = 120


def safe_dirname(overrides: str) -> str:
    """A sweep job's dir name from its overrides: no path separators, and long lists cut to
    ``MAX_DIRNAME`` characters plus a short hash (file names stop at 255 bytes)."""
    name = overrides.replace("/", "_") or "defaults"
    if len(name) > MAX_DIRNAME:
        name = f"{name[:MAX_DIRNAME]}..{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


if not OmegaConf.has_resolver("safe_dirname"):
    OmegaConf.register_new_resolver("safe_dirname", safe_dirname)


# ------------------------------------------------------------------ lr_schedule (compose-time keys)
# Every key the schedule engine (lr_scheduler.compile_schedules) knows, so any of them can be
# overridden on any preset without `+`, and a misspelt key fails at compose time with its path.
# Values stay `Any` (they are often ${base_lr:x} / ${run_frac:x}); null means "not given" and the
# engine checks the values, with its own messages. The interval fields come from the engine's
# shape registry (each shape's keys), so a new shape's keys are here without an edit;
# tests/test_lr_sources.py keeps the network and preset fields equal to TARGET_KEYS, PRESET_KNOBS.

# One field per interval key (core keys, every registered shape's keys, the other spellings),
# each documented by the engine (the field's metadata["doc"]).
IntervalConfig = make_dataclass(
    "IntervalConfig",
    [(key, Any, field(default=None, metadata={"doc": doc}))
     for key, doc in interval_key_docs().items()],
)  # fmt: skip
IntervalConfig.__module__ = __name__


@dataclass
class NetworkScheduleConfig:
    type: Any = None  # default shape of the intervals (null: step_decay)
    intervals: list[IntervalConfig] | None = None  # contiguous [start, end) pieces from step 0
    # Or a builder function instead of intervals (lr_scheduler.get_lr_scheduler, ...):
    _target_: Any = None
    max_lr: Any = None
    min_lr: Any = None
    warmup_steps: Any = None
    max_steps: Any = None
    decay_type: Any = None
    final_div_factor: Any = None
    total_tokens: Any = None
    tokens_per_step: Any = None
    step_milestones: Any = None
    step_factors: Any = None
    verbose: Any = None


@dataclass
class KLGuardConfig:
    # PPO: lr = schedule(step) x scale, scale in [min_scale, 1] (LR_SCHEDULING.md, "KL guard").
    # null: the engine's default (lr_scheduler.KLGuardSpec).
    enabled: bool = False  # off by default
    target: Any = None  # approximate KL the guard aims at (0.01)
    high: Any = None  # shrink the scale when a step's KL > target x high (2.0)
    low: Any = None  # grow it back toward 1 when the KL < target x low (0.5)
    factor: Any = None  # divide / multiply the scale by this (1.5)
    min_scale: Any = None  # the scale never goes below this (0.05)
    networks: Any = None  # networks whose LR is scaled (all)


# Any other key of lr_schedule is a parameter group of the agent (`agents.base.Agent.lr_groups`:
# a user's agent may have a `temperature`, a `world_model`, ...). The schedule compiler checks
# its name against the agent's groups and its schedule like any other. A new key still needs
# `+` on the command line, so a misspelt knob fails at compose time. (OmegaConf 2.3 spells "a
# dataclass with extra keys" as a Dict subclass and warns that 2.4 deprecates it; pyproject
# pins omegaconf below 2.4.)
warnings.filterwarnings("ignore", message="Class `LRScheduleConfig` subclasses `Dict`")


@dataclass
class LRScheduleConfig(Dict[str, Any]):  # noqa: UP006
    encoder: NetworkScheduleConfig | None = None  # null: the network keeps the base lr
    actor: NetworkScheduleConfig | None = None
    critic: NetworkScheduleConfig | None = None
    warmup_frac: Any = None  # warmup length as a fraction of the run (or warmup_steps)
    warmup_steps: Any = None  # warmup length in global steps (or warmup_frac)
    warmup_init: Any = None  # fraction of the schedule's LR the warmup ramps from (0.01)
    decay: Any = None  # type of every network's last interval (its decay phase)
    decay_steps: Any = None  # step where the last interval ends (LR held after); or decay_frac
    decay_frac: Any = None  # the same as a fraction of the run
    stage_fracs: Any = None  # stage_based: stage entries as fractions of the run
    vars: dict[str, Any] = field(default_factory=dict)  # a custom preset's own values
    kl_guard: KLGuardConfig = field(default_factory=KLGuardConfig)  # PPO: LR down when KL is high


@dataclass
class ReplayConfig:
    capacity: int = 100_000  # transitions kept (off-policy agents)
    batch_size: int = 256  # transitions per update
    nstep: int = 3  # n-step return length
    discount: float = 0.99  # per-step discount


@dataclass
class ResumeConfig:
    enabled: bool = True  # resume from <run dir>/checkpoints/latest.pt when it exists
    allow_schedule_change: bool = False  # resume even if lr_schedule differs from the checkpoint's
    allow_config_change: bool = False  # resume even if seed/env/agent/replay/curriculum differ
    overwrite: bool = False  # start over in a dir that holds a run (deletes its outputs)


@dataclass
class SearchConfig:
    # Issue 22. Set by the Optuna sweeper (hydra/sweeper=rl_optuna, hparams_search=...) on each
    # job it launches; null storage: not a search job. The job reports its eval returns to this
    # trial, and stops as `pruned` when the study's pruner says so (sweeps/pruning.py).
    storage: str | None = None  # the study's storage: sqlite:///..., journal:PATH, an RDB URL
    study: str | None = None  # the study's name in that storage
    trial: int | None = None  # the Optuna trial number this job is one seed of


@dataclass
class TrainConfig:
    agent: Any = None  # agent group: constructor args (``_target_``) of the agent
    env: Any = None  # env group: gymnasium id, kwargs, observation kind
    curriculum: Any = None  # curriculum_preset group: stages and advancement rule
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)  # lr_schedule group
    lr: float = 1.0e-4  # base learning rate of every network
    num_train_frames: int = 100_000  # run length in env frames (= global steps x action_repeat)
    num_seed_frames: int = 4_000  # frames of random actions before the first update
    eval_every_frames: int = 10_000  # evaluate every this many frames
    num_eval_episodes: int = 5  # episodes per evaluation
    log_every_frames: int = 2_000  # TensorBoard scalars and log lines every this many frames
    checkpoint_every_frames: int = 20_000  # write checkpoints/latest.pt every this many frames
    action_repeat: int = 1  # env frames per agent action
    update_every_steps: int = 2  # agent update (and LR refresh) every this many global steps
    seed: int = 0  # seeds python, numpy, torch and the envs
    device: str = "cpu"  # torch device: cpu, or cuda where available
    num_threads: int = 1  # torch intra-op threads per run (sweeps: one per job)
    compile: bool = False  # run the agent's update through torch.compile (sets agent.compile)
    dry_run: bool = False  # validate and preview the schedule, then exit without training
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise), bar or lines
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)  # set by the Optuna sweeper


ConfigStore.instance().store(name="train_schema", node=TrainConfig)
