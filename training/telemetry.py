"""TensorBoard scalars, a progress bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("train")


def cut_tail(tb_dir: Path, purge_step: int) -> None:
    """Rewrite a run's event files without the events at or after ``purge_step``: the tail an
    interrupted run wrote after its last checkpoint, which the resumed run writes again.

    TensorBoard itself would hide that tail through a purge event, but other readers of the
    event files (pandas exports, tbparse, the sweep summary) would see those steps twice. The
    kept events go to one new file, then the old files are deleted; a scalar already kept for a
    (tag, step) is not kept twice, so a rewrite cut short by a kill is cleaned up by the next.
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    old = sorted(tb_dir.glob("events.out.tfevents.*"))
    if not old:
        return
    writer = EventFileWriter(str(tb_dir), filename_suffix=".resumed")
    seen: set[tuple[str, int]] = set()
    for path in old:
        for record in RawEventFileLoader(str(path)).Load():  # as written, not migrated
            event = Event.FromString(record)
            if event.HasField("file_version") or event.step >= purge_step:
                continue
            keys = {(value.tag, event.step) for value in event.summary.value}
            if keys and keys <= seen:
                continue
            seen |= keys
            writer.add_event(event)
    writer.close()
    for path in old:
        path.unlink()


class Telemetry:
    """One run's outputs: scalars under ``<run_dir>/tb`` and the progress display.

    ``purge_step`` (on resume): the events the interrupted run wrote at or after that step are
    cut from its event files (`cut_tail`), so no step appears twice, in TensorBoard or in any
    other reader of the files.
    """

    def __init__(
        self, run_dir: Path, total_steps: int, progress: str, purge_step: int | None = None
    ):
        if purge_step is not None:
            cut_tail(run_dir / "tb", purge_step)
        self.writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        self.total_steps = total_steps
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=purge_step or 0, unit="step", smoothing=0.1)
        self._last_step = purge_step or 0
        self._last_time = time.perf_counter()
        self.steps_per_s = 0.0

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for tag, value in values.items():
            self.writer.add_scalar(prefix + tag, value, step)

    def progress(self, step: int, **fields: object) -> None:
        """Advance the bar (terminal) or write one log line (files, CI, clusters)."""
        now = time.perf_counter()
        if now > self._last_time:
            self.steps_per_s = (step - self._last_step) / (now - self._last_time)
        self._last_step, self._last_time = step, now
        shown = {"steps/s": f"{self.steps_per_s:.0f}", **fields}
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(shown, refresh=True)
        else:
            parts = " | ".join(f"{k} {v}" for k, v in shown.items())
            log.info("step %d/%d | %s", step, self.total_steps, parts)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self.writer.close()


HPARAM_METRICS = ("final_eval_return", "best_eval_return", "stage_reached", "steps_per_s")


def write_hparams(tb_dir: Path, hparams: Mapping[str, object], result: Mapping[str, object]):
    """Make the run a row of TensorBoard's HParams tab: the job's hyperparameters, and its
    final metrics as ``hparams/<metric>`` scalars at the last step.

    Written into the run's own ``tb`` dir (``SummaryWriter.add_hparams`` would open a sub-run),
    so a sweep dir shows one run per job, named by the job's dir.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    metrics = {
        f"hparams/{name}": float(result[name])
        for name in HPARAM_METRICS
        if isinstance(result.get(name), int | float)
    }
    values = {
        k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in hparams.items()
    }
    step = int(result.get("global_step") or 0)
    with SummaryWriter(log_dir=str(tb_dir)) as writer:
        for summary in hparams_summaries(values, metrics):
            writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)
