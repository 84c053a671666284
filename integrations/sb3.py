"""Per-network learning-rate schedules for Stable-Baselines3 (the ``sb3`` extra).

SB3 trains each algorithm with one LR: at the start of every ``train()`` its
``_update_learning_rate`` writes ``lr_schedule(progress)`` into every param group. Here
:func:`attach_schedules` splits SB3's optimizers into param groups named after the preset's
networks, compiles the preset with :func:`lr_scheduler.compile_schedules` and replaces that
update, on this one model, by the engine's :class:`lr_scheduler.LRController` at SB3's global
step ``model.num_timesteps``. A pure function of ``num_timesteps`` continues exactly after
``model.save`` / ``PPO.load`` / ``learn(..., reset_num_timesteps=False)``.

Networks (the names a preset may use):

* PPO, A2C: ``encoder`` (the features extractor(s)), ``actor`` (``mlp_extractor.policy_net``,
  ``action_net``, ``log_std``), ``critic`` (``mlp_extractor.value_net``, ``value_net``); all in
  SB3's one ``policy.optimizer``, split into three groups.
* SAC, TD3 (and DDPG): ``encoder`` (the features extractor inside the actor's and the critic's
  optimizer), ``actor`` (the rest of ``actor.optimizer``), ``critic`` (the rest of
  ``critic.optimizer``); SAC also ``ent_coef`` (``ent_coef_optimizer``, with ``ent_coef="auto"``).

A network that has no parameters in this model (``encoder`` with SB3's default
``FlattenExtractor``; ``ent_coef`` with a fixed entropy coefficient) is validated like the
others and has nothing to act on; :attr:`SB3Schedules.unused` lists them.

Saved files stay plain SB3 files: the split optimizers write SB3's one-group state-dict layout
(Adam moments in SB3's parameter order) and read it back, so ``PPO.load`` works without this
package, and :func:`attach_schedules` on the loaded model rebuilds the same groups with their
state. The schedule's fingerprint is saved with the model (plain data), so re-attaching a
different schedule to a loaded model is refused unless ``allow_change=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import update_learning_rate

from lr_scheduler import (
    LRController,
    Schedule,
    ScheduleError,
    ScheduleSet,
    check_schedule_state,
    compile_schedules,
)

log = logging.getLogger("lr_scheduler")

ON_POLICY_NETWORKS = ("encoder", "actor", "critic")
SAC_NETWORKS = ("encoder", "actor", "critic", "ent_coef")
TD3_NETWORKS = ("encoder", "actor", "critic")
# PPO / A2C: parameter-name prefixes in ActorCriticPolicy -> network.
_ON_POLICY_PREFIXES = {
    "encoder": ("features_extractor.", "pi_features_extractor.", "vf_features_extractor."),
    "actor": ("mlp_extractor.policy_net.", "action_net.", "log_std"),
    "critic": ("mlp_extractor.value_net.", "value_net."),
}
# Saved with the model by SB3's save (plain JSON data): the schedule it was trained with.
_STATE_ATTR = "_lr_schedule_state"
_PRESETS = Path(__file__).resolve().parents[1] / "cfgs" / "lr_schedule"

ScheduleSource = Mapping[str, Any] | DictConfig | str | os.PathLike | None


def attach_schedules(
    model: BaseAlgorithm,
    schedule: ScheduleSource,
    *,
    total_timesteps: int,
    base_lr: float | None = None,
    context: Mapping[str, Any] | DictConfig | None = None,
    allow_change: bool = False,
) -> SB3Schedules:
    """Give each network of an SB3 model its own LR schedule, following ``model.num_timesteps``.

    Call it once per model object, before ``learn()``: on a new model, and again on the model
    ``PPO.load(...)`` returns (the schedule continues from the loaded ``num_timesteps``; keep
    ``reset_num_timesteps=False`` in ``learn``). No callback is needed.

    Args:
        model: a PPO, A2C, SAC or TD3 (or DDPG) model, as built or loaded.
        schedule: an ``lr_schedule`` config (dict or OmegaConf node, the presets' format); a
            shipped preset's name (``"differential"``) or a path to a preset YAML file (either
            form of ``cfgs/lr_schedule/``); a mapping network -> :class:`lr_scheduler.Schedule`
            (e.g. from ``get_lr_scheduler``); or ``None`` for the base LR everywhere.
        total_timesteps: the whole run's length in SB3 timesteps (summed over envs), across
            every ``learn`` call: ``${run_frac:x}`` and open interval ends resolve against it.
        base_lr: the base LR (``${base_lr:x}``, networks the schedule does not name); default
            the model's own initial ``learning_rate``.
        context: the rest of your config, where the schedule interpolates other keys.
        allow_change: re-attaching to a loaded model with a schedule other than the one it was
            saved with is refused unless this is True (the new schedule rules from then on).

    Raises:
        ScheduleError: invalid schedule (naming the key path), an unsupported algorithm, a
            network name the algorithm lacks, or a model that already has schedules attached.
    """
    networks = _networks(model)
    if isinstance(model.__dict__.get("_update_learning_rate"), _ScheduledUpdate):
        raise ScheduleError(
            "", "this model already has schedules attached; call .detach() on them first"
        )
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int):
        raise ScheduleError("total_timesteps", f"expected an int > 0, got {total_timesteps!r}")
    if total_timesteps <= 0:
        raise ScheduleError("total_timesteps", f"expected an int > 0, got {total_timesteps}")
    base = float(model.lr_schedule(1.0)) if base_lr is None else float(base_lr)
    schedules = _compile(schedule, networks, base, total_timesteps, context)
    saved = model.__dict__.get(_STATE_ATTR)  # set on a model saved with schedules, then loaded
    if saved is not None:
        check_schedule_state(schedules, saved, allow_change)
    return SB3Schedules(model, schedules)


class SB3Schedules:
    """The schedules attached to one SB3 model (made by :func:`attach_schedules`).

    While attached, the model's ``_update_learning_rate`` writes each network's
    ``schedule(model.num_timesteps)`` into its param groups, checks them, and logs
    ``train/lr_<network>`` read back from the groups (SB3's ``train/learning_rate``, one LR that
    no group uses any more, is not logged).
    """

    def __init__(self, model: BaseAlgorithm, schedules: ScheduleSet):
        self.model = model
        self.schedules = schedules
        self._split = [_SplitOptimizer(model, attr, groups) for attr, groups in _layout(model)]
        bound = {net for split in self._split for net in split.networks}
        self.networks: tuple[str, ...] = tuple(n for n in schedules if n in bound)
        self.unused: tuple[str, ...] = tuple(n for n in schedules if n not in bound)
        if self.unused:
            log.info("sb3: %s have no parameters in this model", ", ".join(self.unused))
        self._controllers = [
            LRController.for_named_groups({n: schedules[n] for n in s.networks}, s.optimizer)
            for s in self._split
        ]
        model.__dict__[_STATE_ATTR] = {
            "fingerprint": schedules.fingerprint,
            "spec": schedules.to_spec(),
        }
        model._update_learning_rate = _ScheduledUpdate(self)
        model._excluded_save_params = _ExcludedSaveParams(model)
        self.apply()  # the groups hold the schedule's LR from now on, not SB3's

    def apply(self) -> dict[str, float]:
        """Write every network's LR for ``model.num_timesteps`` into its groups and return
        network -> LR read back from them (:class:`lr_scheduler.LRMismatchError` if a group
        holds something else)."""
        step = int(self.model.num_timesteps)
        held: dict[str, float] = {}
        for controller in self._controllers:
            controller.apply(step)
            held.update(controller.verify(step))
        return held

    def lrs(self) -> dict[str, float]:
        """network -> the LR its param groups hold now."""
        return {n: lr for c in self._controllers for n, lr in c.read().items()}

    def detach(self) -> None:
        """Give the model back SB3's single-LR behaviour: one param group per optimizer in SB3's
        order (optimizer state kept), SB3's own ``_update_learning_rate``."""
        for split in self._split:
            split.merge()
        self._split, self._controllers = [], []  # freed: their load hooks stop acting
        for name in ("_update_learning_rate", "_excluded_save_params", _STATE_ATTR):
            self.model.__dict__.pop(name, None)

    def _update(self, optimizers: list[torch.optim.Optimizer] | torch.optim.Optimizer) -> None:
        """Replaces ``model._update_learning_rate`` (called at the start of each ``train()``)."""
        ours = [s.optimizer for s in self._split]
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            if not any(optimizer is o for o in ours):  # not split here: SB3's own LR, as before
                model = self.model
                update_learning_rate(
                    optimizer, model.lr_schedule(model._current_progress_remaining)
                )
        for name, lr in self.apply().items():
            self.model.logger.record(f"train/lr_{name}", lr)


class _ScheduledUpdate:
    """``model._update_learning_rate`` while schedules are attached. SB3's ``save`` leaves it
    out of the file (:class:`_ExcludedSaveParams`)."""

    def __init__(self, owner: SB3Schedules):
        self.owner = owner

    def __call__(self, optimizers: list[torch.optim.Optimizer] | torch.optim.Optimizer) -> None:
        self.owner._update(optimizers)


class _ExcludedSaveParams:
    """``model._excluded_save_params`` while schedules are attached: SB3's list plus the two
    instance overrides, so a saved file holds plain SB3 data (and the schedule's fingerprint)."""

    def __init__(self, model: BaseAlgorithm):
        self.model = model

    def __call__(self) -> list[str]:
        sb3 = type(self.model)._excluded_save_params(self.model)
        return [*sb3, "_update_learning_rate", "_excluded_save_params"]


class _SplitOptimizer:
    """One of SB3's optimizers with its parameters split into groups named by network, in place
    (the same optimizer object and per-parameter state), and its state dict converted to and
    from SB3's one-group layout: :meth:`_to_sb3` and :meth:`_from_sb3` are mirror images."""

    def __init__(self, model: BaseAlgorithm, attr: str, groups: Mapping[str, list[torch.Tensor]]):
        optimizer = _getattr_path(model, attr)
        if len(optimizer.param_groups) != 1:
            raise ScheduleError(
                "", f"{type(model).__name__}.{attr} has {len(optimizer.param_groups)} param "
                "groups; attach_schedules expects SB3's one group (build the model without "
                "changing its optimizer's groups)",
            )  # fmt: skip
        self.optimizer = optimizer
        self.order: list[torch.Tensor] = list(optimizer.param_groups[0]["params"])
        self.networks = tuple(groups)
        hyper = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        optimizer.param_groups.clear()
        for name, params in groups.items():
            optimizer.add_param_group({**hyper, "params": list(params), "name": name})
        self._hooks = [
            optimizer.register_state_dict_post_hook(self._to_sb3),
            optimizer.register_load_state_dict_pre_hook(self._from_sb3),
        ]

    def _to_sb3(self, optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
        """The grouped state dict as SB3's: one group, parameters numbered in SB3's order."""
        grouped = [p for group in optimizer.param_groups for p in group["params"]]
        number = {id(p): i for i, p in enumerate(grouped)}  # torch numbers them in group order
        state = state_dict["state"]
        group = {k: v for k, v in state_dict["param_groups"][0].items() if k != "name"}
        group["params"] = list(range(len(self.order)))
        remapped = {
            j: state[number[id(p)]] for j, p in enumerate(self.order) if number[id(p)] in state
        }
        return {"state": remapped, "param_groups": [group]}

    def _from_sb3(self, optimizer: torch.optim.Optimizer, state_dict: dict) -> dict | None:
        """SB3's one-group state dict (a saved file) as this optimizer's groups."""
        saved = state_dict["param_groups"]
        if len(saved) != 1 or len(saved[0]["params"]) != len(self.order):
            return None  # not SB3's layout of these parameters: torch reports the mismatch
        position = {id(p): j for j, p in enumerate(self.order)}
        numbers = saved[0]["params"]
        hyper = {k: v for k, v in saved[0].items() if k not in ("params", "name")}
        groups = [
            {**hyper, "name": g["name"], "params": [numbers[position[id(p)]] for p in g["params"]]}
            for g in optimizer.param_groups
        ]
        return {"state": state_dict["state"], "param_groups": groups}

    def merge(self) -> None:
        """Back to SB3's one group (hyperparameters of the first group, SB3's order)."""
        for hook in self._hooks:
            hook.remove()
        hyper = {
            k: v for k, v in self.optimizer.param_groups[0].items() if k not in ("params", "name")
        }
        self.optimizer.param_groups.clear()
        self.optimizer.add_param_group({**hyper, "params": self.order})


def _networks(model: BaseAlgorithm) -> tuple[str, ...]:
    """The network names ``model``'s algorithm accepts in a schedule."""
    if isinstance(model, SAC):
        return SAC_NETWORKS
    if isinstance(model, TD3):  # DDPG is a TD3
        return TD3_NETWORKS
    if isinstance(model, PPO | A2C):
        return ON_POLICY_NETWORKS
    raise ScheduleError(
        "", f"attach_schedules supports PPO, A2C, SAC, TD3 and DDPG, not {type(model).__name__}"
    )


def _layout(model: BaseAlgorithm) -> list[tuple[str, dict[str, list[torch.Tensor]]]]:
    """Each of the model's optimizers (attribute path) and its parameters by network."""
    if isinstance(model, PPO | A2C):
        policy = model.policy
        return [("policy.optimizer", _by_prefix(policy, "policy", _ON_POLICY_PREFIXES, None))]
    encoder = {"encoder": ("features_extractor.",)}
    layout = [
        ("actor.optimizer", _by_prefix(model.actor, "actor", encoder, "actor")),
        ("critic.optimizer", _by_prefix(model.critic, "critic", encoder, "critic")),
    ]
    if isinstance(model, SAC) and model.ent_coef_optimizer is not None:
        layout.append(("ent_coef_optimizer", {"ent_coef": [model.log_ent_coef]}))
    return layout


def _by_prefix(
    module: torch.nn.Module,
    where: str,
    prefixes: Mapping[str, Sequence[str]],
    default: str | None,
) -> dict[str, list[torch.Tensor]]:
    """The parameters of ``module.optimizer`` by network: the first whose prefix the
    parameter's name starts with, else ``default``. Networks without parameters are left out."""
    names = {id(p): n for n, p in module.named_parameters()}
    groups: dict[str, list[torch.Tensor]] = {}
    for param in module.optimizer.param_groups[0]["params"]:
        name = names.get(id(param))
        network = None if name is None else next(
            (net for net, pre in prefixes.items() if name.startswith(tuple(pre))), default
        )  # fmt: skip
        if network is None:
            raise ScheduleError(
                "", f"{where}.optimizer holds parameter {name or '(not in ' + where + ')'} that "
                f"belongs to none of {list(prefixes)}: attach_schedules knows SB3's own policy "
                "layout (features extractor, mlp_extractor policy_net / value_net, action_net, "
                "value_net, log_std)",
            )  # fmt: skip
        groups.setdefault(network, []).append(param)
    return groups


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _compile(
    source: ScheduleSource,
    networks: tuple[str, ...],
    base_lr: float,
    total_timesteps: int,
    context: Mapping[str, Any] | DictConfig | None,
) -> ScheduleSet:
    """Any accepted form of ``schedule`` -> the validated :class:`ScheduleSet` of ``networks``."""
    if isinstance(source, str | os.PathLike):
        source, file_context = _load_preset(source)
        context = file_context if context is None else context
    if (
        isinstance(source, Mapping)
        and source
        and all(isinstance(v, Schedule) for v in source.values())
    ):
        unknown = [n for n in source if n not in networks]
        if unknown:
            raise ScheduleError(
                f"lr_schedule.{unknown[0]}", f"unknown network '{unknown[0]}'; accepted: "
                f"{', '.join(networks)}",
            )  # fmt: skip
        base = Schedule.constant(base_lr)
        given = {n: source.get(n, base) for n in networks}
        return ScheduleSet(given, base_lr=base_lr, total_steps=total_timesteps, scheduled=source)
    return compile_schedules(
        source, base_lr=base_lr, total_steps=total_timesteps, networks=networks,
        context=context, num_stages=0,
    )  # fmt: skip


def _load_preset(source: str | os.PathLike) -> tuple[DictConfig, DictConfig | None]:
    """A preset file (a path, or a shipped preset's name) -> its ``lr_schedule`` node and, for
    the ``# @package _global_`` form, the file's root (other keys it interpolates)."""
    path = Path(source)
    if not path.is_file() and path.suffix == "" and len(path.parts) == 1:
        path = _PRESETS / f"{source}.yaml"
    if not path.is_file():
        shipped = sorted(p.stem for p in _PRESETS.glob("*.yaml"))
        raise ScheduleError(
            "lr_schedule", f"no preset file {str(source)!r}; accepted: a path to a YAML file, or a "
            f"shipped preset: {', '.join(shipped) or '(none found next to this package)'}",
        )  # fmt: skip
    root = OmegaConf.load(path)
    if isinstance(root, DictConfig) and "lr_schedule" in root:
        return root.lr_schedule, root
    return root, None
