"""Run state in-process: what the optimizers really use at every update, before and after a
stop, for both loops; a foreign LR write; result bookkeeping and curriculum across a resume."""

from __future__ import annotations

import math
import signal

import pytest
from cli import TINY, TINY_PPO, latest

from lr_scheduler import LRMismatchError
from training.build import workspace_from_overrides
from training.run import Preempted

FAST_CURRICULUM = ["curriculum.min_episodes=1", "curriculum.window=1"]


def optimizers(agent) -> dict:
    """label -> optimizer, each optimizer once (PPO's three groups share one)."""
    unique: dict[int, tuple[str, object]] = {}
    for name, opt in agent.optimizers.items():
        unique.setdefault(id(opt), (name, opt))
    return dict(unique.values())


def record_updates(ws) -> list[tuple]:
    """(global step, network, LR) read from the optimizer's own groups at every optimizer step."""
    seen: list[tuple] = []
    for label, opt in optimizers(ws.agent).items():

        def hook(opt, args, kwargs, label=label):
            for group in opt.param_groups:
                lr = group["lr"]
                seen.append((ws.global_step, group.get("name", label), float(lr)))

        opt.register_step_pre_hook(hook)
    return seen


def stop_at(ws, step: int) -> None:
    """Run until ``step``, then deliver SIGTERM as the signal handler would: the loop writes its
    checkpoint at the next safe point and raises `Preempted`."""
    gen = ws.steps()
    for s in gen:
        if s >= step:
            break
    ws._on_signal(signal.SIGTERM, None)
    with pytest.raises(Preempted):
        for _ in gen:
            pass


@pytest.mark.parametrize(
    "args,stop",
    [
        pytest.param([*TINY, "lr_schedule=warmup_cosine"], 1200, id="drqv2-warmup_cosine"),
        pytest.param([*TINY, "lr_schedule=aggressive_decay"], 1100, id="drqv2-aggressive"),
        pytest.param([*TINY_PPO, "lr_schedule=warmup_cosine"], 2000, id="ppo-warmup_cosine"),
        pytest.param([*TINY_PPO, "lr_schedule=differential"], 2000, id="ppo-differential"),
    ],
)
def test_optimizers_use_the_uninterrupted_lrs_at_every_update_after_a_resume(tmp_path, args, stop):
    straight = workspace_from_overrides(args, tmp_path / "straight")
    straight_seen = record_updates(straight)
    straight.train()

    first = workspace_from_overrides(args, tmp_path / "resumed")
    stop_at(first, stop)
    resumed = workspace_from_overrides(args, tmp_path / "resumed")  # same dir: resumes
    assert 0 < resumed.global_step <= stop + 256
    resumed_seen = record_updates(resumed)
    resumed.train()

    assert resumed_seen, "no update after the resume"
    first_step = resumed_seen[0][0]
    tail = [r for r in straight_seen if r[0] >= first_step]
    assert resumed_seen == tail
    lrs_after = {lr for _, _, lr in resumed_seen}
    assert len(lrs_after) > 1, "the schedule must move after the stop for this test to bite"
    if "agent=ppo" not in args:  # DrQ-v2 updates at the global step itself
        for step, name, lr in resumed_seen:
            assert lr == pytest.approx(resumed.schedules[name](step), rel=1e-12)


def test_a_foreign_lr_write_stops_the_run_naming_network_step_and_values(tmp_path):
    ws = workspace_from_overrides([*TINY, "lr_schedule=constant"], tmp_path)
    gen = ws.steps()
    for step in gen:
        if step == 700:  # updates are running (seed phase ends at 500)
            break
    ws.agent.optimizers["critic"].param_groups[0]["lr"] = 2.5e-4
    with pytest.raises(LRMismatchError) as err:
        for _ in gen:
            pass
    message = str(err.value)
    assert "critic" in message and "step 1000" in message
    assert "0.00025" in message and f"{ws.schedules['critic'](1000):g}" in message


def test_result_bookkeeping_and_curriculum_survive_a_resume(tmp_path, monkeypatch):
    from envs.curriculum import CurriculumManager

    record = CurriculumManager.record_episode  # every episode a success: a stage per episode

    def always_success(self, success, global_step=None):
        return record(self, True, global_step)

    monkeypatch.setattr(CurriculumManager, "record_episode", always_success)
    args = [*TINY, *FAST_CURRICULUM, "eval_every_frames=500"]
    straight = workspace_from_overrides(args, tmp_path / "straight")
    straight.train()
    entries = straight.summary()["stage_entry_steps"]
    assert entries[:3] == [0, 200, 400]  # one stage per 200-step episode

    first = workspace_from_overrides(args, tmp_path / "resumed")
    stop_at(first, 1000)
    before = latest(tmp_path / "resumed")["result"]  # what the stop saved
    resumed = workspace_from_overrides(args, tmp_path / "resumed")
    # Restored before anything else ran: counters, curriculum, results, the env's difficulty.
    assert resumed.global_step == 1000 and resumed.episode == first.episode
    assert resumed.curriculum.stage == first.curriculum.stage
    assert resumed.result["best_eval_return"] == before["best_eval_return"]
    assert resumed.result["wall_time_s"] == pytest.approx(before["wall_time_s"])
    resumed.train()
    summary = resumed.summary()
    assert (
        summary["stage_entry_steps"][: len(before["stage_entry_steps"])]
        == (before["stage_entry_steps"])
    )
    assert summary["best_eval_return"] >= before["best_eval_return"]
    assert summary["wall_time_s"] > before["wall_time_s"]
    assert resumed.env.unwrapped.difficulty == resumed.curriculum.params
    assert math.isfinite(summary["final_eval_return"])


def test_resume_restores_replay_adam_state_and_rng_and_closes_the_open_episode(tmp_path):
    import numpy as np
    import torch

    from training import checkpoint

    first = workspace_from_overrides(TINY, tmp_path)
    stop_at(first, 700)
    saved = checkpoint.load(tmp_path / "checkpoints" / "latest.pt")
    resumed = workspace_from_overrides(TINY, tmp_path)
    # Right after construction, before the loop: everything equals the checkpoint.
    replay = resumed.replay.state_dict()
    for key in ("obs", "action", "reward", "terminated", "episode_end"):
        np.testing.assert_array_equal(replay[key], saved["replay"][key], err_msg=key)
    assert (replay["size"], replay["cursor"]) == (
        saved["replay"]["size"],
        saved["replay"]["cursor"],
    )
    for name, opt in resumed.agent.optimizers.items():
        state = opt.state_dict()["state"]
        for index, moments in saved["agent"]["optimizers"][name]["state"].items():
            assert float(state[index]["step"]) == float(moments["step"]) > 0, name
            torch.testing.assert_close(state[index]["exp_avg"], moments["exp_avg"])
    for name, net in (("actor", resumed.agent.actor), ("critic", resumed.agent.critic)):
        for key, value in net.state_dict().items():
            torch.testing.assert_close(value, saved["agent"][name][key])
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert np.array_equal(np.random.get_state()[1], saved["rng"]["numpy"][1])
    # The episode the stop interrupted cannot go on: the loop closes it as a time-out, so
    # n-step targets bootstrap instead of running into the next episode.
    last = (saved["replay"]["cursor"] - 1) % saved["replay"]["capacity"]
    assert not saved["replay"]["episode_end"][last]  # open in the checkpoint (mid-episode)
    next(resumed.steps())
    ends = resumed.replay.state_dict()["episode_end"]
    assert ends[last] and not resumed.replay.state_dict()["terminated"][last]


def test_a_temp_file_left_by_a_kill_mid_write_is_removed_at_the_next_start(tmp_path):
    first = workspace_from_overrides(TINY, tmp_path)
    stop_at(first, 600)
    leftover = tmp_path / "checkpoints" / ".latest.pt.tmp-424242"
    leftover.write_bytes(b"half a checkpoint")
    resumed = workspace_from_overrides(TINY, tmp_path)
    assert resumed.global_step == 600 and not leftover.exists()


def test_the_preemption_signal_is_taken_only_from_a_launcher_that_listens_to_it(tmp_path):
    ws = workspace_from_overrides([*TINY, "resume.enabled=false"], tmp_path)
    # A plain run: SIGUSR2 keeps its default action (the run does not swallow a signal that
    # was meant to stop the process).
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    handlers = ws._catch_signals()
    try:
        assert set(handlers) == {signal.SIGTERM, signal.SIGINT} and not ws.launcher_handlers
    finally:
        ws._release_signals(handlers)

    def launcher(signum, frame):  # submitit's requeue handler, in a SLURM job
        pass

    previous = signal.signal(signal.SIGUSR2, launcher)
    try:
        handlers = ws._catch_signals()
        assert signal.getsignal(signal.SIGUSR2) == ws._on_signal
        assert ws.launcher_handlers == {signal.SIGUSR2: launcher}
        ws._release_signals(handlers)
        assert signal.getsignal(signal.SIGUSR2) is launcher  # put back when the loop ends
    finally:
        signal.signal(signal.SIGUSR2, previous)
