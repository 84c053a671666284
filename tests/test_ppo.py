"""PPO in-process: it learns, LRs follow the schedule at every gradient step for every `step_on`,
vector-env autoreset steps are real transitions, time-outs bootstrap and real ends do not, GAE
and target_kl do what their definitions say, the GRU carries its state and zeroes it where an
episode starts (in training and in evaluation), and compile=true really compiles the update.

Rollouts are checked before the update that follows them (`before_each_update`), while the
networks are still those that collected them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli import scalars
from helpers import compiled_graphs

from agents.ppo import PPOAgent
from agents.ppo_networks import GRUPolicy
from training.build import workspace_from_overrides
from training.onpolicy import OnPolicyWorkspace, Rollout

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
    np.testing.assert_array_equal(buf.starts[1:], buf.dones[:-1])
    first = buf.obs[1:][buf.dones[:-1].astype(bool)]
    assert np.abs(first).max() <= 0.05  # CartPole resets uniformly in [-0.05, 0.05]
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

    def checked_update(batch, *hooks):
        check()
        return update(batch, *hooks)

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
    buf.values[:] = rng.normal(size=(steps, envs))
    buf.rewards[:] = rng.normal(size=(steps, envs))
    buf.dones[[2, 4], 0] = 1.0  # env 0: two ends inside the rollout
    buf.dones[6, 1] = 1.0  # env 1: ends at the last step (the next value must not leak in)
    next_value = rng.normal(size=envs).astype(np.float32)  # env 2 runs through: bootstrap
    advantages, returns = buf.advantages(next_value, gamma=0.9, lam=0.8)
    expected = reference_gae(buf.rewards, buf.values, buf.dones, next_value, 0.9, 0.8)
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns.numpy(), expected + buf.values, rtol=1e-5, atol=1e-6)


def synthetic_rollout(agent: PPOAgent, steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rollout of random CartPole-sized observations acted on by ``agent``, random advantages."""
    torch.manual_seed(seed)
    n = agent.num_envs
    obs = torch.randn(steps * n, 4)
    np.random.seed(seed)
    action, log_prob, value, _ = agent.act_batch(
        obs.numpy(), np.zeros(steps * n, np.float32), agent.initial_state(steps * n)
    )
    action, log_prob, value = (torch.from_numpy(x) for x in (action, log_prob, value))
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
    agent.update(synthetic_rollout(agent, 32), refresh_lr=lambda progress: None)
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


def test_compiled_update_does_not_recompile_when_the_lr_changes(tmp_path):
    # The eager backend keeps the test fast; recompiles are decided by dynamo's guards, which are
    # the same for every backend (compile=true uses inductor: see LR_SCHEDULING.md for timings).
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # graphs other tests compiled in this process
    ws = workspace(
        tmp_path, *SMALL, "num_train_frames=1024", "lr_schedule=warmup_cosine",
        "agent.compile=eager", "eval_every_frames=100000",
    )  # fmt: skip
    graphs, lrs = [], []
    for _ in ws.steps():
        graphs.append(compiled_graphs())
        actor = next(g for g in ws.agent.optimizer.param_groups if g["name"] == "actor")
        lrs.append(float(actor["lr"]))  # the tensor the compiled step reads
    assert len(set(lrs)) == len(lrs) == 8  # a new LR at every update
    assert graphs[0] == graphs[-1] == 2  # the loss and the optimizer step, compiled once


def gru_states_by_hand(net: GRUPolicy, obs, starts, hidden) -> list[torch.Tensor]:
    """The state before every step and after the last, unrolled env by env with the policy's
    own layers: a step that starts an episode begins from zeros, every other one from the state
    the previous step left."""
    inp, cell = net.encoder["inp"], net.encoder["gru"]
    states = [hidden.clone()]
    with torch.no_grad():
        for t in range(obs.shape[0]):
            nxt = torch.empty_like(hidden)
            for i in range(obs.shape[1]):
                before = torch.zeros_like(hidden[i]) if starts[t, i] else states[-1][i]
                nxt[i] = cell(torch.tanh(inp(obs[t, i])).unsqueeze(0), before.unsqueeze(0))[0]
            states.append(nxt)
    return states


def test_gru_policy_carries_its_state_and_zeroes_it_at_episode_starts(tmp_path):
    ws = workspace(
        tmp_path, *SMALL, "env=cartpole_masked", "encoder_bundle@agent=gru", "num_train_frames=384",
        "eval_every_frames=100000",
    )  # fmt: skip
    assert ws.eval_env.observation_space.shape == (2,)  # velocities hidden
    env_steps = record_env_steps(ws)
    carried = [ws.agent.initial_state(ws.num_envs)]  # the state the next rollout must start from
    starts_seen, ended_before = [], []

    def check():
        buf, net = ws.rollout, ws.agent.net
        ended = [s["terminated"] | s["truncated"] for s in env_steps[-ws.agent.num_steps :]]
        # An episode starts after every end, and at the first step of the run.
        first_starts = ended_before[-1] if ended_before else np.ones(ws.num_envs, dtype=bool)
        expected_starts = np.array([first_starts, *ended[:-1]], dtype=np.float32)
        np.testing.assert_array_equal(buf.starts, expected_starts)
        ended_before.append(ended[-1])
        starts_seen.append(int(buf.starts[1:].sum()))
        obs, starts = torch.from_numpy(buf.obs), torch.from_numpy(buf.starts)
        states = gru_states_by_hand(net, obs, starts, carried[-1])
        torch.testing.assert_close(torch.from_numpy(buf.hidden), torch.stack(states[:-1]))
        with torch.no_grad():  # and the policy acted on them: the values are the critic's
            values = net.critic(torch.stack(states[1:])).squeeze(-1)
            torch.testing.assert_close(torch.from_numpy(buf.values), values)
        carried.append(states[-1])

    before_each_update(ws, check)
    ws.train()
    assert len(carried) == 4 and min(starts_seen) > 0  # 3 rollouts, episodes start inside each


def test_evaluation_starts_every_episode_from_the_initial_recurrent_state(tmp_path):
    ws = workspace(
        tmp_path, *SMALL, "env=cartpole_masked", "encoder_bundle@agent=gru", "num_train_frames=256",
        "eval_every_frames=128", "num_eval_episodes=3",
    )  # fmt: skip
    episodes: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # (state in, state out) per act
    reset, act = ws.eval_env.reset, ws.agent.act
    acting = [False]

    def counting_reset(*args, **kwargs):
        episodes.append([])
        return reset(*args, **kwargs)

    def flagged_act(*args, **kwargs):
        acting[0] = True
        try:
            return act(*args, **kwargs)
        finally:
            acting[0] = False

    def record(cell, args, output):
        if acting[0]:
            episodes[-1].append((args[1].clone(), output.clone()))

    ws.eval_env.reset, ws.agent.act = counting_reset, flagged_act
    ws.agent.net.encoder["gru"].register_forward_hook(record)
    ws.train()
    assert len(episodes) == 3 * 3  # evaluations at steps 0, 128, 256
    for steps in episodes:
        assert len(steps) > 1
        assert torch.equal(steps[0][0], torch.zeros_like(steps[0][0]))  # a fresh state
        for (_, out), (state_in, _) in zip(steps, steps[1:], strict=False):
            assert torch.equal(state_in, out)  # carried from the previous step of the episode


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


def counting_compile(monkeypatch) -> tuple[list[str], list[int]]:
    """Stand in for torch.compile: record the backend each call asks for, and hand dynamo a
    backend as cheap as eager that counts how often each graph it compiled really runs.
    Returns (requested backends, runs per compiled graph), both filled as the run goes."""
    torch._dynamo.reset()
    requested: list[str] = []
    graph_calls: list[int] = []

    def counting_backend(graph, example_inputs):
        index = len(graph_calls)
        graph_calls.append(0)

        def run(*args):
            graph_calls[index] += 1
            return graph.forward(*args)

        return run

    real_compile = torch.compile

    def spy(fn, *, backend):
        requested.append(backend)
        return real_compile(fn, backend=counting_backend)

    monkeypatch.setattr(torch, "compile", spy)
    return requested, graph_calls


def test_top_level_compile_runs_the_ppo_update_through_torch_compile(tmp_path, monkeypatch):
    # compile=true asks torch.compile for inductor; the spy runs the graphs cheaply and counts.
    requested, graph_calls = counting_compile(monkeypatch)
    ws = workspace(
        tmp_path, *SMALL, "compile=true", "num_train_frames=256", "eval_every_frames=100000"
    )
    ws.train()
    torch._dynamo.reset()
    assert requested == ["inductor", "inductor"]  # the loss and the optimizer step
    minibatch_steps = 2 * 4 * 4  # 2 rollouts x 4 epochs x 4 minibatches
    assert graph_calls == [minibatch_steps, minibatch_steps]


def test_top_level_compile_runs_the_drqv2_update_through_torch_compile(monkeypatch, tmp_path):
    requested, _ = counting_compile(monkeypatch)
    ws = workspace_from_overrides(
        ["compile=true", "num_train_frames=300", "num_seed_frames=200", "replay.batch_size=16",
         "agent.hidden_dim=16", "agent.feature_dim=8", "eval_every_frames=100000",
         "progress=lines"], tmp_path,
    )  # fmt: skip
    ws.train()
    torch._dynamo.reset()
    # Both losses and the three optimizers' steps; the LRs are tensors the controller fills.
    assert requested == ["inductor"] * 5
    assert all(isinstance(g["lr"], torch.Tensor) for o in ws.agent.optimizers.values()
               for g in o.param_groups)  # fmt: skip


def test_compiled_jobs_run_one_after_another_in_one_process_stay_compiled(monkeypatch, tmp_path):
    # joblib runs job after job in the same worker process. Dynamo keeps at most 8 variants of a
    # compiled function per process, and each DrQ-v2 job brings 3 new Adam objects: without a
    # reset at the job's start, the 3rd job's optimizer steps would run eagerly.
    _, graph_calls = counting_compile(monkeypatch)
    calls: list[int] = []
    for job in range(3):
        before = sum(graph_calls)
        ws = workspace_from_overrides(
            ["compile=true", "num_train_frames=240", "num_seed_frames=200", "replay.batch_size=8",
             "agent.hidden_dim=16", "agent.feature_dim=8", "eval_every_frames=100000",
             "progress=lines", "resume.enabled=false"], tmp_path / str(job),
        )  # fmt: skip
        ws.train()
        calls.append(sum(graph_calls) - before)
    torch._dynamo.reset()
    # Same run, same updates: every job runs its 2 losses and 3 steps compiled at every update.
    assert calls[0] == 5 * 20 and calls == [calls[0]] * 3, calls


def test_log_std_and_init_knobs_set_what_they_name():
    cleanrl = PPOAgent([11], [3], False, "cpu", 3e-4, {"bundle": "A"})
    first = cleanrl.net.encoder["pi"].weight.detach()  # 64 x 11, orthogonal columns, gain sqrt 2
    torch.testing.assert_close(first.T @ first, 2.0 * torch.eye(11), atol=1e-5, rtol=0)
    assert cleanrl.net.actor[2].weight.abs().max() < 0.02  # policy output gain 0.01
    assert torch.equal(cleanrl.log_std.detach(), torch.zeros(3))
    plain = PPOAgent([11], [3], False, "cpu", 3e-4, {"bundle": "A"}, log_std_init=-0.5,
                     ortho_init=False)  # fmt: skip
    assert torch.equal(plain.log_std.detach(), torch.full((3,), -0.5))
    w = plain.net.encoder["pi"].weight.detach()
    assert (w.T @ w - torch.diag(torch.diagonal(w.T @ w))).abs().max() > 0.05  # not orthogonal
    assert plain.net.actor[2].weight.abs().max() > 0.05  # torch's default scale, not 0.01
