"""The LR each PPO gradient step trains at, for agent.step_on = update / epoch / rollout, on the
same global-step schedule (a steep linear ramp, so the steps are visible). Real
``PPOAgent.update`` calls on a random rollout; writes docs/step_on.png.

    python benchmarks/step_on_plot.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lr_scheduler as L  # noqa: E402
from agents.ppo import PPOAgent  # noqa: E402

NUM_ENVS, NUM_STEPS, ROLLOUTS = 4, 32, 3
ROLLOUT = NUM_ENVS * NUM_STEPS  # global steps per rollout


def trace(step_on: str, schedule: L.Schedule) -> list[tuple[float, float]]:
    """(x, lr) per gradient step: x spreads the update's steps over its rollout."""
    torch.manual_seed(0)
    agent = PPOAgent(
        [4], [2], True, "cpu", 1e-3, {"bundle": "A"}, num_envs=NUM_ENVS, num_steps=NUM_STEPS,
        step_on=step_on,
    )  # fmt: skip
    controller = L.LRController.for_named_groups(
        {n: schedule for n in ("encoder", "actor", "critic")}, agent.optimizer
    )
    t, n = NUM_STEPS, NUM_ENVS
    batch = {
        "obs": torch.randn(t, n, 4), "starts": torch.zeros(t, n), "hidden": torch.zeros(t, n, 0),
        "actions": torch.randint(0, 2, (t, n)).float(), "log_probs": torch.full((t, n), -0.69),
        "values": torch.zeros(t, n), "advantages": torch.randn(t, n), "returns": torch.randn(t, n),
    }  # fmt: skip
    points: list[tuple[float, float]] = []
    for k in range(ROLLOUTS):
        first = k * ROLLOUT  # the loop calls update after collecting [first, first + ROLLOUT)
        steps_before = len(points)

        def on_step(optimizer, args, kwargs):
            points.append((0.0, float(optimizer.param_groups[1]["lr"])))

        handle = agent.optimizer.register_step_pre_hook(on_step)
        agent.update(batch, lambda p, s=first: controller.apply(s + int(p * ROLLOUT)))
        handle.remove()
        done = len(points) - steps_before
        for j in range(done):
            points[steps_before + j] = (first + j * ROLLOUT / done, points[steps_before + j][1])
    return points


def main() -> None:
    schedule = L.compile_schedules(
        {"actor": {"type": "linear", "intervals": [{"start": 0, "lr": 1e-4, "final_lr": 1e-3}]}},
        base_lr=1e-4, total_steps=ROLLOUTS * ROLLOUT,
    )["actor"]  # fmt: skip
    fig = Figure(figsize=(8, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    grid = torch.arange(0, ROLLOUTS * ROLLOUT + 1).numpy()
    ax.plot(grid, schedule.values(grid), color="0.75", linewidth=3, label="schedule(global step)")
    for step_on, marker in (("update", "o"), ("epoch", "s"), ("rollout", "^")):
        xs, ys = zip(*trace(step_on, schedule), strict=True)
        ax.step(xs, ys, where="post", marker=marker, markersize=3, label=f"step_on={step_on}")
    for k in range(1, ROLLOUTS):
        ax.axvline(k * ROLLOUT, color="0.6", linestyle=":", linewidth=0.8)
    ax.set_xlabel("global step (a rollout's gradient steps spread over its length)")
    ax.set_ylabel("LR of each gradient step")
    ax.set_title("PPO: 4 epochs x 4 minibatches per 128-step rollout")
    ax.legend(fontsize="small")
    out = ROOT / "docs" / "step_on.png"
    out.parent.mkdir(exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
