"""Build the run a config describes: the loop that fits the agent, from a composed config or
from command-line style overrides (benchmarks and tests use the latter)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

import training.schema  # noqa: F401  (registers the root schema before composition)
from agents.base import agent_class
from lr_scheduler import ScheduleSet
from training.checks import ConfigError, check_override_keys
from training.run import compile_run_schedules
from training.workspace import Workspace

CONFIG_DIR = Path(__file__).resolve().parents[1] / "cfgs"


def make_workspace(cfg: DictConfig, run_dir: Path, schedules: ScheduleSet) -> Workspace:
    """The loop that fits the agent: `agents.base.OnPolicyAgent`s (PPO) collect rollouts from
    vector envs (`training.onpolicy`); other agents learn off-policy from replay
    (`training.offpolicy`)."""
    if agent_class(cfg.agent._target_).on_policy:
        from training.onpolicy import OnPolicyWorkspace

        return OnPolicyWorkspace(cfg, run_dir, schedules)
    from training.offpolicy import OffPolicyWorkspace

    return OffPolicyWorkspace(cfg, run_dir, schedules)


def compose_config(overrides: list[str]) -> DictConfig:
    """The run config composed from ``cfgs/`` as the CLI would, without Hydra's run dir."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def workspace_from_overrides(overrides: list[str], run_dir: Path) -> Workspace:
    """The workspace the CLI would train, e.g. ``["agent=ppo", "env=cartpole", "lr=1e-3"]``."""
    cfg = compose_config(overrides)
    return make_workspace(cfg, Path(run_dir), compile_run_schedules(cfg))


def explain_rejected_config(overrides: list[str]) -> str | None:
    """Why the schema refused a composition, in the engine's words (key path, close match):
    Hydra names the class and the preset file of a key it does not know, not its path. The
    config is composed again with an untyped root and handed to the schedule compiler; None if
    that finds nothing (the problem is elsewhere)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from lr_scheduler import ScheduleError
    from training.schema import TrainConfig

    plain = OmegaConf.to_container(OmegaConf.structured(TrainConfig))
    plain["lr_schedule"] = {}
    store = ConfigStore.instance()
    store.store(name="train_schema", node=plain)
    # Without the schema, a key a preset does not spell can only be added: force-add overrides
    # into lr_schedule, so a misspelt one reaches the compiler too.
    forced = [
        f"++{o}" if o.startswith("lr_schedule.") and "=" in o else o for o in overrides
    ]  # fmt: skip
    try:
        cfg = compose_config(forced)
        compile_run_schedules(cfg)
    except ScheduleError as err:
        return f"invalid learning-rate schedule: {err}"
    except Exception:  # composes no better without the schema: a misspelt run key?
        pass
    finally:
        store.store(name="train_schema", node=TrainConfig)
    groups = {d.name for root in _config_dirs(overrides) if root.is_dir()
              for d in root.iterdir() if d.is_dir()}  # fmt: skip
    choices = [o for o in overrides if _is_group_choice(o, groups)]
    try:
        cfg = compose_config(choices)
    except Exception:  # a group choice itself is wrong: Hydra's message stands
        return None
    try:
        check_override_keys(overrides, cfg, groups)
    except ConfigError as err:
        return f"invalid config: {err}"
    return None  # Hydra's message stands


def _is_group_choice(override: str, groups: set[str]) -> bool:
    """``agent=ppo``, ``encoder_bundle@agent=enc_B``, ``hydra/launcher=joblib``,
    ``hydra.searchpath=[...]``: what selects configs rather than sets a value."""
    key = override.partition("=")[0].lstrip("+~")
    return key in groups or "@" in key or "/" in key or key.startswith("hydra.")


def _config_dirs(overrides: list[str]) -> list[Path]:
    """cfgs/ and the ``hydra.searchpath=[file://...]`` folders of a command line."""
    dirs = [CONFIG_DIR]
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            dirs += [Path(p.strip()[len("file://"):]) for p in value.strip("[]").split(",")
                     if p.strip().startswith("file://")]  # fmt: skip
    return dirs
