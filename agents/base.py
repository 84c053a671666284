"""What the launcher needs of an agent: the contract both shipped agents and a user's own follow.

An agent is built by Hydra from the ``agent`` config group (``_target_: my_pkg.MyAgent``), with
the env's shapes added by the loop (``obs_shape``, ``action_shape``; on-policy agents also get
``discrete``). The launcher then uses only what this file names:

- the **parameter groups** it declares (`lr_groups`): the names a schedule may use
  (``lr_schedule.<group>``), any names at all (``encoder``, ``temperature``, ``world_model``,
  ...); checked before any env exists, so a preset naming a group the agent lacks is refused
  with the agent's list;
- its **optimizers** (`optimizers`): group name -> the optimizer holding that group's
  parameters. Several names may share one optimizer; its param groups then carry the group's
  name in ``param_group["name"]``. The LR controller writes each group's LR there before every
  update, and TensorBoard's ``lr_<group>`` is read back from them;
- `act` and `update`, the loop's two calls;
- its **state** (`state_dict` / `load_state_dict`): plain tensors and numbers, networks and
  optimizers, loadable with ``torch.load(weights_only=True)``. Use `load_optimizer_state` to
  load an optimizer: the LR after a load is the checkpoint's, kept in the agent's own LR object
  (a tensor stays the same tensor, which a ``torch.compile``d step reads), and the controller
  then writes the schedule's value for the resumed step;
- whether it learns **on-policy** (rollouts from vector envs, `OnPolicyAgent`) or off-policy
  (a replay buffer, `Agent`), and whether it **reports the approximate KL** each update (the
  KL guard reads ``update()``'s ``approx_kl``).

The loops are `training.offpolicy` (replay: ``update(batch, step)`` with the batch of
``agents.replay_buffer.ReplayBuffer.sample()``) and `training.onpolicy` (see `OnPolicyAgent`).
docs/BRING_YOUR_OWN.md walks through a user's agent in its own package (examples/).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch


class Agent(abc.ABC):
    """An off-policy agent (learns from replay); subclass `OnPolicyAgent` for rollouts.

    Class attributes:
        lr_groups: the names of the agent's parameter groups, the keys a schedule may name.
            Override `groups_for` when they depend on the agent's config.
        on_policy: set by `OnPolicyAgent`; picks the loop.
        reports_kl: ``update()`` returns ``approx_kl``, the update's mean approximate KL
            between the old and new policy (``lr_schedule.kl_guard`` needs it).
    """

    lr_groups: ClassVar[tuple[str, ...]] = ()
    on_policy: ClassVar[bool] = False
    reports_kl: ClassVar[bool] = False

    #: group name -> the optimizer holding it (set in ``__init__``, never replaced after).
    optimizers: Mapping[str, torch.optim.Optimizer]

    @classmethod
    def groups_for(cls, agent_cfg: Mapping[str, Any]) -> tuple[str, ...]:
        """The parameter groups an agent built from ``agent_cfg`` (the ``agent`` config node)
        will have; the schedule compiler reads this before anything is built."""
        return tuple(cls.lr_groups)

    @abc.abstractmethod
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """The action for one observation at global step ``step``; ``eval_mode``: the
        deterministic policy, no exploration. Runs under ``torch.no_grad()``."""

    @abc.abstractmethod
    def update(self, batch: Any, step: Any) -> dict[str, float]:
        """One learning step; returns its metrics as floats (``train/<name>`` in TensorBoard).
        The run stops as failed (``Diverged``) if a metric is NaN or infinite. Off-policy:
        ``batch`` is a replay sample and ``step`` the global step."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Networks and optimizers as plain state_dicts (tensors, numbers, strings)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` into this agent's existing modules and optimizers, in place
        (use `load_optimizer_state` for each optimizer)."""

    def begin_episode(self) -> None:  # noqa: B027  (optional: most agents keep no state)
        """A new evaluation episode starts: a recurrent policy drops its state here."""


class OnPolicyAgent(Agent):
    """An agent trained from rollouts of ``num_envs`` vector envs, ``num_steps`` steps each.

    Besides `Agent`'s, the on-policy loop (`training.onpolicy`) calls the methods below. The
    agent's constructor also receives ``discrete`` (a ``Discrete`` action space: then
    ``action_shape`` is ``(n,)``, the number of actions).
    """

    on_policy: ClassVar[bool] = True

    num_envs: int
    num_steps: int
    gamma: float
    gae_lambda: float
    discrete: bool
    action_shape: tuple[int, ...]  # () for discrete actions
    hidden_size: int  # recurrent state width (0: feedforward)

    #: running observation / reward statistics (``enabled``, ``state_dict``), or None: a
    #: checkpoint keeps them as of the rollout's start when a signal cuts a rollout.
    normalization: Any = None

    @abc.abstractmethod
    def initial_state(self, n: int) -> torch.Tensor:
        """The recurrent state of ``n`` fresh episodes (``(n, 0)`` when feedforward)."""

    @abc.abstractmethod
    def act_batch(
        self, obs: np.ndarray, starts: np.ndarray, hidden: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """Sample actions for all envs: ``(action, log_prob, value, next_hidden)``."""

    @abc.abstractmethod
    def value(self, obs: np.ndarray, starts: np.ndarray, hidden: torch.Tensor) -> np.ndarray:
        """State values of a batch of observations (the bootstrap of a rollout's end)."""

    def observe(self, obs: np.ndarray, update: bool = True) -> np.ndarray:
        """Observations as the policy sees them (normalised); ``update``: move the statistics."""
        return obs

    def scale_rewards(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Rewards as the update sees them (a copy: the loop adds bootstrap values to it)."""
        return np.array(reward, dtype=np.float32)

    @abc.abstractmethod
    def update(
        self, batch: Mapping[str, torch.Tensor], refresh_lr: Callable[[float], None]
    ) -> dict[str, float]:
        """One update on a rollout batch (``training.onpolicy.Rollout.batch``). Call
        ``refresh_lr(progress)`` whenever the LR should move (``progress``: the fraction of the
        update done, 0 to 1); the controller then writes the LR of the rollout's step at that
        fraction. Must return ``policy_loss`` and ``value_loss`` (and ``approx_kl`` when
        ``reports_kl``)."""


def agent_class(target: str) -> type[Agent]:
    """The agent class a ``_target_`` names, checked against this contract.

    Raises:
        TypeError: naming ``agent._target_`` and what is missing.
    """
    import hydra

    cls = hydra.utils.get_class(target)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(
            f"{target} ({getattr(cls, '__name__', cls)}) is not an agents.base.Agent (or "
            "OnPolicyAgent) subclass; see docs/BRING_YOUR_OWN.md"
        )
    return cls


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping each group's LR object.

    Loading replaces the param-group dicts and their ``lr`` values. A tensor LR (the agents'
    ``compile=true``) would become the checkpoint's tensor, which a compiled step that read the
    old one never sees; so the agent's own tensor is kept and filled with the loaded value. A
    float LR is the loaded one. Either way the LR controller writes the schedule's value for
    the resumed step next.
    """
    before = [group["lr"] for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, lr in zip(optimizer.param_groups, before, strict=True):
        if isinstance(lr, torch.Tensor):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
