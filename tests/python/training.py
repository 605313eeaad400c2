"""The ranks of one run of train_loop.py, started as torchrun would start them, and what they
printed (per-step losses, the restored step, the final parameters' digest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import unittest
from typing import Sequence, Union

from daemon import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


class Run:
    """`endpoints`: one for every rank, or a list with one per rank (a rank per node).
    `local_world`: ranks per node (LOCAL_WORLD_SIZE); ranks are numbered node by node."""

    def __init__(self, endpoints: Union[str, Sequence[str]], job: str, world: int, resume: bool,
                 steps: int, snapshot: bool = True, local_world: int = 0,
                 extra: Sequence[str] = ()) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints] * world
        local_world = local_world or world
        port = free_port()
        self.procs = []
        for rank in range(world):
            env = dict(os.environ)
            env.update(
                RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank % local_world),
                LOCAL_WORLD_SIZE=str(local_world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                OMP_NUM_THREADS="1",
            )
            cmd = [sys.executable, os.path.join(HERE, "train_loop.py"),
                   "--endpoint", endpoints[rank], "--job", job, "--steps", str(steps)]
            if resume:
                cmd.append("--resume")
            if not snapshot:
                cmd.append("--no-snapshot")
            cmd += list(extra)
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True))
        self.records = [[] for _ in range(world)]

    def read_until_step(self, rank: int, step: int) -> bool:
        """Reads rank's output until it reports `step`; False if it ended first."""
        for line in self.procs[rank].stdout:
            rec = json.loads(line)
            self.records[rank].append(rec)
            if rec.get("step") == step:
                return True
        return False

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for rank, p in enumerate(self.procs):
            out, _ = p.communicate()
            self.records[rank] += [json.loads(l) for l in out.splitlines() if l.strip()]

    def finish(self, test: unittest.TestCase, timeout: float = 600) -> None:
        """Waits for every rank, then fails with the stderr of every rank that failed (the
        first rank to fail is usually not rank 0: its peers then fail in gloo)."""
        errors = []
        for rank, p in enumerate(self.procs):
            try:
                out, err = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err = f"(timed out after {timeout} s)\n{err}"
            self.records[rank] += [json.loads(l) for l in out.splitlines() if l.strip()]
            if p.returncode != 0:
                errors.append(f"rank {rank} exited with {p.returncode}:\n{err}")
        test.assertEqual(errors, [], "\n".join(errors))

    def losses(self, rank: int) -> dict:
        return {r["step"]: r["loss"] for r in self.records[rank] if "step" in r}

    def final(self, rank: int) -> str:
        return next(r["final"] for r in self.records[rank] if "final" in r)

    def restored(self, rank: int):
        return next(r["restored"] for r in self.records[rank] if "restored" in r)
