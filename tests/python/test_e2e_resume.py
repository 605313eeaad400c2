"""End to end: a real PyTorch training loop killed with SIGKILL at a random step resumes from
holdfastd and ends bit for bit where an uninterrupted run ends, with 1 rank and with 2 ranks
(torch.distributed, gloo, DistributedDataParallel)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import unittest

from daemon import Daemon, require_daemon

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 60


def _seed() -> int:
    value = os.environ.get("HOLDFAST_TEST_SEED", "0x686f6c6466617374")
    return int(value, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """The ranks of one training run, as torchrun would start them."""

    def __init__(self, endpoint: str, job: str, world: int, resume: bool, snapshot: bool = True):
        port = _free_port()
        self.procs = []
        for rank in range(world):
            env = dict(os.environ)
            env.update(
                RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                OMP_NUM_THREADS="1",
            )
            cmd = [sys.executable, os.path.join(HERE, "train_loop.py"), "--endpoint", endpoint,
                   "--job", job, "--steps", str(STEPS)]
            if resume:
                cmd.append("--resume")
            if not snapshot:
                cmd.append("--no-snapshot")
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
        for rank, p in enumerate(self.procs):
            out, err = p.communicate(timeout=timeout)
            self.records[rank] += [json.loads(l) for l in out.splitlines() if l.strip()]
            test.assertEqual(p.returncode, 0, f"rank {rank} failed:\n{err}")

    def losses(self, rank: int) -> dict:
        return {r["step"]: r["loss"] for r in self.records[rank] if "step" in r}

    def final(self, rank: int) -> str:
        return next(r["final"] for r in self.records[rank] if "final" in r)

    def restored(self, rank: int):
        return next(r["restored"] for r in self.records[rank] if "restored" in r)


class ResumeTest(unittest.TestCase):
    def setUp(self) -> None:
        require_daemon()
        self.daemon = Daemon(budget="512MiB")
        self.addCleanup(self.daemon.close)
        self.addCleanup(lambda: self._print_log_on_failure())
        self.rng = random.Random(_seed())

    def _print_log_on_failure(self) -> None:
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not outcome.success:
            print("\n--- holdfastd log ---\n" + self.daemon.log()[-20000:], file=sys.stderr)

    def check_resume(self, world: int) -> None:
        # Run A: never interrupted (snapshots every step, like B, so both do the same work).
        a = Run(self.daemon.endpoint, f"a{world}", world, resume=False)
        a.finish(self)
        # Run B: killed at a random step, all ranks restarted, resumed from holdfastd.
        kill_at = self.rng.randint(5, STEPS - 5)
        victim = self.rng.randrange(world)
        print(f"\n[seed {_seed():#x}] world {world}: SIGKILL rank {victim} at step {kill_at}",
              file=sys.stderr)
        b1 = Run(self.daemon.endpoint, f"b{world}", world, resume=True)
        self.assertTrue(b1.read_until_step(victim, kill_at), "run B ended before the kill")
        b1.procs[victim].send_signal(signal.SIGKILL)
        b1.kill_all()  # the survivors, as torchrun tears the job down
        b2 = Run(self.daemon.endpoint, f"b{world}", world, resume=True)
        b2.finish(self)

        restored = {b2.restored(r) for r in range(world)}
        self.assertEqual(len(restored), 1, f"ranks restored different steps: {restored}")
        step = restored.pop()
        self.assertIsNotNone(step, "nothing was restored")
        self.assertLessEqual(step, kill_at)
        self.assertGreaterEqual(step, kill_at - 2, "the restored step is too old")
        for r in range(world):
            a_losses = a.losses(r)
            self.assertEqual(sorted(a_losses), list(range(1, STEPS + 1)))
            for s, loss in b1.losses(r).items():
                self.assertEqual(loss, a_losses[s], f"rank {r} step {s} before the kill")
            b2_losses = b2.losses(r)
            self.assertEqual(sorted(b2_losses), list(range(step + 1, STEPS + 1)))
            for s, loss in b2_losses.items():
                self.assertEqual(loss, a_losses[s], f"rank {r} step {s} after resuming")
            self.assertEqual(b2.final(r), a.final(r), f"rank {r} final parameters")

    def test_one_rank_killed_resumes_bit_for_bit(self) -> None:
        self.check_resume(1)

    def test_two_ranks_ddp_killed_resume_bit_for_bit(self) -> None:
        self.check_resume(2)

    def test_fresh_start_without_snapshot_matches(self) -> None:
        # Snapshotting changes nothing about training itself.
        a = Run(self.daemon.endpoint, "plain", 1, resume=False, snapshot=False)
        a.finish(self)
        b = Run(self.daemon.endpoint, "snap", 1, resume=False)
        b.finish(self)
        self.assertEqual(a.losses(0), b.losses(0))
        self.assertEqual(a.final(0), b.final(0))


if __name__ == "__main__":
    unittest.main()
