"""The off-policy loop (DrQ-v2): one env, a replay buffer, an update every
``update_every_steps`` global steps.

One global step = one agent action (``action_repeat`` env frames). At the top of every step, in
this order: a pending signal (checkpoint, then `Preempted`), the periodic checkpoint, evaluation,
LR logging (at log steps and at every schedule boundary); then act, update (the LRs for the step
written first), env step, replay. A checkpoint is written before its step's events, so a resume
purges TensorBoard from that step on and writes it again.
"""

from __future__ import annotations

from collections.abc import Iterator

import hydra
import numpy as np
import torch

from training.run import check_finite
from training.workspace import Workspace


class OffPolicyWorkspace(Workspace):
    """An off-policy run: env, eval env, agent, replay buffer (checkpointed with the rest)."""

    def build(self) -> None:
        from agents.replay_buffer import ReplayBuffer
        from envs.factory import make_env

        cfg = self.cfg
        self.env = make_env(cfg.env, cfg.action_repeat)
        self.eval_env = make_env(cfg.env, cfg.action_repeat)
        obs_space, act_space = self.env.observation_space, self.env.action_space
        self.agent = hydra.utils.instantiate(
            cfg.agent, obs_shape=list(obs_space.shape), action_shape=list(act_space.shape)
        )
        r = cfg.replay
        self.replay = ReplayBuffer(
            obs_space.shape, obs_space.dtype, act_space.shape, r.capacity, r.batch_size,
            r.nstep, r.discount, seed=cfg.seed,
        )  # fmt: skip

    def components(self) -> dict:
        return {**super().components(), "replay": self.replay}

    def extra_checkpoint_bytes(self) -> int:
        """The replay buffer as full as this run can fill it (capacity, or every step of the
        run if fewer): observations, actions and scalars per transition."""
        obs, act = self.env.observation_space, self.env.action_space
        per = obs.dtype.itemsize * int(np.prod(obs.shape)) + 4 * int(np.prod(act.shape)) + 16
        return min(int(self.cfg.replay.capacity), self.total_steps + 1) * per

    def steps(self) -> Iterator[int]:
        """The training loop, yielding the global step after every env step.

        `train()` runs it to the end; benchmarks advance two workspaces in alternating chunks.
        """
        cfg, ar = self.cfg, self.cfg.action_repeat
        every = self.cadences()
        seed_steps = cfg.num_seed_frames // ar
        update_every = cfg.update_every_steps
        start_step = self.global_step
        handlers = self._catch_signals()
        step, last_return, metrics = self.global_step, float("nan"), {}
        try:
            # A fresh episode: the one a stop interrupted cannot be continued (env internals are
            # not saved), so the buffer closes it as a time-out and n-step targets bootstrap.
            self.replay.mark_episode_end()
            self.set_difficulty(self.env)
            obs, _ = self.env.reset(seed=cfg.seed + self.episode)
            ep_return = 0.0
            while step < self.total_steps:
                self.global_step = step
                self.stop_if_signalled(purge_from=step)
                if step % every["checkpoint"] == 0 and step != start_step:
                    self.save(self.checkpoint_state(purge_from=step))
                if step % every["eval"] == 0:
                    self.evaluate(step)
                if self.passed_lr_mark(step) or step % every["log"] == 0:
                    self.log_lrs(step)
                    if step % every["log"] == 0:
                        self.log_progress(step, last_return, metrics)
                with torch.no_grad():
                    action = self.agent.act(obs, step, eval_mode=False)
                if step >= seed_steps and step % update_every == 0 and self.replay.can_sample:
                    self.lr.apply(step)
                    metrics = self.agent.update(self.replay.sample(), step)
                    check_finite(metrics, step)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                done = terminated or truncated
                self.replay.add(obs, action, reward, next_obs, terminated, done)
                ep_return += float(reward)
                step += 1
                obs = next_obs
                if done:
                    self.end_episode(step, ep_return, info)
                    last_return, ep_return = ep_return, 0.0
                    self.set_difficulty(self.env)
                    obs, _ = self.env.reset(seed=cfg.seed + self.episode)
                yield step
            self.global_step = step
            self.evaluate(step)
            self.log_lrs(step)
            self.save(self.checkpoint_state(purge_from=step))
        finally:
            self._release_signals(handlers)
            self.finish()
