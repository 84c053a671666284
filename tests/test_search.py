"""The Optuna search (hydra/sweeper=rl_optuna, lr_search, hparams_search=...): its space, its
storage, pruning, seeds per trial, resume after a kill, joblib, and the winner as a preset.

The subprocess tests train PPO on CartPole for 8,000 frames (about a second each): at 2.5e-4 or
2e-3 its eval return climbs from 10 to 90-170 by step 2,048, while an LR of 1e-8 leaves it at 10.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from cli import ROOT, _env, latest, optimizer_lrs, result, run_cli, scalars
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.rl_optuna_sweeper.space import grid, split
from sweeps import export as exporter
from sweeps import study as studies

PPO = [
    "agent=ppo", "env=cartpole", "agent.num_steps=64", "num_train_frames=8000",
    "log_every_frames=2000", "checkpoint_every_frames=2048", "eval_every_frames=2000",
    "num_eval_episodes=2", "progress=lines",
]  # fmt: skip
HOPELESS = "lr=tag(log, interval(1e-9, 1e-8))"  # the policy does not move from its start


def search(*args: str, sweep_dir: Path, multirun: bool = True, timeout=300):
    return run_cli(*(["-m"] if multirun else []), *args, *PPO, f"hydra.sweep.dir={sweep_dir}",
                   timeout=timeout)  # fmt: skip


def trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study, _ = studies.load_study(sweep_dir)
    return study.get_trials()


def job(sweep_dir: Path, study: str, number: int, seed: int | None = None) -> Path:
    return sweep_dir / (f"{study}_trial{number:03d}" + ("" if seed is None else f"_seed{seed}"))


# ------------------------------------------------------------------------------ unit


def test_the_sweep_syntax_becomes_optuna_distributions():
    space, fixed, where = split(
        {"lr": "tag(log, interval(1e-5, 1e-3))", "agent.hidden_dim": "range(32, 129, 32)",
         "lr_schedule": "choice(constant, warmup_cosine)", "seed": "3"},
        ["lr_schedule.warmup_frac=interval(0.02, 0.3)", "agent.num_steps=tag(int, interval(8, 64))",
         "num_train_frames=1000"],
    )  # fmt: skip
    assert space["lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert space["agent.hidden_dim"] == IntDistribution(32, 128, step=32)
    assert space["lr_schedule"] == CategoricalDistribution(["constant", "warmup_cosine"])
    assert space["lr_schedule.warmup_frac"] == FloatDistribution(0.02, 0.3)
    assert space["agent.num_steps"] == IntDistribution(8, 64)
    assert fixed == ["seed=3", "num_train_frames=1000"]
    assert where["lr"] == "hydra.sweeper.params.lr"
    # A plain value on the command line fixes a key the config searches.
    space, fixed, _ = split({"lr": "interval(1e-5, 1e-3)"}, ["lr=3e-4"])
    assert space == {} and fixed == ["lr=0.0003"]


def test_a_bad_space_names_its_key():
    with pytest.raises(studies.SearchError, match=r"hydra.sweeper.params.lr: unknown tag"):
        split({"lr": "tag(lg, interval(1e-5, 1e-3))"}, [])
    with pytest.raises(studies.SearchError, match=r"hydra.sweeper.params.lr: a log interval"):
        split({"lr": "tag(log, interval(0, 1e-3))"}, [])
    space, _, where = split({"lr": "interval(1e-5, 1e-3)", "x": "choice(1, 2)"}, [])
    with pytest.raises(studies.SearchError, match=r"hydra.sweeper.params.lr: the grid sampler"):
        grid(space, where)
    assert grid({"x": space["x"]}, where) == {"x": [1, 2]}


def test_storage_strings(tmp_path):
    assert studies.storage_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/optuna.db"
    assert studies.storage_url("journal:x.log", tmp_path).endswith("/x.log")
    assert studies.storage_url("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"
    with pytest.raises(studies.SearchError, match=r"hydra.sweeper.storage='study.db'"):
        studies.storage_url("study.db", tmp_path)
    # The journal file storage holds a study that a second opening sees.
    url = studies.storage_url(f"journal:{tmp_path / 'j' / 'study.log'}", tmp_path)
    study = optuna.create_study(study_name="s", storage=studies.open_storage(url))
    study.tell(study.ask(), 1.5)
    again = optuna.load_study(study_name="s", storage=studies.open_storage(url))
    assert [t.value for t in again.trials] == [1.5]


def test_the_recheck_verdict_needs_a_gain_outside_two_standard_errors():
    clear = exporter.verdict([100.0, 104.0, 102.0], [50.0, 54.0], 3, "maximize", [3, 4, 5])
    assert clear["beats_baseline"] is True and clear["mean"] == pytest.approx(102.0)
    noisy = exporter.verdict([100.0, 40.0, 160.0], [90.0, 94.0], 3, "maximize", [3, 4, 5])
    assert noisy["beats_baseline"] is False
    short = exporter.verdict([100.0], [50.0], 3, "maximize", [3, 4, 5])
    assert "only 1 of 3" in short["verdict"]


# ------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_a_pruner_stops_a_trial_a_bad_lr_makes_hopeless(tmp_path):
    proc = search(
        "hydra/sweeper=rl_optuna", "hydra.sweeper.study_name=prune", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner.name=median",
        "hydra.sweeper.pruner.n_startup_trials=1", HOPELESS, sweep_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    baseline, hopeless = trials(tmp_path)
    assert baseline.state == TrialState.COMPLETE and baseline.user_attrs["baseline"]
    assert hopeless.state == TrialState.PRUNED and hopeless.params["lr"] < 1e-8 + 1e-12
    done = result(job(tmp_path, "prune", 1))
    assert done["status"] == "pruned" and done["pruned_at_step"] == done["global_step"] == 2048
    assert hopeless.intermediate_values == {2048: pytest.approx(done["final_eval_return"])}
    assert hopeless.intermediate_values[2048] < baseline.intermediate_values[2048]
    ckpt = job(tmp_path, "prune", 1) / "checkpoints" / "latest.pt"
    from training import checkpoint

    assert checkpoint.load(ckpt)["global_step"] == 2048  # kept: the run can go on by hand
    assert result(job(tmp_path, "prune", 0))["global_step"] == 8192  # ran to its end
    summary = (tmp_path / "summary.md").read_text()
    assert "1 of 2 jobs completed, 1 pruned by the search." in summary
    assert "| 2 | 1 | PRUNED |" in summary and "| 2048 |" in summary
    assert (tmp_path / "optimization_history.png").stat().st_size > 0


@pytest.mark.slow
def test_joblib_trials_with_seeds_share_one_storage_and_average_their_seeds(tmp_path):
    proc = search(
        "hydra/sweeper=rl_optuna", "hydra.sweeper.study_name=seeds", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.seeds=[0,1]", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", "lr=tag(log, interval(1e-3, 3e-3))", sweep_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = trials(tmp_path)
    assert [t.state for t in found] == [TrialState.COMPLETE] * 2
    for trial in found:
        runs = {seed: job(tmp_path, "seeds", trial.number, seed) for seed in (0, 1)}
        values = [result(run)["final_eval_return"] for run in runs.values()]
        assert trial.value == pytest.approx(statistics.fmean(values))  # the mean of its seeds
        for slot, run in enumerate(runs.values()):  # every report of the 4 parallel jobs landed
            evals = {int(s): v for s, v in trial.user_attrs[f"evals_seed{slot}"].items()}
            from_tb = {s: v for s, v in scalars(run, "eval/episode_return") if 0 < s < 8000}
            assert evals == pytest.approx(from_tb) and sorted(evals) == [2048, 4096, 6144]
        for step, value in trial.intermediate_values.items():
            per_seed = [trial.user_attrs[f"evals_seed{k}"][str(step)] for k in (0, 1)]
            assert value == pytest.approx(statistics.fmean(per_seed))
    trial_table = (tmp_path / "summary.md").read_text().split("## Trials")[1]
    best = max(found, key=lambda t: t.value)
    row = next(line for line in trial_table.splitlines() if line.startswith("| 1 |"))
    assert f"| {best.number} | COMPLETE | {best.value:.4g} |" in row and "0:" in row and "1:" in row


@pytest.mark.slow
def test_a_killed_search_continues_when_the_same_command_runs_again(tmp_path):
    args = ["hydra/sweeper=rl_optuna", "hydra.sweeper.study_name=resume",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
            "lr=tag(log, interval(1e-3, 3e-3))", *PPO, "num_train_frames=24000",
            "checkpoint_every_frames=4096", "eval_every_frames=8000",
            f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    cmd = [sys.executable, str(ROOT / "train_curriculum.py"), "-m", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    ckpt = job(tmp_path, "resume", 1) / "checkpoints" / "latest.pt"
    deadline = time.time() + 240
    while not ckpt.exists():  # trial 0 done, trial 1 has checkpointed: kill the whole sweep
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "trial 1 never checkpointed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = trials(tmp_path)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    first = job(tmp_path, "resume", 0) / "result.json"
    stamp = first.stat().st_mtime_ns
    again = run_cli("-m", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    after = trials(tmp_path)
    assert [t.number for t in after] == [0, 1, 2]  # the study went on; no trial was added twice
    assert all(t.state == TrialState.COMPLETE for t in after)
    assert first.stat().st_mtime_ns == stamp  # the finished trial did not run again
    assert after[1].params == before[1].params and after[1].system_attrs[studies.RETRIES] == 1
    log = (job(tmp_path, "resume", 1) / "train_curriculum.log").read_text()
    assert "resuming from" in log  # the retried trial's job went on from its checkpoint
    assert result(job(tmp_path, "resume", 1))["global_step"] == 24064
    assert sorted(p.name for p in tmp_path.glob("resume_trial*")) == [
        "resume_trial000", "resume_trial001", "resume_trial002"
    ]  # fmt: skip


@pytest.mark.slow
def test_hparams_search_runs_without_m_and_its_winner_exports_as_a_preset(tmp_path):
    sweep_dir = tmp_path / "search"
    proc = search("hparams_search=lr_and_schedule", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.seeds=[0]", "hydra.sweeper.pruner.name=none",
                  sweep_dir=sweep_dir, multirun=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    baseline, searched = trials(sweep_dir)
    assert searched.state == TrialState.COMPLETE
    assert set(searched.params) == {"lr", "lr_schedule", "lr_schedule.warmup_frac"}
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(baseline.value, searched.value))

    presets = tmp_path / "presets"
    done = subprocess.run(
        [sys.executable, "-m", "sweeps.export", str(sweep_dir), "--name", "tuned",
         "--trial", str(searched.number), "--dir", str(presets), "--recheck", "1"],
        cwd=ROOT, env=_env(None), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    preset = presets / "lr_schedule" / "tuned.yaml"
    text = preset.read_text()
    assert f"trial {searched.number}:" in text and "study 'lr_and_schedule'" in text
    searchpath = f"hydra.searchpath=[file://{presets}]"
    preview = run_cli(searchpath, "lr_schedule=tuned", *PPO, "dry_run=true",
                      run_dir=tmp_path / "preview")  # fmt: skip
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert (tmp_path / "preview" / "lr_schedule.png").exists()
    # --recheck trained the preset with its default lr on a fresh seed: it gave the LRs the
    # trial's job used, step by step, and its verdict holds that run's return.
    report = yaml.safe_load((sweep_dir / "recheck_tuned.yaml").read_text())
    assert report["completed"] == 1 and report["seeds"] != [0]
    rerun = next((sweep_dir / "recheck_tuned").glob("*/result.json")).parent
    assert report["values"] == [pytest.approx(result(rerun)["final_eval_return"])]
    trial_run = job(sweep_dir, "lr_and_schedule", searched.number, 0)
    for network in ("actor", "critic", "encoder"):
        ours = dict(scalars(rerun, f"lr_{network}"))
        assert len(ours) > 3 and ours == pytest.approx(dict(scalars(trial_run, f"lr_{network}")))
    # The optimizers' saved state ends at the trial's LRs too (the bytes on disk, not the log).
    assert optimizer_lrs(latest(rerun)) == pytest.approx(optimizer_lrs(latest(trial_run)))
    assert json.loads((trial_run / "result.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_grid_search_on_a_journal_file_runs_each_point_once_and_resumes(tmp_path):
    sweep_dir, journal = tmp_path / "grid", tmp_path / "shared" / "study.log"
    args = ["hydra/sweeper=rl_optuna", "hydra.sweeper.study_name=grid", "hydra.sweeper.n_trials=9",
            "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.name=grid",
            f"hydra.sweeper.storage=journal:{journal}", "hydra.sweeper.pruner.name=none",
            "lr=choice(1e-3, 2e-3)", "num_train_frames=2048"]  # fmt: skip
    proc = search(*args, sweep_dir=sweep_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert journal.stat().st_size > 0 and not (sweep_dir / "optuna.db").exists()
    found = trials(sweep_dir)  # read back from the journal file (search.yaml names it)
    assert [t.state for t in found] == [TrialState.COMPLETE] * 3  # the baseline + 2 points
    assert sorted(t.params["lr"] for t in found[1:]) == [1e-3, 2e-3]  # each point once
    for trial in found[1:]:  # the job trained at the point's LR
        run = job(sweep_dir, "grid", trial.number)
        lrs = [v for _, v in scalars(run, "lr_actor")]
        assert lrs and lrs == pytest.approx([trial.params["lr"]] * len(lrs))
        held = optimizer_lrs(latest(run))  # what the saved optimizer state holds, on disk
        assert held == pytest.approx({n: trial.params["lr"] for n in held}) and len(held) == 3
    stamps = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("grid_trial*/result.json")}
    again = search(*args, sweep_dir=sweep_dir)  # the grid is done: nothing runs again
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(trials(sweep_dir)) == 3
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("grid_trial*/result.json")} == stamps


@pytest.mark.slow
def test_cmaes_searches_the_written_space_instead_of_falling_back_to_random(tmp_path):
    proc = search(
        "hydra/sweeper=rl_optuna", "hydra.sweeper.study_name=cma", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.name=cmaes",
        "hydra.sweeper.sampler.n_startup_trials=1", "hydra.sweeper.pruner.name=none",
        "lr=tag(log, interval(1e-3, 3e-3))", "agent.ent_coef=interval(0.0, 0.02)",
        "num_train_frames=1024", sweep_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    baseline, *searched = trials(tmp_path)
    assert baseline.params == {} and len(searched) == 3
    # Each point came from the CMA-ES optimizer (it tags what it samples with its generation);
    # with optuna's own inference the baseline's empty params left nothing for CMA-ES to search.
    for trial in searched:
        assert trial.state == TrialState.COMPLETE
        assert set(trial.params) == {"lr", "agent.ent_coef"}
        assert any(key.endswith(":generation") for key in trial.system_attrs), trial.system_attrs
    assert "sampled independently" not in proc.stderr
