"""A small real training loop for the end-to-end tests (and the client guide's example).

An MLP with dropout (so the RNG matters) on synthetic data, Adam with a step LR schedule, CPU,
one thread. With WORLD_SIZE > 1 it runs under torch.distributed (gloo) with
DistributedDataParallel. Every step it snapshots the whole training state to holdfastd; with
--resume it first restores the newest step every rank committed and continues from there.

Prints one JSON line per step: {"step": s, "loss": <float.hex()>, "rank": r}; at the end
{"final": <sha256 of every parameter's bytes>, "rank": r}. With --resume it prints
{"restored": step} (or null) first.

For the cluster tests: --hidden widens the model (512: ~1 MiB of parameters, ~3 MiB of state with
Adam's moments), --step-sleep stands for a longer forward/backward, and --hold-after N stops
after step N is committed ({"holding": N}) until the process is killed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

import holdfast


def build_model(hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(16, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(hidden, 4),
    )


def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The data of a step depends on the step and rank only, as a resumable data loader's would.
    g = torch.Generator().manual_seed(1000003 * step + rank)
    x = torch.randn(32, 16, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    return x, y


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-snapshot", action="store_true")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--hold-after", type=int, default=0)
    args = p.parse_args()

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)

    torch.manual_seed(1234)  # the same initial weights on every rank and run
    model = build_model(args.hidden)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.7)
    torch.manual_seed(5678 + rank)  # dropout streams differ per rank

    snap = None if args.no_snapshot else holdfast.Snapshotter(args.job, endpoint=args.endpoint)
    start = 1
    if args.resume and snap is not None:
        latest = snap.latest_step()
        if latest is not None:
            step, state = snap.load(latest)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            holdfast.set_rng_state(state["rng"])
            assert state["step"] == step
            start = step + 1
        emit({"restored": latest, "rank": rank})

    handle = None
    for step in range(start, args.steps + 1):
        net.train()
        x, y = batch(step, rank)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        if handle is not None:
            handle.wait_staged()  # the optimizer step changes what the last snapshot reads
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        emit({"step": step, "loss": loss.item().hex(), "rank": rank})
        if snap is not None:
            handle = snap.save(
                step,
                {
                    "model": model.state_dict(),
                    "optim": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "rng": holdfast.rng_state(),
                    "step": step,
                },
            )
        if step == args.hold_after:
            if handle is not None:
                handle.wait()
            emit({"holding": step, "rank": rank})
            while True:
                time.sleep(60)
        if args.step_sleep > 0:
            time.sleep(args.step_sleep)
    if handle is not None:
        handle.wait()
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        digest.update(name.encode())
        digest.update(param.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    emit({"final": digest.hexdigest(), "rank": rank})
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
