"""Running observation normalisation and reward scaling (what MuJoCo-sized returns need in PPO).

Both follow the peers (SB3's ``VecNormalize``, gymnasium's ``NormalizeObservation`` /
``NormalizeReward`` as CleanRL wraps them):

- observations: ``clip((obs - mean) / sqrt(var + eps), -clip, clip)``, with the mean and variance
  of every observation seen in training so far (each batch is counted before it is transformed);
- rewards: ``clip(reward / sqrt(var(G) + eps), -clip, clip)``, where ``G`` is each env's running
  discounted return (``G = gamma * G + reward``, reset at episode ends) and ``var(G)`` its running
  variance; the reward is scaled, not centred, so the sign of every reward is kept.

Their statistics are run state: ``state_dict`` / ``load_state_dict`` carry them exactly (float64,
as tensors), and evaluation transforms with ``update=False``, so it never moves them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

EPS = 1e-8


class RunningMeanStd:
    """Mean and (population) variance of every sample seen, merged batch by batch (Chan et al.'s
    parallel update), in float64. ``count`` starts at a tiny value, as the peers do, so the
    first batch's statistics are (to 1e-4) its own."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, batch: np.ndarray) -> None:
        """Count the samples ``batch[B, *shape]``."""
        batch = np.asarray(batch, dtype=np.float64)
        n = batch.shape[0]
        if n == 0:
            return
        if n == 1:  # one env: the common case, without numpy's reductions (they dominate)
            b_mean, b_m2 = batch[0], 0.0
        else:
            b_mean = batch.mean(axis=0)
            b_m2 = np.square(batch - b_mean).sum(axis=0)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_m2 + np.square(delta) * (self.count * n / total)
        self.mean = np.asarray(self.mean + delta * (n / total))
        self.var = np.asarray(m2 / total)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(self.mean.copy()),
            "var": torch.from_numpy(self.var.copy()),
            "count": float(self.count),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != self.mean.shape:
            raise ValueError(
                f"normaliser statistics of shape {mean.shape}; this run's observations are "
                f"{self.mean.shape}"
            )
        self.mean = mean.copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = float(state["count"])


class ObservationNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` over running statistics."""

    def __init__(self, shape: tuple[int, ...], clip: float) -> None:
        self.stats = RunningMeanStd(shape)
        self.clip = float(clip)

    def __call__(self, obs: np.ndarray, update: bool) -> np.ndarray:
        """``obs[B, *shape]`` transformed (float32); ``update`` counts the batch first
        (training), ``False`` leaves the statistics as they are (evaluation, bootstraps)."""
        obs = np.asarray(obs, dtype=np.float64)
        if update:
            self.stats.update(obs)
        scaled = (obs - self.stats.mean) / np.sqrt(self.stats.var + EPS)
        # minimum/maximum in place: a third of np.clip's per-call cost on one env's vector
        np.minimum(np.maximum(scaled, -self.clip, out=scaled), self.clip, out=scaled)
        return scaled.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stats.load_state_dict(state)


class RewardScaler:
    """Rewards divided by the running std of each env's discounted return, then clipped.

    The discounted returns in flight (one per env) are not checkpointed: a resumed run starts
    new episodes, whose returns start at 0, exactly as here after ``load_state_dict``.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float) -> None:
        self.stats = RunningMeanStd(())
        self.gamma, self.clip = float(gamma), float(clip)
        self.returns = np.zeros(num_envs, dtype=np.float64)

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scale one vector step's ``reward[N]`` (float32); ``done[N]`` ends those envs'
        returns after this step."""
        self.returns = self.returns * self.gamma + reward
        self.stats.update(self.returns)
        scaled = np.asarray(reward, dtype=np.float64) / np.sqrt(self.stats.var + EPS)
        np.minimum(np.maximum(scaled, -self.clip, out=scaled), self.clip, out=scaled)
        self.returns[np.asarray(done, dtype=bool)] = 0.0
        return scaled.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return self.stats.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stats.load_state_dict(state)
        self.returns[:] = 0.0


class Normalization:
    """What a policy's inputs and rewards go through in training: an optional
    `ObservationNormalizer` and an optional `RewardScaler`, checkpointed together (the run's
    ``normalization`` state). With both off every call is the identity."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_envs: int,
        gamma: float,
        norm_obs: bool,
        norm_reward: bool,
        clip_obs: float,
        clip_reward: float,
    ) -> None:
        self.obs_norm = ObservationNormalizer(obs_shape, clip_obs) if norm_obs else None
        self.reward_scaler = RewardScaler(num_envs, gamma, clip_reward) if norm_reward else None

    @property
    def enabled(self) -> bool:
        return self.obs_norm is not None or self.reward_scaler is not None

    def observations(self, obs: np.ndarray, update: bool) -> np.ndarray:
        """``obs[B, D]`` as the policy sees them (float32)."""
        if self.obs_norm is None:
            return np.asarray(obs, dtype=np.float32)
        return self.obs_norm(obs, update)

    def rewards(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """One vector step's rewards as the update sees them (a new float32 array)."""
        if self.reward_scaler is None:
            return np.array(reward, dtype=np.float32)
        return self.reward_scaler(reward, done)

    def state_dict(self) -> dict[str, Any]:
        return {
            "obs": None if self.obs_norm is None else self.obs_norm.state_dict(),
            "reward": None if self.reward_scaler is None else self.reward_scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, part in (("obs", self.obs_norm), ("reward", self.reward_scaler)):
            saved = state.get(name)
            if (part is None) != (saved is None):
                raise ValueError(
                    f"the checkpoint {'has' if saved is not None else 'has no'} {name} "
                    f"normalisation statistics and this run has it "
                    f"{'off' if part is None else 'on'}"
                )
            if part is not None:
                part.load_state_dict(saved)
