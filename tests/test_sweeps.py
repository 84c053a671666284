"""Sweeps through every launcher, with tiny budgets: the summary, failures, SLURM without a
cluster, and what TensorBoard shows for a sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from cli import ROOT, TINY, run_cli, scalars, start_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from sweeps import summary as sweep_summary
from training import checkpoint

SHORT = [*TINY, "num_train_frames=1000", "eval_every_frames=500"]
DIVERGES = "lr=1e30"  # Adam at this LR turns the actor loss into NaN/inf at the first update


def sweep(*args: str, sweep_dir: Path, env: dict | None = None):
    return run_cli("-m", *args, *SHORT, f"hydra.sweep.dir={sweep_dir}", env=env)


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def job_dir(sweep_dir: Path, num: int) -> Path:
    (found,) = sweep_dir.glob(f"{num}_*")
    return found


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """Basic launcher: two healthy jobs and one that diverges."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    proc = sweep(f"lr=1e-4,3e-4,{DIVERGES.split('=')[1]}", sweep_dir=sweep_dir)
    return proc, sweep_dir


def test_a_diverging_job_fails_the_command_but_not_the_sweep(failing_sweep):
    proc, sweep_dir = failing_sweep
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: 1 of 3 sweep jobs failed or did not finish" in proc.stderr
    failed = json.loads((job_dir(sweep_dir, 2) / "result.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("Diverged: diverged at step")
    assert "Traceback" in (job_dir(sweep_dir, 2) / "train_curriculum.log").read_text()
    for num in (0, 1):  # the jobs around it ran to the end
        assert json.loads((job_dir(sweep_dir, num) / "result.json").read_text())["status"] == (
            "completed"
        )


def test_summary_ranks_jobs_by_final_return_failed_last(failing_sweep):
    _, sweep_dir = failing_sweep
    rows = summary_rows(sweep_dir)
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert rows[2]["overrides"] == "lr=1e+30" and "Diverged" in rows[2]["error"]
    returns = [float(r["final_eval_return"]) for r in rows[:2]]
    assert returns == sorted(returns, reverse=True)
    for row in rows:
        result = json.loads((sweep_dir / row["run_dir"] / "result.json").read_text())
        assert float(row["final_eval_return"]) == pytest.approx(result["final_eval_return"])
        assert row["stage"].startswith(f"{result['stage_reached'] + 1}/")
        assert float(row["wall_time_s"]) > 0 and float(row["steps_per_s"]) > 0
    markdown = (sweep_dir / "summary.md").read_text()
    assert f"**Winner: job {rows[0]['job']} ({rows[0]['overrides']})**" in markdown
    assert "2 of 3 jobs completed" in markdown and "num_train_frames=1000" in markdown
    assert markdown.count("\n| ") == 4  # header + one line per job
    assert (sweep_dir / "summary.png").stat().st_size > 20_000


def test_tensorboard_names_runs_by_job_and_compares_hparams(failing_sweep):
    _, sweep_dir = failing_sweep
    run = job_dir(sweep_dir, 1)
    # TensorBoard names the run by its dir: job number, then the overrides (cut when long)
    assert run.name.startswith("1_agent.feature_dim=16,")
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["lr"].number_value == pytest.approx(3e-4)
    assert hparams["lr_schedule"].string_value == "constant"
    assert hparams["status"].string_value == "completed"
    assert hparams["num_train_frames"].number_value == 1000
    result = json.loads((run / "result.json").read_text())
    ((step, final),) = scalars(run, "hparams/final_eval_return")
    assert step == 1000 and final == pytest.approx(result["final_eval_return"], rel=1e-6)


def test_ranking_breaks_return_ties_by_stage_reached():
    rows = [
        {"job": 0, "status": "completed", "final_eval_return": 5.0, "stage_reached": 1},
        {"job": 1, "status": "failed", "final_eval_return": 9.0, "stage_reached": 3},
        {"job": 2, "status": "completed", "final_eval_return": 5.0, "stage_reached": 2},
        {"job": 3, "status": "completed", "final_eval_return": 7.0, "stage_reached": 0},
        {"job": 4, "status": "missing"},
    ]
    assert [r["job"] for r in sweep_summary.rank(rows)] == [3, 2, 0, 1, 4]


def hand_made_job(sweep_dir: Path, num: int, overrides: list[str], result: dict | None) -> Path:
    """A job dir as Hydra and the run leave it: ``.hydra/hydra.yaml``, and ``result.json`` unless
    the job was killed from outside."""
    run_dir = sweep_dir / f"{num}_{','.join(overrides)}"
    (run_dir / ".hydra").mkdir(parents=True)
    hydra_yaml = {"hydra": {"job": {"num": num}, "overrides": {"task": overrides}}}
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_yaml))
    if result is not None:
        (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def finished(final: float, stage: int, **extra) -> dict:
    return {
        "status": "completed", "error": None, "final_eval_return": final,
        "best_eval_return": final + 1.0, "stage_reached": stage, "num_stages": 3,
        "stage_name": ["reach", "hold", "track"][stage], "final_stage_step": None,
        "global_step": 1000, "wall_time_s": 12.5, "steps_per_s": 80.0, **extra,
    }  # fmt: skip


def test_summary_rebuilt_by_hand_from_the_job_dirs(tmp_path):
    results = {
        0: finished(10.0, 1),
        1: finished(
            30.0,
            2,
            final_stage_step=800,
            stage_entry_steps=[0, 300, 800],
            kl_guard={"updates": 40, "scaled_updates": 12, "min_scale_reached": 0.25, "scale": 1.0},
        ),  # fmt: skip
        2: {**finished(50.0, 0), "status": "failed", "error": "Diverged: diverged at step 7"},
        3: None,  # killed from outside: no result.json
        4: {**finished(60.0, 1), "status": "preempted", "error": "SIGTERM at step 600: ..."},
    }
    for num, result in results.items():
        hand_made_job(tmp_path, num, ["seed=0", f"lr={num + 1}e-4"], result)
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps.summary", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1  # a job failed
    assert "error: job 2 (lr=3e-4) failed: Diverged: diverged at step 7" in proc.stderr
    assert "error: job 3 (lr=4e-4) missing: no result.json" in proc.stderr
    assert "error: job 4 (lr=5e-4) preempted: SIGTERM at step 600" in proc.stderr
    assert "error: 3 of 5 sweep jobs failed or did not finish" in proc.stderr
    rows = summary_rows(tmp_path)
    # A job that did not finish ranks below every finished one, whatever its return so far.
    assert [(r["rank"], r["job"], r["status"]) for r in rows] == [
        ("1", "1", "completed"), ("2", "0", "completed"), ("3", "4", "preempted"),
        ("4", "2", "failed"), ("5", "3", "missing"),
    ]  # fmt: skip
    for row in rows:
        result = results[int(row["job"])] or {}
        assert row["overrides"] == f"lr={int(row['job']) + 1}e-4"  # the common seed=0 left out
        for column in ("final_eval_return", "best_eval_return", "global_step", "wall_time_s",
                       "steps_per_s", "final_stage_step"):  # fmt: skip
            value = result.get(column)
            assert (row[column] == "") if value is None else float(row[column]) == value, column
        assert row["error"] == (result.get("error") or "")
    assert rows[0]["stage"] == "3/3 track" and rows[1]["stage"] == "2/3 hold"
    # Stage entries and the KL guard's activity, where the run had them.
    assert (rows[0]["stage_entries"], rows[0]["kl_scaled"], rows[0]["kl_min_scale"]) == (
        "300 800", "12/40", "0.25",
    )  # fmt: skip
    assert (rows[1]["stage_entries"], rows[1]["kl_scaled"]) == ("", "")
    markdown = (tmp_path / "summary.md").read_text()
    assert "**Winner: job 1 (lr=2e-4)**, final eval return 30, stage 3/3 track." in markdown
    assert "2 of 5 jobs completed." in markdown and "Common to every job: `seed=0`" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[1] for line in table[1:]] == ["1", "0", "4", "2", "3"]  # job column
    assert "| 300 800 | 12/40 | 0.25 |" in table[1]
    assert (tmp_path / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_joblib_runs_jobs_in_parallel_and_reseeds_reused_workers(tmp_path):
    proc = sweep(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,0", sweep_dir=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout
    results = [json.loads((job_dir(tmp_path, n) / "result.json").read_text()) for n in range(3)]
    # TensorBoard event files end in <pid>.<n>: two worker processes, one of them reused
    pids = {f.name.split(".")[-2] for f in tmp_path.glob("*/tb/events.out.tfevents.*")}
    assert len(pids) == 2
    assert results[2]["final_eval_return"] == results[0]["final_eval_return"]  # same seed
    assert [r["status"] for r in summary_rows(tmp_path)] == ["completed"] * 3


def test_submitit_local_records_a_job_that_raises(tmp_path):
    proc = sweep("hydra/launcher=submitit_local", "env.id=Gimbal-v0,DoesNotExist-v0",
                 sweep_dir=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    rows = summary_rows(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    assert "DoesNotExist" in rows[1]["error"]
    assert (tmp_path / ".submitit").is_dir()


def _processes_with(*parts: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        if all(part in text for part in parts):
            pids.append(int(cmdline.parent.name))
    return pids


def test_submitits_preemption_signal_checkpoints_requeues_and_resumes(tmp_path):
    # On SLURM, submitit hears SIGUSR2 (sent before the time limit and on preemption) and
    # requeues the job; submitit_local does the same on one machine. The run must checkpoint
    # at that moment, not lose what it did since its last periodic checkpoint (every 1,000).
    proc = start_cli("-m", "hydra/launcher=submitit_local", *TINY, "num_train_frames=4000",
                     f"hydra.sweep.dir={tmp_path}", run_dir=tmp_path / "unused")  # fmt: skip
    deadline = time.time() + 120
    while not list(tmp_path.glob("0_*/checkpoints/latest.pt")):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    ckpt = job_dir(tmp_path, 0) / "checkpoints" / "latest.pt"

    def step_on_disk() -> int | None:
        try:
            return checkpoint.load(ckpt)["global_step"]
        except FileNotFoundError:  # between the two renames of an atomic write
            return None

    (job,) = _processes_with("submitit.core._submit", str(tmp_path))
    time.sleep(0.5)  # past the periodic checkpoint
    while (periodic := step_on_disk()) is None:
        time.sleep(0.02)
    os.kill(job, signal.SIGUSR2)
    # The checkpoint on disk moves to the step the signal arrived at (the requeued job needs
    # seconds to start, then 1,000 steps before its next periodic one).
    while (saved := step_on_disk()) in (periodic, None):
        assert time.time() < deadline, "no checkpoint at the signal"
        time.sleep(0.02)
    assert saved % 1000 != 0, saved
    assert proc.wait(timeout=180) == 0, proc.stderr.read().decode()[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(job, 0)  # the signalled process is gone: a requeued one finished the run
    log = (job_dir(tmp_path, 0) / "train_curriculum.log").read_text()
    assert f"at global step {saved}" in log  # it resumed from the signal's checkpoint
    done = json.loads((job_dir(tmp_path, 0) / "result.json").read_text())
    assert done["status"] == "completed" and done["global_step"] == 4000
    assert checkpoint.load(ckpt)["global_step"] == 4000
    assert [r["status"] for r in summary_rows(tmp_path)] == ["completed"]


def test_single_run_failure_exits_nonzero_and_is_recorded(tmp_path):
    proc = run_cli(*SHORT, DIVERGES, run_dir=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Diverged: diverged at step ")
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


FAKE_SBATCH = """\
#!{python}
# Stands in for SLURM's sbatch: keep the batch script, then run its array tasks one after the
# other in the background (as SLURM would, later), and answer like sbatch.
import os, re, subprocess, sys
script = open(sys.argv[-1]).read()
open(os.path.join(os.environ["FAKE_SLURM_LOG"], "batch.sh"), "w").write(script)
last = int(re.search(r"--array=0-(\\d+)%", script).group(1))
env = dict(os.environ, SLURM_JOB_ID="4242", SLURM_ARRAY_JOB_ID="4242", SLURM_NTASKS="1",
           SLURM_JOB_NUM_NODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="localhost",
           SLURM_PROCID="0", SLURM_LOCALID="0")
tasks = "; ".join(f"SLURM_ARRAY_TASK_ID={{i}} bash {{sys.argv[-1]}}" for i in range(last + 1))
subprocess.Popen(["bash", "-c", tasks], env=env, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, start_new_session=True)
print("Submitted batch job 4242")
"""
FAKE_SRUN = """\
#!/bin/bash
# srun [options] command: drop the options, run the command here.
while [[ $1 == --* ]]; do
  case $1 in --output|--error) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""
FAKE_SACCT = """\
#!/bin/bash
echo "JobID|State|NodeList"
"""


def test_slurm_launcher_writes_the_batch_script_and_runs_without_a_cluster(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"sbatch": FAKE_SBATCH.format(python=sys.executable), "srun": FAKE_SRUN,
             "sacct": FAKE_SACCT, "scancel": "#!/bin/bash\n"}  # fmt: skip
    for name, text in fakes.items():
        (bin_dir / name).write_text(textwrap.dedent(text))
        (bin_dir / name).chmod(stat.S_IRWXU)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_SLURM_LOG": str(tmp_path)}
    proc = sweep(
        "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=30",
        "hydra.launcher.gpus_per_node=1", "hydra.launcher.array_parallelism=2", "seed=0,1,2",
        sweep_dir=tmp_path / "sweep", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = (tmp_path / "batch.sh").read_text()
    for line in ("--array=0-2%2", "--partition=debug", "--time=30", "--gpus-per-node=1",
                 "--cpus-per-task=2", "--mem=16GB"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script, script
    assert "srun" in script and "submitit.core._submit" in script
    rows = summary_rows(tmp_path / "sweep")
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"]
    assert all(r["status"] == "completed" for r in rows)
