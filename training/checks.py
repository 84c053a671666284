"""Start-up checks of the run knobs: what the structured schema cannot say (ranges, choices,
keys added with ``+``). They run before any env, agent or file exists, like schedule
validation, and fail with one `ConfigError` naming the key path and what is accepted."""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from schedules.errors import _accepted
from training.schema import TrainConfig


class ConfigError(ValueError):
    """A run knob is out of range or unknown; the message names its key path."""

    def __init__(self, path: str, problem: str):
        self.path = path
        super().__init__(f"{path}: {problem}")


def _unknown_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Keys the schema does not declare (``+key=value`` bypasses Hydra's own check). A schema
    that takes extra keys (``lr_schedule``: the agent's groups) leaves them to its checker."""
    known = {f.name: f for f in fields(schema)}
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key not in known and issubclass(schema, dict):
            continue
        if key not in known:
            raise _unknown(path, str(key), known, "A key added with '+' is not read by anything, "
                           "so it is refused rather than ignored")  # fmt: skip
        if (sub := _sub_schema(known[key])) is not None:
            _unknown_keys(cfg[key], sub, prefix=f"{path}.")


def _unknown(path: str, key: str, known, note: str = "") -> ConfigError:
    tail = f". {note}" if note else ""
    return ConfigError(path, f"unknown key{_accepted(key, sorted(known))}{tail}")


def _sub_schema(field_: Any) -> type | None:
    """The dataclass a schema field holds (``replay``, ``resume``, ...), or None."""
    default = field_.default_factory
    if callable(default) and is_dataclass(sub := default()):
        return type(sub)
    return None


def check_override_keys(overrides: list[str], cfg: DictConfig, groups: set[str]) -> None:
    """A plain ``key=value`` override naming a key that ``cfg`` (the config composed from the
    command line's group choices) does not have. Hydra refuses it naming the schema's class,
    or asks for ``+``; this names the key path, a close match and what is accepted. Group
    choices, ``hydra.*`` and ``lr_schedule.*`` (the schedule compiler's) are left alone."""
    for override in overrides:
        key, eq, _ = override.partition("=")
        if not eq or key[:1] in "+~" or "/" in key or "@" in key:
            continue
        parts = key.split(".")
        if parts[0] in ("hydra", "lr_schedule") or (len(parts) == 1 and key in groups):
            continue
        node: Any = cfg
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig):
                break  # a list index or a value: not a key path to check
            if part not in node:
                raise _unknown(".".join(parts[: depth + 1]), part, node.keys())
            node = node._get_node(part)  # without resolving interpolations


def _agent(cfg: DictConfig) -> None:
    """``agent._target_`` imports and names an `agents.base.Agent` (the contract the loops use)."""
    from agents.base import agent_class

    target = cfg.agent.get("_target_") if isinstance(cfg.agent, DictConfig) else None
    if not target:
        raise ConfigError("agent._target_", "missing; accepted: agent=drqv2, agent=ppo, or a "
                          "config naming your agents.base.Agent subclass")  # fmt: skip
    try:
        cls = agent_class(target)
    except TypeError as err:
        raise ConfigError("agent._target_", str(err)) from None
    except Exception as err:  # hydra's get_class wraps the import error
        cause = err.__cause__ or err.__context__ or err
        while (cause.__cause__ or cause.__context__) is not None:  # the import's own error
            cause = cause.__cause__ or cause.__context__
        raise ConfigError(
            "agent._target_",
            f"cannot import {target} ({type(cause).__name__}: {cause}); is "
            "its package installed or on PYTHONPATH?",
        ) from None
    _agent_arguments(cfg.agent, cls)


_PLAIN = (int, float, bool, str, type(None))


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The plain types an annotation allows (``int``, ``float | None``, ``bool | str``), or
    None when it allows more (a sequence, a mapping, ``Any``): not checked here."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = typing.get_args(hint) if union else (hint,)
    return allowed if all(a in _PLAIN for a in allowed) else None


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed  # not an int, whatever Python says
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)


def _agent_arguments(agent_cfg: DictConfig, cls: type) -> None:
    """Every key of ``agent`` is an argument of the agent's constructor, and a value of the
    plain type its annotation names (``agent.num_steps=12.5`` would otherwise be cut to 12,
    ``agent.hidden_dim=oops`` fail inside torch). Before any env exists, like the rest."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve at run time: types not checked
        hints = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in agent_cfg:
        key = str(key)
        if key.startswith("_"):  # _target_, and Hydra's _partial_, _recursive_, _convert_
            continue
        if key not in params:
            if takes_any:
                continue
            raise _unknown(f"agent.{key}", key, [k for k, p in params.items()
                           if p.kind is not p.VAR_POSITIONAL],
                           f"{cls.__name__}.__init__ takes no '{key}'")  # fmt: skip
        allowed = _plain_types(hints[key]) if key in hints else None
        if allowed is None or OmegaConf.is_missing(agent_cfg, key):
            continue
        try:
            value = agent_cfg[key]
        except Exception:  # an interpolation that resolves later (or fails there, by name)
            continue
        if not _fits(value, allowed):
            names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed)
            raise ConfigError(f"agent.{key}", f"expected {names} ({cls.__name__}), got {value!r}")


def _at_least(cfg: DictConfig, path: str, low: int, what: str) -> None:
    node: Any = cfg
    for part in path.split("."):
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int) or node < low:
        raise ConfigError(path, f"must be a whole number >= {low} ({what}), got {node!r}")


def check_run_config(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first run knob that cannot give a meaningful run."""
    _unknown_keys(cfg, TrainConfig)
    _agent(cfg)
    _at_least(cfg, "action_repeat", 1, "env frames per agent action")
    _at_least(cfg, "num_train_frames", int(cfg.action_repeat),
              f"at least one agent step of action_repeat={cfg.action_repeat} frames")  # fmt: skip
    _at_least(cfg, "num_seed_frames", 0, "frames of random actions before the first update")
    for name in ("eval_every_frames", "log_every_frames", "checkpoint_every_frames"):
        _at_least(cfg, name, 1, "a period in env frames")
    _at_least(cfg, "num_eval_episodes", 1, "episodes averaged per evaluation")
    _at_least(cfg, "update_every_steps", 1, "global steps between updates")
    _at_least(cfg, "num_threads", 1, "torch threads")
    _at_least(cfg, "replay.capacity", 1, "transitions kept")
    _at_least(cfg, "replay.batch_size", 1, "transitions per update")
    _at_least(cfg, "replay.nstep", 1, "steps per n-step return")
    discount = cfg.replay.discount
    if not 0.0 < discount <= 1.0:
        raise ConfigError("replay.discount", f"must be in (0, 1], got {discount!r}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ConfigError("lr", f"the base learning rate must be a finite number > 0, got {cfg.lr}")
    if cfg.progress not in ("auto", "bar", "lines"):
        raise ConfigError("progress", f"accepted: auto, bar, lines; got {cfg.progress!r}")
    device = str(cfg.device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                "device", f"{device!r} asked for, but torch sees no CUDA device here; use cpu"
            )
    elif device != "cpu":
        raise ConfigError("device", f"accepted: cpu, cuda, cuda:N; got {device!r}")
