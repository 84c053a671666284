"""A search job's link to its Optuna trial: report each evaluation, learn whether to stop.

`training.workspace.Workspace.evaluate` calls `TrialReporter.report` after every evaluation of a job
the sweeper launched (``search.storage`` set). A trial with several seeds runs one job per seed,
in parallel where the launcher allows; the trial is judged on its mean, so:

1. each job records its own return at ``step`` (user attribute ``evals_seed<k>``: only that
   job writes it, so parallel jobs never overwrite each other);
2. the job that completes a step (every seed has reported it) writes the mean as the trial's
   intermediate value at ``step`` and asks the study's pruner;
3. a "stop" is recorded on the trial (``pruned_at_step``), and every seed job of the trial ends
   at its next evaluation.

With a launcher that runs the seeds one after another (basic), only the last seed can be cut
short: the earlier ones have no sibling to average with while they run.
"""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from sweeps import study as studies

log = logging.getLogger("train")


class TrialReporter:
    """One job's view of its trial (storage, trial id, which seed it is)."""

    def __init__(self, storage_url: str, study_name: str, trial_number: int, seed: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = studies.open_storage(storage_url)
        try:
            study_id = self.storage.get_study_id_from_name(study_name)
        except KeyError:
            raise studies.SearchError(
                f"search.study={study_name!r}: no such study in {storage_url}"
            ) from None
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        trial = self.storage.get_trial(self.trial_id)
        seeds = trial.system_attrs.get(studies.SEEDS) or [None]
        self.num_seeds = len(seeds)
        self.slot = seeds.index(seed) if seed in seeds else 0
        spec = self.storage.get_study_user_attrs(study_id).get("pruner") or {"name": "none"}
        self.pruner = studies.make_pruner(spec)
        self.study = optuna.load_study(
            study_name=study_name, storage=self.storage, pruner=self.pruner
        )
        self.evals: dict[str, float] = dict(trial.user_attrs.get(studies.evals_key(self.slot), {}))

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrialReporter:
        search = cfg.search
        if search.study is None or search.trial is None:
            raise studies.SearchError(
                "search.storage is set, but search.study or search.trial is not: these keys "
                "are the sweeper's (hydra/sweeper=rl_optuna); leave them unset in a plain run"
            )
        return cls(str(search.storage), str(search.study), int(search.trial), int(cfg.seed))

    def report(self, step: int, value: float) -> bool:
        """Record this job's eval return at ``step``; True when the trial is to stop now."""
        if not math.isfinite(value):
            return False  # a diverging run fails by itself; nothing to compare
        self.evals[str(step)] = float(value)
        self.storage.set_trial_user_attr(self.trial_id, studies.evals_key(self.slot), self.evals)
        trial = self.storage.get_trial(self.trial_id)
        if trial.user_attrs.get(studies.PRUNED_AT) is not None:
            log.info("trial %d was pruned by a sibling seed's report", trial.number)
            return True
        per_seed = [trial.user_attrs.get(studies.evals_key(k), {}) for k in range(self.num_seeds)]
        if any(str(step) not in evals for evals in per_seed):
            return False  # the step is not complete: a later seed decides
        mean = sum(evals[str(step)] for evals in per_seed) / self.num_seeds
        self.storage.set_trial_intermediate_value(self.trial_id, step, mean)
        if not self.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
            return False
        self.storage.set_trial_user_attr(self.trial_id, studies.PRUNED_AT, step)
        log.info("trial %d pruned at step %d (mean eval return %.4g over %d seed(s))",
                 trial.number, step, mean, self.num_seeds)  # fmt: skip
        return True
