"""Preview of compiled schedules: a text table per network and PNG plots.

Kept apart from :mod:`lr_scheduler` (which never imports it) so the training path never imports
matplotlib. Figures use the Agg canvas directly: no pyplot state, no GUI backend, safe in worker
processes. Every plot function also takes a plain function step -> lr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lr_scheduler import DEFAULT_WARMUP_INIT, Schedule, ScheduleSet, warmup_length

LRFunction = Schedule | Callable[[int], float]  # a Schedule or any plain step -> lr function
SchedulesLike = Mapping[str, LRFunction] | LRFunction


def _as_mapping(schedules: SchedulesLike) -> Mapping[str, LRFunction]:
    return schedules if isinstance(schedules, Mapping) else {"lr": schedules}


def _boundaries(schedule: LRFunction) -> tuple[int, ...]:
    return tuple(getattr(schedule, "boundaries", (0,)))


def _values(schedule: LRFunction, steps: np.ndarray) -> np.ndarray:
    if isinstance(schedule, Schedule):
        return schedule.values(steps)
    return np.array([float(schedule(int(t))) for t in steps], dtype=np.float64)


def _horizon(schedules: Mapping[str, LRFunction], total_steps: int | None) -> int:
    if total_steps:
        return int(total_steps)
    last = max((b for s in schedules.values() for b in _boundaries(s)), default=0)
    return max(int(last * 1.1), 1)


MAX_MARKS = 300  # boundaries drawn (and sampled on both sides); more are thinned evenly


def _thin(marks: np.ndarray, most: int = MAX_MARKS) -> np.ndarray:
    """At most ``most`` of ``marks``, evenly spread: a figure cannot show more, and a huge
    preset (tens of thousands of intervals) would take minutes to draw."""
    if len(marks) <= most:
        return marks
    return marks[np.linspace(0, len(marks) - 1, most).astype(np.int64)]


def _sample_steps(schedule: LRFunction, horizon: int, points: int = 2000) -> np.ndarray:
    """A grid plus both sides of every boundary (up to `MAX_MARKS` of them), so steps and jumps
    are drawn sharp."""
    marks = _thin(np.array([b for b in _boundaries(schedule) if b <= horizon], dtype=np.int64))
    grid = np.linspace(0, horizon, points).astype(np.int64)
    steps = np.concatenate([grid, marks, np.maximum(marks - 1, 0)])
    return np.unique(np.clip(steps, 0, horizon))


def format_preview(
    schedules: ScheduleSet | Mapping[str, Schedule],
    total_steps: int | None = None,
    entries_from: str = "the curriculum preset's expected entries",
) -> str:
    """A table per network: LR at every boundary, at the end of training, min and max.
    ``entries_from`` says where the stage entries shown come from (stage starts only)."""
    total = total_steps if total_steps is not None else getattr(schedules, "total_steps", None)
    lines = []
    if getattr(schedules, "disabled", False):
        lines.append("LR_SCHEDULE_DISABLE=1: schedule ignored, every network uses its base lr")
    stages = getattr(schedules, "stages_used", ())
    if stages:
        entries = getattr(schedules, "stage_entries", {})
        shown = ", ".join(
            f"stage {k} at step {entries[k]}" if k in entries else f"stage {k} not entered"
            for k in stages
        )
        lines.append(
            f"stage starts: intervals begin when the curriculum enters a stage; shown here with "
            f"{shown} ({entries_from}; in training, the real ones)"
        )
    guard = getattr(schedules, "kl_guard", None)
    if guard is not None:
        lines.append(
            f"KL guard on for {', '.join(guard.networks)}: lr = schedule x scale, scale in "
            f"[{guard.min_scale:g}, 1]; after each update (its mean approx KL) the scale is "
            f"divided by {guard.factor:g} when approx KL > {guard.target * guard.high:g} and "
            f"multiplied by it (up to 1) when approx KL < {guard.target * guard.low:g}. The lr "
            f"stays between {guard.min_scale:g}x the curve below and the curve (the shaded "
            "envelope)"
        )
    knobs = getattr(schedules, "knobs", {})
    if knobs:
        lines.append("preset knobs: " + ", ".join(f"{k}={v}" for k, v in knobs.items()))
    warmup = warmup_length(knobs, total)
    init = knobs.get("warmup_init", DEFAULT_WARMUP_INIT)
    ramp = warmup and init != 1.0 and not getattr(schedules, "disabled", False)
    if ramp:
        lines.append(
            f"warmup: every network ramps into its own schedule over [0, {warmup}): "
            f"lr(t) = schedule(t) x ({init:g} + {1 - init:g} x t / {warmup})"
        )
    for name, schedule in schedules.items():
        scheduled = name in getattr(schedules, "scheduled", schedules.keys())
        horizon = _horizon({name: schedule}, total)
        lines.append("")
        lines.append(f"[{name}]" + ("" if scheduled else "  (not in the schedule: base lr)"))
        lines.append(f"  {'step':>12}  {'lr':>11}  interval")
        if ramp:
            lines.append(f"  {0:>12}  {schedule(0):>11.4e}  warmup ramp [0, {warmup})")
        for k, interval in enumerate(schedule.intervals):
            if ramp and interval.start < warmup:
                continue  # the ramp's pieces: shown as the one row above
            end = "end" if interval.end is None else interval.end
            note = f"{interval.type} [{interval.start}, {end})"
            if total is not None and interval.start >= total:
                note += "  (never reached: after the end of training)"
            lines.append(f"  {interval.start:>12}  {schedule(interval.start):>11.4e}  #{k} {note}")
        if schedule.end is not None:
            lines.append(
                f"  {schedule.end:>12}  {schedule(schedule.end):>11.4e}  "
                "end of schedule (held after)"
            )
        steps = _sample_steps(schedule, horizon)
        values = schedule.values(steps)
        if total is not None:
            lines.append(f"  {total:>12}  {schedule(total):>11.4e}  end of training")
            if schedule.end is not None and schedule.end < total:
                lines.append(
                    f"  note: the schedule ends at step {schedule.end}, before training ends at "
                    f"{total}; the lr holds {schedule(schedule.end):.4e} from there"
                )
        lines.append(f"  min {values.min():.4e}   max {values.max():.4e}")
        if guard is not None and name in guard.networks:
            lines.append(
                f"  KL guard envelope: min {values.min() * guard.min_scale:.4e}   "
                f"max {values.max():.4e}"
            )
    return "\n".join(lines).lstrip("\n")


def _draw(
    ax, schedules: Mapping[str, Schedule], total_steps: int | None, title: str | None
) -> None:
    horizon = _horizon(schedules, total_steps)
    marked: set[int] = set()
    guard = getattr(schedules, "kl_guard", None)
    for name, schedule in schedules.items():
        steps = _sample_steps(schedule, horizon)
        values = _values(schedule, steps)
        (line,) = ax.plot(steps, values, label=name, linewidth=1.6)
        if guard is not None and name in guard.networks:
            ax.fill_between(steps, values * guard.min_scale, values, color=line.get_color(),
                            alpha=0.12, linewidth=0)  # fmt: skip
        marked.update(b for b in _boundaries(schedule)[1:] if b < horizon)
    if guard is not None:
        ax.fill_between([], [], [], color="0.5", alpha=0.2, label="KL guard envelope")
    for stage, step in sorted(getattr(schedules, "stage_entries", {}).items()):
        if step < horizon:
            ax.annotate(f"stage {stage} (expected)", (step, 1), xycoords=("data", "axes fraction"),
                        xytext=(2, -10), textcoords="offset points", fontsize="x-small",
                        color="0.35")  # fmt: skip
    if marked:  # one artist for all boundary lines, however many
        ax.vlines(_thin(np.array(sorted(marked))), 0, 1, transform=ax.get_xaxis_transform(),
                  colors="0.6", linestyles=":", linewidth=0.8)  # fmt: skip
    if total_steps:
        ax.axvline(
            total_steps, color="tab:red", linestyle="--", linewidth=0.9, label="end of training"
        )
    ax.set_yscale("log")
    ax.set_xlabel("global step")
    ax.set_ylabel("learning rate")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small", loc="upper right")
    if title:
        ax.set_title(title)


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_schedules(
    schedules: SchedulesLike,
    total_steps: int | None = None,
    path: str | Path | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """One curve per network on a log LR axis, interval boundaries dotted; PNG to ``path``."""
    schedules = _as_mapping(schedules)
    total = total_steps if total_steps is not None else getattr(schedules, "total_steps", None)
    fig = Figure(figsize=(8, 4.5))
    _draw(fig.add_subplot(1, 1, 1), schedules, total, title)
    return _save(fig, path)


def plot_comparison(
    named: Mapping[str, SchedulesLike],
    total_steps: int | None = None,
    path: str | Path | None = None,
) -> Figure:
    """Several schedules (or schedule sets) side by side, one panel each, shared LR axis."""
    if not named:
        raise ValueError("plot_comparison needs at least one schedule")
    fig = Figure(figsize=(4.5 * len(named), 4))
    axes = fig.subplots(1, len(named), sharey=True, squeeze=False)[0]
    for ax, (title, schedules) in zip(axes, named.items(), strict=True):
        schedules = _as_mapping(schedules)
        total = total_steps if total_steps is not None else getattr(schedules, "total_steps", None)
        _draw(ax, schedules, total, title)
    fig.tight_layout()
    return _save(fig, path)


def plot_lr_schedule(
    lr_scheduler: LRFunction,
    total_steps: int,
    title: str | None = None,
    figsize: tuple[float, float] = (10, 6),
    point_interval: int | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One schedule (a Schedule or any function step -> lr) over ``[0, total_steps]``, log LR
    axis, boundaries dotted; a marker every ``point_interval`` steps. The signature of source
    document 003 plus ``path`` (PNG); the Figure is returned (Jupyter shows it)."""
    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    _draw(ax, {"lr": lr_scheduler}, int(total_steps), title)
    if point_interval:
        marks = np.arange(0, int(total_steps) + 1, int(point_interval))
        ax.plot(marks, _values(lr_scheduler, marks), "o", markersize=3, color="tab:blue")
    return _save(fig, path)
