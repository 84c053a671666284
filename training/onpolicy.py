"""The on-policy loop (PPO): rollouts from vector envs, GAE, update, logging, checkpoints.

``train_curriculum.make_workspace`` picks it for agents whose class sets ``on_policy = True``:

    python train_curriculum.py agent=ppo env=cartpole lr_schedule=warmup_cosine

One iteration: ``num_steps`` steps of ``num_envs`` envs (the global step advances by ``num_envs``
per vector step, so the schedule does not move when ``num_envs`` changes), GAE, then the agent's
update, which refreshes the LRs through ``self.lr`` at the moments ``agent.step_on`` names, the
global step at the end of the rollout being the clock. Checkpoints are written between rollouts;
a signal mid-rollout drops the partial rollout and saves the state as of the last update
(networks only change in updates). Evaluation, episode bookkeeping, curriculum, the checkpoint
loader and the summary are shared with the off-policy `Workspace`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from training import checkpoint
import lr_scheduler
from lr_scheduler import ScheduleSet
from train_curriculum import Preempted, Workspace, check_finite, make_curriculum

log = logging.getLogger("train")


class Rollout:
    """Preallocated ``[T, N, ...]`` storage of one rollout: tensors for what the update reads,
    numpy for the rewards and episode ends the GAE loop reads."""

    def __init__(
        self, num_steps: int, num_envs: int, obs_dim: int, action_shape: tuple, hidden: int
    ) -> None:
        t, n = num_steps, num_envs
        self.obs = torch.zeros(t, n, obs_dim)
        self.starts = torch.zeros(t, n)  # 1.0 where obs[t] is an episode's first observation
        self.hidden = torch.zeros(t, n, hidden)  # recurrent state before step t
        self.actions = torch.zeros(t, n, *action_shape)
        self.log_probs = torch.zeros(t, n)
        self.values = torch.zeros(t, n)
        self.rewards = np.zeros((t, n), dtype=np.float32)  # truncation bootstrap folded in
        self.dones = np.zeros((t, n), dtype=np.float32)  # the episode ended at step t

    def advantages(self, next_value: np.ndarray, gamma: float, lam: float) -> tuple:
        """GAE(lambda) advantages and returns (both ``[T, N]`` tensors)."""
        values = self.values.numpy()
        adv = np.zeros_like(values)
        last = np.zeros_like(next_value)
        for t in reversed(range(values.shape[0])):
            following = next_value if t == values.shape[0] - 1 else values[t + 1]
            live = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * following * live - values[t]
            last = delta + gamma * lam * live * last
            adv[t] = last
        return torch.from_numpy(adv), torch.from_numpy(adv + values)


class OnPolicyWorkspace(Workspace):
    """Everything one on-policy run owns: vector envs, agent, rollout, curriculum, LR controller.

    Reuses `Workspace`'s set-up (``_begin``), checkpoint loader, evaluation, episode bookkeeping,
    LR logging and summary; it builds its own env and storage (vector envs, a rollout, no replay
    buffer) instead of calling ``Workspace.__init__``.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, schedules: ScheduleSet):
        from envs.factory import make_env, make_vector_env
        from training.telemetry import Telemetry

        state = self._begin(cfg, run_dir, schedules)
        self.num_envs = int(cfg.agent.num_envs)
        self.envs = make_vector_env(cfg.env, self.num_envs, cfg.action_repeat)
        self.eval_env = make_env(cfg.env, cfg.action_repeat)
        self.curriculum = make_curriculum(cfg)
        obs_space, act_space = self.eval_env.observation_space, self.eval_env.action_space
        discrete = isinstance(act_space, gym.spaces.Discrete)
        self.agent = hydra.utils.instantiate(
            cfg.agent,
            obs_shape=list(obs_space.shape),
            action_shape=[int(act_space.n)] if discrete else list(act_space.shape),
            discrete=discrete,
        )
        self.result: dict[str, Any] = {"best_eval_return": None, "final_eval_return": None}
        if state:
            self._restore(state)
        # After the restore: loading the optimizer replaces its param-group dicts.
        self.lr = lr_scheduler.LRController.for_named_groups(schedules, self.agent.optimizer)
        # Checkpoints follow the logging of their step's update: hide only what came after.
        purge = self.global_step + 1 if state else None
        self.telemetry = Telemetry(run_dir, self.total_steps, cfg.progress, purge_step=purge)
        a = self.agent
        self.rollout = Rollout(
            a.num_steps, self.num_envs, obs_space.shape[0], a.action_shape, a.net.hidden_size
        )
        self._signal: int | None = None

    # ----------------------------------------------------------------------- checkpoints

    def _restore(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        if self.curriculum is not None and state.get("curriculum"):
            self.curriculum.load_state_dict(state["curriculum"])
        if state.get("rng"):
            checkpoint.set_rng_state(state["rng"])
        self.result = state.get("result", {})

    def _bookkeeping(self) -> dict[str, Any]:
        """What changes outside the networks during a rollout (saved as of the last update)."""
        return {
            "episode": self.episode,
            "curriculum": self.curriculum.state_dict() if self.curriculum else None,
            "rng": checkpoint.rng_state(),
            "result": dict(self.result),
        }

    def save(self, bookkeeping: dict[str, Any] | None = None) -> None:
        """Atomic checkpoint as of ``global_step`` (a rollout boundary)."""
        self.telemetry.flush()
        checkpoint.save_atomic(
            {
                "global_step": self.global_step,
                **(bookkeeping or self._bookkeeping()),
                "agent": self.agent.state_dict(),
                "lr_schedule": self.lr.state_dict(),
                "config": OmegaConf.to_container(self.cfg, resolve=False),
            },
            self.ckpt_path,
        )

    # ----------------------------------------------------------------------- loop

    def _set_difficulty(self) -> None:
        if self.curriculum is not None:
            self.envs.call("set_difficulty", **self.curriculum.params)

    def _collect(self, obs, starts, hidden) -> tuple | None:
        """Fill ``self.rollout``; returns the carried ``(obs, starts, hidden)``, or None if a
        signal arrived (the partial rollout is dropped)."""
        agent, buf, envs = self.agent, self.rollout, self.envs
        n, gamma = self.num_envs, agent.gamma
        low_high = None if agent.discrete else (-1.0, 1.0)
        for t in range(agent.num_steps):
            if self._signal is not None:
                return None
            buf.obs[t] = obs
            buf.starts[t] = starts
            buf.hidden[t] = hidden
            action, log_prob, value, hidden = agent.act_batch(obs, starts, hidden)
            buf.actions[t] = action
            buf.log_probs[t] = log_prob
            buf.values[t] = value
            env_action = action.numpy() if low_high is None else action.clamp(*low_high).numpy()
            next_obs, reward, terminated, truncated, info = envs.step(env_action)
            self.global_step += n
            self._ep_return += reward
            done = terminated | truncated
            cut = truncated & ~terminated
            if cut.any():  # time limit, not a real end: bootstrap from the final observation
                idx = np.flatnonzero(cut)
                final = torch.as_tensor(np.stack(info["final_obs"][idx]), dtype=torch.float32)
                final_value = agent.value(final, torch.zeros(len(idx)), hidden[idx]).numpy()
                reward = reward.astype(np.float32, copy=True)
                reward[idx] += gamma * final_value
            buf.rewards[t] = reward
            buf.dones[t] = done
            if done.any():
                self._end_episodes(np.flatnonzero(done), info.get("final_info", {}))
            obs = torch.from_numpy(np.asarray(next_obs, dtype=np.float32))
            starts = torch.from_numpy(done.astype(np.float32))
        return obs, starts, hidden

    def _end_episodes(self, envs_done: np.ndarray, final_info: dict) -> None:
        stage = self.curriculum.stage if self.curriculum is not None else None
        for i in envs_done:
            info = {k: v[i] for k, v in final_info.items() if not k.startswith("_")}
            # Env i's own step within the vector step: episodes ending together get distinct x.
            step = self.global_step - self.num_envs + 1 + int(i)
            self._end_episode(step, float(self._ep_return[i]), info)
            self.last_return = float(self._ep_return[i])
            self._ep_return[i] = 0.0
        if self.curriculum is not None and self.curriculum.stage != stage:
            self._set_difficulty()  # envs pick it up at their next reset

    def steps(self) -> Iterator[int]:
        """The training loop, yielding the global step after every rollout and update."""
        cfg, ar, agent = self.cfg, self.cfg.action_repeat, self.agent
        every = {
            name: max(1, int(cfg[f"{name}_every_frames"]) // ar)
            for name in ("eval", "log", "checkpoint")
        }
        self._log_every = every["log"]
        boundaries = [b for b in self.schedules.boundaries() if b > self.global_step]
        self._t0 = time.time() - self.result.get("wall_time_s", 0.0)
        handlers = self._catch_signals()
        self.last_return = math.nan
        self._ep_return = np.zeros(self.num_envs)
        try:
            self._set_difficulty()
            obs, _ = self.envs.reset(seed=cfg.seed * 1_000_003 + self.global_step)
            obs = torch.as_tensor(obs, dtype=torch.float32)
            starts, hidden = torch.ones(self.num_envs), agent.initial_state(self.num_envs)
            if self.global_step == 0:
                self.evaluate(0)
                self._log_lrs(0)
            while self.global_step < self.total_steps:
                before, bookkeeping = self.global_step, self._bookkeeping()
                carried = self._collect(obs, starts, hidden)
                if carried is None:
                    self.global_step = before
                    self.save(bookkeeping)
                    raise Preempted(self._signal)
                obs, starts, hidden = carried
                step = self.global_step
                buf = self.rollout
                next_value = agent.value(obs, starts, hidden).numpy()
                advantages, returns = buf.advantages(next_value, agent.gamma, agent.gae_lambda)
                batch = {
                    "obs": buf.obs, "starts": buf.starts, "hidden": buf.hidden,
                    "actions": buf.actions, "log_probs": buf.log_probs, "values": buf.values,
                    "advantages": advantages, "returns": returns,
                }  # fmt: skip
                metrics = agent.update(
                    batch, lambda p, s=before, n=step - before: self.lr.apply(s + int(p * n))
                )
                check_finite({k: metrics[k] for k in ("policy_loss", "value_loss")}, step)
                self.telemetry.scalars(metrics, step, prefix="ppo/")
                self.telemetry.scalar("ppo/learning_rate", self.lr.current["actor"], step)
                crossed = bool(boundaries) and step >= boundaries[0]
                while boundaries and step >= boundaries[0]:
                    boundaries.pop(0)
                last = step >= self.total_steps  # the run ends with an eval and an LR log
                if crossed or last or _crossed(before, step, every["log"]):
                    self._log_lrs(step)
                if last or _crossed(before, step, every["eval"]):
                    self.evaluate(step)
                if _crossed(before, step, every["log"]):  # after the eval: the line shows it
                    self._log_progress(step, self.last_return, {})
                if last or _crossed(before, step, every["checkpoint"]):
                    self.save()
                yield step
        finally:
            self._release_signals(handlers)
            self.result["wall_time_s"] = time.time() - self._t0
            self.telemetry.close()


def _crossed(before: int, after: int, every: int) -> bool:
    """True when a multiple of ``every`` lies in ``(before, after]``."""
    return after // every > before // every
