"""deploy/install.sh staged into a temporary root (--destdir): the files, their modes, the user and
group, the shared-memory directory; a second run changes nothing and keeps an edited config."""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import subprocess
import tempfile
import unittest

SOURCE = os.environ.get("HOLDFAST_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("HOLDFAST_BUILD_DIR", "")
INSTALL = os.path.join(SOURCE, "deploy", "install.sh")


def mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def passwd_entry(root: str, name: str, db: str = "passwd"):
    try:
        with open(os.path.join(root, "etc", db), encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields[0] == name:
                    return fields
    except FileNotFoundError:
        pass
    return None


class InstallTest(unittest.TestCase):
    def setUp(self) -> None:
        if not BUILD or not os.access(os.path.join(BUILD, "smp", "holdfastd"), os.X_OK):
            self.skipTest("HOLDFAST_BUILD_DIR is not set to a build with smp/holdfastd")
        if os.geteuid() != 0:
            self.skipTest("staging the user and the setgid shm directory needs root")
        self.root = tempfile.mkdtemp(prefix="hf-install-")
        self.addCleanup(shutil.rmtree, self.root, True)

    def install(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", INSTALL, "--build", BUILD, "--destdir", self.root, *args],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "DESTDIR": ""})
        if check:
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def test_install_twice(self) -> None:
        r = self.install()
        R = self.root
        expect = {
            "usr/local/bin/holdfastd": 0o755,
            "usr/local/lib/systemd/system/holdfastd.service": 0o644,
            "usr/local/lib/sysusers.d/holdfast.conf": 0o644,
            "usr/local/lib/tmpfiles.d/holdfast.conf": 0o644,
            "usr/local/lib/systemd/system/dev-shm-holdfast.mount": 0o644,
            "etc/holdfast/holdfastd.yaml": 0o644,
            "etc/holdfast/cluster.example.yaml": 0o644,
            "usr/local/share/doc/holdfast/holdfastd.example.yaml": 0o644,
            "usr/local/share/doc/holdfast/cluster.example.yaml": 0o644,
            "usr/local/share/doc/holdfast/operations.md": 0o644,
        }
        cli = os.path.join(BUILD, "smp", "cli", "holdfast")
        if os.access(cli, os.X_OK):
            expect["usr/local/bin/holdfast"] = 0o755
        else:
            self.assertIn("no holdfast CLI", r.stdout)
        for rel, want in expect.items():
            path = os.path.join(R, rel)
            self.assertTrue(os.path.isfile(path), rel)
            self.assertEqual(mode(path), want, rel)
        self.assertTrue(filecmp.cmp(os.path.join(BUILD, "smp", "holdfastd"),
                                    os.path.join(R, "usr/local/bin/holdfastd"), shallow=False))
        self.assertTrue(filecmp.cmp(os.path.join(SOURCE, "deploy", "holdfastd.example.yaml"),
                                    os.path.join(R, "etc/holdfast/holdfastd.yaml"), shallow=False))
        with open(os.path.join(R, "usr/local/lib/systemd/system/holdfastd.service"),
                  encoding="utf-8") as f:
            unit = f.read()
        self.assertIn("\nExecStart=/usr/local/bin/holdfastd --config /etc/holdfast/holdfastd.yaml\n",
                      unit)

        # The huge-page tmpfs is enabled (wanted by the service), not mounted.
        link = os.path.join(R, "usr/local/lib/systemd/system/holdfastd.service.wants",
                            "dev-shm-holdfast.mount")
        self.assertEqual(os.readlink(link), "../dev-shm-holdfast.mount")
        self.assertTrue(os.path.isfile(link))

        user = passwd_entry(R, "holdfast")
        group = passwd_entry(R, "holdfast", "group")
        self.assertIsNotNone(user, "no holdfast user in the staged /etc/passwd")
        self.assertIsNotNone(group, "no holdfast group in the staged /etc/group")
        self.assertEqual(user[3], group[2])  # primary group
        self.assertEqual(user[6], "/usr/sbin/nologin")
        self.assertLess(int(user[2]), 1000)  # a system user: logind's RemoveIPC spares it

        shm = os.path.join(R, "dev/shm/holdfast")
        st = os.stat(shm)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o2770)
        self.assertEqual((st.st_uid, st.st_gid), (int(user[2]), int(group[2])))

        # Again, after the operator edited the config: nothing installed, the edit kept.
        config = os.path.join(R, "etc/holdfast/holdfastd.yaml")
        with open(config, "a", encoding="utf-8") as f:
            f.write("# edited by the operator\n")
        before = {p: os.stat(os.path.join(R, p)).st_mtime_ns for p in expect}
        r = self.install()
        self.assertNotIn("installed", r.stdout.replace("install.sh: done", ""))
        self.assertIn("kept /etc/holdfast/holdfastd.yaml", r.stdout)
        with open(config, encoding="utf-8") as f:
            self.assertTrue(f.read().endswith("# edited by the operator\n"))
        self.assertEqual(before, {p: os.stat(os.path.join(R, p)).st_mtime_ns for p in expect})
        self.assertEqual(passwd_entry(R, "holdfast"), user)
        with open(os.path.join(R, "etc/passwd"), encoding="utf-8") as f:
            self.assertEqual(sum(l.startswith("holdfast:") for l in f), 1)

    def test_other_prefix_goes_to_etc(self) -> None:
        self.install("--prefix", "/opt/holdfast")
        unit = os.path.join(self.root, "etc/systemd/system/holdfastd.service")
        with open(unit, encoding="utf-8") as f:
            self.assertIn("\nExecStart=/opt/holdfast/bin/holdfastd --config", f.read())
        self.assertTrue(os.path.isfile(os.path.join(self.root, "opt/holdfast/bin/holdfastd")))
        self.assertTrue(os.path.isfile(os.path.join(self.root, "etc/tmpfiles.d/holdfast.conf")))

    def test_bad_input(self) -> None:
        r = self.install("--prefix", "relative", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("absolute", r.stderr)
        r = self.install("--frobnicate", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown argument", r.stderr)
        r = subprocess.run(["bash", INSTALL, "--build", self.root, "--destdir", self.root],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("build it first", r.stderr)


if __name__ == "__main__":
    unittest.main()
