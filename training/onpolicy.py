"""The on-policy loop (PPO): rollouts from vector envs, GAE, update, logging, checkpoints.

`training.build.make_workspace` picks it for `agents.base.OnPolicyAgent` subclasses:

    python train_curriculum.py agent=ppo env=cartpole lr_schedule=warmup_cosine

One iteration: ``num_steps`` steps of ``num_envs`` envs (the global step advances by ``num_envs``
per vector step, so the schedule does not move when ``num_envs`` changes), GAE, then the agent's
update. The update calls ``refresh_lr(progress)`` at the moments ``agent.step_on`` names, and the
LRs are the schedule's at the rollout's first step plus ``progress`` (the fraction of the
update done) times the rollout's length. Checkpoints are written between rollouts, after their
step's events; a signal mid-rollout drops the partial rollout and saves the state as of the last
update (networks only change in updates).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from functools import partial

import gymnasium as gym
import hydra
import numpy as np
import torch

from training.run import check_finite, crossed
from training.workspace import Workspace

log = logging.getLogger("train")


class Rollout:
    """Preallocated ``[T, N, ...]`` numpy storage of one rollout (float32); `batch` hands the
    update tensor views of it, no copies."""

    def __init__(
        self, num_steps: int, num_envs: int, obs_dim: int, action_shape: tuple, hidden: int
    ) -> None:
        t, n = num_steps, num_envs
        self.obs = np.zeros((t, n, obs_dim), dtype=np.float32)
        self.starts = np.zeros((t, n), dtype=np.float32)  # 1.0 where obs[t] begins an episode
        self.hidden = np.zeros((t, n, hidden), dtype=np.float32)  # recurrent state before t
        self.actions = np.zeros((t, n, *action_shape), dtype=np.float32)
        self.log_probs = np.zeros((t, n), dtype=np.float32)
        self.values = np.zeros((t, n), dtype=np.float32)
        self.rewards = np.zeros((t, n), dtype=np.float32)  # truncation bootstrap folded in
        self.dones = np.zeros((t, n), dtype=np.float32)  # the episode ended at step t

    def advantages(self, next_value: np.ndarray, gamma: float, lam: float) -> tuple:
        """GAE(lambda) advantages and returns (both ``[T, N]`` tensors)."""
        values = self.values
        adv = np.zeros_like(values)
        last = np.zeros_like(next_value)
        for t in reversed(range(values.shape[0])):
            following = next_value if t == values.shape[0] - 1 else values[t + 1]
            live = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * following * live - values[t]
            last = delta + gamma * lam * live * last
            adv[t] = last
        return torch.from_numpy(adv), torch.from_numpy(adv + values)

    def batch(self, next_value: np.ndarray, gamma: float, lam: float) -> dict[str, torch.Tensor]:
        """What the update reads: the rollout as tensors, with GAE advantages and returns."""
        advantages, returns = self.advantages(next_value, gamma, lam)
        names = ("obs", "starts", "hidden", "actions", "log_probs", "values")
        tensors = {name: torch.from_numpy(getattr(self, name)) for name in names}
        return {**tensors, "advantages": advantages, "returns": returns}


class OnPolicyWorkspace(Workspace):
    """An on-policy run: vector envs, an eval env, the agent and its rollout storage."""

    evaluates_at_resume_step = False  # it evaluates after the update that reaches a step

    def build(self) -> None:
        from envs.factory import make_env, make_vector_env

        cfg = self.cfg
        self.num_envs = int(cfg.agent.num_envs)
        self.envs = make_vector_env(cfg.env, self.num_envs, cfg.action_repeat)
        self.eval_env = make_env(cfg.env, cfg.action_repeat)
        obs_space, act_space = self.eval_env.observation_space, self.eval_env.action_space
        discrete = isinstance(act_space, gym.spaces.Discrete)
        self.agent = a = hydra.utils.instantiate(
            cfg.agent,
            obs_shape=list(obs_space.shape),
            action_shape=[int(act_space.n)] if discrete else list(act_space.shape),
            discrete=discrete,
        )
        norm = a.normalization
        self._normalization = norm if norm is not None and norm.enabled else None
        self.rollout = Rollout(
            a.num_steps, self.num_envs, obs_space.shape[0], a.action_shape, a.hidden_size
        )

    def components(self) -> dict:
        parts = super().components()
        if self._normalization is not None:
            parts["normalization"] = self._normalization
        return parts

    def bookkeeping(self) -> dict:
        """Also the normalisation statistics: acting moves them, so a checkpoint of an earlier
        moment (a signal mid-rollout) must keep theirs of that moment too."""
        state = super().bookkeeping()
        if self._normalization is not None:
            state["normalization"] = self._normalization.state_dict()
        return state

    def _set_difficulty(self) -> None:
        if self.curriculum is not None:
            self.envs.call("set_difficulty", **self.curriculum.params)

    def _collect(self, obs, starts, hidden) -> tuple | None:
        """Fill ``self.rollout``; returns the carried ``(obs, starts, hidden)``, or None if a
        signal arrived (the partial rollout is dropped)."""
        agent, buf, envs = self.agent, self.rollout, self.envs
        n, gamma = self.num_envs, agent.gamma
        recurrent = buf.hidden.shape[-1] > 0
        for t in range(agent.num_steps):
            if self._signal is not None:
                return None
            buf.obs[t] = obs
            buf.starts[t] = starts
            if recurrent:
                buf.hidden[t] = hidden.cpu().numpy()
            action, log_prob, value, hidden = agent.act_batch(obs, starts, hidden)
            buf.actions[t] = action
            buf.log_probs[t] = log_prob
            buf.values[t] = value
            # Continuous actions are sent clipped to [-1, 1] (the loss sees the sampled value).
            env_action = action if agent.discrete else np.minimum(np.maximum(action, -1.0), 1.0)
            next_obs, raw_reward, terminated, truncated, info = envs.step(env_action)
            self.global_step += n
            self._ep_return += raw_reward
            done = terminated | truncated
            reward = agent.scale_rewards(raw_reward, done)  # a copy: the bootstrap adds to it
            cut = truncated & ~terminated
            if cut.any():  # time limit, not a real end: bootstrap from the final observation
                idx = np.flatnonzero(cut)
                final = agent.observe(np.stack(info["final_obs"][idx]), update=False)
                final_value = agent.value(final, np.zeros(len(idx), np.float32), hidden[idx])
                reward[idx] += gamma * final_value
            buf.rewards[t] = reward
            buf.dones[t] = done
            if done.any():
                self._end_episodes(np.flatnonzero(done), info.get("final_info", {}))
            obs = agent.observe(next_obs)
            starts = done.astype(np.float32)
        return obs, starts, hidden

    def _end_episodes(self, envs_done: np.ndarray, final_info: dict) -> None:
        stage = self.curriculum.stage if self.curriculum is not None else None
        for i in envs_done:
            info = {k: v[i] for k, v in final_info.items() if not k.startswith("_")}
            # Env i's own step within the vector step: episodes ending together get distinct x.
            step = self.global_step - self.num_envs + 1 + int(i)
            self.end_episode(step, float(self._ep_return[i]), info)
            self.last_return = float(self._ep_return[i])
            self._ep_return[i] = 0.0
        if self.curriculum is not None and self.curriculum.stage != stage:
            self._set_difficulty()  # envs pick it up at their next reset

    def _refresh_lr(self, first_step: int, length: int, progress: float) -> None:
        """The update's LR clock: ``progress`` (fraction of the update done) of the rollout."""
        self.lr.apply(first_step + int(progress * length))

    def steps(self) -> Iterator[int]:
        """The training loop, yielding the global step after every rollout and update."""
        cfg, agent = self.cfg, self.agent
        every = self.cadences()
        handlers = self._catch_signals()
        self.last_return = math.nan
        self._ep_return = np.zeros(self.num_envs)
        try:
            self._set_difficulty()
            obs, _ = self.envs.reset(seed=cfg.seed * 1_000_003 + self.global_step)
            obs = agent.observe(obs)
            starts = np.ones(self.num_envs, dtype=np.float32)
            hidden = agent.initial_state(self.num_envs)
            if self.global_step == 0:
                self.evaluate(0)
                self.log_lrs(0)
            while self.global_step < self.total_steps:
                before = self.global_step
                # Networks change only in updates; the rest is kept as of this moment, so a
                # signal mid-rollout saves the state as of the last update.
                at_rollout_start = self.bookkeeping()
                carried = self._collect(obs, starts, hidden)
                if carried is None:  # a signal: the rollout is dropped
                    self.global_step = before  # events of the dropped rollout come after it
                    self.stop_if_signalled(before + 1, at_rollout_start)
                obs, starts, hidden = carried
                step = self.global_step
                buf = self.rollout
                next_value = agent.value(obs, starts, hidden)
                batch = buf.batch(next_value, agent.gamma, agent.gae_lambda)
                metrics = agent.update(batch, partial(self._refresh_lr, before, step - before))
                check_finite({k: metrics[k] for k in ("policy_loss", "value_loss")}, step)
                self.telemetry.scalars(metrics, step, prefix="ppo/")
                # The LR the update's last minibatch used, read from the optimizer.
                self.telemetry.scalar("ppo/learning_rate", self.lr.read()["actor"], step)
                if self.lr.guard is not None:  # the scale the next update will use
                    self.lr.observe_kl(metrics["approx_kl"])
                    self.telemetry.scalar("lr_scale", self.lr.guard.scale, step)
                boundary = self.passed_lr_mark(step)
                last = step >= self.total_steps  # the run ends with an eval and an LR log
                if boundary or last or crossed(before, step, every["log"]):
                    self.log_lrs(step)
                if last or crossed(before, step, every["eval"]):
                    self.evaluate(step)
                if crossed(before, step, every["log"]):  # after the eval: the line shows it
                    self.log_progress(step, self.last_return, {})
                if last or crossed(before, step, every["checkpoint"]):
                    self.save(self.checkpoint_state(purge_from=step + 1))
                yield step
        finally:
            self._release_signals(handlers)
            self.finish()
