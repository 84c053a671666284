"""The sweeper's settings (``hydra.sweeper.*``), registered as ``hydra/sweeper=rl_optuna``.

A module of its own, imported normally by `sweeper`: Hydra's plugin scan executes modules
before it registers them, which dataclasses cannot live with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

SAMPLERS = ("tpe", "cmaes", "random", "grid")


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe, cmaes, random or grid
    seed: int | None = None  # the same seed and results: the same trials
    n_startup_trials: int = 5  # tpe, cmaes: random trials before the model takes over


@dataclass
class PrunerConf:
    name: str = "none"  # none, median, successive_halving or hyperband
    n_startup_trials: int = 2  # median: finished trials before any is pruned
    n_warmup_steps: int = 0  # median: global steps before a trial can be pruned
    min_resource: Any = "auto"  # successive_halving, hyperband: global steps of the first rung
    max_resource: Any = "auto"  # hyperband: a full run in global steps (auto: the longest seen)
    reduction_factor: int = 3  # successive_halving, hyperband: 1/this of the trials go on


@dataclass
class RLOptunaSweeperConf:
    _target_: str = "hydra_plugins.rl_optuna_sweeper.sweeper.RLOptunaSweeper"
    study_name: str = "search"  # the study in the storage; the same name continues it
    storage: str | None = None  # null: SQLite in the sweep dir; journal:PATH; an RDB URL
    objective: str = "final_eval_return"  # the result.json field a trial's seeds average
    direction: str = "maximize"  # or minimize
    n_trials: int = 20  # trials in the study in all; a re-run goes on up to this many
    n_jobs: int = 2  # trials per batch, launched together (x seeds jobs)
    seeds: list[int] | None = None  # each trial runs once per seed; null: the config's seed
    baseline: bool = True  # trial 0 runs the config as given, without the searched params
    max_retries: int = 1  # launches of an interrupted trial after the first; then FAIL
    heartbeat_grace_s: float = 300.0  # a RUNNING trial whose sweeper is silent this long is dead
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    params: dict[str, Any] = field(default_factory=dict)  # key -> Hydra sweep syntax


ConfigStore.instance().store(
    group="hydra/sweeper", name="rl_optuna", node=RLOptunaSweeperConf, provider="rl_optuna_sweeper"
)
