"""Soft actor-critic with a learned temperature: four parameter groups, four optimizers.

The groups a schedule may name are ``encoder`` (a state trunk shared by actor and critic,
trained by the critic loss), ``actor``, ``critic`` and ``temperature`` (the log of the entropy
coefficient). Everything the launcher needs is what `agents.base.Agent` declares.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.base import Agent, load_optimizer_state


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, out))


class TwinQ(nn.Module):
    def __init__(self, feature_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.q1 = _mlp(feature_dim + action_dim, hidden, 1)
        self.q2 = _mlp(feature_dim + action_dim, hidden, 1)

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([h, a], dim=-1)
        return self.q1(x), self.q2(x)


class SACAgent(Agent):
    """SAC for vector observations and actions in ``[-1, 1]`` (tanh-squashed Gaussian).

    Args:
        obs_shape, action_shape: filled in by the launcher from the env.
        lr: every group's LR until the schedule writes its own.
        feature_dim, hidden_dim: widths of the encoder's output and of the MLPs.
        tau: Polyak rate of the target critic (and target encoder) per update.
        init_temperature: the entropy coefficient at the start.
        num_expl_steps: global steps of uniform random actions before the policy acts.
        device: torch device.
    """

    lr_groups = ("encoder", "actor", "critic", "temperature")

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        lr: float,
        feature_dim: int = 32,
        hidden_dim: int = 64,
        tau: float = 0.01,
        init_temperature: float = 0.1,
        num_expl_steps: int = 500,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.action_shape = tuple(action_shape)
        action_dim = int(np.prod(action_shape))
        self.target_entropy = -float(action_dim)
        self.tau, self.num_expl_steps = float(tau), int(num_expl_steps)
        self.encoder = nn.Sequential(nn.Linear(int(np.prod(obs_shape)), feature_dim), nn.Tanh())
        self.actor = _mlp(feature_dim, hidden_dim, 2 * action_dim)
        self.critic = TwinQ(feature_dim, action_dim, hidden_dim)
        for module in (self.encoder, self.actor, self.critic):
            module.to(self.device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(
            float(np.log(init_temperature)), device=self.device, requires_grad=True
        )
        params = {
            "encoder": list(self.encoder.parameters()),
            "actor": list(self.actor.parameters()),
            "critic": list(self.critic.parameters()),
            "temperature": [self.log_alpha],
        }
        self.optimizers = {name: torch.optim.Adam(p, lr=float(lr)) for name, p in params.items()}

    def _policy(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A reparameterised tanh-Gaussian sample, its log-probability and the mean action."""
        mean, log_std = self.actor(h).chunk(2, dim=-1)
        std = log_std.clamp(-5.0, 2.0).exp()
        u = mean + std * torch.randn_like(mean)
        action = torch.tanh(u)
        log_prob = torch.distributions.Normal(mean, std).log_prob(u)
        log_prob = (log_prob - torch.log1p(-action.pow(2) + 1e-6)).sum(-1, keepdim=True)
        return action, log_prob, torch.tanh(mean)

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        if not eval_mode and step < self.num_expl_steps:
            return np.random.uniform(-1.0, 1.0, self.action_shape).astype(np.float32)
        h = self.encoder(torch.as_tensor(obs, dtype=torch.float32, device=self.device)[None])
        action, _, mean = self._policy(h)
        chosen = mean if eval_mode else action
        return chosen[0].cpu().numpy().astype(np.float32).reshape(self.action_shape)

    def update(self, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        obs = batch["obs"].to(self.device).float()
        next_obs = batch["next_obs"].to(self.device).float()
        action = batch["action"].to(self.device).flatten(1)
        reward, discount = batch["reward"].to(self.device), batch["discount"].to(self.device)
        alpha = self.log_alpha.exp().detach()

        with torch.no_grad():
            next_action, next_log_prob, _ = self._policy(self.encoder(next_obs))
            q1_t, q2_t = self.critic_target(self.encoder_target(next_obs), next_action)
            target = reward + discount * (torch.min(q1_t, q2_t) - alpha * next_log_prob)
        h = self.encoder(obs)
        q1, q2 = self.critic(h, action)
        critic_loss = F.mse_loss(q1, target) + F.mse_loss(q2, target)
        self.optimizers["encoder"].zero_grad(set_to_none=True)
        self.optimizers["critic"].zero_grad(set_to_none=True)
        critic_loss.backward()
        self.optimizers["critic"].step()
        self.optimizers["encoder"].step()

        features = h.detach()  # the actor learns on the encoder's features, not through them
        new_action, log_prob, _ = self._policy(features)
        q1_pi, q2_pi = self.critic(features, new_action)
        actor_loss = (alpha * log_prob - torch.min(q1_pi, q2_pi)).mean()
        self.optimizers["actor"].zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.optimizers["actor"].step()

        temperature_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.optimizers["temperature"].zero_grad(set_to_none=True)
        temperature_loss.backward()
        self.optimizers["temperature"].step()

        with torch.no_grad():
            for target_net, net in ((self.critic_target, self.critic),
                                    (self.encoder_target, self.encoder)):  # fmt: skip
                for t, p in zip(target_net.parameters(), net.parameters(), strict=True):
                    t.lerp_(p, self.tau)
        return {
            "critic_loss": float(critic_loss.detach()),
            "actor_loss": float(actor_loss.detach()),
            "temperature": float(alpha),
        }

    def state_dict(self) -> dict[str, Any]:
        modules = ("encoder", "actor", "critic", "encoder_target", "critic_target")
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in modules}
        state["log_alpha"] = self.log_alpha.detach().clone()
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("encoder", "actor", "critic", "encoder_target", "critic_target"):
            getattr(self, name).load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, opt in self.optimizers.items():
            load_optimizer_state(opt, state["optimizers"][name])
