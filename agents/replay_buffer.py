"""In-memory ring replay buffer with n-step returns computed at sample time.

Storage layout: one observation per transition. The observation that follows transition ``i``
is ``obs[i + 1]`` while the episode goes on, so it is not stored again; it is kept apart only
where it cannot be read from the ring, i.e. for the last transition of each episode and for the
newest transition (whose successor has not arrived yet). Pixels therefore cost one frame per
step (64x64x3 uint8 at capacity 100k: ~1.2 GB) instead of two.

n-step targets follow transition ``i`` for up to ``nstep`` steps and stop early at the end of its
episode or at the newest stored transition:

- ``reward = sum_{m<k} gamma^m r_{i+m}``
- ``discount = gamma^k``, or ``0`` when the episode *terminated* within those ``k`` steps
  (truncation, e.g. a time limit, still bootstraps from ``next_obs``)
- ``next_obs`` = the observation after those ``k`` steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch


class ReplayBuffer:
    """Fixed-capacity FIFO of transitions; the oldest are overwritten once it is full.

    Args:
        obs_shape: shape of one observation, e.g. ``(12,)`` or ``(3, 64, 64)``.
        obs_dtype: storage dtype of observations (``uint8`` for pixels, ``float32`` for states).
        action_shape: shape of one action.
        capacity: number of transitions kept.
        batch_size: transitions per ``sample()``.
        nstep: maximum number of rewards summed into one target.
        discount: per-step discount ``gamma``.
        seed: seed of the buffer's own sampling generator (checkpointed with the buffer).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        obs_dtype: npt.DTypeLike,
        action_shape: Sequence[int],
        capacity: int,
        batch_size: int,
        nstep: int,
        discount: float,
        seed: int,
    ) -> None:
        if capacity < 1 or batch_size < 1 or nstep < 1:
            raise ValueError(
                f"capacity, batch_size and nstep must be >= 1, got {capacity}, "
                f"{batch_size}, {nstep}"
            )
        self.capacity = int(capacity)
        self.batch_size = int(batch_size)
        self.nstep = int(nstep)
        self.discount = float(discount)
        # zeros (not empty) so that never-written slots hold defined values; the OS still only
        # commits the pages that get written.
        self._obs = np.zeros((self.capacity, *obs_shape), dtype=obs_dtype)
        self._action = np.zeros((self.capacity, *action_shape), dtype=np.float32)
        self._reward = np.zeros(self.capacity, dtype=np.float32)
        self._terminated = np.zeros(self.capacity, dtype=bool)
        self._episode_end = np.zeros(self.capacity, dtype=bool)
        # Successor observations that are not obs[slot + 1]: episode ends and the newest slot.
        self._next_obs_apart: dict[int, np.ndarray] = {}
        self._has_next_obs_apart = np.zeros(self.capacity, dtype=bool)
        self._cursor = 0
        self._size = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    @property
    def can_sample(self) -> bool:
        """Whether the buffer holds at least one batch worth of transitions."""
        return self._size >= self.batch_size

    def add(
        self,
        obs: npt.ArrayLike,
        action: npt.ArrayLike,
        reward: float,
        next_obs: npt.ArrayLike,
        terminated: bool,
        episode_end: bool,
    ) -> None:
        """Store one transition.

        Args:
            terminated: the episode reached a terminal state (no bootstrapping past it).
            episode_end: ``terminated or truncated``; the next ``add`` starts a new episode.

        Raises:
            ValueError: if ``obs`` is not the previous transition's ``next_obs`` although that
                transition did not end its episode (a missing ``episode_end`` flag).
        """
        obs = np.asarray(obs, dtype=self._obs.dtype)
        slot = self._cursor
        previous = (slot - 1) % self.capacity
        if self._size > 0 and not self._episode_end[previous]:
            expected = self._next_obs_apart[previous]
            if expected.tobytes() != obs.tobytes():
                raise ValueError(
                    "ReplayBuffer.add: obs differs from the previous transition's next_obs, but "
                    "that transition was not flagged episode_end=True; pass episode_end="
                    "terminated or truncated on the last step of every episode"
                )
            # From now on the successor is readable from the ring.
            self._forget_next_obs(previous)
        self._forget_next_obs(slot)
        self._obs[slot] = obs
        self._action[slot] = action
        self._reward[slot] = reward
        self._terminated[slot] = terminated
        self._episode_end[slot] = episode_end
        self._next_obs_apart[slot] = np.array(next_obs, dtype=self._obs.dtype, copy=True)
        self._has_next_obs_apart[slot] = True
        self._cursor = (slot + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def mark_episode_end(self) -> None:
        """Close the newest transition's episode as a time-out (no termination).

        Used on resume: the interrupted episode cannot be continued, so the next ``add`` starts
        a new one, and n-step targets bootstrap from the stored successor instead of crossing.
        """
        if self._size:
            self._episode_end[(self._cursor - 1) % self.capacity] = True

    def _forget_next_obs(self, slot: int) -> None:
        self._next_obs_apart.pop(slot, None)
        self._has_next_obs_apart[slot] = False

    def sample(self) -> dict[str, torch.Tensor]:
        """Draw ``batch_size`` transitions uniformly (with replacement) with n-step targets.

        Returns CPU tensors: ``obs`` and ``next_obs`` in the storage dtype ``(B, *obs_shape)``,
        ``action`` ``(B, *action_shape)``, ``reward`` and ``discount`` float32 ``(B, 1)``.
        """
        if self._size == 0:
            raise RuntimeError("ReplayBuffer.sample called on an empty buffer")
        start = self._rng.integers(0, self._size, size=self.batch_size)
        newest = (self._cursor - 1) % self.capacity
        steps_to_newest = (newest - start) % self.capacity
        reward = np.zeros(self.batch_size, dtype=np.float64)
        discount = np.ones(self.batch_size, dtype=np.float64)
        last = start.copy()
        active = np.ones(self.batch_size, dtype=bool)
        for k in range(self.nstep):
            slot = (start + k) % self.capacity
            reward += np.where(active, discount * self._reward[slot], 0.0)
            discount = np.where(active, discount * self.discount, discount)
            last = np.where(active, slot, last)
            active &= ~(self._episode_end[slot] | (steps_to_newest == k))
        discount *= ~self._terminated[last]

        next_obs = self._obs[(last + 1) % self.capacity]
        for row in np.flatnonzero(self._has_next_obs_apart[last]):
            next_obs[row] = self._next_obs_apart[int(last[row])]
        return {
            "obs": torch.from_numpy(self._obs[start]),
            "action": torch.from_numpy(self._action[start]),
            "reward": torch.from_numpy(reward.astype(np.float32)[:, None]),
            "discount": torch.from_numpy(discount.astype(np.float32)[:, None]),
            "next_obs": torch.from_numpy(next_obs),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue adding and sampling exactly where this buffer is.

        Values are numpy arrays (the filled part of the ring), plain ints, and the sampling
        generator's ``bit_generator.state`` dict. The big arrays are views of the live buffer, not
        copies (a pixel buffer can be gigabytes): save them before the next ``add``.
        ``torch.load(weights_only=True)`` refuses numpy arrays, so convert them with
        ``torch.from_numpy`` (zero-copy) before ``torch.save``; ``load_state_dict`` accepts both.
        """
        slots = np.array(sorted(self._next_obs_apart), dtype=np.int64)
        apart = (
            np.stack([self._next_obs_apart[int(s)] for s in slots])
            if len(slots)
            else np.zeros((0, *self._obs.shape[1:]), dtype=self._obs.dtype)
        )
        n = self._size
        return {
            "capacity": self.capacity,
            "cursor": self._cursor,
            "size": n,
            "obs": self._obs[:n],
            "action": self._action[:n],
            "reward": self._reward[:n],
            "terminated": self._terminated[:n],
            "episode_end": self._episode_end[:n],
            "next_obs_apart_slots": slots,
            "next_obs_apart": apart,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` taken from a buffer with the same capacity and shapes."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"replay checkpoint has capacity {int(state['capacity'])}, this "
                f"buffer {self.capacity}; set the replay capacity back to match"
            )
        n = int(state["size"])
        self._size = n
        self._cursor = int(state["cursor"])
        self._obs[:n] = np.asarray(state["obs"])
        self._action[:n] = np.asarray(state["action"])
        self._reward[:n] = np.asarray(state["reward"])
        self._terminated[:n] = np.asarray(state["terminated"])
        self._episode_end[:n] = np.asarray(state["episode_end"])
        self._next_obs_apart.clear()
        self._has_next_obs_apart[:] = False
        apart = np.asarray(state["next_obs_apart"])
        for slot, next_obs in zip(np.asarray(state["next_obs_apart_slots"]), apart, strict=True):
            self._next_obs_apart[int(slot)] = next_obs.astype(self._obs.dtype, copy=True)
            self._has_next_obs_apart[int(slot)] = True
        self._rng.bit_generator.state = state["rng_state"]
