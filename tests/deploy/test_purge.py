"""`holdfastd --purge`: frees the segments, catalog and incarnation a stopped daemon keeps for its
next start, refuses while a daemon serves or holds the catalog, and touches nothing else."""

from __future__ import annotations

import os
import subprocess
import unittest

import daemon as hf


class PurgeTest(unittest.TestCase):
    def setUp(self) -> None:
        hf.require_cluster_tools()
        self.d = hf.Daemon(node_id="purge")
        self.addCleanup(self.d.close)

    def purge(self, socket: str = "") -> subprocess.CompletedProcess:
        args = list(self.d.args)
        if socket:
            args[args.index("--socket") + 1] = socket
        return subprocess.run(args + ["--purge"], capture_output=True, text=True, timeout=30)

    def segments(self) -> list:
        return sorted(n for n in os.listdir(self.d.shm) if n.startswith("hfpy-"))

    def save(self, steps: str) -> None:
        subprocess.run([hf.SNAPSHOT_TOOL, "--socket", self.d.socket, "--job", "j", "--items", "3",
                        "--item-bytes", "100000", "save", "--steps", steps],
                       check=True, capture_output=True, timeout=30)

    def test_purge(self) -> None:
        self.save("0:2")
        held = self.segments()
        self.assertTrue(held)
        # Another daemon's segment and an unrelated file in the same directory.
        others = [os.path.join(self.d.shm, "other-0000000000000001"),
                  os.path.join(self.d.shm, "notes.txt")]
        for path in others:
            with open(path, "w", encoding="utf-8") as f:
                f.write("keep me")

        r = self.purge()
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("holdfastd is running", r.stderr)
        # Same catalog, another socket: the catalog's lock refuses it.
        r = self.purge(socket=self.d.socket + ".other")
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("is using", r.stderr)
        self.assertEqual(self.segments(), held)

        # A restart keeps everything (that is what the purge is for).
        self.d.restart()
        self.assertEqual(self.d.status()["jobs"][0]["latest_complete_step"], "2")
        self.d.stop()
        held = self.segments()  # recovery removed the pooled ones; the versions' stay
        self.assertTrue(held)

        r = self.purge()
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, rf"removed {len(held)} segment files \([0-9.]+ GiB\), "
                                   r"the catalog")
        self.assertEqual(self.segments(), [])
        self.assertFalse(os.path.exists(os.path.join(self.d.data_dir, "catalog")))
        for path in others:
            self.assertTrue(os.path.exists(path), path)
        self.assertTrue(os.path.isdir(self.d.shm))
        self.assertTrue(os.path.isdir(self.d.data_dir))

        # Purging again finds nothing; the next start is empty and serves.
        r = self.purge()
        self.assertEqual(r.returncode, 0, r)
        self.assertIn("removed 0 segment files", r.stdout)
        self.d.start()
        self.assertEqual(self.d.status()["jobs"], [])
        self.save("0:0")

    def test_bad_flag_value(self) -> None:
        r = subprocess.run([hf.HOLDFASTD, "--purge=maybe"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2, r)


if __name__ == "__main__":
    unittest.main()
