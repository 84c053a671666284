"""Schedules that listen, in real runs: stage starts begin at the curriculum's real entries in
both loops and survive a kill; the KL guard's scale survives kill -9 through the CLI; bad
configs of both are refused with the key path before any env exists; the preview shows both.

What is compared is what the optimizers held (their param groups at every optimizer step, or
the LRs inside a checkpoint's optimizer state), not what was logged."""

from __future__ import annotations

import pytest
from cli import TINY, TINY_PPO, kill_then_rerun, latest, optimizer_lrs, result, run_cli, scalars
from helpers import NO_ENV
from test_run_state import FAST_CURRICULUM, record_updates

from training.build import workspace_from_overrides


@pytest.fixture
def success_every_fourth_episode(monkeypatch):
    """Every fourth episode succeeds; with a window of 1, each such episode enters a stage."""
    from envs.curriculum import CurriculumManager

    record = CurriculumManager.record_episode

    def rule(self, success, global_step=None):
        return record(self, self.episodes % 4 == 3, global_step)

    monkeypatch.setattr(CurriculumManager, "record_episode", rule)


def killed_after(ws, step: int) -> None:
    """Run until ``step``, then lose the process's state: only the checkpoint on disk remains
    (the generator is closed without a signal, as kill -9 leaves it)."""
    gen = ws.steps()
    for s in gen:
        if s >= step:
            break
    gen.close()


LOOPS = [
    # Entries at 800, 1600, 2400 (a stage every fourth 200-step episode): 2,500 frames suffice.
    pytest.param([*TINY, "num_train_frames=2500", "lr_schedule=stage_based"], 1700, id="drqv2"),
    pytest.param([*TINY_PPO, "env=gimbal", "lr_schedule=stage_based", "lr=1e-3"], 2100, id="ppo"),
]


def check_stage_lrs(seen, entries, base, rollout):
    """Every update's LR is base x 1, 0.8, 0.5, 0.3 by the stage its clock step was in
    (PPO: updates of rollouts an entry falls inside are skipped, their clock spans it)."""
    factors = (1.0, 0.8, 0.5, 0.3)
    checked = 0
    for step, name, lr in seen:
        first = step - rollout  # DrQ-v2 (rollout 0) updates at the global step itself
        if any(first < e <= step for e in entries[1:]) and rollout:
            continue
        stage = sum(step >= e for e in entries[1:])
        assert lr == pytest.approx(base * factors[stage]), (step, name, entries)
        checked += 1
    assert checked


@pytest.mark.parametrize("args,kill_at", LOOPS)
def test_stage_starts_follow_the_real_entries_and_survive_a_kill(
    tmp_path, success_every_fourth_episode, args, kill_at
):
    args = [*args, *FAST_CURRICULUM]
    straight = workspace_from_overrides(args, tmp_path / "straight")
    rollout = getattr(straight, "num_envs", 0) * int(straight.cfg.agent.get("num_steps", 0))
    straight_seen = record_updates(straight)
    straight.train()
    entries = straight.summary()["stage_entry_steps"]
    assert len(entries) == 4, entries  # stages 1, 2 and 3 were entered
    check_stage_lrs(straight_seen, entries, straight.cfg.lr, rollout)
    # The entries are stored once, in the curriculum's state (stage, episode, global step).
    saved = latest(tmp_path / "straight")
    assert [h[2] for h in saved["curriculum"]["stage_history"]][1:] == entries[1:]
    assert "stage_entries" not in saved["lr_schedule"]

    first = workspace_from_overrides(args, tmp_path / "killed")
    killed_after(first, kill_at)
    resumed = workspace_from_overrides(args, tmp_path / "killed")
    at = resumed.global_step
    before = [e for e in entries[1:] if e <= at]
    assert before and len(before) < 3, "stages must be entered before and after the resume"
    # The restored controller knows the entries the checkpoint recorded, before any step.
    assert resumed.lr.schedules.stage_entries == dict(enumerate(before, 1))
    resumed_seen = record_updates(resumed)
    resumed.train()
    after = resumed.summary()["stage_entry_steps"]
    assert after[: len(before) + 1] == [0, *before] and len(after) == 4
    check_stage_lrs(resumed_seen, after, resumed.cfg.lr, rollout)
    if not rollout:  # DrQ-v2: episodes have fixed length, so the rerun is the same run
        assert after == entries
        first_step = resumed_seen[0][0]
        assert resumed_seen == [r for r in straight_seen if r[0] >= first_step]
        assert optimizer_lrs(latest(tmp_path / "killed")) == optimizer_lrs(
            latest(tmp_path / "straight")
        )


GUARDED = [*TINY_PPO, "num_train_frames=4000", "lr=1e-2", "lr_schedule.kl_guard.enabled=true",
           "lr_schedule.kl_guard.target=0.001"]  # fmt: skip


def test_kl_guard_scale_survives_kill9_through_the_cli(tmp_path):
    killed = tmp_path / "killed"
    at_kill, _ = kill_then_rerun(*GUARDED, run_dir=killed, at_step=1500)
    saved = at_kill["lr_schedule"]["kl_guard"]
    assert saved["scale"] < 1.0, "the guard must have acted before the kill for this to bite"

    b = latest(killed)
    guard_b = b["lr_schedule"]["kl_guard"]
    # The rerun carried the guard on: its counts run on from the checkpoint's (one update per
    # 4 x 64-step rollout of the whole run, as an uninterrupted run), its lowest scale includes
    # the killed part's.
    assert guard_b["updates"] == b["global_step"] // 256 > saved["updates"] == 1536 // 256
    assert guard_b["scaled_updates"] >= saved["scaled_updates"]
    assert guard_b["lowest"] <= saved["lowest"]
    # What the optimizer holds at the end is the schedule (constant 1e-2) x the final scale.
    assert optimizer_lrs(b) == pytest.approx({n: 1e-2 * guard_b["scale"] for n in optimizer_lrs(b)})
    assert result(killed)["kl_guard"] == {
        "updates": guard_b["updates"], "scaled_updates": guard_b["scaled_updates"],
        "min_scale_reached": guard_b["lowest"], "scale": guard_b["scale"],
    }  # fmt: skip
    assert all(0.05 <= v <= 1.0 for _, v in scalars(killed, "lr_scale"))


def test_after_a_kill_ppo_resumes_at_the_saved_scale_as_the_uninterrupted_run(tmp_path):
    """The first update after the resume trains at schedule x the checkpoint's scale, at every
    minibatch exactly as the uninterrupted run's does (later updates see other episodes: the
    envs restart at a resume, so their KLs, and the scale they steer, differ)."""
    args = [*GUARDED, "lr_schedule=warmup_cosine"]
    straight = workspace_from_overrides(args, tmp_path / "straight")
    straight_seen = record_updates(straight)
    straight.train()

    first = workspace_from_overrides(args, tmp_path / "killed")
    killed_after(first, 2000)
    saved = latest(tmp_path / "killed")
    resumed = workspace_from_overrides(args, tmp_path / "killed")
    scale = saved["lr_schedule"]["kl_guard"]["scale"]
    assert scale < 1.0 and resumed.lr.guard.scale == scale  # restored before any step
    resumed_seen = record_updates(resumed)
    resumed.train()
    first_step = resumed_seen[0][0]  # the end of the first rollout after the resume
    first_update = [r for r in resumed_seen if r[0] == first_step]
    assert len(first_update) == 3 * 16  # 3 groups x 4 epochs x 4 minibatches
    assert first_update == [r for r in straight_seen if r[0] == first_step]
    clock = saved["global_step"]  # the update's first minibatch reads the rollout's first step
    for _, name, lr in first_update[:3]:
        assert lr == pytest.approx(resumed.schedules[name](clock) * scale, rel=1e-9)
    assert max(lr for _, _, lr in first_update) < 1e-2 * scale * (1 + 1e-9)


BAD_RUNS = {
    "stage_without_curriculum": (["agent=ppo", "env=cartpole", "lr_schedule=stage_based"],
                                 "lr_schedule.encoder.intervals[1].start.stage", "no curriculum"),
    "stage_the_curriculum_lacks": (
        ["lr_schedule=stage_based", "curriculum_preset=aggressive"],
        "lr_schedule.encoder.intervals[3].start.stage", "accepted: 1..2"),
    "stage_out_of_order": (
        ["lr_schedule=stage_based", "lr_schedule.critic.intervals.2.start.stage=1"],
        "lr_schedule.critic.intervals[2].start.stage", "entered in order"),
    "guard_on_drqv2": (["lr_schedule.kl_guard.enabled=true"],
                       "lr_schedule.kl_guard.enabled", "accepted: agent=ppo"),
    "guard_floor": (["agent=ppo", "env=cartpole", "lr_schedule.kl_guard.enabled=true",
                     "lr_schedule.kl_guard.min_scale=1.5"],
                    "lr_schedule.kl_guard.min_scale", "(0, 1]"),
    "guard_network": (["agent=ppo", "env=cartpole", "lr_schedule.kl_guard.enabled=true",
                       "lr_schedule.kl_guard.networks=[actor,polcy]"],
                      "lr_schedule.kl_guard.networks[1]", "unknown network 'polcy'"),
}  # fmt: skip
THROUGH_THE_CLI = ("stage_without_curriculum", "guard_on_drqv2")  # the rest: the same compile path


@pytest.mark.parametrize("case", [c for c in BAD_RUNS if c not in THROUGH_THE_CLI])
def test_bad_stage_starts_and_guards_are_refused_by_the_run_compile_path(case):
    from lr_scheduler import ScheduleError
    from training.build import compose_config
    from training.run import compile_run_schedules

    overrides, path, words = BAD_RUNS[case]
    with pytest.raises(ScheduleError) as err:
        compile_run_schedules(compose_config(overrides))
    assert err.value.path == path and words in err.value.problem, str(err.value)


@pytest.mark.parametrize("case", THROUGH_THE_CLI)
def test_bad_stage_starts_and_guards_exit_2_with_the_key_path_before_any_env(tmp_path, case):
    overrides, path, words = BAD_RUNS[case]
    proc = run_cli(*overrides, NO_ENV, run_dir=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: invalid learning-rate schedule: {path}: "), proc.stderr
    assert words in message and "Traceback" not in proc.stderr
    assert not (tmp_path / "tb").exists() and not (tmp_path / "checkpoints").exists()


def test_a_guard_key_typo_fails_at_compose_time(tmp_path):
    proc = run_cli("agent=ppo", "env=cartpole", "lr_schedule.kl_guard.targt=0.01", NO_ENV,
                   run_dir=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "full_key: lr_schedule.kl_guard.targt" in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: invalid learning-rate schedule: lr_schedule.kl_guard.targt: unknown key "
            "(did you mean 'target'?)"
        )
    )
    assert not (tmp_path / "tb").exists()


def test_preview_shows_stage_starts_at_expected_entries_and_the_guard_envelope(tmp_path):
    staged = run_cli("lr_schedule=stage_based", "dry_run=true", run_dir=tmp_path / "s")
    assert staged.returncode == 0, staged.stderr[-2000:]
    out = staged.stdout
    # balanced's expected entries (fractions 0.08 / 0.32 / 0.39 of the 100k-step default run).
    assert "stage 1 at step 8000, stage 2 at step 32000, stage 3 at step 39000" in out
    assert "expected entries" in out
    rows = [
        line.split() for line in out.splitlines() if line.strip().startswith(("8000 ", "39000 "))
    ]
    assert [r[1] for r in rows[:2]] == ["8.0000e-05", "3.0000e-05"]
    assert (tmp_path / "s" / "lr_schedule.png").stat().st_size > 10_000
    # conservative has no measured entries: drawn evenly spaced, and the preview says which.
    even = run_cli("lr_schedule=stage_based", "curriculum_preset=conservative", "dry_run=true",
                   run_dir=tmp_path / "e")  # fmt: skip
    assert even.returncode == 0, even.stderr[-2000:]
    shown = "stage 1 at step 16667, stage 2 at step 33333, stage 3 at step 50000 (evenly spaced:"
    assert shown in even.stdout

    guard = run_cli(
        "agent=ppo", "env=cartpole", "lr_schedule.kl_guard.enabled=true",
        "lr_schedule.kl_guard.min_scale=0.1", "dry_run=true", run_dir=tmp_path / "g",
    )  # fmt: skip
    assert guard.returncode == 0, guard.stderr[-2000:]
    assert "KL guard on for encoder, actor, critic" in guard.stdout
    assert "scale in [0.1, 1]" in guard.stdout and "approx KL > 0.02" in guard.stdout
    assert "after each update (its mean approx KL)" in guard.stdout
    assert "KL guard envelope: min 2.5000e-05   max 2.5000e-04" in guard.stdout
