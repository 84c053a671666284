"""ReplayBuffer: exact n-step targets, truncation vs termination, ring wrap-around, checkpoints.

Every observation value is unique (a running counter), so a sampled ``obs`` names the
transition it came from and each row can be checked against a plain-Python reference.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.replay_buffer import ReplayBuffer

torch.set_num_threads(1)

GAMMA = 0.9


class Recorder:
    """Feeds episodes to a buffer and keeps every transition for the reference targets."""

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer
        self.transitions: list[dict] = []
        self.counter = 0.0

    def episode(self, rewards: list[float], ending: str) -> None:
        """Add ``len(rewards)`` steps; ``ending`` is "terminated", "truncated" or "ongoing".

        After "ongoing" the episode is not over: the next call continues it.
        """
        obs = self.counter
        for i, reward in enumerate(rewards):
            last = i == len(rewards) - 1
            terminated = last and ending == "terminated"
            episode_end = last and ending != "ongoing"
            self.buffer.add([obs], [reward, -reward], reward, [obs + 1], terminated, episode_end)
            self.transitions.append(
                dict(
                    obs=obs,
                    reward=reward,
                    next_obs=obs + 1,
                    terminated=terminated,
                    episode_end=episode_end,
                )
            )
            obs += 1
        # A new episode starts from a fresh value; an ongoing one from its last next_obs.
        self.counter = obs if ending == "ongoing" else obs + 1

    def expected(self) -> dict[float, tuple[float, float, float]]:
        """obs value -> (n-step reward, discount, next obs) for every stored transition."""
        stored = self.transitions[-self.buffer.capacity :]
        targets = {}
        for start, transition in enumerate(stored):
            reward, discount = 0.0, 1.0
            for step in stored[start : start + self.buffer.nstep]:
                reward += discount * step["reward"]
                discount *= GAMMA
                last = step
                if step["episode_end"]:
                    break
            if last["terminated"]:
                discount = 0.0
            targets[transition["obs"]] = (reward, discount, last["next_obs"])
        return targets


def make_buffer(capacity: int = 100, nstep: int = 3, batch_size: int = 64) -> ReplayBuffer:
    return ReplayBuffer((1,), np.float32, (2,), capacity, batch_size, nstep, GAMMA, seed=0)


def assert_batch_matches(batch: dict[str, torch.Tensor], recorder: Recorder) -> set[float]:
    expected = recorder.expected()
    seen = set()
    for row in range(len(batch["obs"])):
        obs = float(batch["obs"][row, 0])
        assert obs in expected, f"sampled obs {obs} is not a stored transition"
        reward, discount, next_obs = expected[obs]
        assert float(batch["reward"][row, 0]) == pytest.approx(reward, rel=1e-5, abs=1e-6)
        assert float(batch["discount"][row, 0]) == pytest.approx(discount, rel=1e-6, abs=0)
        assert float(batch["next_obs"][row, 0]) == next_obs
        stored_reward = next(t["reward"] for t in recorder.transitions if t["obs"] == obs)
        assert batch["action"][row].tolist() == pytest.approx([stored_reward, -stored_reward])
        seen.add(obs)
    return seen


def target_of(batch: dict[str, torch.Tensor], key: str, obs: float) -> float:
    """``batch[key]`` for the rows sampled from the transition whose obs is ``obs``."""
    rows = batch[key][batch["obs"][:, 0] == obs, 0].unique()
    assert len(rows) == 1, f"transition {obs} sampled {len(rows)} times with distinct {key}"
    return float(rows[0])


def test_sample_shapes_and_dtypes():
    buffer = ReplayBuffer(
        (3, 8, 8), np.uint8, (2,), capacity=10, batch_size=4, nstep=2, discount=GAMMA, seed=0
    )
    frames = [np.full((3, 8, 8), i, dtype=np.uint8) for i in range(4)]
    for i in range(3):
        buffer.add(frames[i], np.zeros(2), 1.0, frames[i + 1], False, i == 2)
    batch = buffer.sample()
    assert batch["obs"].shape == batch["next_obs"].shape == (4, 3, 8, 8)
    assert batch["obs"].dtype == batch["next_obs"].dtype == torch.uint8
    assert batch["action"].shape == (4, 2) and batch["action"].dtype == torch.float32
    assert batch["reward"].shape == batch["discount"].shape == (4, 1)
    # The n-step successor frame is the obs two steps later (or the final frame).
    for row in range(4):
        start = int(batch["obs"][row, 0, 0, 0])
        assert int(batch["next_obs"][row, 0, 0, 0]) == min(start + 2, 3)


def test_pixels_are_stored_once_per_transition():
    buffer = ReplayBuffer(
        (3, 64, 64), np.uint8, (2,), capacity=1000, batch_size=32, nstep=3, discount=GAMMA, seed=0
    )
    frame_bytes = 3 * 64 * 64
    assert buffer._obs.nbytes == 1000 * frame_bytes


def test_full_nstep_return_inside_an_episode():
    recorder = Recorder(make_buffer(nstep=3))
    recorder.episode([1.0, 2.0, 4.0, 8.0, 16.0], "truncated")
    batch = recorder.buffer.sample()
    assert_batch_matches(batch, recorder)
    assert target_of(batch, "reward", 0.0) == pytest.approx(1 + GAMMA * 2 + GAMMA**2 * 4)
    assert target_of(batch, "discount", 0.0) == pytest.approx(GAMMA**3)
    assert target_of(batch, "next_obs", 0.0) == 3.0


@pytest.mark.parametrize("ending, discount", [("terminated", 0.0), ("truncated", GAMMA**2)])
def test_termination_stops_bootstrap_but_truncation_bootstraps(ending, discount):
    recorder = Recorder(make_buffer(nstep=3))
    recorder.episode([1.0, 2.0], ending)
    recorder.episode([100.0, 100.0, 100.0], "truncated")  # must never leak into episode one
    batch = recorder.buffer.sample()
    assert_batch_matches(batch, recorder)
    assert target_of(batch, "reward", 0.0) == pytest.approx(1.0 + GAMMA * 2.0)
    assert target_of(batch, "discount", 0.0) == pytest.approx(discount)
    # Both endings carry the episode's final observation, never the next episode's reset obs.
    assert target_of(batch, "next_obs", 0.0) == 2.0


def test_newest_transition_bootstraps_from_its_own_next_obs():
    recorder = Recorder(make_buffer(nstep=3))
    recorder.episode([1.0, 2.0], "ongoing")
    batch = recorder.buffer.sample()
    assert_batch_matches(batch, recorder)
    assert target_of(batch, "reward", 1.0) == pytest.approx(2.0)
    assert target_of(batch, "discount", 1.0) == pytest.approx(GAMMA)
    assert target_of(batch, "next_obs", 1.0) == 2.0


def test_ring_wraps_around_and_keeps_the_latest_transitions():
    recorder = Recorder(make_buffer(capacity=7, nstep=3, batch_size=256))
    for episode in range(5):
        recorder.episode([float(episode), 1.0, -1.0], "terminated" if episode % 2 else "truncated")
    assert len(recorder.buffer) == 7
    seen = set()
    for _ in range(4):
        seen |= assert_batch_matches(recorder.buffer.sample(), recorder)
    assert seen == {t["obs"] for t in recorder.transitions[-7:]}


def test_can_sample_needs_a_full_batch():
    recorder = Recorder(make_buffer(batch_size=4))
    recorder.episode([0.0, 0.0, 0.0], "ongoing")
    assert not recorder.buffer.can_sample
    recorder.episode([0.0], "ongoing")
    assert recorder.buffer.can_sample


def test_add_rejects_a_missing_episode_end_flag():
    buffer = make_buffer()
    buffer.add([0.0], [0.0, 0.0], 0.0, [1.0], terminated=False, episode_end=False)
    with pytest.raises(ValueError, match="episode_end"):
        buffer.add([5.0], [0.0, 0.0], 0.0, [6.0], terminated=False, episode_end=False)


def _to_tensors(state: dict) -> dict:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()}


@pytest.mark.parametrize("through_torch_save", [False, True])
def test_state_dict_round_trip_continues_identically(through_torch_save):
    recorder = Recorder(make_buffer(capacity=9, nstep=3, batch_size=16))
    for episode in range(4):
        recorder.episode([1.0, 2.0, 3.0], "truncated" if episode % 2 else "terminated")
    recorder.episode([5.0], "ongoing")
    recorder.buffer.sample()
    state = recorder.buffer.state_dict()
    if through_torch_save:
        file = io.BytesIO()
        torch.save(_to_tensors(state), file)
        file.seek(0)
        state = torch.load(file, weights_only=True)

    restored = make_buffer(capacity=9, nstep=3, batch_size=16)
    restored.load_state_dict(state)
    # Continue both: the same adds and the same samples must follow.
    twin = Recorder(restored)
    twin.transitions, twin.counter = list(recorder.transitions), recorder.counter
    for rec in (recorder, twin):
        rec.episode([7.0, 8.0], "terminated")
    for _ in range(3):
        original, copy = recorder.buffer.sample(), restored.sample()
        for key in original:
            assert torch.equal(original[key], copy[key]), key
    assert len(restored) == len(recorder.buffer)


def test_load_state_dict_refuses_a_different_capacity():
    recorder = Recorder(make_buffer(capacity=9))
    recorder.episode([1.0], "terminated")
    with pytest.raises(ValueError, match="capacity"):
        make_buffer(capacity=10).load_state_dict(recorder.buffer.state_dict())


episodes_strategy = st.lists(
    st.tuples(
        st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=6),
        st.sampled_from(["terminated", "truncated", "ongoing"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    episodes=episodes_strategy,
    capacity=st.integers(1, 12),
    nstep=st.integers(1, 4),
)
def test_every_sample_matches_the_reference(episodes, capacity, nstep):
    recorder = Recorder(make_buffer(capacity=capacity, nstep=nstep, batch_size=32))
    for rewards, ending in episodes:
        recorder.episode(rewards, ending)
    assert len(recorder.buffer) == min(capacity, len(recorder.transitions))
    for _ in range(2):
        assert_batch_matches(recorder.buffer.sample(), recorder)
