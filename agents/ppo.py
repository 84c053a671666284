"""PPO: clipped policy objective, GAE advantages (computed by the trainer), optional value clipping,
entropy bonus, gradient clipping, advantage normalisation; discrete and continuous actions.

One Adam optimizer whose param groups are named ``encoder``, ``actor`` and ``critic`` (see
``agents/ppo_networks.py``); the trainer binds an ``LRController.for_named_groups`` to it and
hands :meth:`PPOAgent.update` a ``refresh_lr(progress)`` callback, which the agent calls before
every minibatch step, before every epoch or once per update, as ``step_on`` says; ``progress`` is
the fraction of the update's minibatch steps already done, and the trainer evaluates the schedule
at ``rollout's first step + progress x rollout length``. The rollout loop, storage and GAE live in
``training/onpolicy.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from agents.base import OnPolicyAgent, load_optimizer_state
from agents.normalization import Normalization
from agents.ppo_networks import make_policy

STEP_ON = ("update", "epoch", "rollout")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _on_for_continuous(value: bool | str, discrete: bool, key: str) -> bool:
    """A normaliser switch: ``True``/``False``, or ``"auto"`` (on for continuous actions)."""
    if value == "auto":
        return not discrete
    if isinstance(value, bool):
        return value
    raise ValueError(f"agent.{key}={value!r}; accepted: true, false, auto")


class PPOAgent(OnPolicyAgent):
    """Proximal Policy Optimization for vector state observations.

    Args:
        obs_shape: ``(D,)``; pixel observations are not supported by PPO here.
        action_shape: ``(A,)`` for continuous actions in ``[-1, 1]``, ``(n,)`` choices if discrete.
        discrete: categorical policy over ``action_shape[0]`` actions, else a diagonal Gaussian
            with a state-independent log-std (in the ``actor`` group).
        device: torch device.
        lr: initial LR of every group (the schedule overwrites it before the first step).
        encoder: bundle config (``A``, ``B`` or ``gru``); see ``agents/ppo_networks.py``.
        hidden_dim: width of the tanh layers of the towers / heads.
        num_envs, num_steps: rollout shape (``num_steps`` steps of ``num_envs`` envs).
        update_epochs, num_minibatches: passes over the rollout and minibatches per pass.
        gamma, gae_lambda: discount and GAE lambda (read by the trainer).
        clip_coef: PPO ratio clip; also the value clip when ``clip_vloss``.
        clip_vloss: clip the value update around the rollout's value estimates.
        ent_coef, vf_coef: entropy bonus and value-loss weight (value loss is plain MSE).
        max_grad_norm: global gradient-norm clip.
        norm_adv: normalise advantages per minibatch.
        target_kl: stop the update's epochs early once an epoch's mean approx KL exceeds it.
        step_on: when the LR moves: ``update`` (before every minibatch step), ``epoch``
            (before every epoch) or ``rollout`` (once per update). All three read the same
            global-step curve: the update's progress spreads its steps over the rollout.
        compile: run the loss and the optimizer step through ``torch.compile`` (``true``:
            the default inductor backend; a string names another backend, e.g. ``eager``).
            LRs are then tensors updated in place, so a schedule never triggers a recompile.
        bptt_len: length of the training sequences of a recurrent policy (truncated BPTT);
            feedforward policies train on single steps.
        norm_obs: normalise observations by their running mean and std (`normalization`),
            clipped to ``+-clip_obs``; the statistics are frozen in evaluation. ``"auto"``: on
            for continuous actions, off for discrete ones (CleanRL's continuous and discrete
            PPO scripts).
        norm_reward: divide rewards by the running std of the discounted return, clipped to
            ``+-clip_reward`` (returns of MuJoCo tasks are in the thousands); ``"auto"`` as
            ``norm_obs``.
        log_std_init: initial log-std of the Gaussian policy (CleanRL, SB3: 0).
        ortho_init: orthogonal init (gain sqrt 2, policy output 0.01, value output 1), as CleanRL
            and SB3; ``False``: PyTorch's default init of every layer.
    """

    lr_groups = ("encoder", "actor", "critic")  # named param groups of one Adam
    reports_kl = True  # update() returns the update's mean approx KL (the KL guard reads it)

    def __init__(
        self,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        discrete: bool,
        device: str,
        lr: float,
        encoder: Mapping[str, Any],
        hidden_dim: int = 64,
        num_envs: int = 4,
        num_steps: int = 128,
        update_epochs: int = 4,
        num_minibatches: int = 4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_coef: float = 0.2,
        clip_vloss: bool = True,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        norm_adv: bool = True,
        target_kl: float | None = None,
        step_on: str = "update",
        compile: bool | str = False,
        bptt_len: int = 16,
        norm_obs: bool | str = "auto",
        norm_reward: bool | str = "auto",
        clip_obs: float = 10.0,
        clip_reward: float = 10.0,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ) -> None:
        if len(obs_shape) != 1:
            raise ValueError(f"PPO takes state vectors (D,); got obs_shape={tuple(obs_shape)}")
        if step_on not in STEP_ON:
            raise ValueError(f"agent.step_on={step_on!r}; expected one of {', '.join(STEP_ON)}")
        self.device = torch.device(device)
        self.discrete = bool(discrete)
        self.action_shape = () if self.discrete else tuple(action_shape)
        out_dim = int(np.prod(action_shape))
        self.net = make_policy(int(obs_shape[0]), out_dim, hidden_dim, dict(encoder))
        self.net.to(self.device)
        self.hidden_size = self.net.hidden_size
        self.recurrent = self.hidden_size > 0
        self.seq_len = int(bptt_len) if self.recurrent else 1
        if self.recurrent and num_steps % self.seq_len:
            raise ValueError(
                f"agent.num_steps={num_steps} must be a multiple of bptt_len={bptt_len}"
            )
        if not ortho_init:
            for module in self.net.modules():
                if isinstance(module, torch.nn.Linear | torch.nn.GRUCell):
                    module.reset_parameters()
        self.log_std = (
            None
            if self.discrete
            else torch.nn.Parameter(torch.full((out_dim,), float(log_std_init), device=self.device))
        )
        self.num_envs, self.num_steps = int(num_envs), int(num_steps)
        self.update_epochs, self.num_minibatches = int(update_epochs), int(num_minibatches)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.clip_coef, self.clip_vloss = float(clip_coef), bool(clip_vloss)
        self.ent_coef, self.vf_coef = float(ent_coef), float(vf_coef)
        self.max_grad_norm, self.norm_adv = float(max_grad_norm), bool(norm_adv)
        self.target_kl = None if target_kl is None else float(target_kl)
        self.step_on = step_on
        norm_obs = _on_for_continuous(norm_obs, self.discrete, "norm_obs")
        norm_reward = _on_for_continuous(norm_reward, self.discrete, "norm_reward")
        self.normalization = Normalization(
            tuple(obs_shape), self.num_envs, self.gamma, norm_obs, norm_reward, clip_obs,
            clip_reward,
        )  # fmt: skip
        actor_params = list(self.net.actor.parameters()) + (
            [self.log_std] if self.log_std is not None else []
        )
        modules = {"encoder": self.net.encoder, "critic": self.net.critic}
        groups = [
            {"name": name, "params": actor_params if name == "actor" else
             list(modules[name].parameters())}
            for name in self.lr_groups
        ]  # fmt: skip
        self.params = [p for g in groups for p in g["params"]]
        # A tensor LR is written in place by the controller: the compiled step reads it as an
        # input instead of baking a constant in, so LR changes never recompile.
        # Each group its own tensor: a default `lr=tensor` would be one tensor shared by all
        # groups, and a schedule written into it for one network would move every network.
        for group in groups:
            group["lr"] = torch.tensor(float(lr)) if compile else float(lr)
        fused = not compile and self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(groups, lr=float(lr), eps=1e-5, fused=fused)
        self.optimizers = dict.fromkeys(self.lr_groups, self.optimizer)
        self._loss, self._optimizer_step = self._loss_impl, self.optimizer.step
        if compile:
            backend = compile if isinstance(compile, str) else "inductor"
            self._loss = torch.compile(self._loss_impl, backend=backend)
            self._optimizer_step = torch.compile(self.optimizer.step, backend=backend)
        self._eval_hidden: torch.Tensor | None = None
        self._numpy_acting = self.device.type == "cpu" and hasattr(self.net, "numpy_forward")
        # A view of the parameter's memory: the optimizer and load_state_dict write in place.
        self._log_std_np = None if self.log_std is None else self.log_std.detach().numpy()

    # ------------------------------------------------------------------------------ acting

    def initial_state(self, n: int) -> torch.Tensor:
        """Zero hidden state for ``n`` envs (width 0 for feedforward policies)."""
        return torch.zeros(n, self.net.hidden_size, device=self.device)

    def _sample(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.discrete:
            log_probs = out.log_softmax(-1)
            # Gumbel-max: argmax(logits + Gumbel noise) is a categorical sample (3x cheaper
            # than torch.multinomial on small batches).
            action = (log_probs - torch.empty_like(log_probs).exponential_().log_()).argmax(-1)
            return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        noise = torch.randn_like(out)  # the sample's standardised offset: no second pass
        action = out + noise * self.log_std.exp()
        return action, (noise.square().mul_(-0.5) - self.log_std - _HALF_LOG_2PI).sum(-1)

    def _gaussian_log_prob(self, mean: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        z = (action - mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(-1)

    def _sample_numpy(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_sample` in numpy (noise from numpy's global generator, checkpointed with the run's
        RNG states)."""
        if self.discrete:
            shifted = out - out.max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            gumbel = -np.log(np.random.standard_exponential(log_probs.shape))
            action = (log_probs + gumbel).argmax(-1)
            return action, np.take_along_axis(log_probs, action[:, None], -1)[:, 0]
        log_std = self._log_std_np
        noise = np.random.standard_normal(out.shape).astype(np.float32)
        action = out + noise * np.exp(log_std)
        return action, (-0.5 * noise * noise - log_std - _HALF_LOG_2PI).sum(-1)

    @torch.no_grad()
    def act_batch(
        self, obs: np.ndarray, starts: np.ndarray, hidden: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
        """Sample actions for a batch ``obs[N, D]`` (float32) of envs.

        ``starts[N]`` is 1.0 where ``obs`` begins an episode (the recurrent state resets there).
        Returns ``(action, log_prob, value, next_hidden)``, the first three as numpy arrays, the
        state a tensor on the agent's device; continuous actions are unclipped (the trainer
        clips what it sends to the env, the loss sees the sampled value). Feedforward towers on
        the CPU act in numpy: at rollout sizes (a few envs, 64-wide layers) torch's per-call
        overhead is 5x the arithmetic; the update trains the same weights in torch.
        """
        if self._numpy_acting:
            out, value = self.net.numpy_forward(obs)
            action, log_prob = self._sample_numpy(out)
            return action, log_prob, value, hidden
        obs_t = torch.from_numpy(obs).to(self.device).unsqueeze(0)
        out, value, hidden = self.net(obs_t, torch.from_numpy(starts).to(self.device)[None], hidden)
        action, log_prob = self._sample(out[0])
        return action.cpu().numpy(), log_prob.cpu().numpy(), value[0].cpu().numpy(), hidden

    @torch.no_grad()
    def value(self, obs: np.ndarray, starts: np.ndarray, hidden: torch.Tensor) -> np.ndarray:
        """State values of ``obs[N, D]`` (GAE bootstrap and truncated episodes)."""
        if self._numpy_acting:
            return self.net.numpy_forward(obs)[1]
        obs_t = torch.from_numpy(obs).to(self.device).unsqueeze(0)
        return (
            self.net(obs_t, torch.from_numpy(starts).to(self.device)[None], hidden)[1][0]
            .cpu()
            .numpy()
        )

    def begin_episode(self) -> None:
        """Forget the evaluation hidden state: the next :meth:`act` starts an episode."""
        self._eval_hidden = None

    def observe(self, obs: np.ndarray, update: bool = True) -> np.ndarray:
        """Training observations ``obs[N, D]`` from the envs as the policy sees them (float32):
        normalised when ``norm_obs``, counting them into the statistics if ``update``
        (``False`` for a truncated episode's final observation)."""
        return self.normalization.observations(obs, update)

    def scale_rewards(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """One vector step's rewards as the update sees them (scaled when ``norm_reward``)."""
        return self.normalization.rewards(reward, done)

    @torch.no_grad()
    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """One env's action for one observation (evaluation; ``eval_mode`` gives the mode).
        Observations are normalised with the training statistics, which this never moves."""
        obs = self.normalization.observations(np.asarray(obs)[None], update=False)
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).view(1, 1, -1)
        start = torch.ones(1, 1) if self._eval_hidden is None else torch.zeros(1, 1)
        hidden = self.initial_state(1) if self._eval_hidden is None else self._eval_hidden
        out, _, self._eval_hidden = self.net(obs_t, start.to(self.device), hidden)
        if eval_mode:
            action = out[0].argmax(-1) if self.discrete else out[0]
        else:
            action = self._sample(out[0])[0]
        action_np = action[0].cpu().numpy()
        return action_np if self.discrete else np.clip(action_np, -1.0, 1.0)

    # ------------------------------------------------------------------------------ learning

    def _loss_impl(
        self, obs, starts, hidden, actions, old_log_probs, old_values, advantages, returns
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, values, _ = self.net(obs, starts, hidden)
        if self.discrete:
            log_probs_all = out.log_softmax(-1)
            log_probs = log_probs_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            entropy = -(log_probs_all.exp() * log_probs_all).sum(-1).mean()
        else:
            log_probs = self._gaussian_log_prob(out, actions)
            entropy = (0.5 + _HALF_LOG_2PI + self.log_std).sum()
        log_ratio = log_probs - old_log_probs
        ratio = log_ratio.exp()
        if self.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        clipped = ratio.clamp(1.0 - self.clip_coef, 1.0 + self.clip_coef)
        policy_loss = torch.max(-advantages * ratio, -advantages * clipped).mean()
        value_error = (values - returns).square()
        if self.clip_vloss:
            v_clipped = old_values + (values - old_values).clamp(-self.clip_coef, self.clip_coef)
            value_error = torch.max(value_error, (v_clipped - returns).square())
        value_loss = value_error.mean()
        loss = policy_loss - self.ent_coef * entropy + self.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > self.clip_coef).float().mean()
            stats = torch.stack([policy_loss, value_loss, entropy, approx_kl, clip_fraction])
        return loss, stats.detach()

    def _sequences(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``[T, N, ...]`` rollout tensors as ``[L, S, ...]`` sequences of ``seq_len`` steps."""
        seq, out = self.seq_len, {}
        for key, x in batch.items():
            t, n = x.shape[:2]
            chunks = x.reshape(t // seq, seq, n, *x.shape[2:])
            if key == "hidden":  # the state before each sequence's first step
                out[key] = chunks[:, 0].reshape((t // seq) * n, *x.shape[2:])
            else:
                out[key] = chunks.transpose(0, 1).reshape(seq, (t // seq) * n, *x.shape[2:])
        return out

    def update(
        self, batch: Mapping[str, torch.Tensor], refresh_lr: Callable[[float], object]
    ) -> dict[str, float]:
        """PPO epochs over one rollout; returns the mean losses and diagnostics.

        ``refresh_lr(progress)`` sets the LRs for ``progress`` in ``[0, 1)``, the fraction of
        this update's planned minibatch steps already done; it is called when ``step_on`` says.

        ``batch`` holds ``[T, N, ...]`` tensors: ``obs``, ``starts``, ``hidden``, ``actions``,
        ``log_probs``, ``values``, ``advantages``, ``returns``. Feedforward minibatches are
        shuffled single steps; recurrent ones whole ``bptt_len`` sequences, their state reset at
        the episode starts inside them.
        """
        data = self._sequences({k: v.to(self.device) for k, v in batch.items()})
        num_seqs = data["obs"].shape[1]
        mb_size = max(1, num_seqs // self.num_minibatches)
        per_epoch = len(range(0, num_seqs - mb_size + 1, mb_size))
        planned = self.update_epochs * per_epoch  # an early stop (target_kl) leaves some out
        if self.step_on == "rollout":
            refresh_lr(0.0)
        totals, count = torch.zeros(5, device=self.device), 0
        for epoch in range(self.update_epochs):
            if self.step_on == "epoch":
                refresh_lr(epoch / self.update_epochs)
            epoch_kl, epoch_count = torch.zeros((), device=self.device), 0
            perm = torch.randperm(num_seqs, device=self.device)
            for start in range(0, num_seqs - mb_size + 1, mb_size):
                if self.step_on == "update":
                    refresh_lr((epoch * per_epoch + start // mb_size) / planned)
                idx = perm[start : start + mb_size]
                loss, stats = self._loss(
                    data["obs"][:, idx], data["starts"][:, idx], data["hidden"][idx],
                    data["actions"][:, idx], data["log_probs"][:, idx], data["values"][:, idx],
                    data["advantages"][:, idx], data["returns"][:, idx],
                )  # fmt: skip
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
                self._optimizer_step()
                totals += stats
                epoch_kl += stats[3]
                count += 1
                epoch_count += 1
            if self.target_kl is not None and float(epoch_kl) / epoch_count > self.target_kl:
                break
        policy_loss, value_loss, entropy, approx_kl, clip_fraction = (totals / count).tolist()
        values, returns = batch["values"].flatten(), batch["returns"].flatten()
        var_returns = returns.var().item()
        explained = (
            math.nan if var_returns == 0 else 1.0 - (returns - values).var().item() / var_returns
        )
        return {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
            "clip_fraction": clip_fraction,
            "explained_variance": explained,
        }

    # ------------------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain state_dicts: the networks (log-std included) and the optimizer."""
        return {
            "net": self.net.state_dict(),
            "log_std": None if self.log_std is None else self.log_std.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`. The optimizer's param-group dicts are replaced: bind an
        LR controller after this call, not before."""
        self.net.load_state_dict(state["net"])
        if self.log_std is not None:
            with torch.no_grad():
                self.log_std.copy_(state["log_std"])
        load_optimizer_state(self.optimizer, state["optimizer"])
