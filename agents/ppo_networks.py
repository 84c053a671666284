"""PPO's policy networks: the two feedforward designs and the GRU trunk.

Every design exposes the same three parameter groups, so every ``lr_schedule`` preset applies:
``encoder`` (the trunk), ``actor`` (policy head, plus the Gaussian log-std for continuous actions)
and ``critic`` (value head). Every design also takes the same input, a batch of *sequences*
``obs[L, S, D]`` with ``starts[L, S]`` (1.0 where an episode begins) and a hidden state ``[S, H]``:
the feedforward ones ignore the state (``L`` is 1 in their minibatches), the GRU resets it to zero
at each episode start, so one update path serves both.

- bundle ``A``: per-tower, SB3's default ``MlpPolicy`` layout: separate tanh towers for policy and
  value, the first layer of each tower is the ``encoder`` group.
- bundle ``B``: one shared trunk (Linear + LayerNorm + tanh, ``mlp_width`` wide) feeding both heads.
- bundle ``gru``: Linear + tanh, then a GRU cell (``gru_hidden`` wide) shared by both heads.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def layer(in_dim: int, out_dim: int, gain: float = math.sqrt(2)) -> nn.Linear:
    """Linear layer with the orthogonal init of the standard PPO implementations."""
    linear = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)
    return linear


def head(in_dim: int, hidden_dim: int, out_dim: int, gain: float) -> nn.Sequential:
    """One tanh hidden layer and an output layer (gain 0.01 for the policy, 1 for the value)."""
    return nn.Sequential(layer(in_dim, hidden_dim), nn.Tanh(), layer(hidden_dim, out_dim, gain))


class TowerPolicy(nn.Module):
    """Bundle A: separate tanh towers (SB3 MlpPolicy); the first layer of each is the encoder."""

    hidden_size = 0

    def __init__(self, obs_dim: int, out_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict(
            {"pi": layer(obs_dim, hidden_dim), "vf": layer(obs_dim, hidden_dim)}
        )
        self.actor = head(hidden_dim, hidden_dim, out_dim, gain=0.01)
        self.critic = head(hidden_dim, hidden_dim, 1, gain=1.0)
        # The layers of each tower in order, for a forward without per-module call overhead
        # (it halves the cost of acting, which runs once per vector-env step).
        towers = [self.encoder["pi"], self.actor[0], self.actor[2]]
        towers += [self.encoder["vf"], self.critic[0], self.critic[2]]
        self._towers = tuple((linear.weight, linear.bias) for linear in towers)
        self._numpy_towers: tuple | None = None

    def numpy_forward(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(policy output, value) of ``obs[N, D]`` in numpy (float32), on the CPU: acting's
        fast path. It reads the parameters' own memory (views; the optimizer and
        ``load_state_dict`` write in place), so it always sees the current weights."""
        if self._numpy_towers is None:
            self._numpy_towers = tuple(
                (w.detach().numpy().T, b.detach().numpy()) for w, b in self._towers
            )
        (w1, b1), (w2, b2), (w3, b3), (v1, c1), (v2, c2), (v3, c3) = self._numpy_towers
        pi = np.tanh(np.tanh(obs @ w1 + b1) @ w2 + b2) @ w3 + b3
        value = np.tanh(np.tanh(obs @ v1 + c1) @ v2 + c2) @ v3 + c3
        return pi, value[:, 0]

    def forward(
        self,
        obs: torch.Tensor,
        starts: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(policy output, value, hidden) for ``obs[..., D]``; ``starts``/``hidden`` unused."""
        (w1, b1), (w2, b2), (w3, b3), (v1, c1), (v2, c2), (v3, c3) = self._towers
        pi = F.linear(torch.tanh(F.linear(torch.tanh(F.linear(obs, w1, b1)), w2, b2)), w3, b3)
        value = F.linear(torch.tanh(F.linear(torch.tanh(F.linear(obs, v1, c1)), v2, c2)), v3, c3)
        return pi, value.squeeze(-1), hidden


class SharedPolicy(nn.Module):
    """Bundle B: one shared Linear + LayerNorm + tanh trunk, then a tanh head per output."""

    hidden_size = 0

    def __init__(self, obs_dim: int, out_dim: int, hidden_dim: int, mlp_width: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(layer(obs_dim, mlp_width), nn.LayerNorm(mlp_width), nn.Tanh())
        self.actor = head(mlp_width, hidden_dim, out_dim, gain=0.01)
        self.critic = head(mlp_width, hidden_dim, 1, gain=1.0)

    def forward(
        self,
        obs: torch.Tensor,
        starts: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        features = self.encoder(obs)
        return self.actor(features), self.critic(features).squeeze(-1), hidden


class GRUPolicy(nn.Module):
    """Bundle gru: Linear + tanh into a GRU cell; hidden state zeroed where an episode starts.

    ``forward`` takes ``obs[L, S, D]``, ``starts[L, S]`` and the state before the first step
    ``hidden[S, H]``, unrolls the cell over ``L`` (truncated BPTT: gradients stop at the sequence
    start) and returns outputs ``[L, S, ...]`` and the state after the last step. Acting is the
    same call with ``L = 1``.
    """

    def __init__(self, obs_dim: int, out_dim: int, hidden_dim: int, gru_hidden: int) -> None:
        super().__init__()
        self.hidden_size = gru_hidden
        self.encoder = nn.ModuleDict(
            {"inp": layer(obs_dim, hidden_dim), "gru": nn.GRUCell(hidden_dim, gru_hidden)}
        )
        for name, param in self.encoder["gru"].named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)
        self.actor = head(gru_hidden, hidden_dim, out_dim, gain=0.01)
        self.critic = head(gru_hidden, hidden_dim, 1, gain=1.0)

    def forward(
        self, obs: torch.Tensor, starts: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.tanh(self.encoder["inp"](obs))
        keep = (1.0 - starts).unsqueeze(-1)
        outputs = []
        for t in range(obs.shape[0]):
            hidden = self.encoder["gru"](x[t], hidden * keep[t])
            outputs.append(hidden)
        features = torch.stack(outputs)
        return self.actor(features), self.critic(features).squeeze(-1), hidden


def make_policy(obs_dim: int, out_dim: int, hidden_dim: int, encoder: dict) -> nn.Module:
    """The policy network of ``encoder['bundle']`` (``A``, ``B`` or ``gru``)."""
    bundle = str(encoder.get("bundle"))
    if bundle == "A":
        return TowerPolicy(obs_dim, out_dim, hidden_dim)
    if bundle == "B":
        return SharedPolicy(obs_dim, out_dim, hidden_dim, int(encoder.get("mlp_width", hidden_dim)))
    if bundle == "gru":
        return GRUPolicy(obs_dim, out_dim, hidden_dim, int(encoder.get("gru_hidden", hidden_dim)))
    raise ValueError(f"encoder.bundle={bundle!r} is unknown to PPO; expected one of A, B, gru")
