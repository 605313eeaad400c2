"""End to end on a cluster (docs/cluster.md): a 2-rank PyTorch job with one rank on each of two
nodes of a 2+1 group snapshots every step; the group protects the steps across the three nodes.
Node n1 is lost with its RAM and disk (SIGKILL, directories wiped) together with both trainers; a
replacement n1 rebuilds its share from n0 and n2; the restarted ranks resume from the restore
point and end bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import sys
import time
import unittest

from daemon import Cluster, failed, require_cluster_tools
from training import Run

STEPS = 60
HIDDEN = 512  # ~3 MiB of state per rank (parameters and Adam's moments)
WAIT_FOR_STEP = 10  # the restore point to reach before the loss
HOLD_AFTER = 45  # trainers stop here if the restore point is slow, so the kill lands mid-run


class ClusterResumeTest(unittest.TestCase):
    def setUp(self) -> None:
        require_cluster_tools()
        self.cluster = Cluster(k=2, m=1, budget="256MiB")
        self.addCleanup(self.cluster.close)
        self.addCleanup(self._print_logs_on_failure)

    def _print_logs_on_failure(self) -> None:
        if os.environ.get("HOLDFAST_TEST_PRINT_LOGS") == "1" or failed(self):
            print(self.cluster.logs(), file=sys.stderr)

    def test_two_ranks_on_two_nodes_survive_losing_a_node(self) -> None:
        t0 = time.monotonic()
        marks = []

        def mark(what: str) -> None:
            marks.append(f"{what} {time.monotonic() - t0:.1f}s")

        # Reference: the same training, never interrupted and not snapshotted (snapshotting
        # changes nothing about training: test_e2e_resume checks that).
        ref = Run("unused", "ref", 2, resume=False, steps=STEPS, snapshot=False,
                  extra=["--hidden", str(HIDDEN)])
        ref.finish(self)
        mark("reference")

        self.cluster.start_all()
        endpoints = [self.cluster.nodes[0].endpoint, self.cluster.nodes[1].endpoint]
        job = "train"
        paced = ["--hidden", str(HIDDEN), "--step-sleep", "0.05"]
        b1 = Run(endpoints, job, 2, resume=True, steps=STEPS, local_world=1,
                 extra=paced + ["--hold-after", str(HOLD_AFTER)])
        rp_before = self.cluster.wait_restore_point(job, WAIT_FOR_STEP)
        mark(f"restore point {rp_before}")

        # n1 is lost with its trainer, its RAM and its disk; torchrun tears down rank 0.
        self.cluster.nodes[1].proc.send_signal(signal.SIGKILL)
        b1.procs[1].send_signal(signal.SIGKILL)
        b1.kill_all()
        self.cluster.kill(1, wipe=True)
        reached = max(b1.losses(0))
        mark(f"killed at step {reached}")
        self.assertFalse(any("final" in r for r in b1.records[0]), "run B ended before the kill")

        self.cluster.nodes[1].start()
        rp = self.cluster.wait_restore_point(job, rp_before, agreed=True)
        self.cluster.wait_holds(1, job, rp)
        mark(f"n1 rebuilt step {rp}")

        b2 = Run(endpoints, job, 2, resume=True, steps=STEPS, local_world=1,
                 extra=["--hidden", str(HIDDEN)])
        b2.finish(self)
        mark("resumed run")
        # Protection goes on after the replacement: the last step is protected everywhere.
        self.cluster.wait_restore_point(job, STEPS)
        mark("last step protected")
        print(f"\nrestore point {rp_before} before the loss, trainers at step {reached}, "
              f"resumed from {rp}; " + ", ".join(marks), file=sys.stderr)

        self.assertEqual([b2.restored(r) for r in range(2)], [rp, rp], "restored steps")
        self.assertGreaterEqual(rp, rp_before)
        self.assertLessEqual(rp, reached)
        for r in range(2):
            ref_losses = ref.losses(r)
            self.assertEqual(sorted(ref_losses), list(range(1, STEPS + 1)))
            for s, loss in b1.losses(r).items():
                self.assertEqual(loss, ref_losses[s], f"rank {r} step {s} before the loss")
            b2_losses = b2.losses(r)
            self.assertEqual(sorted(b2_losses), list(range(rp + 1, STEPS + 1)))
            for s, loss in b2_losses.items():
                self.assertEqual(loss, ref_losses[s], f"rank {r} step {s} after resuming")
            self.assertEqual(b2.final(r), ref.final(r), f"rank {r} final parameters")


if __name__ == "__main__":
    unittest.main()
