"""deploy/holdfastd.service: systemd-analyze verify finds nothing to say about it (with ExecStart
pointing at the built holdfastd), its settings keep shared memory across a restart, and its paths
agree with the example config, the tmpfiles and the sysusers files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml_lite

SOURCE = os.environ.get("HOLDFAST_SOURCE_DIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HOLDFASTD = os.environ.get("HOLDFAST_HOLDFASTD", "")
DEPLOY = os.path.join(SOURCE, "deploy")


def parse_unit(path: str) -> dict:
    """{(section, key): [values in order]}; an empty assignment is kept as ""."""
    out: dict = {}
    section = ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            out.setdefault((section, key.strip()), []).append(value.strip())
    return out


class UnitTest(unittest.TestCase):
    def setUp(self) -> None:
        self.unit = parse_unit(os.path.join(DEPLOY, "holdfastd.service"))

    def get(self, key: str, section: str = "Service") -> str:
        values = self.unit.get((section, key))
        self.assertIsNotNone(values, f"{key}= is not set")
        return values[-1]

    def test_systemd_analyze_verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed (package systemd)")
        if not HOLDFASTD or not os.access(HOLDFASTD, os.X_OK):
            self.skipTest("HOLDFAST_HOLDFASTD is not set to a holdfastd binary")
        tmp = tempfile.mkdtemp(prefix="hf-unit-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(os.path.join(DEPLOY, "holdfastd.service"), encoding="utf-8") as f:
            text = f.read()
        text, n = re.subn(r"^ExecStart=/usr/local/bin/holdfastd ", f"ExecStart={HOLDFASTD} ", text,
                          flags=re.M)
        self.assertEqual(n, 1)
        unit = os.path.join(tmp, "holdfastd.service")
        with open(unit, "w", encoding="utf-8") as f:
            f.write(text)
        r = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60,
                           cwd=tmp)
        # verify exits 0 on unknown keys and bad values; any diagnostic about our unit fails.
        ours = [l for l in (r.stdout + r.stderr).splitlines() if "holdfastd.service" in l]
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ours, [])

        # The hardening score, so a change that weakens it shows up here (3.7 when written;
        # lower is better, 10 is "UNSAFE").
        r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", unit],
                           capture_output=True, text=True, timeout=60, cwd=tmp)
        m = re.search(r"Overall exposure level for holdfastd.service: ([0-9.]+)", r.stdout)
        if m is None:
            self.skipTest(f"this systemd-analyze has no offline security check: {r.stderr}")
        self.assertLessEqual(float(m.group(1)), 4.0, r.stdout)

    def test_settings(self) -> None:
        self.assertEqual(self.get("Type"), "notify")
        self.assertEqual(self.get("Restart"), "on-failure")
        self.assertEqual(self.get("User"), "holdfast")
        self.assertEqual(self.get("Group"), "holdfast")
        self.assertEqual(self.get("LimitMEMLOCK"), "infinity")
        self.assertEqual(self.get("NoNewPrivileges"), "yes")
        self.assertEqual(self.get("ProtectSystem"), "strict")
        self.assertEqual(self.get("CapabilityBoundingSet"), "")
        self.assertEqual(set(self.get("RestrictAddressFamilies").split()),
                         {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"})
        for key in ("ProtectHome", "PrivateTmp", "ProtectKernelTunables", "ProtectKernelModules",
                    "ProtectKernelLogs", "ProtectControlGroups", "RestrictNamespaces",
                    "LockPersonality", "RestrictRealtime"):
            self.assertEqual(self.get(key), "yes", key)
        self.assertEqual(self.get("SystemCallArchitectures"), "native")
        self.assertRegex(self.get("WatchdogSec"), r"^[0-9]+s$")

    def test_shared_memory_survives_a_restart(self) -> None:
        # Segments must be visible to trainers and outlive the process and the unit's stop.
        self.assertEqual(self.get("RemoveIPC"), "no")
        for key in ("PrivateDevices", "PrivateIPC", "DynamicUser", "DeviceAllow",
                    "ProtectClock", "RuntimeDirectoryPreserve", "TemporaryFileSystem",
                    "InaccessiblePaths", "MemoryDenyWriteExecute", "PrivateUsers"):
            self.assertNotIn(("Service", key), self.unit, f"{key}= must not be set")
        config = yaml_lite.load(os.path.join(DEPLOY, "holdfastd.example.yaml"))
        shm = config["shm.dir"]
        runtime = "/run/" + self.get("RuntimeDirectory")
        state = "/var/lib/" + self.get("StateDirectory")
        self.assertFalse(shm.startswith((runtime + "/", state + "/", "/tmp/")), shm)
        self.assertIn(shm, self.get("ReadWritePaths").split())
        self.assertEqual(os.path.dirname(config["socket"]), runtime)
        self.assertEqual(config["data_dir"], state)
        self.assertRegex(self.get("ExecStart"),
                         r"^/usr/local/bin/holdfastd --config /etc/holdfast/holdfastd.yaml$")

        with open(os.path.join(DEPLOY, "holdfast.tmpfiles"), encoding="utf-8") as f:
            rows = [l.split() for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(rows, [["d", shm, "2770", "holdfast", "holdfast", "-"]])
        with open(os.path.join(DEPLOY, "holdfast.sysusers"), encoding="utf-8") as f:
            rows = [l.split()[:3] for l in f if l.strip() and not l.startswith("#")]
        self.assertEqual(rows, [["g", "holdfast", "-"], ["u", "holdfast", "-:holdfast"]])
        self.assertIn("holdfast.conf", self.get("ExecStartPre"))


class MountUnitTest(unittest.TestCase):
    """deploy/dev-shm-holdfast.mount: the segments' tmpfs with huge pages, at shm.dir."""

    def setUp(self) -> None:
        self.path = os.path.join(DEPLOY, "dev-shm-holdfast.mount")
        self.unit = parse_unit(self.path)

    def test_settings(self) -> None:
        config = yaml_lite.load(os.path.join(DEPLOY, "holdfastd.example.yaml"))
        self.assertEqual(self.unit[("Mount", "Where")], [config["shm.dir"]])
        self.assertEqual(self.unit[("Mount", "Type")], ["tmpfs"])
        options = self.unit[("Mount", "Options")][-1].split(",")
        self.assertIn("huge=within_size", options)
        self.assertIn("mode=2770", options)  # as the tmpfiles entry
        self.assertEqual(self.unit[("Install", "WantedBy")], ["holdfastd.service"])
        service = parse_unit(os.path.join(DEPLOY, "holdfastd.service"))
        self.assertIn("dev-shm-holdfast.mount", service[("Unit", "After")][-1].split())

    def test_systemd_analyze_verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed (package systemd)")
        tmp = tempfile.mkdtemp(prefix="hf-mount-")
        self.addCleanup(shutil.rmtree, tmp, True)
        unit = os.path.join(tmp, "dev-shm-holdfast.mount")
        shutil.copy(self.path, unit)
        r = subprocess.run([analyze, "verify", unit], capture_output=True, text=True, timeout=60,
                           cwd=tmp)
        ours = [l for l in (r.stdout + r.stderr).splitlines() if "dev-shm-holdfast.mount" in l]
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(ours, [])


if __name__ == "__main__":
    unittest.main()
