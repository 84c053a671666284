"""A search's Optuna study: where it lives, and the facts its sweeper, jobs, summary and export
share about it.

The sweeper (``hydra_plugins/rl_optuna_sweeper``) writes ``search.yaml`` into the sweep dir
(storage, study name, objective, direction, seeds), so that ``python -m sweeps.summary`` and
``python -m sweeps.export`` find the study from the sweep dir alone. Storage strings:

- null: ``sqlite:///<sweep dir>/optuna.db`` (one machine; WAL journal, a long lock timeout, so
  parallel joblib jobs can all write);
- ``journal:PATH``: Optuna's journal file storage (an append-only log with file locks: a shared
  filesystem, no database server);
- anything else: an SQLAlchemy URL handed to Optuna's RDB storage (``postgresql://...``,
  ``mysql+pymysql://...``).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import yaml

STUDY_FILE = "search.yaml"  # in the sweep dir
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_S = 120  # seconds a writer waits for the database lock before it gives up

# Keys of the trial's system attributes this project keeps (Optuna's users see user attrs).
SEEDS = "rl_search:seeds"  # the seeds the trial runs, one job each ([null]: the config's seed)
OWNER = "rl_search:owner"  # {"host", "pid"} of the sweeper process running the trial
HEARTBEAT = "rl_search:heartbeat"  # unix time the owner last said it is alive
RETRIES = "rl_search:retries"  # times the trial was launched again after an interruption
# User attributes (shown by optuna-dashboard and in the summary).
BASELINE = "baseline"  # true on the trial that runs the config without the search's params
OVERRIDES = "overrides"  # the trial's overrides (fixed ones and its params), seeds aside
PRUNED_AT = "pruned_at_step"  # global step the pruner stopped the trial at
SEED_VALUES = "seed_values"  # {seed: objective} of the trial's finished jobs


def evals_key(slot: int) -> str:
    """User attribute with one seed's eval returns, ``{step: return}`` (seed ``slot`` of the
    trial's seed list): the mean over seeds is what the pruner sees."""
    return f"evals_seed{slot}"


class SearchError(ValueError):
    """A search setting that cannot work; the message names its config key path."""


def storage_url(storage: str | None, sweep_dir: Path) -> str:
    """The storage string jobs and tools open: ``storage`` as given, or the default SQLite file
    in the sweep dir (an absolute path, so jobs in other dirs open the same file)."""
    if storage is None:
        return f"sqlite:///{(Path(sweep_dir) / 'optuna.db').resolve()}"
    if storage.startswith(JOURNAL_PREFIX):
        path = storage[len(JOURNAL_PREFIX) :]
        if not path:
            raise SearchError(
                f"hydra.sweeper.storage={storage!r}: the journal storage needs a file, "
                "e.g. journal:/shared/studies/lr.log"
            )
        return JOURNAL_PREFIX + str(Path(path).expanduser().resolve())
    if "://" not in storage:
        raise SearchError(
            f"hydra.sweeper.storage={storage!r} is neither null (SQLite in the sweep dir), "
            "journal:PATH (journal file) nor a database URL such as sqlite:///study.db or "
            "postgresql://user@host/db"
        )
    return storage


def open_storage(url: str):
    """The Optuna storage behind ``url`` (see the module docstring)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
        # WAL lets readers (pruning jobs) go on while one process writes; the mode is kept in
        # the file, so setting it once per process is cheap and idempotent.
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        return storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def make_pruner(spec: dict[str, Any]):
    """The Optuna pruner ``spec`` names (``hydra.sweeper.pruner``); the sweeper stores the spec
    in the study, so every job builds the same one."""
    import optuna

    name = spec.get("name", "none")
    auto = lambda v: v if v == "auto" else int(v)  # noqa: E731
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec["n_startup_trials"]),
            n_warmup_steps=int(spec["n_warmup_steps"]),
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=auto(spec["min_resource"]),
            reduction_factor=int(spec["reduction_factor"]),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(spec["min_resource"]) if spec["min_resource"] != "auto" else 1,
            max_resource=auto(spec["max_resource"]),
            reduction_factor=int(spec["reduction_factor"]),
        )
    raise SearchError(
        f"hydra.sweeper.pruner.name={name!r}: accepted: none, median, successive_halving, hyperband"
    )


def write_study_file(sweep_dir: Path, facts: dict[str, Any]) -> None:
    path = Path(sweep_dir) / STUDY_FILE
    path.write_text(
        "# The Optuna study of this sweep (written by the sweeper; read by sweeps.summary and\n"
        "# sweeps.export).\n" + yaml.safe_dump(facts, sort_keys=False)
    )


def read_study_file(sweep_dir: Path) -> dict[str, Any] | None:
    path = Path(sweep_dir) / STUDY_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def load_study(sweep_dir: Path):
    """(the study, the facts of search.yaml) of a search's sweep dir."""
    import optuna

    facts = read_study_file(sweep_dir)
    if facts is None:
        raise SearchError(f"{sweep_dir} has no {STUDY_FILE}: not the sweep dir of a search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=facts["study_name"], storage=open_storage(facts["storage"])
    )
    return study, facts


def seed_stats(trial) -> tuple[float | None, float | None, dict[str, float]]:
    """(mean, std, {seed: value}) of a trial's per-seed objective values (std 0 for one seed;
    None without values)."""
    values = {str(k): float(v) for k, v in (trial.user_attrs.get(SEED_VALUES) or {}).items()}
    finite = [v for v in values.values() if math.isfinite(v)]
    if not finite:
        return None, None, values
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std, values
