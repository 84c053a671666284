"""``hydra/sweeper=rl_optuna``: an Optuna search whose trials are launched by Hydra's launcher.

Each batch takes up to ``n_jobs`` trials (interrupted ones first, then new ones from the
sampler), launches one job per trial and seed through the configured launcher (basic, joblib,
submitit), then reads each job's ``result.json`` and tells the study: the mean of the seeds'
objective (COMPLETE), PRUNED when the pruner stopped it (sweeps/pruning.py), FAIL when a seed
failed. The study lives in its storage (sweeps/study.py), so re-running the same command
continues it: finished trials stay, trials a dead sweeper left RUNNING are launched again in
their own job dirs (each job resumes from its checkpoint), at most ``max_retries`` times.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.rl_optuna_sweeper._config import SAMPLERS
from sweeps import study as studies
from training.schema import safe_dirname

log = logging.getLogger(__name__)

FINISHED_JOB = ("completed", "pruned", "failed")  # a result.json status the job will not change
HEARTBEAT_EVERY_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _grid_sampler(values: dict[str, list[Any]], seed: int | None):
    """Optuna's grid sampler without the ``study.stop()`` it calls once the grid is used up:
    that works only inside ``study.optimize``, and this sweeper asks and tells (it stops
    asking at the grid's size itself, see ``_search``)."""
    import optuna

    class AskTellGridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            pass

    return AskTellGridSampler(values, seed=seed)


def _cmaes_sampler(space: dict[str, Any], seed: int | None, n_startup_trials: int):
    """CMA-ES over the space as written. Optuna's infers the space from the params every
    finished trial shares, which the baseline trial (no params) makes empty: every trial would
    then be drawn at random. Choices stay independent (CMA-ES has no categorical search)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    numeric = {
        k: d for k, d in space.items()
        if isinstance(d, (FloatDistribution, IntDistribution)) and not d.single()
    }  # fmt: skip

    class KnownSpaceCmaEsSampler(optuna.samplers.CmaEsSampler):
        def infer_relative_search_space(self, study, trial) -> dict[str, Any]:
            return dict(numeric)

    return KnownSpaceCmaEsSampler(seed=seed, n_startup_trials=n_startup_trials)


class RLOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any):
        self.settings = OmegaConf.create(settings)
        self.launcher = None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # ------------------------------------------------------------------ settings

    def _check(self) -> None:
        s = self.settings
        if s.direction not in ("maximize", "minimize"):
            raise studies.SearchError(
                f"hydra.sweeper.direction={s.direction!r}: accepted: maximize, minimize"
            )
        if s.sampler.name not in SAMPLERS:
            raise studies.SearchError(
                f"hydra.sweeper.sampler.name={s.sampler.name!r}: accepted: {', '.join(SAMPLERS)}"
            )
        if s.pruner.name != "none" and s.direction != "maximize":
            raise studies.SearchError(
                f"hydra.sweeper.pruner.name={s.pruner.name}: the pruner compares eval returns "
                "(higher is better) and needs hydra.sweeper.direction=maximize; or pass "
                "hydra.sweeper.pruner.name=none"
            )
        for key in ("n_trials", "n_jobs"):
            if int(s[key]) < 1:
                raise studies.SearchError(f"hydra.sweeper.{key}={s[key]}: must be 1 or more")
        if int(s.max_retries) < 0:
            raise studies.SearchError(f"hydra.sweeper.max_retries={s.max_retries}: must be >= 0")
        seeds = list(s.seeds) if s.seeds is not None else None
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise studies.SearchError(
                f"hydra.sweeper.seeds={seeds}: give distinct seeds, e.g. [0,1,2], or null"
            )
        studies.make_pruner(OmegaConf.to_container(s.pruner))  # names a bad pruner

    def _sampler(self, space: dict[str, Any], where: dict[str, str]):
        import optuna

        from hydra_plugins.rl_optuna_sweeper.space import grid

        s = self.settings.sampler
        seed = None if s.seed is None else int(s.seed)
        if s.name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(s.n_startup_trials))
        if s.name == "cmaes":
            return _cmaes_sampler(space, seed, int(s.n_startup_trials))
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return _grid_sampler(grid(space, where), seed)

    # ------------------------------------------------------------------ the study

    def _open_study(self, space, where):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.settings
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.storage_url = studies.storage_url(s.storage, self.sweep_dir)
        storage = studies.open_storage(self.storage_url)
        study = optuna.create_study(
            study_name=s.study_name, storage=storage, sampler=self._sampler(space, where),
            direction=s.direction, load_if_exists=True,
        )  # fmt: skip
        if study.direction.name.lower() != s.direction:
            raise studies.SearchError(
                f"hydra.sweeper.direction={s.direction}: study {s.study_name!r} in "
                f"{self.storage_url} was created to {study.direction.name.lower()}; use another "
                "hydra.sweeper.study_name for a new study"
            )
        # What every job needs to know, kept in the study (a re-run's settings win).
        study.set_user_attr("pruner", OmegaConf.to_container(s.pruner))
        study.set_user_attr("objective", s.objective)
        studies.write_study_file(self.sweep_dir, {
            "storage": self.storage_url, "study_name": s.study_name, "objective": s.objective,
            "direction": s.direction, "seeds": self._seeds(),
            "params": {k: str(v) for k, v in space.items()},
        })  # fmt: skip
        if s.baseline and not study.trials:
            study.enqueue_trial({}, user_attrs={studies.BASELINE: True})
        return study

    def _seeds(self) -> list[int | None]:
        return [None] if self.settings.seeds is None else [int(x) for x in self.settings.seeds]

    def _is_orphan(self, trial) -> bool:
        """A RUNNING trial whose sweeper is gone: dead on this host, or silent too long."""
        owner = trial.system_attrs.get(studies.OWNER) or {}
        beat = float(trial.system_attrs.get(studies.HEARTBEAT, 0.0))
        if owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"])):
            return True
        return time.time() - beat > float(self.settings.heartbeat_grace_s)

    def _claim(self, study, trial_id: int) -> None:
        storage = study._storage
        storage.set_trial_system_attr(
            trial_id, studies.OWNER, {"host": socket.gethostname(), "pid": os.getpid()}
        )
        storage.set_trial_system_attr(trial_id, studies.HEARTBEAT, time.time())

    # ------------------------------------------------------------------ one trial's jobs

    def _subdir(self, number: int, seed: int | None) -> str:
        """A trial's job dir: named by study, trial and seed, so that a retried trial's jobs
        resume from their own checkpoints, and two studies in one sweep dir never meet."""
        name = f"{self.settings.study_name}_trial{number:03d}"
        return safe_dirname(name + ("" if seed is None else f"_seed{seed}"))

    def _job_overrides(self, trial, seed: int | None) -> list[str]:
        quoted = self.storage_url.replace("\\", "\\\\").replace("'", "\\'")
        job = list(trial.user_attrs[studies.OVERRIDES])
        if seed is not None:
            job.append(f"seed={seed}")
        return job + [
            f"search.storage='{quoted}'",
            f"search.study={self.settings.study_name}",
            f"search.trial={trial.number}",
            f"hydra.sweep.subdir={self._subdir(trial.number, seed)}",
        ]

    def _result(self, number: int, seed: int | None) -> dict[str, Any]:
        path = self.sweep_dir / self._subdir(number, seed) / "result.json"
        return json.loads(path.read_text()) if path.exists() else {"status": "missing"}

    def _conclude(self, study, trial) -> bool:
        """Tell the study how ``trial`` ended, from its jobs' result.json; False when it did not
        end (a job was preempted or killed): launch it again."""
        from optuna.trial import TrialState

        seeds = trial.system_attrs.get(studies.SEEDS) or [None]
        results = {seed: self._result(trial.number, seed) for seed in seeds}
        storage, trial_id = study._storage, trial._trial_id
        values = {
            str(seed): r.get(self.settings.objective)
            for seed, r in results.items()
            if r["status"] in ("completed", "pruned")
        }
        storage.set_trial_user_attr(
            trial_id, studies.SEED_VALUES,
            {k: (float(v) if v is not None else None) for k, v in values.items()},
        )  # fmt: skip
        statuses = {r["status"] for r in results.values()}
        pruned_at = storage.get_trial(trial_id).user_attrs.get(studies.PRUNED_AT)
        if "failed" in statuses:
            errors = [f"seed {s}: {r.get('error')}" for s, r in results.items()
                      if r["status"] == "failed"]  # fmt: skip
            storage.set_trial_user_attr(trial_id, "error", "; ".join(errors))
            study.tell(trial.number, state=TrialState.FAIL)
            return True
        if pruned_at is not None or "pruned" in statuses:
            study.tell(trial.number, state=TrialState.PRUNED)
            return True
        if statuses != {"completed"}:
            return False
        finite = [float(v) for v in values.values() if v is not None and math.isfinite(v)]
        if len(finite) != len(seeds):
            storage.set_trial_user_attr(
                trial_id, "error", f"result.json has no finite {self.settings.objective}"
            )
            study.tell(trial.number, state=TrialState.FAIL)
            return True
        study.tell(trial.number, sum(finite) / len(finite))
        return True

    def _heartbeat(self, study, trial_ids: list[int], stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_EVERY_S):
            for trial_id in trial_ids:
                study._storage.set_trial_system_attr(trial_id, studies.HEARTBEAT, time.time())

    # ------------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> None:
        """Run the search; a setting that cannot work exits 2 with one line naming its key."""
        try:
            self._search(arguments)
        except studies.SearchError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def _search(self, arguments: list[str]) -> None:
        from optuna.trial import TrialState

        from hydra_plugins.rl_optuna_sweeper.space import as_override, grid, split, suggest

        self._check()
        s = self.settings
        space, fixed, where = split(OmegaConf.to_container(s.params) or {}, arguments)
        study = self._open_study(space, where)
        storage = study._storage
        retry = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if self._is_orphan(t)]  # fmt: skip
        if retry:
            log.info("resuming study %s: %d interrupted trial(s) to retry: %s", s.study_name,
                     len(retry), [t.number for t in retry])  # fmt: skip
        limit = int(s.n_trials)
        if s.sampler.name == "grid":  # every point once, and the baseline
            points = math.prod(len(v) for v in grid(space, where).values())
            limit = min(limit, points + int(bool(s.baseline)))
        job_idx = len(list(self.sweep_dir.glob(f"{s.study_name}_trial*")))
        while True:
            batch = []
            while retry and len(batch) < int(s.n_jobs):
                trial = retry.pop(0)
                count = int(trial.system_attrs.get(studies.RETRIES, 0))
                if count >= int(s.max_retries):
                    storage.set_trial_user_attr(
                        trial._trial_id, "error", f"interrupted {count + 1} times (max_retries)"
                    )
                    study.tell(trial.number, state=TrialState.FAIL)  # fmt: skip
                    continue
                storage.set_trial_system_attr(trial._trial_id, studies.RETRIES, count + 1)
                self._claim(study, trial._trial_id)
                batch.append(trial)
            while len(batch) < int(s.n_jobs) and len(study.trials) < limit:
                trial = study.ask()
                self._claim(study, trial._trial_id)
                params = {} if trial.user_attrs.get(studies.BASELINE) else {
                    key: suggest(trial, key, dist) for key, dist in space.items()
                }  # fmt: skip
                trial.set_user_attr(
                    studies.OVERRIDES, fixed + [as_override(k, v) for k, v in params.items()]
                )
                storage.set_trial_system_attr(trial._trial_id, studies.SEEDS, self._seeds())
                batch.append(storage.get_trial(trial._trial_id))
            if not batch:
                break
            batch = [storage.get_trial(t._trial_id) for t in batch]
            jobs = [
                self._job_overrides(t, seed)
                for t in batch
                for seed in t.system_attrs[studies.SEEDS]
                if self._result(t.number, seed)["status"] not in FINISHED_JOB
            ]
            if jobs:
                self.validate_batch_is_legal(jobs)
                log.info("launching trials %s (%d jobs)", [t.number for t in batch], len(jobs))
                stop = threading.Event()
                beat = threading.Thread(
                    target=self._heartbeat, args=(study, [t._trial_id for t in batch], stop),
                    daemon=True,
                )  # fmt: skip
                beat.start()
                try:
                    self.launcher.launch(jobs, initial_job_idx=job_idx)
                finally:
                    stop.set()
                    beat.join()
                job_idx += len(jobs)
            for trial in batch:
                if not self._conclude(study, storage.get_trial(trial._trial_id)):
                    retry.append(storage.get_trial(trial._trial_id))
        self._write_best(study)

    def _write_best(self, study) -> None:
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best = None
        if done:
            best = study.best_trial
        out = {
            "name": "rl_optuna", "study_name": self.settings.study_name,
            "storage": self.storage_url, "direction": self.settings.direction,
            "objective": self.settings.objective,
            "best_trial": None if best is None else best.number,
            "best_value": None if best is None else float(best.value),
            "best_params": {} if best is None else dict(best.params),
        }  # fmt: skip
        (self.sweep_dir / "optimization_results.yaml").write_text(OmegaConf.to_yaml(out))
        if best is not None:
            log.info("best trial %d: %s = %.4g, params %s", best.number,
                     self.settings.objective, best.value, best.params)  # fmt: skip
