"""A user's agent and env from their own package (examples/my_pkg), through the real CLI with
examples/cfgs on hydra.searchpath and nothing of theirs in this repo's packages: it trains, its
four groups follow their schedules, a kill -9 and re-run ends where an uninterrupted run ends,
and a preset naming a group the agent lacks is refused with the agent's groups."""

from __future__ import annotations

import pytest
import torch
from cli import ROOT, kill_then_rerun, latest, result, run_cli, scalars

from training.build import compose_config
from training.run import compile_run_schedules

USER = {"PYTHONPATH": str(ROOT / "examples")}  # the user's package is importable, nothing more
SEARCHPATH = f"hydra.searchpath=[file://{ROOT / 'examples' / 'cfgs'}]"
MY_RUN = [
    SEARCHPATH, "agent=my_sac", "env=corridor", "curriculum_preset=corridor_stages",
    "lr_schedule=my_sac_schedule", "lr=3e-3", "num_seed_frames=200", "agent.num_expl_steps=200",
    "eval_every_frames=400", "num_eval_episodes=1", "log_every_frames=200",
    "checkpoint_every_frames=400", "replay.batch_size=32", "progress=lines",
]  # fmt: skip
GROUPS = ("encoder", "actor", "critic", "temperature")


def expected_schedule(args, steps):
    import sys

    sys.path.insert(0, USER["PYTHONPATH"])
    try:
        schedules = compile_run_schedules(compose_config(list(args)))
    finally:
        sys.path.remove(USER["PYTHONPATH"])
    return {n: [schedules[n](s) for s in steps] for n in GROUPS}


def test_a_users_agent_and_curriculum_env_train_with_their_own_groups(tmp_path):
    args = [*MY_RUN, "num_train_frames=1200"]
    done = run_cli(*args, run_dir=tmp_path, env=USER)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result(tmp_path)["status"] == "completed"
    assert result(tmp_path)["stage_reached"] >= 1  # the corridor's set_difficulty was driven
    state = latest(tmp_path)
    saved = {n: o["param_groups"][0]["lr"] for n, o in state["agent"]["optimizers"].items()}
    final = expected_schedule(args, [1200])
    assert saved == pytest.approx({n: final[n][0] for n in GROUPS}, rel=1e-9)
    # Every group's LR in TensorBoard, read from its optimizer, is the schedule's.
    for name in GROUPS:
        points = scalars(tmp_path, f"lr_{name}")
        assert len(points) > 5, name
        steps = [s for s, _ in points]
        assert [v for _, v in points] == pytest.approx(expected_schedule(args, steps)[name])
    assert len({v for _, v in scalars(tmp_path, "lr_temperature")}) >= 3  # it warmed up


def test_a_users_agent_resumes_after_kill9_to_the_uninterrupted_weights(tmp_path):
    # Fixed 40-step episodes (a corridor too long to finish, no curriculum), checkpoints every
    # 400 steps: each resume starts where an episode starts, so both runs see the same data.
    args = [*MY_RUN, "num_train_frames=1200", "env.curriculum=false", "+env.kwargs.length=100"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_cli(*args, run_dir=straight, env=USER).returncode == 0
    at_kill, _ = kill_then_rerun(*args, run_dir=killed, at_step=400, env=USER)
    killed_at = at_kill["global_step"]
    assert killed_at < 1200
    lrs = expected_schedule(args, [killed_at, 1200])
    assert any(a != b for a, b in lrs.values()), "the LRs must move after the kill"
    a, b = latest(straight)["agent"], latest(killed)["agent"]
    for module in ("encoder", "actor", "critic", "critic_target"):
        for key, tensor in a[module].items():
            torch.testing.assert_close(b[module][key], tensor, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b["log_alpha"], a["log_alpha"], rtol=1e-5, atol=1e-6)


def test_a_preset_naming_a_group_the_agent_lacks_exits_2_with_the_agents_groups(tmp_path):
    done = run_cli(SEARCHPATH, "lr_schedule=my_sac_schedule", run_dir=tmp_path, env=USER)
    assert done.returncode == 2
    assert "lr_schedule.temperature" in done.stderr
    assert "accepted: encoder, actor, critic" in done.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("target,words", [
    ("envs.gimbal.GimbalEnv", "is not an agents.base.Agent"),
    ("my_pkg.missing.Agent", "cannot import my_pkg.missing.Agent ("),
])  # fmt: skip
def test_an_agent_target_outside_the_contract_exits_2_naming_the_key(tmp_path, target, words):
    done = run_cli(f"agent._target_={target}", run_dir=tmp_path, env=USER)
    assert done.returncode == 2
    assert f"agent._target_: {target}" in done.stderr or "agent._target_: cannot" in done.stderr
    assert words in done.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_a_curriculum_on_an_env_without_set_difficulty_exits_2_naming_the_key(tmp_path):
    done = run_cli("env=pendulum", "env.curriculum=true", "num_train_frames=200",
                   run_dir=tmp_path)  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "env.curriculum: PendulumEnv (Pendulum-v1) has no set_difficulty" in last, last
    assert not (tmp_path / "checkpoints" / "latest.pt").exists()
