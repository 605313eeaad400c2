#!/usr/bin/python3
"""The demo's training job: a small GPT-style language model, snapshotted to holdfastd every step.

This is also the reference example of docs/api.md. Run one process per rank, as torchrun would:
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the environment (one rank needs none of them),
and --endpoint the socket of the holdfastd on the rank's node.

    python3 deploy/demo_train.py --endpoint unix:/run/holdfast/holdfastd.sock --job demo \
        --steps 40 --resume

With --resume it first restores the job's restore point (the newest step protected on every node)
and continues from there; training then ends bit for bit where an uninterrupted run ends, because
the snapshot holds everything the next step depends on: parameters, Adam's moments, the learning
rate schedule and every random number generator. The data of a step depends on the step only, as a
resumable data loader's would.

Prints one JSON line per event: {"restored": step or null}, {"step": s, "loss": <float.hex()>},
{"final": <sha256 of the parameters>}; --pace S sleeps S seconds per step (a longer step).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

import holdfast

VOCAB = 64


class TinyGPT(torch.nn.Module):
    """Token and position embeddings, causal self-attention blocks, a language-model head."""

    def __init__(self, width: int, layers: int, context: int) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, width)
        self.positions = torch.nn.Embedding(context, width)
        block = torch.nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width,
                                                 dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, VOCAB)
        mask = torch.triu(torch.full((context, context), float("-inf")), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        h = self.tokens(x) + self.positions(torch.arange(n))
        return self.head(self.blocks(h, mask=self.mask[:n, :n]))


def batch(step: int, rank: int, size: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic text with structure to learn: noisy arithmetic sequences over the vocabulary."""
    g = torch.Generator().manual_seed(7919 * step + rank)
    start = torch.randint(0, VOCAB, (size, 1), generator=g)
    stride = torch.randint(1, 5, (size, 1), generator=g)
    seq = (start + stride * torch.arange(context + 1)) % VOCAB
    noise = torch.rand(seq.shape, generator=g) < 0.05
    seq = torch.where(noise, torch.randint(0, VOCAB, seq.shape, generator=g), seq)
    return seq[:, :-1], seq[:, 1:]


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", help="holdfastd socket (default: the client's default)")
    p.add_argument("--job", default="demo")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--resume", action="store_true", help="restore the restore point first")
    p.add_argument("--no-snapshot", action="store_true", help="train without holdfast")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--context", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--pace", type=float, default=0.0, help="seconds to sleep after each step")
    args = p.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)

    torch.manual_seed(1234)  # the same initial weights on every rank and run
    model = TinyGPT(args.width, args.layers, args.context)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    warmup = 5
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / 1000)))
    torch.manual_seed(5678 + rank)  # dropout streams differ per rank

    snap = None if args.no_snapshot else holdfast.Snapshotter(args.job, endpoint=args.endpoint)
    start = 1
    if args.resume and snap is not None:
        latest = snap.latest_step()  # the restore point: protected on every node
        if latest is not None:
            step, state = snap.load(latest)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            holdfast.set_rng_state(state["rng"])
            start = step + 1
        emit({"restored": latest, "rank": rank})

    handle = None
    for step in range(start, args.steps + 1):
        net.train()
        x, y = batch(step, rank, args.batch, args.context)
        loss = F.cross_entropy(net(x).reshape(-1, VOCAB), y.reshape(-1))
        loss.backward()
        if handle is not None:
            # The previous snapshot reads the parameters from host memory asynchronously; the
            # optimizer step must not change them before it has them.
            handle.wait_staged()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        emit({"step": step, "loss": loss.item().hex(), "rank": rank})
        if snap is not None:
            handle = snap.save(step, {"model": model.state_dict(), "optim": opt.state_dict(),
                                      "sched": sched.state_dict(), "rng": holdfast.rng_state()})
        if args.pace > 0:
            time.sleep(args.pace)
    if handle is not None:
        handle.wait()
    digest = hashlib.sha256()
    for name, param in model.state_dict().items():
        digest.update(name.encode())
        digest.update(param.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    emit({"final": digest.hexdigest(), "rank": rank})
    if snap is not None:
        snap.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
