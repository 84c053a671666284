"""One answer per sweep: rank the jobs of a multirun by final evaluation return.

Runs as a Hydra callback when a multirun ends (``hydra.callbacks`` in cfgs/config.yaml), in the
launching process, whatever the launcher. Every job leaves ``result.json`` in its run dir (status
"failed" and the error when it raised or diverged, "preempted" and the step when a SIGTERM or
SIGINT stopped it after a checkpoint); this gathers them into

- ``summary.csv``: one row per job, every column;
- ``summary.md``: the ranking table and the winner (failed jobs last);
- ``summary.png``: the jobs' LR curves and learning curves, read from their TensorBoard events.

Then the command exits with status 1 if any job failed. To (re)write the summary of a sweep dir
by hand, e.g. after a cluster job was killed: ``python -m sweeps.summary <sweep dir>``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweeps.study import STUDY_FILE

COLUMNS = [
    "rank", "job", "overrides", "status", "final_eval_return", "best_eval_return", "stage",
    "final_stage_step", "stage_entries", "kl_scaled", "kl_min_scale", "global_step",
    "wall_time_s", "steps_per_s", "error", "run_dir",
]  # fmt: skip
SHOWN = [  # the markdown table: what decides a comparison, in reading order
    "rank", "job", "overrides", "status", "final_eval_return", "best_eval_return", "stage",
    "final_stage_step", "stage_entries", "kl_scaled", "kl_min_scale", "wall_time_s",
    "steps_per_s", "error",
]  # fmt: skip


def load_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job dir (a dir with ``.hydra/hydra.yaml``); ``status`` "missing" when the job
    left no result.json (killed from outside: out of memory, cluster time limit)."""
    rows = []
    for hydra_yaml in sorted(sweep_dir.glob("*/.hydra/hydra.yaml")):
        run_dir = hydra_yaml.parent.parent
        job = yaml.safe_load(hydra_yaml.read_text())["hydra"]
        result_file = run_dir / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        stage = result.get("stage_reached")
        guard = result.get("kl_guard") or {}
        entries = result.get("stage_entry_steps") or []
        rows.append(
            {
                **result,
                "job": int(job["job"]["num"]),
                "override_list": list(job["overrides"]["task"]),
                "status": result.get("status", "missing"),
                "stage": None
                if stage is None
                else f"{stage + 1}/{result['num_stages']} {result['stage_name']}",
                "run_dir": run_dir.name,
                # Steps at which stages 1, 2, ... were entered; the KL guard's activity.
                "stage_entries": " ".join(str(e) for e in entries[1:]) or None,
                "kl_scaled": f"{guard['scaled_updates']}/{guard['updates']}" if guard else None,
                "kl_min_scale": guard.get("min_scale_reached"),
            }
        )
    return rows


# Jobs that ended as they should: a search's pruner stopping a trial is not a failure.
ENDED = ("completed", "pruned")


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed jobs by final eval return, then stage reached (best first); then the jobs a
    search pruned (the same order); the others (failed, preempted, missing) last."""

    def key(row):
        final = row.get("final_eval_return")
        ok = row["status"] in ENDED and final is not None and math.isfinite(final)
        group = ENDED.index(row["status"]) if ok else len(ENDED)
        return (group, -(final if ok else 0.0), -(row.get("stage_reached") or 0), row["job"])

    ranked = sorted(rows, key=key)
    for position, row in enumerate(ranked, 1):
        row["rank"] = position
    return ranked


def name_by_differences(rows: list[dict[str, Any]]) -> list[str]:
    """Each job's ``overrides``: only those that differ between jobs; returns the common ones."""
    common = set.intersection(*(set(r["override_list"]) for r in rows)) if rows else set()
    for row in rows:
        row["overrides"] = " ".join(o for o in row["override_list"] if o not in common) or "-"
    return sorted(common)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_markdown(rows: list[dict[str, Any]], common: list[str], path: Path) -> None:
    best = rows[0] if rows and rows[0]["status"] == "completed" else None
    failed = [r for r in rows if r["status"] not in ENDED]
    pruned = sum(r["status"] == "pruned" for r in rows)
    paragraphs = [
        f"# Sweep summary: {path.parent}",
        f"**Winner: job {best['job']} ({best['overrides']})**, final eval return "
        f"{_cell(best['final_eval_return'])}, stage {best['stage'] or '-'}."
        if best
        else "**No job completed.**",
        f"{len(rows) - len(failed) - pruned} of {len(rows)} jobs completed"
        + (f", {pruned} pruned by the search." if pruned else "."),
    ]
    if common:
        paragraphs.append(f"Common to every job: `{' '.join(common)}`")
    table = ["| " + " | ".join(SHOWN) + " |", "|" + "---|" * len(SHOWN)]
    table += ["| " + " | ".join(_cell(r.get(c)) for c in SHOWN) + " |" for r in rows]
    path.write_text("\n\n".join(paragraphs) + "\n\n" + "\n".join(table) + "\n")


def _curve(tb_dir: Path, tags: list[str]) -> tuple[str, list[int], list[float]] | None:
    """The first of ``tags`` the run logged (steps, values), or None."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not tb_dir.exists():
        return None
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # no per-file INFO lines
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in tags:
        if tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            return tag, [e.step for e in events], [e.value for e in events]
    return None


def plot(rows: list[dict[str, Any]], sweep_dir: Path, path: Path) -> None:
    """Left: each job's LR (actor network; its schedule as TensorBoard shows it); right: its
    evaluation return (training-episode return where a job never evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lr, ax_ret) = plt.subplots(1, 2, figsize=(13, 4.8))
    for row in rows:
        tb = sweep_dir / row["run_dir"] / "tb"
        label = f"{row['job']}: {row['overrides']}"[:60]
        style = "-" if row["status"] in ENDED else ":"
        lr = _curve(tb, ["lr_actor"])
        if lr:
            ax_lr.plot(lr[1], lr[2], style, label=label)
        ret = _curve(tb, ["eval/episode_return", "train/episode_return"])
        if ret:
            ax_ret.plot(ret[1], ret[2], style, marker=".", label=label)
    ax_lr.set(title="learning rate (lr_actor)", xlabel="global step", ylabel="lr", yscale="log")
    ax_ret.set(title="evaluation return", xlabel="global step", ylabel="episode return")
    for ax in (ax_lr, ax_ret):
        ax.grid(alpha=0.3)
    ax_ret.legend(fontsize=7, loc="best")
    fig.suptitle(f"{sweep_dir.name}: dotted = failed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md and summary.png into ``sweep_dir``; returns the ranked rows."""
    rows = load_jobs(sweep_dir)
    common = name_by_differences(rows)
    rows = rank(rows)
    write_csv(rows, sweep_dir / "summary.csv")
    write_markdown(rows, common, sweep_dir / "summary.md")
    plot(rows, sweep_dir, sweep_dir / "summary.png")
    if (sweep_dir / STUDY_FILE).exists():  # an Optuna search: its trials, ranked by seed mean
        from sweeps.search_report import write_search_report

        write_search_report(sweep_dir)
    return rows


def report(rows: list[dict[str, Any]], sweep_dir: Path) -> int:
    """Print where the summary is and what failed; the exit status for the command."""
    failed = [r for r in rows if r["status"] not in ENDED]
    print(f"sweep summary: {sweep_dir / 'summary.md'}")
    for row in failed:
        print(f"error: job {row['job']} ({row['overrides']}) {row['status']}: "
              f"{row.get('error') or 'no result.json'}", file=sys.stderr)  # fmt: skip
    if failed:
        print(f"error: {len(failed)} of {len(rows)} sweep jobs failed or did not finish",
              file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


class SweepSummary(Callback):
    """Hydra callback: the summary after every multirun, then exit 1 if a job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("dry_run"):  # previews train nothing: nothing to rank
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = summarize(sweep_dir)
        status = report(rows, sweep_dir)
        if status:
            sys.exit(status)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sweeps.summary <sweep dir>")
    directory = Path(sys.argv[1])
    sys.exit(report(summarize(directory), directory))
