"""DrQV2Agent: acting, one update, per-network learning rates, checkpoints, and that it learns."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compiled_graphs
from hydra.utils import instantiate
from omegaconf import OmegaConf

from agents.drqv2 import DrQV2Agent, StddevSchedule
from agents.networks import RandomShiftsAug, make_encoder
from agents.replay_buffer import ReplayBuffer

NETWORKS = DrQV2Agent.lr_groups

torch.set_num_threads(1)

CFGS = Path(__file__).resolve().parents[1] / "cfgs"
STATE_SHAPE = (6,)
PIXEL_SHAPE = (3, 64, 64)
OBS_KINDS = {"state": STATE_SHAPE, "pixels": PIXEL_SHAPE}


def make_agent(obs_shape=STATE_SHAPE, bundle="A", **overrides) -> DrQV2Agent:
    kwargs = dict(
        obs_shape=obs_shape,
        action_shape=(2,),
        device="cpu",
        lr=1e-3,
        encoder={"bundle": bundle},
        feature_dim=16,
        hidden_dim=32,
        critic_target_tau=0.05,
        num_expl_steps=100,
        stddev_schedule="linear(1.0,0.1,1000)",
        stddev_clip=0.3,
    )
    kwargs.update(overrides)
    return DrQV2Agent(**kwargs)


def random_obs(obs_shape, *batch, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        return rng.integers(0, 256, (*batch, *obs_shape), dtype=np.uint8)
    return rng.standard_normal((*batch, *obs_shape)).astype(np.float32)


def random_batch(obs_shape, size=8, seed=0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.from_numpy(random_obs(obs_shape, size, seed=seed)),
        "action": torch.rand(size, 2, generator=gen) * 2 - 1,
        "reward": torch.randn(size, 1, generator=gen),
        "discount": torch.full((size, 1), 0.97),
        "next_obs": torch.from_numpy(random_obs(obs_shape, size, seed=seed + 1)),
    }


def params_of(agent: DrQV2Agent, name: str) -> list[torch.Tensor]:
    return [p.detach().clone() for p in getattr(agent, name).parameters()]


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


@pytest.mark.parametrize("bundle", ["A", "B"])
@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_act_returns_bounded_float32_actions(kind, bundle):
    agent = make_agent(OBS_KINDS[kind], bundle)
    obs = random_obs(OBS_KINDS[kind])
    for step, eval_mode in [(0, False), (10_000, False), (0, True)]:
        action = agent.act(obs, step, eval_mode)
        assert action.shape == (2,) and action.dtype == np.float32
        assert np.all(np.abs(action) <= 1.0)
    batched = agent.act(random_obs(OBS_KINDS[kind], 5), 10_000, eval_mode=False)
    assert batched.shape == (5, 2) and np.all(np.abs(batched) <= 1.0)


def test_act_explores_uniformly_then_follows_the_policy():
    agent = make_agent(num_expl_steps=50, stddev_schedule=0.0)
    obs = random_obs(STATE_SHAPE)
    greedy = agent.act(obs, 0, eval_mode=True)
    early = np.stack([agent.act(obs, 49, eval_mode=False) for _ in range(200)])
    assert early.std(axis=0).min() > 0.4  # uniform on [-1, 1] has std 0.58
    # Zero noise after the exploration phase: the policy's own action.
    np.testing.assert_allclose(agent.act(obs, 50, eval_mode=False), greedy, atol=1e-6)


@pytest.mark.parametrize("bundle", ["A", "B"])
@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_one_update_trains_all_three_networks(kind, bundle):
    agent = make_agent(OBS_KINDS[kind], bundle)
    before = {name: params_of(agent, name) for name in (*NETWORKS, "critic_target")}
    metrics = agent.update(random_batch(OBS_KINDS[kind]), step=500)
    for name in (*NETWORKS, "critic_target"):
        assert changed(before[name], params_of(agent, name)), f"{name} did not change"
    assert {"critic_loss", "critic_q", "critic_target_q", "actor_loss", "stddev"} <= set(metrics)
    assert all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())
    assert metrics["stddev"] == pytest.approx(StddevSchedule("linear(1.0,0.1,1000)")(500))


def test_encoder_and_critic_get_gradients_only_from_the_critic_loss():
    """The actor loss must not reach the encoder (detached features) nor the critic weights."""
    agent = make_agent(PIXEL_SHAPE)
    gradient_count: Counter[str] = Counter()
    for name in ("encoder", "critic"):
        for param in getattr(agent, name).parameters():
            param.register_hook(lambda grad, name=name: gradient_count.update([name]))
    agent.update(random_batch(PIXEL_SHAPE), step=500)
    # One backward pass (the critic loss) reaches each parameter exactly once.
    assert gradient_count["encoder"] == len(list(agent.encoder.parameters()))
    assert gradient_count["critic"] == len(list(agent.critic.parameters()))


@pytest.mark.parametrize("frozen", NETWORKS)
def test_lr_written_into_param_group_is_used_by_the_next_update(frozen):
    agent = make_agent()
    batch = random_batch(STATE_SHAPE)
    agent.optimizers[frozen].param_groups[0]["lr"] = 0.0
    before = {name: params_of(agent, name) for name in NETWORKS}
    agent.update(batch, step=500)
    for name in NETWORKS:
        assert changed(before[name], params_of(agent, name)) == (name != frozen), name

    agent.optimizers[frozen].param_groups[0]["lr"] = 1e-3
    frozen_before = params_of(agent, frozen)
    agent.update(batch, step=501)
    assert changed(frozen_before, params_of(agent, frozen))


def test_optimizers_are_one_adam_per_network():
    agent = make_agent()
    assert set(agent.optimizers) == set(NETWORKS)
    for name, optimizer in agent.optimizers.items():
        assert isinstance(optimizer, torch.optim.Adam)
        owned = {id(p) for p in getattr(agent, name).parameters()}
        assert {id(p) for g in optimizer.param_groups for p in g["params"]} == owned


@pytest.mark.parametrize("kind", ["state", "pixels"])
def test_state_dict_round_trip_restores_actions_optimizers_and_training(kind):
    obs_shape = OBS_KINDS[kind]
    torch.manual_seed(0)
    agent = make_agent(obs_shape, "B")
    for step in range(3):
        agent.update(random_batch(obs_shape, seed=step), step=200 + step)
    file = io.BytesIO()
    torch.save(agent.state_dict(), file)
    file.seek(0)
    torch.manual_seed(1)  # the restored agent starts from different weights
    restored = make_agent(obs_shape, "B")
    restored.load_state_dict(torch.load(file, weights_only=True))

    obs = random_obs(obs_shape, 4)
    np.testing.assert_array_equal(agent.act(obs, 0, True), restored.act(obs, 0, True))
    for name in NETWORKS:
        original = agent.optimizers[name].state_dict()
        copy = restored.optimizers[name].state_dict()
        assert original["param_groups"] == copy["param_groups"]
        for slot, state in original["state"].items():
            for key, value in state.items():
                assert torch.equal(value, copy["state"][slot][key]), (name, key)
    # Same data and noise: the next update is identical too.
    batch = random_batch(obs_shape, seed=9)
    torch.manual_seed(5)
    expected = agent.update(batch, step=300)
    torch.manual_seed(5)
    assert restored.update(batch, step=300) == expected
    for name in (*NETWORKS, "critic_target"):
        assert not changed(params_of(agent, name), params_of(restored, name)), name


def test_stddev_schedule_linear_and_constant():
    linear = StddevSchedule("linear(1.0, 0.1, 100)")
    assert [linear(s) for s in (0, 50, 100, 10_000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert StddevSchedule(0.2)(12345) == StddevSchedule("0.2")(0) == pytest.approx(0.2)


@pytest.mark.parametrize("spec", ["linear(1.0,0.1)", "linear(1,0.1,0)", "cosine(1,0,5)", -0.1])
def test_stddev_schedule_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="stddev_schedule"):
        StddevSchedule(spec)


def test_bad_encoder_config_is_reported():
    with pytest.raises(ValueError, match="bundle"):
        make_encoder(STATE_SHAPE, "C")
    with pytest.raises(TypeError, match="mlp_width"):
        make_encoder(STATE_SHAPE, "A", mlp_width=64)
    with pytest.raises(ValueError, match="augment"):
        make_agent(STATE_SHAPE, augment=True)


@pytest.mark.parametrize("bundle, kind", [("A", "state"), ("B", "state"), ("B", "pixels")])
def test_shipped_configs_instantiate(bundle, kind):
    """cfgs/agent/drqv2.yaml + the encoder bundle, merged the way Hydra's defaults list does."""
    agent_cfg = OmegaConf.merge(
        OmegaConf.load(CFGS / "agent" / "drqv2.yaml"),
        OmegaConf.load(CFGS / "encoder_bundle" / f"enc_{bundle}.yaml"),
    )
    root = OmegaConf.create({"device": "cpu", "lr": 1e-4, "compile": False, "agent": agent_cfg})
    agent = instantiate(root.agent, obs_shape=list(OBS_KINDS[kind]), action_shape=[2])
    assert isinstance(agent, DrQV2Agent)
    assert agent.optimizers["critic"].param_groups[0]["lr"] == 1e-4
    assert (agent.aug is not None) == (kind == "pixels")
    assert agent.act(random_obs(OBS_KINDS[kind]), 0, eval_mode=True).shape == (2,)


class PointMass:
    """1-D point that must reach the origin; episodes are cut by a time limit (truncation)."""

    horizon = 15

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> np.ndarray:
        self.position, self.t = self.rng.uniform(-1.0, 1.0), 0
        return self._obs()

    def _obs(self) -> np.ndarray:
        return np.array([self.position, self.t / self.horizon], dtype=np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        self.position = float(np.clip(self.position + 0.25 * action[0], -1.5, 1.5))
        self.t += 1
        return self._obs(), -abs(self.position), self.t >= self.horizon


def evaluate(agent: DrQV2Agent, episodes: int = 10) -> float:
    env, total = PointMass(seed=123), 0.0
    for _ in range(episodes):
        obs, truncated = env.reset(), False
        while not truncated:
            obs, reward, truncated = env.step(agent.act(obs, 0, eval_mode=True))
            total += reward
    return total / episodes


def test_agent_learns_to_reach_the_target():
    torch.manual_seed(0)
    agent = make_agent(
        (2,),
        action_shape=(1,),
        lr=3e-3,
        hidden_dim=64,
        num_expl_steps=300,
        stddev_schedule="linear(0.5,0.1,1000)",
    )
    replay = ReplayBuffer(
        (2,), np.float32, (1,), capacity=5000, batch_size=64, nstep=3, discount=0.9, seed=0
    )
    env = PointMass(seed=0)
    before = evaluate(agent)
    obs = env.reset()
    for step in range(1000):
        action = agent.act(obs, step, eval_mode=False)
        next_obs, reward, truncated = env.step(action)
        replay.add(obs, action, reward, next_obs, terminated=False, episode_end=truncated)
        obs = env.reset() if truncated else next_obs
        if step >= 300:
            agent.update(replay.sample(), step)
    after = evaluate(agent)
    # Standing still costs ~7.5 per episode; heading straight to 0 costs ~1.5.
    assert after > -3.0 and after > before + 2.0, (before, after)


# ------------------------------------------------------------------ speed levers, same maths

SMALL_PIXELS = (3, 24, 24)


def update_outputs(seed=0, **levers):
    """Metrics and weights after two updates of a fresh pixel agent (same init, batch, noise)."""
    torch.manual_seed(seed)
    agent = make_agent(SMALL_PIXELS, "A", **levers)
    metrics = []
    for step in (500, 501):
        torch.manual_seed(100 + step)
        metrics.append(agent.update(random_batch(SMALL_PIXELS, size=16, seed=step), step=step))
    weights = {n: params_of(agent, n) for n in (*NETWORKS, "critic_target")}
    return metrics, weights


PLAIN = dict(channels_last=False, reuse_cpu_memory=False)


@pytest.mark.parametrize(
    "levers",
    [
        dict(channels_last=True, reuse_cpu_memory=False),
        dict(channels_last=False, reuse_cpu_memory=True),
        dict(channels_last=True, reuse_cpu_memory=True),
        # Dynamo's eager backend: the compiled path's plumbing (tensor LRs and noise scale, noise
        # drawn outside the graph); inductor's own kernels are checked by the benchmark.
        dict(channels_last=True, compile="eager"),
    ],
    ids=["channels_last", "reuse_cpu_memory", "both", "compile"],
)
def test_speed_levers_give_the_plain_update_s_losses_and_weights(levers):
    expected_metrics, expected_weights = update_outputs(**PLAIN)
    metrics, weights = update_outputs(**levers)
    for got, want in zip(metrics, expected_metrics, strict=True):
        assert got.keys() == want.keys()
        for key in want:  # critic_loss, critic_q, critic_target_q, actor_loss, stddev
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-5), key
    # Adam moves a weight by ~lr (1e-3) whatever its gradient's size, so a near-zero gradient whose
    # rounding differs may move by a little: the tolerance is well below one step.
    for name, tensors in expected_weights.items():
        for got, want in zip(weights[name], tensors, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=name)


def test_bf16_autocast_stays_close_to_float32():
    expected, _ = update_outputs(**PLAIN)
    got, weights = update_outputs(amp="bf16")
    for key in ("critic_loss", "critic_target_q", "actor_loss"):
        assert got[0][key] == pytest.approx(expected[0][key], rel=0.05, abs=0.02), key
    assert all(p.dtype == torch.float32 for ps in weights.values() for p in ps)
    with pytest.raises(ValueError, match="amp"):
        make_agent(amp="fp8")


def test_random_shifts_replicate_the_border():
    aug = RandomShiftsAug(pad=2)
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).reshape(2, 3, 6, 6).to(torch.uint8)
    offsets = torch.tensor([[2, -1], [0, 0]])
    shifted = aug(images, offsets)
    rows = (torch.arange(6) + 2).clamp(max=5)
    cols = (torch.arange(6) - 1).clamp(min=0)
    assert torch.equal(shifted[0], images[0][:, rows][:, :, cols])
    assert torch.equal(shifted[1], images[1])  # no shift: the image itself
    assert shifted.dtype == torch.uint8
    drawn = aug.draw_offsets(1000, torch.device("cpu"))
    assert drawn.min() == -2 and drawn.max() == 2


def test_compiled_update_does_not_recompile_when_the_lr_or_noise_changes():
    torch._dynamo.reset()
    torch.manual_seed(0)
    agent = make_agent(SMALL_PIXELS, "B", compile="eager", hidden_dim=16)
    assert all(isinstance(o.param_groups[0]["lr"], torch.Tensor) for o in agent.optimizers.values())
    batch = random_batch(SMALL_PIXELS, size=8)
    agent.update(batch, step=0)
    graphs = compiled_graphs()
    for step in range(1, 40):  # a new LR and a new noise scale (linear schedule) every update
        for optimizer in agent.optimizers.values():
            optimizer.param_groups[0]["lr"].fill_(1e-3 / step)
        agent.update(batch, step=step)
    assert compiled_graphs() == graphs
    # The LR written in place is the one the compiled step uses: Adam moves weights by ~lr.
    # (Schedules never produce 0, which the tensor-LR Adam would turn into NaN.)
    agent.optimizers["actor"].param_groups[0]["lr"].fill_(1e-9)
    before = params_of(agent, "actor")
    agent.update(batch, step=40)
    moved = max((a - b).abs().max() for a, b in zip(before, params_of(agent, "actor"), strict=True))
    assert 0 < moved < 1e-8
    assert compiled_graphs() == graphs


def test_compiled_agent_keeps_its_lr_tensors_through_load_state_dict():
    agent = make_agent(compile="eager")
    lr_tensors = [o.param_groups[0]["lr"] for o in agent.optimizers.values()]
    state = make_agent().state_dict()  # a float-LR checkpoint
    agent.load_state_dict(state)
    for optimizer, tensor in zip(agent.optimizers.values(), lr_tensors, strict=True):
        assert optimizer.param_groups[0]["lr"] is tensor
        assert float(tensor) == pytest.approx(1e-3)
