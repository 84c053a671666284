"""The real CLI, in subprocesses, with tiny budgets: presets, overrides, previews, errors."""

from __future__ import annotations

import textwrap

import pytest
from cli import ROOT, TINY, latest, optimizer_lrs, run_cli, scalars
from helpers import NO_ENV

import lr_scheduler as L
import training.schema as config_schema
from training.build import compose_config
from training.run import compile_run_schedules

PRESETS = sorted(p.stem for p in (ROOT / "cfgs" / "lr_schedule").glob("*.yaml"))
DEFAULT_FRAMES = config_schema.TrainConfig.num_train_frames


def composed(*overrides: str):
    return compose_config(list(overrides))


def test_shipped_presets_are_the_spec_list():
    assert set(PRESETS) >= {
        "constant", "gentle_decay", "aggressive_decay", "exponential_smooth", "stage_based",
        "differential", "warmup_cosine", "recurrent_warmup",
    }  # fmt: skip


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_follow_lr_and_run_length(preset):
    small = compile_run_schedules(composed(f"lr_schedule={preset}"))
    big = compile_run_schedules(
        composed(f"lr_schedule={preset}", "lr=2.0e-4", f"num_train_frames={2 * DEFAULT_FRAMES}")
    )
    for net in L.NETWORKS:
        assert big[net](0) == pytest.approx(2 * small[net](0))
        assert [2 * b for b in small[net].boundaries] == pytest.approx(big[net].boundaries, abs=1)


def test_constant_is_identical_to_no_schedule():
    sset = compile_run_schedules(composed("lr_schedule=constant", "lr=3e-4"))
    assert all(sset[n](t) == 3e-4 for n in L.NETWORKS for t in (0, 10**4, 10**7))
    assert sset.fingerprint == L.compile_schedules(None, base_lr=3e-4).fingerprint


def test_all_presets_train_in_one_sweep(tmp_path):
    short = [*TINY, "num_train_frames=1500", "checkpoint_every_frames=1500"]
    proc = run_cli(
        "-m", f"lr_schedule={','.join(PRESETS)}", *short,
        f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for num, preset in enumerate(PRESETS):
        run_dir = tmp_path / str(num)
        expected = compile_run_schedules(composed(f"lr_schedule={preset}", *short))
        # The optimizers end the run holding the schedule's last LRs ...
        final = optimizer_lrs(latest(run_dir))
        assert final == pytest.approx({n: expected[n](1500) for n in L.NETWORKS}), preset
        # ... and held the schedule's LR at every logged step and boundary (the lr_* scalars
        # are read back from the optimizers; a mismatch would have stopped the run).
        for net in L.NETWORKS:
            logged = scalars(run_dir, f"lr_{net}")
            assert logged and logged[-1][0] == 1500
            for step, value in logged:
                assert value == pytest.approx(expected[net](step), rel=1e-6), (preset, net, step)


def test_default_command_trains_and_writes_outputs(tmp_path):
    proc = run_cli(*TINY, run_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / ".hydra" / "config.yaml").exists()
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
    assert (tmp_path / "train_curriculum.log").read_text().count("step ") >= 3
    for tag in ("lr_encoder", "lr_actor", "lr_critic", "curriculum/stage",
                "train/episode_return", "eval/episode_return", "train/critic_loss"):  # fmt: skip
        assert scalars(tmp_path, tag), tag
    actor = [v for _, v in scalars(tmp_path, "lr_actor")]
    assert len(actor) == 7 and actor == pytest.approx([1e-4] * 7)  # steps 0, 500, ..., 3000
    state = latest(tmp_path)
    assert state["global_step"] == 3000 and optimizer_lrs(state) == {n: 1e-4 for n in L.NETWORKS}
    assert all(state["agent"]["optimizers"][n]["state"] for n in L.NETWORKS)  # it trained


ALL = ("encoder", "actor", "critic")


@pytest.mark.parametrize(
    "line, table",
    [
        # 1x -> 0.5x -> 0.2x -> 0.05x of lr=2e-4 at 20 %, 40 %, 60 % of 3M steps
        ("lr_schedule=aggressive_decay lr=2.0e-4 num_train_frames=3000000",
         {ALL: [(0, 2e-4), (600000, 1e-4), (1200000, 4e-5), (1800000, 1e-5), (3000000, 1e-5)]}),
        # conservative has no measured entries: stages 1-3 drawn evenly spaced (1/6 of the run)
        ("lr_schedule=stage_based curriculum_preset=conservative",
         {ALL: [(0, 1e-4), (16667, 8e-5), (33333, 5e-5), (50000, 3e-5), (100000, 3e-5)]}),
        ("lr_schedule=differential encoder_bundle@agent=enc_B",
         {("encoder",): [(0, 8e-5), (50000, 4e-5), (100000, 4e-5)],
          ("actor",): [(0, 1.2e-4), (100000, 3e-5)],
          ("critic",): [(0, 1.5e-4), (30000, 5e-5), (100000, 5e-5)]}),
        # a 10 % warmup from 0.01x, then linear to 0.01x
        ("lr_schedule=warmup_cosine lr_schedule.warmup_frac=0.1 lr_schedule.decay=linear",
         {ALL: [(0, 1e-6), (10000, 1e-4), (100000, 1e-6)]}),
    ],
)  # fmt: skip
def test_spec_command_lines_preview(line, table, tmp_path):
    from matplotlib.image import imread

    proc = run_cli(*line.split(), "dry_run=true", run_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for nets, rows in table.items():  # the table shows the documented LR at each boundary
        for net in nets:
            section = proc.stdout.split(f"[{net}]")[1].split("\n[")[0]
            for step, lr in rows:
                assert f"{step:>12}  {lr:>11.4e}" in section, (net, step)
    assert imread(tmp_path / "lr_schedule.png").std() > 0.05  # a drawn figure, not a blank one
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "tb").exists()


def test_spec_training_lines_with_tiny_budget(tmp_path):
    for k, line in enumerate([
        "lr_schedule=stage_based curriculum_preset=conservative",
        "lr_schedule=differential encoder_bundle@agent=enc_B",
        "env=pendulum lr_schedule=gentle_decay",
    ]):  # fmt: skip
        proc = run_cli(*line.split(), *TINY, "num_train_frames=1000", run_dir=tmp_path / str(k))
        assert proc.returncode == 0, (line, proc.stderr[-3000:])
        assert scalars(tmp_path / str(k), "eval/episode_return"), line


def test_seed_sweep_line_gives_readable_job_dirs(tmp_path):
    proc = run_cli(
        "-m", "lr_schedule=constant,gentle_decay", "seed=0,1", *TINY, "num_train_frames=1000",
        f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert [j.split("_")[0] for j in jobs] == ["0", "1", "2", "3"]
    assert all(len(j) < 140 for j in jobs)  # long override lists are cut and hashed
    assert all((tmp_path / j / "result.json").exists() for j in jobs)
    overrides = (tmp_path / jobs[3] / ".hydra" / "overrides.yaml").read_text()
    assert "lr_schedule=gentle_decay" in overrides and "seed=1" in overrides


def test_short_override_lists_name_sweep_dirs_in_full():
    assert config_schema.safe_dirname("lr_schedule=constant,seed=0") == (
        "lr_schedule=constant,seed=0"
    )
    assert "/" not in config_schema.safe_dirname("hydra.searchpath=[file:///x]")


def test_dotted_override_into_a_list_element_and_type_switch(tmp_path):
    proc = run_cli(
        "lr_schedule=gentle_decay", "lr_schedule.encoder.intervals.0.lr=2.0e-4",
        "lr_schedule.actor.type=exponential_decay", "dry_run=true", run_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    encoder = proc.stdout.split("[encoder]")[1].split("[actor]")[0]
    actor = proc.stdout.split("[actor]")[1].split("[critic]")[0]
    assert "2.0000e-04  #0 step_decay" in encoder
    assert "exponential_decay" in actor


def test_dry_run_builds_nothing(tmp_path):
    proc = run_cli("lr_schedule=gentle_decay", "dry_run=true", NO_ENV, run_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no env or agent was built" in proc.stdout
    assert (tmp_path / "lr_schedule.png").exists()
    assert not (tmp_path / "tb").exists() and not (tmp_path / "checkpoints").exists()


PRESET_BODY = """\
  encoder:
    type: cosine
    intervals:
      - {start: 0, end: 1000, lr: 3.0e-4, final_lr: 1.0e-5}
      - {start: 1000, lr: 1.0e-5}
"""


@pytest.mark.parametrize("form", ["global", "group"])
def test_custom_preset_from_searchpath(tmp_path, form):
    folder = tmp_path / "my_presets" / "lr_schedule"
    folder.mkdir(parents=True)
    if form == "global":
        text = "# @package _global_\nlr_schedule:\n" + PRESET_BODY
    else:
        text = textwrap.dedent(PRESET_BODY)
    (folder / "my_preset.yaml").write_text(text)
    proc = run_cli(
        f"hydra.searchpath=[file://{tmp_path / 'my_presets'}]", "lr_schedule=my_preset",
        *TINY, run_dir=tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = dict(scalars(tmp_path / "run", "lr_encoder"))
    assert logged[0] == pytest.approx(3e-4) and logged[1000] == pytest.approx(1e-5)
    assert logged[500] == pytest.approx((3e-4 + 1e-5) / 2, rel=1e-5)
    actor = [v for _, v in scalars(tmp_path / "run", "lr_actor")]
    assert actor and actor == pytest.approx([1e-4] * len(actor))
    # The open last interval is a cosine too (the network's type), from 1e-5 down to the
    # documented default final_lr (init / 10) at the end of training.
    held = optimizer_lrs(latest(tmp_path / "run"))
    assert held == pytest.approx({"encoder": 1e-6, "actor": 1e-4, "critic": 1e-4})


BAD_PRESETS = {
    "overlap": ("      - {start: 0, end: 1000, lr: 1.0e-4}\n"
                "      - {start: 500, end: 2000, lr: 5.0e-5}\n",
                "lr_schedule.actor.intervals[1].start", "overlaps"),
    "negative": ("      - {start: 0, end: 1000, lr: -1.0e-4}\n",
                 "lr_schedule.actor.intervals[0].lr", "> 0"),
    "gamma_twice": ("      - {type: step, start: 0, lr: 1.0e-4, gamma: 0.5, decay_rate: 0.5}\n",
                    "lr_schedule.actor.intervals[0].gamma", "gamma and decay_rate both given"),
    "two_warmups": ("      - {start: 0, lr: 1.0e-4}\n  warmup_frac: 0.1\n  warmup_steps: 100\n",
                    "lr_schedule.warmup_steps", "warmup_frac and warmup_steps both given"),
    "bad_target": ("      - {start: 0, lr: 1.0e-4}\n"
                   "  critic: {_target_: lr_scheduler.get_lr_schedule, max_lr: 1.0e-4}\n",
                   "lr_schedule.critic._target_", "cannot import"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_PRESETS))
def test_bad_preset_exits_with_the_key_path_before_any_env(tmp_path, case):
    rows, path, words = BAD_PRESETS[case]
    folder = tmp_path / "p" / "lr_schedule"
    folder.mkdir(parents=True)
    (folder / "bad.yaml").write_text(
        "# @package _global_\nlr_schedule:\n  actor:\n    intervals:\n" + rows
    )
    proc = run_cli(
        f"hydra.searchpath=[file://{tmp_path / 'p'}]", "lr_schedule=bad", NO_ENV,
        run_dir=tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(f"error: invalid learning-rate schedule: {path}: "), proc.stderr
    assert words in message and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "tb").exists()


@pytest.mark.parametrize(
    "where, text",
    [
        ("file", "      - {start: 0, end: 1000, lr: 1.0e-4, decay_rte: 0.9}\n"),
        ("knob", "      - {start: 0, lr: 1.0e-4}\n  warmup_step: 100\n"),
        ("override", "      - {start: 0, lr: 1.0e-4}\n"),
    ],
)
def test_a_typo_in_a_preset_or_override_fails_before_anything_is_built(tmp_path, where, text):
    """Inside a network the schema refuses the key at compose time (Hydra names the file); a
    key next to the networks may be a group of the agent, so the schedule compiler refuses it,
    with a close match, before any env exists."""
    folder = tmp_path / "p" / "lr_schedule"
    folder.mkdir(parents=True)
    (folder / "typo.yaml").write_text(
        "# @package _global_\nlr_schedule:\n  actor:\n    intervals:\n" + text
    )
    extra = ["lr_schedule.actor.intervals.0.decay_rte=0.9"] if where == "override" else []
    proc = run_cli(
        f"hydra.searchpath=[file://{tmp_path / 'p'}]", "lr_schedule=typo", *extra, NO_ENV,
        run_dir=tmp_path / "run",
    )  # fmt: skip
    assert not (tmp_path / "run" / "tb").exists()
    if where == "knob":
        assert "accepted: encoder, actor, critic, warmup_frac" in proc.stderr
    elif where == "override":
        assert "Key 'decay_rte' not in" in proc.stderr, proc.stderr
        assert "full_key: lr_schedule.actor.intervals[0].decay_rte" in proc.stderr
    else:  # Hydra names the file and the class, not where in it
        assert "Key 'decay_rte' not in" in proc.stderr, proc.stderr
        assert "In 'lr_schedule/typo'" in proc.stderr
    # The last line names the key path and a close match.
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    path, close = {
        "file": ("lr_schedule.actor.intervals[0].decay_rte", "decay_rate"),
        "override": ("lr_schedule.actor.intervals[0].decay_rte", "decay_rate"),
        "knob": ("lr_schedule.warmup_step", "warmup_steps"),
    }[where]
    assert last.startswith(f"error: invalid learning-rate schedule: {path}: unknown key"), last
    assert f"did you mean '{close}'" in last


@pytest.mark.parametrize(
    "override, message",
    [("num_train_frame=1000", "num_train_frame: unknown key (did you mean 'num_train_frames'?); "
                              "accepted: action_repeat, agent,"),
     ("replay.batch_sze=64", "replay.batch_sze: unknown key (did you mean 'batch_size'?); "
                             "accepted: batch_size, capacity, discount, nstep"),
     # A key of the chosen agent's own config (not in the root schema): checked against it.
     ("agent=ppo agent.num_step=64", "agent.num_step: unknown key (did you mean 'num_steps'?)")],
)  # fmt: skip
def test_a_misspelt_run_key_exits_2_naming_its_path_before_anything(tmp_path, override, message):
    proc = run_cli(*override.split(), "dry_run=true", run_dir=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: invalid config: {message}")
    assert not (tmp_path / "lr_schedule.png").exists()


def test_kill_switch_says_so_and_trains_at_base_lr(tmp_path):
    proc = run_cli(
        "lr_schedule=aggressive_decay", *TINY, run_dir=tmp_path, env={"LR_SCHEDULE_DISABLE": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LR_SCHEDULE_DISABLE=1" in proc.stderr
    critic = [v for _, v in scalars(tmp_path, "lr_critic")]
    assert len(critic) == 7 and critic == pytest.approx([1e-4] * 7)  # aggressive_decay ignored
    # aggressive_decay would end at 0.05x; the optimizers still hold the base lr.
    assert optimizer_lrs(latest(tmp_path)) == {n: 1e-4 for n in L.NETWORKS}
