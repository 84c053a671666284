"""DrQ-v2-style agent: deterministic actor, twin-Q critic, n-step TD, optional random shifts.

One ``update`` = one gradient step for the critic and the encoder (critic loss only), one for
the actor (on detached features), then a soft update of the target critic. Each network has its
own Adam optimizer in ``agent.optimizers``; a learning-rate controller may overwrite their
``param_groups[i]["lr"]`` between updates, so the optimizers are created once and never replaced.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.base import Agent, load_optimizer_state
from agents.networks import Actor, Critic, RandomShiftsAug, make_encoder

_LINEAR = re.compile(r"^\s*linear\(\s*([^,]+),\s*([^,]+),\s*([^,)]+)\)\s*$")


class StddevSchedule:
    """Exploration noise scale as a pure function of the global step.

    ``spec`` is a constant (``0.2`` or ``"0.2"``) or ``"linear(init,final,duration)"``: moves from
    ``init`` to ``final`` over the first ``duration`` global steps, then holds ``final``.
    """

    def __init__(self, spec: float | str) -> None:
        self.spec = spec
        match = _LINEAR.match(spec) if isinstance(spec, str) else None
        try:
            values = [float(g) for g in match.groups()] if match else [float(spec)] * 2 + [1.0]
        except (TypeError, ValueError):
            values = []
        if len(values) != 3 or not np.isfinite(values).all() or min(values) < 0 or not values[2]:
            raise ValueError(
                f"agent.stddev_schedule={spec!r} is not understood; expected a "
                "number >= 0 such as 0.2, or 'linear(init,final,duration)' with "
                "duration > 0, e.g. 'linear(1.0,0.1,50000)'"
            )
        self.init, self.final, self.duration = values

    def __call__(self, step: int) -> float:
        progress = min(max(step / self.duration, 0.0), 1.0)
        return self.init + (self.final - self.init) * progress


def _noisy(
    mean: torch.Tensor, stddev: float | torch.Tensor, clip: float | None, unit_noise: torch.Tensor
) -> torch.Tensor:
    """``mean + stddev * unit_noise`` (noise optionally clipped), kept inside ``[-1, 1]``.

    The clamp passes gradients straight through, so an action at the bound still tells the actor
    which way Q increases. ``unit_noise`` is drawn by the caller (``torch.randn_like(mean)``), so
    a compiled update uses the same random numbers as an eager one.
    """
    noise = unit_noise * stddev
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    action = mean + noise
    return action + (action.clamp(-1.0, 1.0) - action).detach()


def keep_freed_memory(keep: bool = True) -> bool:
    """Let glibc's malloc reuse freed memory instead of returning it to the kernel (whole process).

    By default glibc serves each allocation above 32 MB with a fresh ``mmap`` and unmaps it when
    freed, so every activation-sized tensor of a pixel update (tens of them, ~55 MB each at
    84x84 and batch 256) is page-faulted and zero-filled by the kernel again, update after update.
    With ``mmap`` and heap trimming off, freed blocks stay in the heap and the next update reuses
    them. The price: the process keeps its peak heap (about one update's working set).
    ``keep=False`` puts back glibc's steady state (mmap above 32 MB, trim above 64 MB), for
    side-by-side benchmarks. Returns False (and changes nothing) where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4  # glibc's malloc.h
    if keep:
        settings = {m_mmap_max: 0, m_trim_threshold: 2**31 - 1}
    else:
        settings = {m_mmap_max: 65536, m_mmap_threshold: 32 << 20, m_trim_threshold: 64 << 20}
    return all(mallopt(option, value) for option, value in settings.items())


class DrQV2Agent(Agent):
    """DrQ-v2-style off-policy actor-critic for continuous actions in ``[-1, 1]``.

    Args:
        obs_shape: ``(D,)`` for state vectors or ``(C, H, W)`` for uint8 images.
        action_shape: shape of the action vector.
        device: torch device for all networks and updates.
        lr: initial learning rate of every optimizer (a schedule may overwrite it).
        encoder: bundle config: ``bundle`` (``"A"`` or ``"B"``) plus that bundle's knobs, passed
            to ``agents.networks.make_encoder``.
        feature_dim: width of the LayerNorm trunk in front of the actor and critic heads.
        hidden_dim: width of the actor and critic MLPs.
        critic_target_tau: Polyak rate of the target critic (per update).
        num_expl_steps: global steps with uniform random actions before the policy acts.
        stddev_schedule: exploration noise, see ``StddevSchedule``.
        stddev_clip: clip of the target-policy smoothing noise (also used in the actor loss).
        augment: random-shift augmentation; ``None`` turns it on for pixels only.
        channels_last: keep the pixel encoder's weights and inputs in NHWC memory format (the
            faster layout for CPU and GPU convolutions); same maths, float rounding aside.
        reuse_cpu_memory: on CPU, call :func:`keep_freed_memory` (process-wide) so big freed
            tensors are reused instead of page-faulted in again every update.
        compile: run the two losses and the optimizer steps through ``torch.compile``
            (``True``: inductor; a string names another dynamo backend, e.g. ``"eager"``).
            LRs are then tensors that the LR controller fills in place and the exploration
            noise scale is a tensor too, so neither a schedule nor the noise decay recompiles.
        amp: ``"bf16"`` runs the forward passes under ``torch.autocast`` in bfloat16 (for GPUs,
            and CPUs with bf16 matrix units such as Intel AMX; losses, optimizer state and
            weights stay float32). ``None``: float32 only.
    """

    lr_groups = ("encoder", "actor", "critic")  # one Adam each, in ``optimizers``

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        device: str,
        lr: float,
        encoder: Mapping[str, Any],
        feature_dim: int,
        hidden_dim: int,
        critic_target_tau: float,
        num_expl_steps: int,
        stddev_schedule: float | str,
        stddev_clip: float,
        augment: bool | None = None,
        channels_last: bool = True,
        reuse_cpu_memory: bool = True,
        compile: bool | str = False,
        amp: str | None = None,
    ) -> None:
        self.obs_shape = tuple(obs_shape)
        self.action_shape = tuple(action_shape)
        self.device = torch.device(device)
        self.critic_target_tau = critic_target_tau
        self.num_expl_steps = num_expl_steps
        self.stddev_schedule = StddevSchedule(stddev_schedule)
        self.stddev_clip = stddev_clip
        pixels = len(self.obs_shape) == 3
        if augment and not pixels:
            raise ValueError(
                "agent.augment=true needs pixel observations (C, H, W); "
                f"got obs_shape={self.obs_shape}"
            )
        if amp not in (None, "bf16"):
            raise ValueError(f"agent.amp={amp!r} is not understood; expected null or bf16")
        self.aug = RandomShiftsAug(pad=4) if (pixels if augment is None else augment) else None
        self.memory_format = (
            torch.channels_last if pixels and channels_last else torch.contiguous_format
        )
        self.amp_dtype = torch.bfloat16 if amp == "bf16" else None
        if reuse_cpu_memory and self.device.type == "cpu":
            keep_freed_memory()

        encoder_cfg = dict(encoder)
        if "bundle" not in encoder_cfg:
            raise ValueError(
                "agent.encoder needs a 'bundle' key (A or B); select one with "
                "encoder_bundle@agent=enc_A or enc_B"
            )
        bundle = str(encoder_cfg.pop("bundle"))
        if bundle == "gru":
            raise ValueError(
                "encoder_bundle@agent=gru is PPO's recurrent trunk (agent=ppo); DrQ-v2 takes "
                "enc_A or enc_B"
            )
        # Hydra hands list knobs over as ListConfig; the encoders only need a sequence.
        encoder_cfg = {
            k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
            for k, v in encoder_cfg.items()
        }
        action_dim = int(np.prod(self.action_shape))
        self.encoder = make_encoder(self.obs_shape, bundle, **encoder_cfg).to(
            self.device, memory_format=self.memory_format
        )
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # Eager: the fused kernel is ~2.5x faster than per-tensor Adam; on small CPU nets the
        # optimizer step would otherwise cost a quarter of the update. Compiled: inductor fuses
        # the step itself, and a tensor LR is an input of the graph instead of a constant baked
        # into it, so the controller's in-place writes never recompile.
        fused = not compile and self.device.type in ("cpu", "cuda")
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            name: torch.optim.Adam(
                getattr(self, name).parameters(),
                lr=torch.tensor(float(lr)) if compile else float(lr),
                fused=fused,
            )
            for name in self.lr_groups
        }
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._stddev = torch.zeros((), device=self.device)  # a graph input under compile
        self._critic_loss, self._actor_loss = self._critic_loss_impl, self._actor_loss_impl
        self._steps = {name: opt.step for name, opt in self.optimizers.items()}
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self._critic_loss = torch.compile(self._critic_loss_impl, backend=backend)
            self._actor_loss = torch.compile(self._actor_loss_impl, backend=backend)
            self._steps = {
                name: torch.compile(opt.step, backend=backend)
                for name, opt in self.optimizers.items()
            }

    def _pixels_in(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` on the agent's device in the encoder's memory format (a no-op for states)."""
        obs = obs.to(self.device, non_blocking=True)
        return obs.contiguous(memory_format=self.memory_format) if obs.dim() == 4 else obs

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action(s) for one observation ``obs_shape`` or a batch ``(N, *obs_shape)``.

        ``eval_mode`` gives the noiseless policy mean. Otherwise the action is uniform in
        ``[-1, 1]`` before ``num_expl_steps`` global steps and the mean plus Gaussian noise of
        scale ``stddev_schedule(step)`` after. Returns float32 in ``[-1, 1]``, batched like
        ``obs``. Noise uses torch's global generator (seed/checkpoint it in the trainer).
        """
        single = np.ndim(obs) == len(self.obs_shape)
        with torch.inference_mode():
            obs_t = torch.as_tensor(obs)
            if single:
                obs_t = obs_t.unsqueeze(0)
            mean = self.actor(self.encoder(self._pixels_in(obs_t)))
            if eval_mode:
                action = mean
            elif step < self.num_expl_steps:
                action = torch.empty_like(mean).uniform_(-1.0, 1.0)
            else:
                stddev = self.stddev_schedule(step)
                action = _noisy(mean, stddev, clip=None, unit_noise=torch.randn_like(mean))
        action_np = action.cpu().numpy().astype(np.float32, copy=False)
        shape = (-1, *self.action_shape)
        return action_np.reshape(shape)[0] if single else action_np.reshape(shape)

    def _critic_loss_impl(
        self,
        obs: torch.Tensor,
        next_obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        discount: torch.Tensor,
        stddev: torch.Tensor,
        next_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Critic loss with n-step twin-Q targets; also the (detached) features of ``obs`` for
        the actor step and the mean Q and target Q for the metrics."""
        with self._autocast():
            obs_repr = self.encoder(obs)
            with torch.no_grad():
                next_repr = self.encoder(next_obs)
                next_action = _noisy(self.actor(next_repr), stddev, self.stddev_clip, next_noise)
                target_q1, target_q2 = self.critic_target(next_repr, next_action)
                target_q = reward + discount * torch.min(target_q1, target_q2).float()
            q1, q2 = self.critic(obs_repr, action)
        q1, q2 = q1.float(), q2.float()
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        mean_q = ((q1 + q2).mean() / 2).detach()
        # Detached features: the encoder learns from the critic loss only.
        return critic_loss, obs_repr.detach(), mean_q, target_q.mean()

    def _actor_loss_impl(
        self, features: torch.Tensor, stddev: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        with self._autocast():
            policy_action = _noisy(self.actor(features), stddev, self.stddev_clip, noise)
            actor_q1, actor_q2 = self.critic(features, policy_action)
        return -torch.min(actor_q1, actor_q2).float().mean()

    def update(self, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        """One critic+encoder step, one actor step and a target soft update on ``batch``.

        ``batch`` is ``ReplayBuffer.sample()``'s dict (``obs``, ``action``, ``reward``,
        ``discount``, ``next_obs``). Returns floats: ``critic_loss``, ``critic_q`` (mean of
        both Q heads), ``critic_target_q``, ``actor_loss`` and ``stddev`` (exploration noise).
        """
        stddev = self.stddev_schedule(step)
        self._stddev.fill_(stddev)
        action = batch["action"].to(self.device).flatten(1)
        reward = batch["reward"].to(self.device).view(-1, 1)
        discount = batch["discount"].to(self.device).view(-1, 1)
        obs = batch["obs"].to(self.device, non_blocking=True)
        next_obs = batch["next_obs"].to(self.device, non_blocking=True)
        if self.aug is not None:  # shifted as stored (uint8): a quarter of the bytes of floats
            obs, next_obs = self.aug(obs), self.aug(next_obs)
        obs, next_obs = self._pixels_in(obs), self._pixels_in(next_obs)
        # Both noise draws come first, in a fixed order: eager and compiled updates see the same.
        next_noise = torch.randn_like(action)
        policy_noise = torch.randn_like(action)

        critic_loss, features, mean_q, target_q = self._critic_loss(
            obs, next_obs, action, reward, discount, self._stddev, next_noise
        )
        self.optimizers["encoder"].zero_grad(set_to_none=True)
        self.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self._steps["critic"]()
        self._steps["encoder"]()

        actor_loss = self._actor_loss(features, self._stddev, policy_noise)
        self.optimizers["actor"].zero_grad(set_to_none=True)
        # inputs= limits backprop to the actor: no wasted (and stale) critic weight gradients.
        actor_loss.backward(inputs=self._actor_params)
        self._steps["actor"]()

        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.critic_target_tau)
            values = torch.stack(
                [critic_loss.detach(), mean_q, target_q, actor_loss.detach()]
            ).tolist()  # one device sync per update instead of one per metric
        names = ("critic_loss", "critic_q", "critic_target_q", "actor_loss")
        metrics = dict(zip(names, values, strict=True))
        metrics["stddev"] = stddev
        return metrics

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Plain state_dicts of the networks and optimizers (``torch.load(weights_only=True)``)."""
        state: dict[str, dict[str, Any]] = {
            name: getattr(self, name).state_dict() for name in self.lr_groups
        }
        state["critic_target"] = self.critic_target.state_dict()
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into this agent's existing networks and optimizers in place."""
        for name in self.lr_groups:
            getattr(self, name).load_state_dict(state[name])
        self.critic_target.load_state_dict(state["critic_target"])
        for name, opt in self.optimizers.items():
            load_optimizer_state(opt, state["optimizers"][name])
