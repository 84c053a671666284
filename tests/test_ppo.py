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
from training.onpolicy import OnPolicyWorkspace
from training.workspace import compose_config, workspace_from_overrides

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
def test_step_on_moves_the_lr_along_the_global_step_curve(tmp_path, step_on):
    """Gradient step j of the rollout [first, first + 128) trains at the schedule's value at
    first + int(progress x 128): every minibatch (update), every epoch, or once (rollout)."""
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=2048", "lr_schedule=warmup_cosine",
        "lr_schedule.warmup_frac=0.3", f"agent.step_on={step_on}", "eval_every_frames=100000",
    )  # fmt: skip
    seen: list[tuple[int, dict[str, float]]] = []

    def record(optimizer, args, kwargs):
        seen.append((ws.global_step, {g["name"]: float(g["lr"]) for g in optimizer.param_groups}))

    ws.agent.optimizer.register_step_pre_hook(record)
    ws.train()
    rollout, per_update = 4 * 32, 16  # 4 epochs x 4 minibatches per rollout
    assert len(seen) == per_update * (2048 // rollout)
    progress = {
        "update": lambda j: j / 16, "epoch": lambda j: (j // 4) / 4, "rollout": lambda j: 0.0,
    }[step_on]  # fmt: skip
    for k, (end, lrs) in enumerate(seen):
        first, j = end - rollout, k % per_update
        expected_step = first + int(progress(j) * rollout)
        for name in ("encoder", "actor", "critic"):
            assert lrs[name] == pytest.approx(ws.schedules[name](expected_step), rel=1e-12)
    distinct = len({lrs["actor"] for _, lrs in seen[:per_update]})
    assert distinct == {"update": 16, "epoch": 4, "rollout": 1}[step_on]
    tb = scalars(tmp_path, "ppo/learning_rate")  # the LR of the update's last gradient step
    assert [s for s, _ in tb] == [rollout * (k + 1) for k in range(2048 // rollout)]
    last_of_each = [lrs["actor"] for _, lrs in seen[per_update - 1 :: per_update]]
    assert [v for _, v in tb] == pytest.approx(last_of_each)


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


def test_time_limit_truncation_bootstraps_from_the_final_observation(tmp_path):
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=256", "eval_every_frames=100000",
        "+env.kwargs.max_episode_steps=10",
    )  # fmt: skip
    ws.train()
    buf = ws.rollout
    cut = buf.dones.astype(bool)  # a fresh policy keeps the pole up for 10 steps: time-outs
    assert cut.any()
    assert np.all(buf.rewards[~cut] == 1.0)
    assert np.any(buf.rewards[cut] != 1.0)  # 1 + gamma * V(final obs) for the time-outs


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


def test_top_level_compile_reaches_both_agents():
    ppo = compose_config(["agent=ppo", "env=cartpole", "compile=true"])
    drqv2 = compose_config(["compile=true"])
    assert ppo.agent.compile is True and drqv2.agent.compile is True
