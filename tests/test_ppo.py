"""PPO in-process: it learns, LRs follow the schedule at every gradient step for every `step_on`,
vector-env autoreset steps are real transitions, episode returns are logged, and the GRU path
resets its state at episode starts and trains on whole sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli import scalars

from agents.ppo import PPOAgent
from agents.ppo_networks import GRUPolicy
from training.onpolicy import OnPolicyWorkspace, Rollout
from training.run import compile_run_schedules
from training.workspace import compose_config, make_workspace, workspace_from_overrides

SMALL = ["agent.num_steps=32", "progress=lines", "resume.enabled=false"]


def workspace(tmp_path: Path, *overrides: str) -> OnPolicyWorkspace:
    return workspace_from_overrides(["agent=ppo", "env=cartpole", *overrides], tmp_path)


def test_ppo_learns_cartpole(tmp_path):
    ws = workspace(
        tmp_path, "num_train_frames=40000", "eval_every_frames=1000000", "num_eval_episodes=5",
        "progress=lines", "resume.enabled=false",
    )  # fmt: skip
    ws.train()
    returns = [v for _, v in scalars(tmp_path, "train/episode_return")]
    assert np.mean(returns[-20:]) > 150, returns[-20:]
    assert ws.summary()["final_eval_return"] > 150


@pytest.mark.parametrize("step_on", ["update", "epoch", "rollout"])
def test_lr_at_every_gradient_step_equals_the_schedule(tmp_path, step_on):
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=2048", "lr_schedule=warmup_cosine",
        "lr_schedule.warmup_frac=0.3", f"agent.step_on={step_on}", "eval_every_frames=100000",
    )  # fmt: skip
    seen: list[tuple[int, dict[str, float]]] = []
    refreshes: list[int] = []

    def record(optimizer, args, kwargs):
        seen.append((ws.global_step, {g["name"]: float(g["lr"]) for g in optimizer.param_groups}))

    ws.agent.optimizer.register_step_pre_hook(record)
    apply, update = ws.lr.apply, ws.agent.update

    def counting_update(batch, refresh_lr):
        refreshes.append(0)
        ws.lr.apply = lambda step: refreshes.__setitem__(-1, refreshes[-1] + 1) or apply(step)
        try:
            return update(batch, refresh_lr)
        finally:
            ws.lr.apply = apply

    ws.agent.update = counting_update
    ws.train()
    rollout = 4 * 32
    assert len(seen) == 16 * (2048 // rollout)  # 4 epochs x 4 minibatches per rollout
    for step, lrs in seen:
        assert step % rollout == 0
        for name in ("encoder", "actor", "critic"):
            assert lrs[name] == pytest.approx(ws.schedules[name](step), rel=1e-12), (name, step)
    assert len({lrs["actor"] for _, lrs in seen}) == 2048 // rollout  # one LR per rollout
    per_update = {"update": 16, "epoch": 4, "rollout": 1}[step_on]
    assert refreshes == [per_update] * (2048 // rollout)  # LR refreshes inside each update
    tb = scalars(tmp_path, "ppo/learning_rate")
    assert [s for s, _ in tb] == [rollout * (k + 1) for k in range(2048 // rollout)]
    assert [v for _, v in tb] == pytest.approx([ws.schedules["actor"](s) for s, _ in tb])


def test_autoreset_steps_are_transitions_and_returns_are_logged(tmp_path):
    ws = workspace(tmp_path, *SMALL, "num_train_frames=1024", "eval_every_frames=100000")
    ws.train()
    buf = ws.rollout
    # CartPole pays 1 for every real step; next-step autoreset would leave 0-reward reset steps.
    assert np.all(buf.rewards == 1.0) and buf.dones.sum() > 0
    # The observation after an episode end is the new episode's first, flagged as a start.
    assert torch.equal(buf.starts[1:], torch.from_numpy(buf.dones[:-1]))
    first = buf.obs[1:][torch.from_numpy(buf.dones[:-1]).bool()]
    assert first.abs().max() <= 0.05  # CartPole resets uniformly in [-0.05, 0.05]
    returns = scalars(tmp_path, "train/episode_return")
    assert len(returns) == ws.episode > 0
    assert all(v >= 1 for _, v in returns)
    for tag in ("approx_kl", "clip_fraction", "value_loss", "policy_loss", "entropy",
                "explained_variance", "learning_rate"):  # fmt: skip
        assert scalars(tmp_path, f"ppo/{tag}"), tag


def record_env_steps(ws: OnPolicyWorkspace) -> list[dict]:
    """What the vector env returned at every step, copied (the env reuses its arrays)."""
    seen: list[dict] = []
    step = ws.envs.step

    def recording_step(action):
        out = step(action)
        _, reward, terminated, truncated, info = out
        ended = np.flatnonzero(terminated | truncated)
        seen.append({
            "reward": reward.copy(), "terminated": terminated.copy(),
            "truncated": truncated.copy(),
            "final_obs": {i: np.array(info["final_obs"][i], dtype=np.float32) for i in ended},
        })  # fmt: skip
        return out

    ws.envs.step = recording_step
    return seen


def before_each_update(ws: OnPolicyWorkspace, check) -> None:
    """Call ``check()`` after every rollout, before the update changes the networks that
    collected it."""
    update = ws.agent.update

    def checked_update(batch, refresh_lr):
        check()
        return update(batch, refresh_lr)

    ws.agent.update = checked_update


def test_time_limit_truncation_bootstraps_from_the_final_observation(tmp_path):
    # 20-step time limit: a fresh policy drops the pole in about as many steps, so a rollout
    # holds both real ends (terminated) and time-outs (truncated).
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=512", "eval_every_frames=100000",
        "+env.kwargs.max_episode_steps=20",
    )  # fmt: skip
    env_steps = record_env_steps(ws)
    ends = {"terminated": 0, "truncated": 0}

    def check():
        rollout = env_steps[-ws.agent.num_steps :]
        expected = np.zeros(ws.rollout.rewards.shape)
        for t, s in enumerate(rollout):
            for i in range(ws.num_envs):
                expected[t, i] = s["reward"][i]
                if s["terminated"][i]:  # a real end: nothing follows, no bootstrap
                    ends["terminated"] += 1
                elif s["truncated"][i]:  # cut by the time limit: reward + gamma * V(final obs)
                    ends["truncated"] += 1
                    with torch.no_grad():
                        final_value = ws.agent.net(torch.from_numpy(s["final_obs"][i]))[1]
                    expected[t, i] += ws.agent.gamma * float(final_value)
        np.testing.assert_allclose(ws.rollout.rewards, expected, rtol=1e-6)
        ended = [s["terminated"] | s["truncated"] for s in rollout]
        np.testing.assert_array_equal(ws.rollout.dones, np.array(ended, dtype=np.float32))

    before_each_update(ws, check)
    ws.train()
    assert ends["terminated"] > 0 and ends["truncated"] > 0, ends


def reference_gae(rewards, values, dones, next_value, gamma, lam):
    """GAE as its definition reads: A_t = sum_k (gamma * lam)^k delta_{t+k}, summed up to the end
    of the episode or of the rollout; a step that ends an episode has no next value."""
    steps, envs = rewards.shape
    adv = np.zeros((steps, envs))
    for i in range(envs):
        for t in range(steps):
            for k in range(t, steps):
                following = next_value[i] if k == steps - 1 else values[k + 1, i]
                bootstrap = 0.0 if dones[k, i] else gamma * following
                adv[t, i] += (gamma * lam) ** (k - t) * (rewards[k, i] + bootstrap - values[k, i])
                if dones[k, i]:
                    break
    return adv


def test_gae_matches_the_definition_with_episode_ends_inside_the_rollout():
    rng = np.random.default_rng(0)
    steps, envs = 7, 3
    buf = Rollout(steps, envs, obs_dim=1, action_shape=(), hidden=0)
    buf.values[:] = torch.from_numpy(rng.normal(size=(steps, envs)).astype(np.float32))
    buf.rewards[:] = rng.normal(size=(steps, envs))
    buf.dones[[2, 4], 0] = 1.0  # env 0: two ends inside the rollout
    buf.dones[6, 1] = 1.0  # env 1: ends at the last step (the next value must not leak in)
    next_value = rng.normal(size=envs).astype(np.float32)  # env 2 runs through: bootstrap
    advantages, returns = buf.advantages(next_value, gamma=0.9, lam=0.8)
    expected = reference_gae(buf.rewards, buf.values.numpy(), buf.dones, next_value, 0.9, 0.8)
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns.numpy(), expected + buf.values.numpy(), rtol=1e-5, atol=1e-6)


def synthetic_rollout(agent: PPOAgent, steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rollout of random CartPole-sized observations acted on by ``agent``, random advantages."""
    torch.manual_seed(seed)
    n = agent.num_envs
    obs = torch.randn(steps * n, 4)
    action, log_prob, value, _ = agent.act_batch(
        obs, torch.zeros(steps * n), agent.initial_state(steps * n)
    )
    advantages = torch.randn(steps * n)
    batch = {
        "obs": obs, "starts": torch.zeros(steps * n), "hidden": torch.zeros(steps * n, 0),
        "actions": action.float(), "log_probs": log_prob, "values": value,
        "advantages": advantages, "returns": value + advantages,
    }  # fmt: skip
    return {k: v.reshape(steps, n, *v.shape[1:]) for k, v in batch.items()}


@pytest.mark.parametrize("target_kl,expected_steps", [(1e-7, 4), (1e6, 16), (None, 16)])
def test_target_kl_stops_the_update_after_the_epoch_that_exceeds_it(target_kl, expected_steps):
    # 4 epochs x 4 minibatches; a high LR moves the policy enough that the first epoch's mean
    # approx KL passes the tiny target (its first minibatch sees KL 0: nothing changed yet).
    agent = PPOAgent(
        [4], [2], discrete=True, device="cpu", lr=1e-2, encoder={"bundle": "A"}, hidden_dim=16,
        num_envs=4, num_steps=32, target_kl=target_kl,
    )  # fmt: skip
    steps = []
    agent.optimizer.register_step_pre_hook(lambda *args: steps.append(1))
    agent.update(synthetic_rollout(agent, 32), refresh_lr=lambda: None)
    assert len(steps) == expected_steps


def test_gru_state_resets_at_episode_starts():
    torch.manual_seed(0)
    net = GRUPolicy(obs_dim=3, out_dim=2, hidden_dim=8, gru_hidden=5)
    obs = torch.randn(6, 2, 3)
    starts = torch.zeros(6, 2)
    starts[3, 0] = 1.0
    hidden = torch.randn(2, 5)
    out, _, _ = net(obs, starts, hidden)
    fresh, _, _ = net(obs[3:, :1], torch.zeros(3, 1), torch.zeros(1, 5))
    torch.testing.assert_close(out[3:, 0], fresh[:, 0])  # env 0 forgot everything before t=3
    state_at_3 = net(obs[:3, 1:], starts[:3, 1:], hidden[1:])[2]
    carried, _, _ = net(obs[3:, 1:], torch.zeros(3, 1), state_at_3)
    torch.testing.assert_close(out[3:, 1], carried[:, 0])  # env 1 carried its state through


def test_gru_minibatches_hold_whole_sequences():
    agent = PPOAgent(
        [2], [2], discrete=True, device="cpu", lr=1e-3, encoder={"bundle": "gru", "gru_hidden": 4},
        hidden_dim=8, num_envs=3, num_steps=8, bptt_len=4,
    )  # fmt: skip
    t, n = 8, 3
    step_id = torch.arange(t * n, dtype=torch.float32).view(t, n)  # = 3 * step + env
    batch = {
        "obs": step_id.unsqueeze(-1).repeat(1, 1, 2),
        "hidden": step_id.unsqueeze(-1).repeat(1, 1, 4),
    }
    seqs = agent._sequences(batch)
    assert seqs["obs"].shape == (4, 6, 2) and seqs["hidden"].shape == (6, 4)
    for s in range(6):
        ids = seqs["obs"][:, s, 0]
        assert torch.all(ids.diff() == n)  # consecutive steps of one env
        assert seqs["hidden"][s, 0] == ids[0]  # the state stored before the sequence's first step


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def test_compiled_update_does_not_recompile_when_the_lr_changes(tmp_path):
    # The eager backend keeps the test fast; recompiles are decided by dynamo's guards, which are
    # the same for every backend (compile=true uses inductor: see LR_SCHEDULING.md for timings).
    torch._dynamo.reset()
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=1024", "lr_schedule=warmup_cosine",
        "agent.compile=eager", "eval_every_frames=100000",
    )  # fmt: skip
    graphs, lrs = [], []
    for _ in ws.steps():
        graphs.append(_compiled_graphs())
        actor = next(g for g in ws.agent.optimizer.param_groups if g["name"] == "actor")
        lrs.append(float(actor["lr"]))  # the tensor the compiled step reads
    assert len(set(lrs)) == len(lrs) == 8  # a new LR at every update
    assert graphs[0] == graphs[-1] == 2  # the loss and the optimizer step, compiled once


def test_a_float_lr_would_recompile_the_optimizer_step():
    """Why compile=true stores LRs as tensors: a float LR is a constant of the compiled graph."""
    torch._dynamo.reset()
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    step = torch.compile(optimizer.step, backend="eager")
    for lr in (1e-3, 2e-3, 3e-3):
        optimizer.param_groups[0]["lr"] = lr
        param.grad = torch.ones(3)
        step()
    assert _compiled_graphs() > 1


def test_gru_policy_trains_and_evaluates_on_masked_cartpole(tmp_path):
    ws = workspace(
        tmp_path, *SMALL, "env=cartpole_masked", "encoder_bundle@agent=gru", "num_train_frames=512",
        "eval_every_frames=256", "num_eval_episodes=2",
    )  # fmt: skip
    assert ws.eval_env.observation_space.shape == (2,)  # velocities hidden
    ws.train()
    assert ws.rollout.hidden.abs().sum() > 0  # the state is carried between steps
    assert len(scalars(tmp_path, "eval/episode_return")) == 3  # steps 0, 256, 512


def test_drqv2_refuses_the_gru_bundle():
    from agents.drqv2 import DrQV2Agent

    with pytest.raises(ValueError, match="agent=ppo"):
        DrQV2Agent(
            [4], [1], "cpu", 1e-4, {"bundle": "gru", "gru_hidden": 8}, 8, 8, 0.01, 0, 0.1, 0.3
        )


def test_every_vector_env_follows_the_curriculum_stage(tmp_path):
    ws = workspace_from_overrides(
        ["agent=ppo", "env=gimbal", *SMALL, "num_train_frames=4096", "eval_every_frames=100000"],
        tmp_path,
    )
    loop = ws.steps()
    next(loop)
    stage = ws.curriculum.stage
    for _ in range(ws.curriculum.num_stages * 40):  # successes until the stage moves on
        ws._end_episodes(np.arange(4), {"success": np.ones(4, dtype=bool)})
        if ws.curriculum.stage != stage:
            break
    assert ws.curriculum.stage == stage + 1
    wanted = ws.curriculum.params
    for difficulty in ws.envs.get_attr("_difficulty"):
        assert {k: difficulty[k] for k in wanted} == wanted
    loop.close()


def test_top_level_compile_reaches_ppo_and_drqv2_refuses_it(tmp_path):
    ppo = compose_config(["agent=ppo", "env=cartpole", "compile=true"])
    drqv2 = compose_config(["compile=true"])
    assert ppo.agent.compile is True
    with pytest.raises(ValueError, match="only agent=ppo"):
        make_workspace(drqv2, tmp_path, compile_run_schedules(drqv2))
    assert not any(tmp_path.iterdir())  # refused before anything was built or written
