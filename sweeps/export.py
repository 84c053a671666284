"""The winner of a search as a preset a colleague selects with ``lr_schedule=NAME``.

    python -m sweeps.export SWEEP_DIR --name tuned_hopper                  # cfgs/lr_schedule/
    python -m sweeps.export SWEEP_DIR --name tuned_hopper --dir ~/presets  # a searchpath folder
    python -m sweeps.export SWEEP_DIR --name tuned_hopper --absolute --recheck 3

The best complete trial (or ``--trial N``) is composed as its jobs were (its overrides from the
study), and its ``lr_schedule`` written as ``<folder>/lr_schedule/NAME.yaml`` with comments
naming the study, trial, seeds and value. Values relative to ``lr`` (default: ``${base_lr:x}``
scaled by the trial's lr over the config's, boundaries ``${run_frac:x}`` as the source preset
has them) follow a later change of ``lr`` and ``num_train_frames``; ``--absolute`` writes the
trial's numbers. The file is then composed with ``lr_schedule=NAME``, compiled by the schedule
engine and compared with the trial's schedule at every boundary: a preset that would not
reproduce the trial is removed and the command exits 1.

``--recheck N`` trains the preset on N seeds the study never used (through the CLI, a multirun
in ``SWEEP_DIR/recheck_NAME``; extra overrides after ``--``, e.g. ``-- hydra/launcher=joblib``)
and says whether its mean beats the study's baseline trial by more than two standard errors of
the difference.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sweeps import study as studies

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "cfgs" / "lr_schedule"
SCHEDULE_KEYS = ("lr", "lr_schedule")  # overrides that belong to the preset
SEARCH_KEYS = ("hparams_search",)  # overrides that started the search, not part of a run
BASE_LR = re.compile(r"^\$\{base_lr:([^}]*)\}$")


class ExportError(RuntimeError):
    pass


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def is_schedule_override(override: str) -> bool:
    key = _key(override)
    return key in SCHEDULE_KEYS or key.startswith("lr_schedule.")


def run_overrides(trial) -> list[str]:
    """The trial's overrides that make its run what it is, beside the schedule: what a run of
    the preset must be given to be comparable (``hparams_search=`` would start a search)."""
    return [o for o in trial.user_attrs.get(studies.OVERRIDES, [])
            if not is_schedule_override(o) and _key(o) not in SEARCH_KEYS]  # fmt: skip


def pick_trial(study, number: int | None):
    from optuna.trial import TrialState

    if number is None:
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise ExportError(f"study {study.study_name!r} has no complete trial yet")
        return study.best_trial
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found or found[0].state != TrialState.COMPLETE:
        raise ExportError(f"--trial {number}: no complete trial with that number")
    return found[0]


def _drop_nulls(node: Any) -> Any:
    """null means "not given" everywhere in lr_schedule: leave those keys out of the file."""
    if isinstance(node, dict):
        return {k: _drop_nulls(v) for k, v in node.items() if v is not None and v != {}}
    if isinstance(node, list):
        return [_drop_nulls(v) for v in node]
    return node


def _scale_base_lr(node: Any, ratio: float) -> Any:
    """Every ``${base_lr:x}`` becomes ``${base_lr:x*ratio}``."""
    if isinstance(node, dict):
        return {k: _scale_base_lr(v, ratio) for k, v in node.items()}
    if isinstance(node, list):
        return [_scale_base_lr(v, ratio) for v in node]
    match = BASE_LR.match(node) if isinstance(node, str) else None
    if match:
        factor = float(match.group(1) or 1.0) * ratio
        return f"${{base_lr:{factor:.10g}}}"
    return node


def preset_body(trial_cfg, reference_lr: float, absolute: bool) -> dict[str, Any]:
    """The trial's ``lr_schedule`` as a preset's content."""
    from omegaconf import OmegaConf

    from lr_scheduler import NETWORKS, warmup_length
    from training.run import total_steps

    if absolute:
        body = OmegaConf.to_container(trial_cfg.lr_schedule, resolve=True)
        steps = total_steps(trial_cfg)
        if body.get("warmup_frac") is not None or body.get("warmup_steps") is not None:
            body["warmup_steps"] = warmup_length(body, steps)
            body["warmup_frac"] = None
        if body.get("decay_frac") is not None:
            body["decay_steps"] = int(round(float(body["decay_frac"]) * steps))
            body["decay_frac"] = None
        named = {"lr": float(trial_cfg.lr)}
    else:
        body = OmegaConf.to_container(trial_cfg.lr_schedule, resolve=False)
        ratio = float(trial_cfg.lr) / reference_lr
        body = _scale_base_lr(body, ratio)
        named = {"lr": f"${{base_lr:{ratio:.10g}}}"}
    for network in NETWORKS:  # a network the schedule leaves at lr keeps the trial's lr
        if body.get(network) is None:
            body[network] = {"intervals": [{"start": 0, **named}]}
    return _drop_nulls(body)


def header(facts, trial, name: str, absolute: bool, others: list[str]) -> str:
    mean, std, per_seed = studies.seed_stats(trial)
    seeds = ", ".join(
        f"{v:.4g}" if k == "None" else f"seed {k}: {v:.4g}"  # None: cfg seed
        for k, v in per_seed.items()
    )
    lines = [
        "# @package _global_",
        f"# {name}: exported by `python -m sweeps.export` from an Optuna search.",
        f"#   study {facts['study_name']!r} in {facts['storage']}",
        f"#   trial {trial.number}: {' '.join(trial.user_attrs.get(studies.OVERRIDES, []))}",
        f"#   {facts['objective']} = {trial.value:.6g} (mean over seeds; std "
        f"{(std or 0.0):.4g}; per seed {seeds or '-'})",
        "#   values are "
        + (
            "absolute (this trial's numbers)"
            if absolute
            else "relative to lr (${base_lr:x}) and to the run length, as the "
            "source preset spells them"
        ),  # fmt: skip
    ]
    if others:
        lines.append("#   not part of this preset (pass them too to reproduce the trial): "
                     + " ".join(others))  # fmt: skip
    return "\n".join(lines) + "\n"


def compose(overrides: list[str], folder: Path | None):
    from training.build import compose_config

    extra = [] if folder is None else [f"hydra.searchpath=[file://{folder.resolve()}]"]
    return compose_config([*overrides, *extra])


def same_schedules(a, b, steps: int) -> str | None:
    """None when two compiled schedule sets give the same LR at every boundary and on a grid
    of the run; else where they first differ."""
    points = sorted({0, steps, *a.boundaries(), *b.boundaries(), *np.linspace(0, steps, 257)})
    points = [int(p) for p in points]
    if set(a) != set(b):
        return f"networks {sorted(a)} vs {sorted(b)}"
    for network in a:
        va, vb = a[network].values(points), b[network].values(points)
        bad = np.flatnonzero(~np.isclose(va, vb, rtol=1e-9, atol=0.0))
        if bad.size:
            k = bad[0]
            return f"{network} at step {points[k]}: preset {vb[k]:.6g}, trial {va[k]:.6g}"
    return None


def export(
    sweep_dir: Path,
    name: str,
    *,
    trial_number: int | None = None,
    folder: Path | None = None,
    absolute: bool = False,
    force: bool = False,
) -> Path:
    """Write, validate and return the preset file of the chosen trial."""
    from training.run import compile_run_schedules, total_steps

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ExportError(f"--name {name!r}: use letters, digits, _ . - (a file name)")
    study, facts = studies.load_study(sweep_dir)
    trial = pick_trial(study, trial_number)
    overrides = [
        o for o in trial.user_attrs.get(studies.OVERRIDES, []) if _key(o) not in SEARCH_KEYS
    ]
    runs = run_overrides(trial)
    trial_cfg = compose(overrides, None)
    reference_lr = float(compose(runs, None).lr)
    target = (folder / "lr_schedule" if folder is not None else PRESET_DIR) / f"{name}.yaml"
    if target.exists() and not force:
        raise ExportError(f"{target} exists: pick another --name, or pass --force to replace it")
    searched = [o for o in runs if _key(o) in trial.params]
    body = {"lr_schedule": preset_body(trial_cfg, reference_lr, absolute)}
    text = header(facts, trial, name, absolute, searched) + yaml.safe_dump(body, sort_keys=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    try:
        preset_cfg = compose([*runs, f"lr_schedule={name}"], folder)
        problem = same_schedules(
            compile_run_schedules(trial_cfg), compile_run_schedules(preset_cfg),
            total_steps(trial_cfg),
        )  # fmt: skip
    except Exception as err:
        target.unlink()
        raise ExportError(f"the written preset does not compose or compile: {err}") from err
    if problem is not None:
        target.unlink()
        raise ExportError(f"the written preset does not reproduce trial {trial.number}: {problem}")
    return target


# ---------------------------------------------------------------------------- recheck


def recheck(sweep_dir: Path, name: str, count: int, folder: Path | None,
            extra: list[str]) -> dict[str, Any]:  # fmt: skip
    """Train the preset on ``count`` fresh seeds; compare with the study's baseline trial."""
    from sweeps.summary import load_jobs

    study, facts = studies.load_study(sweep_dir)
    trial = pick_trial(study, None)
    used = [s for s in (facts.get("seeds") or []) if s is not None] or [0]
    seeds = list(range(max(used) + 1, max(used) + 1 + count))
    out = sweep_dir / f"recheck_{name}"
    cmd = [sys.executable, str(ROOT / "train_curriculum.py"), "-m", f"lr_schedule={name}",
           "seed=" + ",".join(map(str, seeds)), *run_overrides(trial), f"hydra.sweep.dir={out}",
           *extra]  # fmt: skip
    if folder is not None:
        cmd.append(f"hydra.searchpath=[file://{folder.resolve()}]")
    print("recheck:", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=False)
    rows = load_jobs(out)
    values = [float(r[facts["objective"]]) for r in rows
              if r["status"] == "completed" and r.get(facts["objective"]) is not None]  # fmt: skip
    baseline = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(studies.BASELINE)]
    base = None
    if baseline and baseline[0].value is not None:
        _, _, per_seed = studies.seed_stats(baseline[0])
        base = [v for v in per_seed.values() if math.isfinite(v)]
    return verdict(values, base, count, facts["direction"], seeds)


def verdict(values: list[float], base: list[float] | None, count: int, direction: str,
            seeds: list[int]) -> dict[str, Any]:  # fmt: skip
    """Whether the preset's mean beats the baseline's by more than two standard errors of the
    difference (a baseline with one seed borrows the preset's spread)."""
    report: dict[str, Any] = {"seeds": seeds, "values": values, "completed": len(values)}
    if len(values) < count:
        report["verdict"] = f"only {len(values)} of {count} recheck runs completed"
        return report
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    report.update(mean=mean, std=std)
    if not base:
        report["verdict"] = "the study has no complete baseline trial to compare with"
        return report
    base_mean = statistics.fmean(base)
    base_std = statistics.stdev(base) if len(base) > 1 else std
    se = math.sqrt(std**2 / len(values) + base_std**2 / len(base))
    gain = (mean - base_mean) if direction == "maximize" else (base_mean - mean)
    report.update(baseline_mean=base_mean, baseline_std=base_std, gain=gain, se=se)
    beats = gain > 2 * se
    report["beats_baseline"] = beats
    report["verdict"] = (
        f"{'beats' if beats else 'does not beat'} the baseline outside the noise: gain "
        f"{gain:.4g} vs 2 x standard error {2 * se:.4g} (preset {mean:.4g} +- {std:.3g} on "
        f"{len(values)} fresh seeds, baseline {base_mean:.4g} +- {base_std:.3g} on {len(base)})"
    )
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m sweeps.export", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("sweep_dir", type=Path, help="the search's sweep dir (holds search.yaml)")
    parser.add_argument("--name", required=True, help="preset name: lr_schedule=NAME")
    parser.add_argument("--trial", type=int, help="export this trial (default: the best)")
    parser.add_argument("--dir", type=Path, help="a hydra.searchpath folder (default: cfgs/)")
    parser.add_argument("--absolute", action="store_true", help="numbers, not relative to lr")
    parser.add_argument("--force", action="store_true", help="replace an existing preset")
    parser.add_argument(
        "--recheck", type=int, default=0, metavar="N",
        help="train the preset on N fresh seeds, compare with the baseline",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = export(args.sweep_dir, args.name, trial_number=args.trial, folder=args.dir,
                      absolute=args.absolute, force=args.force)  # fmt: skip
    except (ExportError, studies.SearchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    use = f"lr_schedule={args.name}"
    if args.dir is not None:
        use = f"hydra.searchpath=[file://{args.dir.resolve()}] {use}"
    print(f"wrote {path}: validated, reproduces the trial; use it with {use}")
    if args.recheck > 0:
        report = recheck(args.sweep_dir, args.name, args.recheck, args.dir, extra)
        out = args.sweep_dir / f"recheck_{args.name}.yaml"
        out.write_text(yaml.safe_dump(report, sort_keys=False))
        print(f"recheck ({out}): {report['verdict']}")
        return 0 if report.get("beats_baseline") is not None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
