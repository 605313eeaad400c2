"""deploy/local-cluster.sh: a 3-node 2+1 cluster starts healthy, protects a step saved on every
node, reports itself, and `stop` leaves nothing behind (no process, no shared memory, no files)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
import unittest.mock

SOURCE = os.environ.get("HOLDFAST_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("HOLDFAST_BUILD_DIR", "")
SNAPSHOT_TOOL = os.environ.get("HOLDFAST_SNAPSHOT_TOOL", "")
SCRIPT = os.path.join(SOURCE, "deploy", "local-cluster.sh")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, the script's shell, has exited).
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        return f.read().split(") ")[1][0] != "Z"


class LocalClusterTest(unittest.TestCase):
    def setUp(self) -> None:
        if not BUILD or not os.path.isdir(BUILD):
            self.skipTest("HOLDFAST_BUILD_DIR is not set")
        self.tmp = tempfile.mkdtemp(prefix="hf-lc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # Job secrets of the trainers this test runs stay in its directory.
        env = unittest.mock.patch.dict(os.environ,
                                       {"HOLDFAST_SECRET_DIR": os.path.join(self.tmp, "secrets")})
        env.start()
        self.addCleanup(env.stop)
        self.dir = os.path.join(self.tmp, "cluster")
        self.shm_before = set(glob.glob("/dev/shm/holdfast-local-*"))

    def run_script(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True,
                              timeout=timeout)

    def test_start_status_stop(self) -> None:
        r = self.run_script("start", "3", "--k", "2", "--m", "1", "--dir", self.dir, "--bin",
                            BUILD, "--budget", "256MiB", "--timeout", "30")
        # Whatever happens below, leave no daemon behind.
        self.addCleanup(self.run_script, "stop", "--dir", self.dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("3 holdfastd up (2+1 per group)", r.stdout)

        with open(os.path.join(self.dir, "cluster.json"), encoding="utf-8") as f:
            info = json.load(f)
        self.assertEqual((info["k"], info["m"]), (2, 1))
        self.assertEqual([n["id"] for n in info["nodes"]], ["n0", "n1", "n2"])
        pids = [n["pid"] for n in info["nodes"]]
        for n in info["nodes"]:
            self.assertTrue(alive(n["pid"]), n)
            self.assertTrue(os.path.exists(n["socket"]), n)
            self.assertEqual(n["endpoint"], "unix:" + n["socket"])
        self.assertEqual(len({n["control"] for n in info["nodes"]}), 3)
        env = subprocess.run(["bash", "-c", f". {self.dir}/cluster.env && "
                              "echo $HOLDFAST_NODES $HOLDFAST_SOCKET_1 $HOLDFAST_NODE_IDS"],
                             capture_output=True, text=True, check=True).stdout.split()
        self.assertEqual(env, ["3", info["nodes"][1]["socket"], "n0", "n1", "n2"])

        r = self.run_script("status", "--dir", self.dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.count("3/3 members up"), 3, r.stdout)

        # One rank per node: the step is protected across the group (the cluster works).
        if SNAPSHOT_TOOL and os.access(SNAPSHOT_TOOL, os.X_OK):
            procs = [subprocess.Popen(
                [SNAPSHOT_TOOL, "--socket", n["socket"], "--job", "demo", "--rank", str(i),
                 "--world-size", "3", "--items", "2", "--item-bytes", "65536",
                 "save", "--steps", "0:1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                for i, n in enumerate(info["nodes"])]
            for p in procs:
                out, _ = p.communicate(timeout=60)
                self.assertEqual(p.returncode, 0, out)
            deadline = time.monotonic() + 30
            while True:
                r = self.run_script("status", "--dir", self.dir, "--json")
                self.assertEqual(r.returncode, 0, r.stderr)
                st = json.loads(r.stdout)
                points = [j["restore_point"] for s in st.values() for j in s["jobs"]
                          if j["job_id"] == "demo"]
                if points == [1, 1, 1]:
                    break
                self.assertLess(time.monotonic(), deadline, f"restore points: {st}")
                time.sleep(0.2)

        r = self.run_script("start", "3", "--dir", self.dir, "--bin", BUILD)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already holds a cluster", r.stderr)

        r = self.run_script("stop", "--dir", self.dir)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for pid in pids:
            self.assertFalse(alive(pid), pid)
        self.assertFalse(os.path.exists(self.dir))
        self.assertFalse(os.path.exists(info["shm_root"]))
        self.assertEqual(set(glob.glob("/dev/shm/holdfast-local-*")), self.shm_before)
        r = self.run_script("stop", "--dir", self.dir)
        self.assertEqual(r.returncode, 0)
        self.assertIn("nothing to stop", r.stdout)

    def test_bad_input(self) -> None:
        r = self.run_script("start", "4", "--k", "2", "--m", "1", "--dir", self.dir)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("do not form groups of k+m = 3", r.stderr)
        r = self.run_script("start", "zero", "--dir", self.dir)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("node count", r.stderr)
        r = self.run_script("frobnicate")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown command", r.stderr)
        r = self.run_script("status", "--dir", self.dir)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no cluster in", r.stderr)
        self.assertFalse(os.path.exists(self.dir))
        self.assertEqual(set(glob.glob("/dev/shm/holdfast-local-*")), self.shm_before)


if __name__ == "__main__":
    unittest.main()
