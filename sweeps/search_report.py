"""The trials of an Optuna search, next to the job summary (sweeps/summary.py calls this when
the sweep dir holds ``search.yaml``):

- ``summary.md`` gains a "Trials" section: trials ranked by their value (the mean of their seeds'
  objective), with std and each seed's value; pruned, failed and interrupted trials named;
- ``trials.csv``: the same rows;
- ``optimization_history.png``: each trial's value by trial number, the best so far as a line,
  pruned trials at their last reported value;
- ``param_importance.png``: how much of the value's variation each searched key explains
  (fANOVA with scikit-learn installed, else PED-ANOVA, which needs no extra package).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from sweeps import study as studies

COLUMNS = ["rank", "trial", "state", "value", "std", "seeds", "pruned_at_step", "params", "error"]
STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 2, "FAIL": 3}


def trial_rows(study, direction: str) -> list[dict[str, Any]]:
    """One row per trial: complete ones best first, then pruned, running, failed."""
    sign = -1.0 if direction == "maximize" else 1.0
    rows = []
    for trial in study.get_trials(deepcopy=False):
        mean, std, per_seed = studies.seed_stats(trial)
        value = trial.value if trial.value is not None else mean
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        if trial.user_attrs.get(studies.BASELINE):
            params = "(baseline: the config as given)"
        rows.append({
            "trial": trial.number, "state": trial.state.name, "value": value, "std": std,
            "seeds": " ".join(_fmt(v) if s == "None" else f"{s}:{_fmt(v)}"  # None: cfg seed
                              for s, v in per_seed.items()),
            "pruned_at_step": trial.user_attrs.get(studies.PRUNED_AT), "params": params or "-",
            "error": trial.user_attrs.get("error"),
        })  # fmt: skip

    def key(row):
        finite = row["value"] is not None and math.isfinite(row["value"])
        order = STATE_ORDER.get(row["state"], 3)
        return (order, sign * row["value"] if finite and order == 0 else 0.0, row["trial"])

    rows.sort(key=key)
    for position, row in enumerate(rows, 1):
        row["rank"] = position
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(rows: list[dict[str, Any]], facts: dict[str, Any]) -> str:
    counts = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    seeds = facts.get("seeds") or [None]
    lines = [
        f"## Trials: study `{facts['study_name']}` ({facts['storage']})",
        "",
        f"Objective: {facts['direction']} `{facts['objective']}`, the mean over each trial's "
        f"seeds ({'the config seed' if seeds == [None] else seeds}). "
        + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items()))
        + ".",
        "",
        "Pictures: `optimization_history.png`, `param_importance.png`.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = [_fmt(row[c]).replace("|", "\\|") for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_history(study, path: Path, direction: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4.2))
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
              if t.intermediate_values]  # fmt: skip
    ax.plot([t.number for t in done], [t.value for t in done], "o", label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last, "x", color="tab:red",
                label="pruned (last reported)")  # fmt: skip
    best, best_line = None, []
    for t in sorted(done, key=lambda t: t.number):
        better = best is None or (t.value > best if direction == "maximize" else t.value < best)
        best = t.value if better else best
        best_line.append((t.number, best))
    if best_line:
        ax.step(*zip(*best_line, strict=True), where="post", color="k", alpha=0.6,
                label="best so far")  # fmt: skip
    ax.set(title=f"{study.study_name}: optimisation history", xlabel="trial", ylabel="value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importances(study) -> tuple[dict[str, float], str]:
    """(key -> importance, the method) over the complete trials that have params (the baseline
    trial has none); empty when fewer than two such trials exist."""
    import optuna
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.params]  # fmt: skip
    if len(trials) < 2:
        return {}, "needs two or more complete trials"
    sub = optuna.create_study(direction=study.direction)  # in memory: without the baseline
    sub.add_trials(trials)
    try:
        import sklearn  # noqa: F401

        evaluator, method = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    except ImportError:
        evaluator, method = optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA"
    return optuna.importance.get_param_importances(sub, evaluator=evaluator), method


def plot_importance(study, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, method = importances(study)
    fig, ax = plt.subplots(figsize=(7, 0.5 * max(len(values), 2) + 1.5))
    if values:
        keys = list(values)[::-1]
        ax.barh(keys, [values[k] for k in keys])
        ax.set(xlabel=f"importance ({method})")
    else:
        ax.text(0.5, 0.5, f"parameter importance: {method}", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(f"{study.study_name}: parameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_search_report(sweep_dir: Path) -> list[dict[str, Any]]:
    """Append the trials to summary.md; write trials.csv and the two pictures."""
    study, facts = studies.load_study(sweep_dir)
    rows = trial_rows(study, facts["direction"])
    with (sweep_dir / "trials.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    summary = sweep_dir / "summary.md"
    summary.write_text(summary.read_text() + "\n" + markdown(rows, facts))
    plot_history(study, sweep_dir / "optimization_history.png", facts["direction"])
    plot_importance(study, sweep_dir / "param_importance.png")
    return rows
