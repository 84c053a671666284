"""DrQ-v2-style agent: deterministic actor, twin-Q critic, n-step TD, optional random shifts.

One ``update`` = one gradient step for the critic and the encoder (critic loss only), one for
the actor (on detached features), then a soft update of the target critic. Each network has its
own Adam optimizer in ``agent.optimizers``; a learning-rate controller may overwrite their
``param_groups[i]["lr"]`` between updates, so the optimizers are created once and never replaced.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.networks import Actor, Critic, RandomShiftsAug, make_encoder

NETWORKS = ("encoder", "actor", "critic")

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


def _noisy(mean: torch.Tensor, stddev: float, clip: float | None) -> torch.Tensor:
    """``mean + N(0, stddev)`` noise (optionally clipped), kept inside ``[-1, 1]``.

    The clamp passes gradients straight through, so an action at the bound still tells the actor
    which way Q increases.
    """
    noise = torch.randn_like(mean) * stddev
    if clip is not None:
        noise = noise.clamp(-clip, clip)
    action = mean + noise
    return action + (action.clamp(-1.0, 1.0) - action).detach()


class DrQV2Agent:
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
    """

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
        self.aug = RandomShiftsAug(pad=4) if (pixels if augment is None else augment) else None

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
        self.encoder = make_encoder(self.obs_shape, bundle, **encoder_cfg).to(self.device)
        repr_dim = self.encoder.repr_dim
        self.actor = Actor(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic = Critic(repr_dim, action_dim, feature_dim, hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        # The fused kernel is ~2.5x faster than per-tensor Adam; on small CPU nets the optimizer
        # step would otherwise cost a quarter of the update.
        fused = self.device.type in ("cpu", "cuda")
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            name: torch.optim.Adam(getattr(self, name).parameters(), lr=lr, fused=fused)
            for name in NETWORKS
        }
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action(s) for one observation ``obs_shape`` or a batch ``(N, *obs_shape)``.

        ``eval_mode`` gives the noiseless policy mean. Otherwise the action is uniform in
        ``[-1, 1]`` before ``num_expl_steps`` global steps and the mean plus Gaussian noise of
        scale ``stddev_schedule(step)`` after. Returns float32 in ``[-1, 1]``, batched like
        ``obs``. Noise uses torch's global generator (seed/checkpoint it in the trainer).
        """
        single = np.ndim(obs) == len(self.obs_shape)
        with torch.inference_mode():
            obs_t = torch.as_tensor(obs, device=self.device)
            if single:
                obs_t = obs_t.unsqueeze(0)
            mean = self.actor(self.encoder(obs_t.float()))
            if eval_mode:
                action = mean
            elif step < self.num_expl_steps:
                action = torch.empty_like(mean).uniform_(-1.0, 1.0)
            else:
                action = _noisy(mean, self.stddev_schedule(step), clip=None)
        action_np = action.cpu().numpy().astype(np.float32, copy=False)
        shape = (-1, *self.action_shape)
        return action_np.reshape(shape)[0] if single else action_np.reshape(shape)

    def _encode_batch(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device, non_blocking=True).float()
        if self.aug is not None:
            obs = self.aug(obs)
        return self.encoder(obs)

    def update(self, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        """One critic+encoder step, one actor step and a target soft update on ``batch``.

        ``batch`` is ``ReplayBuffer.sample()``'s dict (``obs``, ``action``, ``reward``,
        ``discount``, ``next_obs``). Returns floats: ``critic_loss``, ``critic_q`` (mean of
        both Q heads), ``critic_target_q``, ``actor_loss`` and ``stddev`` (exploration noise).
        """
        stddev = self.stddev_schedule(step)
        action = batch["action"].to(self.device).flatten(1)
        reward = batch["reward"].to(self.device).view(-1, 1)
        discount = batch["discount"].to(self.device).view(-1, 1)
        obs_repr = self._encode_batch(batch["obs"])
        with torch.no_grad():
            next_repr = self._encode_batch(batch["next_obs"])
            next_action = _noisy(self.actor(next_repr), stddev, self.stddev_clip)
            target_q1, target_q2 = self.critic_target(next_repr, next_action)
            target_q = reward + discount * torch.min(target_q1, target_q2)

        q1, q2 = self.critic(obs_repr, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.optimizers["encoder"].zero_grad(set_to_none=True)
        self.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self.optimizers["critic"].step()
        self.optimizers["encoder"].step()

        # Detached features: the encoder learns from the critic loss only.
        features = obs_repr.detach()
        policy_action = _noisy(self.actor(features), stddev, self.stddev_clip)
        actor_q1, actor_q2 = self.critic(features, policy_action)
        actor_q = torch.min(actor_q1, actor_q2)
        actor_loss = -actor_q.mean()
        self.optimizers["actor"].zero_grad(set_to_none=True)
        # inputs= limits backprop to the actor: no wasted (and stale) critic weight gradients.
        actor_loss.backward(inputs=self._actor_params)
        self.optimizers["actor"].step()

        with torch.no_grad():
            for target, online in zip(self._target_params, self._critic_params, strict=True):
                target.lerp_(online, self.critic_target_tau)
            values = torch.stack(
                [critic_loss, (q1 + q2).mean() / 2, target_q.mean(), actor_loss]
            ).tolist()  # one device sync per update instead of one per metric
        names = ("critic_loss", "critic_q", "critic_target_q", "actor_loss")
        metrics = dict(zip(names, values, strict=True))
        metrics["stddev"] = stddev
        return metrics

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Plain state_dicts of the networks and optimizers (``torch.load(weights_only=True)``)."""
        state: dict[str, dict[str, Any]] = {
            name: getattr(self, name).state_dict() for name in NETWORKS
        }
        state["critic_target"] = self.critic_target.state_dict()
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` into this agent's existing networks and optimizers in place."""
        for name in NETWORKS:
            getattr(self, name).load_state_dict(state[name])
        self.critic_target.load_state_dict(state["critic_target"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
