"""The root structured config: every top-level knob with its type and a one-line doc.

Registered in Hydra's ConfigStore as ``train_schema`` and placed first in ``cfgs/config.yaml``'s
defaults, so every preset (shipped or a user's own) is type-checked and a misspelt top-level key
fails at compose time. Import this module before calling ``hydra.compose``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

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
class TrainConfig:
    agent: Any = None  # agent group: constructor args (``_target_``) of the agent
    env: Any = None  # env group: gymnasium id, kwargs, observation kind
    curriculum: Any = None  # curriculum_preset group: stages and advancement rule
    lr_schedule: dict[str, Any] = field(default_factory=dict)  # lr_schedule group (per network)
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
    compile: bool = False  # agent=ppo: run the update through torch.compile (agent.compile)
    dry_run: bool = False  # validate and preview the schedule, then exit without training
    progress: str = "auto"  # auto (bar on a terminal, log lines otherwise), bar or lines
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)


ConfigStore.instance().store(name="train_schema", node=TrainConfig)
