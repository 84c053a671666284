"""Updates per second of ``DrQV2Agent.update`` with and without each speed lever, same batches.

Variants (all build the same networks; the update's maths is the same in each):

- ``ref <dir>`` (with ``--reference DIR ...``): facebookresearch/drqv2's ``DrQV2Agent.update``,
  imported from a local checkout of that repository (its ``drqv2.py`` and ``utils.py``; none of
  its code lives in this repo), fed the same batch through its ``replay_iter`` argument, with its
  default ``use_tb=True``. Timed at 84x84 only: its encoder is written for 84x84 frames.
- ``before``: this project's update as it was at commit ``--before`` (default 8f58491, loaded
  from git), before the levers. Without ``--reference`` the ratio to the reference is estimated
  as the ratio to ``before`` x 1.06, the factor an independent check measured.
- ``levers off``: today's update with ``channels_last=False, reuse_cpu_memory=False``. It keeps
  the changes that need no switch because they are bit-for-bit the same computation: random
  shifts on the uint8 frames as one window copy per image, in-place scaling and ReLUs, one
  ``_foreach_lerp_`` for the target critic.
- ``+channels_last``, ``+reuse_cpu_memory``: one lever on.
- ``all on``: the defaults of ``cfgs/agent/drqv2.yaml``. ``--compile`` adds ``all on + compile``
  (inductor; the compiling first update is not timed), ``--amp`` adds ``all on + bf16``
  (``agent.amp=bf16``: bfloat16 autocast, which changes the maths within bf16 rounding).

Sizes: ``84`` is the independent check's setting (uint8 9x84x84, 6-d actions, batch 256, 4 conv
layers x 32 channels, feature 50, hidden 1024); ``64`` is the gimbal env's own pixels (3x64x64,
2-d actions, same agent). The variants live in one process and take turns one update at a time
(order flipped every round), so machine noise hits all alike; printed: median seconds per update
and the ratios of medians. ``reuse_cpu_memory`` is process-wide (glibc ``mallopt``): it is switched
on or off before each variant's turn, and "off" is glibc's steady state (mmap above 32 MB).

``--recompiles``: a small pixel agent with ``compile=true`` (inductor) runs 1,000 updates, each
after a new LR (and a new exploration noise scale), and reports how many graphs were compiled
after the first update (the goal is 0).

Measured at commit d2a1238 on this project's machine of 2026-12-01 (2-core Intel Xeon VM,
AVX-512, no GPU, torch 2.13 CPU, idle), 9x84x84, median of 7 rounds, ``--reference`` pointing
at drqv2's original critic (d6dbadce) and its later ``DenseParallel`` one (421dfdef): all on
is 2.36x / 2.21x the two references with one thread (goal 1.3x) and 2.02x / 2.17x with two;
``all on + compile`` is 0.93x (one thread) and 0.90x (two) of all on. At 3x64x64 (median of
15) all on is 1.37x before with one thread and 1.17x with two. Table in README.md, "Pixels".
``--recompiles``: 0 graphs over 1,000 LR changes. CUDA: no GPU was lent when these numbers
were taken; ``--device cuda`` runs the same comparison there.

    python benchmarks/drqv2_update.py [--rounds 3] [--threads 1 2] [--sizes 84 64] [--compile]
        [--amp] [--reference path/to/drqv2 ...]
    python benchmarks/drqv2_update.py --recompiles
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.drqv2 import DrQV2Agent, keep_freed_memory  # noqa: E402

SIZES = {84: ((9, 84, 84), 6), 64: ((3, 64, 64), 2)}  # obs shape, action dim
LEVERS = {
    "levers off": {"channels_last": False, "reuse_cpu_memory": False},
    "+channels_last": {"channels_last": True, "reuse_cpu_memory": False},
    "+reuse_cpu_memory": {"channels_last": False, "reuse_cpu_memory": True},
    "all on": {"channels_last": True, "reuse_cpu_memory": True},
}


def agent_class_at(rev: str) -> type:
    """``DrQV2Agent`` as it was at git revision ``rev`` (imported as package ``agents_before``)."""
    package = Path(tempfile.mkdtemp()) / "agents_before"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("drqv2.py", "networks.py"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:agents/{name}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (package / name).write_text(source.replace("from agents.", "from agents_before."))
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("agents_before.drqv2").DrQV2Agent


def reference_class(directory: Path) -> type:
    """``DrQV2Agent`` from a checkout of facebookresearch/drqv2 (its ``drqv2.py`` and ``utils.py``).

    Nothing of it lives in this repo: ``--reference`` points at the user's own checkout.
    """
    directory = directory.resolve()
    sys.path.insert(0, str(directory))
    sys.modules.pop("utils", None)  # the reference imports its own top-level ``utils``
    try:
        spec = importlib.util.spec_from_file_location(f"reference_{directory.name}",
                                                      directory / "drqv2.py")  # fmt: skip
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("utils", None)
    return module.DrQV2Agent


class ReferenceAgent:
    """The reference's ``update(replay_iter, step)`` fed the same batch as ours, every step."""

    def __init__(self, cls: type, base: dict, batch: dict) -> None:
        kwargs = {k: base[k] for k in ("obs_shape", "action_shape", "device", "lr", "feature_dim",
                                       "hidden_dim", "critic_target_tau", "num_expl_steps",
                                       "stddev_schedule", "stddev_clip")}  # fmt: skip
        self.agent = cls(**kwargs, update_every_steps=1, use_tb=True)  # its default config
        keys = ("obs", "action", "reward", "discount", "next_obs")
        self.batches = itertools.repeat(tuple(batch[k] for k in keys))

    def update(self, batch: dict, step: int) -> dict:
        return self.agent.update(self.batches, step)


def synthetic_batch(obs_shape, action_dim: int, batch: int, device: str) -> dict:
    gen = torch.Generator().manual_seed(0)
    frames = (batch, *obs_shape)
    return {
        "obs": torch.randint(0, 256, frames, dtype=torch.uint8, generator=gen).to(device),
        "action": (torch.rand(batch, action_dim, generator=gen) * 2 - 1).to(device),
        "reward": torch.randn(batch, 1, generator=gen).to(device),
        "discount": torch.full((batch, 1), 0.99, device=device),
        "next_obs": torch.randint(0, 256, frames, dtype=torch.uint8, generator=gen).to(device),
    }


def agent_args(obs_shape, action_dim: int, device: str, hidden: int) -> dict:
    return dict(
        obs_shape=obs_shape, action_shape=(action_dim,), device=device, lr=1e-4,
        encoder={"bundle": "A", "conv_channels": 32, "conv_layers": 4}, feature_dim=50,
        hidden_dim=hidden, critic_target_tau=0.01, num_expl_steps=0,
        stddev_schedule="linear(1.0,0.1,500000)", stddev_clip=0.3,
    )  # fmt: skip


def compare(size: int, threads: int, args, before_cls, references: dict[str, type]) -> None:
    torch.set_num_threads(threads)
    obs_shape, action_dim = SIZES[size]
    base = agent_args(obs_shape, action_dim, args.device, args.hidden)
    batch = synthetic_batch(obs_shape, action_dim, args.batch, args.device)
    agents = {}  # name -> (agent, reuse memory?)
    if size == 84:  # the reference's encoder is written for 84x84 frames (35x35 features)
        for name, cls in references.items():
            agents[name] = (ReferenceAgent(cls, base, batch), False)
    if before_cls is not None:
        agents["before"] = (before_cls(**base), False)
    for name, levers in LEVERS.items():
        agents[name] = (DrQV2Agent(**base, **levers), levers["reuse_cpu_memory"])
    if args.compile:
        torch._dynamo.reset()  # one process, many agents: see Workspace (training/run.py)
        agents["all on + compile"] = (DrQV2Agent(**base, compile=True), True)
    if args.amp:
        agents["all on + bf16"] = (DrQV2Agent(**base, amp="bf16"), True)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    seconds: dict[str, list[float]] = {name: [] for name in agents}
    for agent, reuse in agents.values():  # warm-up (and compile) untimed
        keep_freed_memory(reuse)
        agent.update(batch, 1000)
    for round_ in range(args.rounds):
        order = list(agents) if round_ % 2 == 0 else list(agents)[::-1]
        for name in order:
            agent, reuse = agents[name]
            keep_freed_memory(reuse)
            sync()
            t0 = time.perf_counter()
            agent.update(batch, 1000 + round_)
            sync()
            seconds[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    shape = "x".join(map(str, obs_shape))
    print(f"\n{shape}, batch {args.batch}, hidden {args.hidden}, {threads} thread(s), "
          f"{args.device}, median of {args.rounds} interleaved updates")  # fmt: skip
    for name, value in median.items():
        refs = (*references, "before", "levers off")
        ratios = [f"{median[r] / value:.2f}x {r}" for r in refs if r in median and r != name]
        print(f"  {name:<22} {value:7.3f} s/update {1 / value:7.2f} updates/s  "
              + ", ".join(ratios))  # fmt: skip
    for name in references:
        if name in median:
            print(f"  all on vs {name}: {median[name] / median['all on']:.2f}x")
    if "before" in median and not references and size == 84:
        ratio = median["before"] / median["all on"]
        print(f"  all on vs the reference, estimated (x 1.06): {1.06 * ratio:.2f}x")


def recompiles(updates: int) -> None:
    from torch._dynamo.utils import counters

    torch.set_num_threads(1)
    base = agent_args((3, 16, 16), 2, "cpu", 64)
    agent = DrQV2Agent(**base, compile=True)
    batch = synthetic_batch((3, 16, 16), 2, 32, "cpu")
    t0 = time.perf_counter()
    agent.update(batch, 0)
    print(f"first compiled update (compiling): {time.perf_counter() - t0:.0f} s")
    graphs = counters["stats"]["unique_graphs"]
    t0 = time.perf_counter()
    for step in range(1, updates + 1):
        for optimizer in agent.optimizers.values():
            optimizer.param_groups[0]["lr"].fill_(1e-4 * (1 + step % 10) / (1 + step / 100))
        agent.update(batch, step)
    new = counters["stats"]["unique_graphs"] - graphs
    print(f"{updates} LR changes: {new} graphs compiled after the first update "
          f"({(time.perf_counter() - t0) / updates * 1e3:.1f} ms per update)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed updates per variant")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[84, 64], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--before", default="8f58491", help="git revision of 'before'; '' = skip")
    parser.add_argument("--compile", action="store_true", help="add all on + compile (inductor)")
    parser.add_argument("--amp", action="store_true", help="add all on + bf16 autocast")
    parser.add_argument("--reference", type=Path, nargs="*", default=[], metavar="DIR",
                        help="checkouts of facebookresearch/drqv2 to time at 84x84")  # fmt: skip
    parser.add_argument("--recompiles", type=int, nargs="?", const=1000, default=0,
                        help="only count recompiles over N LR changes (default 1000)")  # fmt: skip
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}")
    if args.recompiles:
        recompiles(args.recompiles)
        return
    before_cls = agent_class_at(args.before) if args.before else None
    references = {f"ref {path.name}": reference_class(path) for path in args.reference}
    for size in args.sizes:
        for threads in args.threads:
            compare(size, threads, args, before_cls, references)


if __name__ == "__main__":
    main()
