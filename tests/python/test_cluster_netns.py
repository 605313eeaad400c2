"""A 2+1 cluster whose nodes live in network namespaces of their own: each holdfastd and its
snapshot tools run under `ip netns exec`, reach the others only over a veth to a bridge (in one
more namespace) at private 10.213.0.x addresses, with UCX on that veth. Every node in turn is
lost (SIGKILL, RAM and disk wiped), replaced, rebuilt over that network, and every rank restores
bit for bit. Nothing of this touches the host's own network namespace.

Needs root and a kernel that allows network namespaces, veth and bridges; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

from daemon import Cluster, failed, require_cluster_tools

NODES = 3
SUBNET = "10.213.0"
DEVICE = "eth0"  # each node's veth, inside its namespace
ITEM_BYTES = 600 << 10  # 3-4 items per rank: ~2 MiB per node and step
JOB = "nsjob"
_NAME = re.compile(r"^hfns(\d+)-")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _namespaces() -> list:
    r = _ip("-j", "netns", "list", check=False)
    return [n["name"] for n in json.loads(r.stdout or "[]")] if r.returncode == 0 else []


def _sweep_stale() -> None:
    # Namespaces of an earlier run of this test that was killed before its cleanup.
    for name in _namespaces():
        m = _NAME.match(name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass


def _unavailable() -> str:
    """Why this machine cannot run the test, or "" when it can."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (deploy/install-deps.sh installs it)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"hfns{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "hfa", "type", "veth", "peer", "name", "hfb")
        _ip("-n", probe, "link", "add", "hfbr", "type", "bridge")
        r = subprocess.run(["ip", "netns", "exec", probe, "true"], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ip netns exec: {r.stderr.strip()}")
    except (RuntimeError, OSError) as e:
        return f"this machine does not allow network namespaces with veth and bridges ({e})"
    finally:
        _ip("netns", "del", probe, check=False)
    return ""


class Network:
    """Namespaces <base>-n0..n2, each with `eth0` at 10.213.0.(i+1)/24, cabled by veth pairs
    to bridge br0 in <base>-sw. delete() removes what build() made (with them their veths),
    also after build() failed half way."""

    def __init__(self) -> None:
        base = f"hfns{os.getpid()}"
        self.switch = f"{base}-sw"
        self.nodes = [f"{base}-n{i}" for i in range(NODES)]
        self.created = []

    def build(self) -> None:
        self._add(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, ns in enumerate(self.nodes):
            self._add(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", DEVICE, "type", "veth", "peer", "name", f"p{i}",
                "netns", self.switch)
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", DEVICE)
            _ip("-n", ns, "link", "set", DEVICE, "up")

    def _add(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.created.append(ns)

    @staticmethod
    def address(i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def prefix(self, i: int) -> list:
        return ["ip", "netns", "exec", self.nodes[i]]

    def traffic(self, i: int) -> tuple:
        """(rx, tx) bytes of node i's veth."""
        r = _ip("-n", self.nodes[i], "-j", "-s", "link", "show", DEVICE)
        stats = json.loads(r.stdout)[0]["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]

    def delete(self) -> None:
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        self.created.clear()


class NetnsClusterTest(unittest.TestCase):
    def setUp(self) -> None:
        require_cluster_tools()
        why = _unavailable()
        if why:
            self.skipTest(why)
        _sweep_stale()
        self.net = Network()
        self.addCleanup(self.net.delete)
        self.net.build()
        self.cluster = Cluster(
            k=2, m=1, hosts=[Network.address(i) for i in range(NODES)],
            prefixes=[self.net.prefix(i) for i in range(NODES)], net_device=DEVICE,
            cluster_id="netns")
        self.addCleanup(self.cluster.close)
        self.addCleanup(self._print_logs_on_failure)

    def _print_logs_on_failure(self) -> None:
        if os.environ.get("HOLDFAST_TEST_PRINT_LOGS") == "1" or failed(self):
            print(self.cluster.logs(), file=sys.stderr)

    def save(self, first: int, last: int) -> None:
        """Rank r saves steps first..last on node r, all ranks at once."""
        procs = [subprocess.Popen(
            self.cluster.tool_command(r, JOB, r, NODES, ITEM_BYTES, ["save", "--steps",
                                                                     f"{first}:{last}"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(NODES)]
        for r, p in enumerate(procs):
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, f"rank {r} save failed:\n{out}{err}")
            self.assertIn(f"committed {last} ", out, f"rank {r}")

    def verify(self, step: int, latest: bool) -> None:
        """Every rank restores `step` on its node (with `latest`: asks for the restore point,
        which must be `step`) and checks every byte."""
        for r in range(NODES):
            args = ["verify"] if latest else ["verify", "--step", str(step)]
            cmd = self.cluster.tool_command(r, JOB, r, NODES, ITEM_BYTES, args)
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, f"rank {r} on n{r}: {p.stdout}{p.stderr}")
            items = 3 + r % 2
            self.assertEqual(p.stdout.split(), ["verified", str(step), f"items={items}",
                                                f"bytes={items * (ITEM_BYTES + 4096 * r)}"],
                             f"rank {r} on n{r}")

    def test_lose_and_rebuild_each_node_across_namespaces(self) -> None:
        self.cluster.start_all()
        self.save(1, 4)
        self.cluster.wait_restore_point(JOB, 4, agreed=True)
        self.verify(4, latest=True)
        for lost in range(NODES):
            before = self.net.traffic(lost)
            t0 = time.monotonic()
            self.cluster.kill(lost, wipe=True)
            self.cluster.nodes[lost].start()
            self.cluster.wait_holds(lost, JOB, 4)
            print(f"n{lost} lost, replaced and rebuilt in {time.monotonic() - t0:.1f} s",
                  file=sys.stderr)
            self.cluster.wait_restore_point(JOB, 4, agreed=True)
            self.verify(4, latest=False)
            self.verify(4, latest=True)
            # Its share (~2 MiB of data and parity) came in over its veth.
            rx = self.net.traffic(lost)[0] - before[0]
            self.assertGreater(rx, ITEM_BYTES, f"replacement n{lost} received only {rx} bytes")
        # Training goes on: a new step is protected across the namespaces again.
        self.save(5, 5)
        self.cluster.wait_restore_point(JOB, 5, agreed=True)
        self.verify(5, latest=True)
        for i in range(NODES):
            rx, tx = self.net.traffic(i)
            print(f"n{i} {DEVICE}: rx {rx / 2**20:.1f} MiB, tx {tx / 2**20:.1f} MiB",
                  file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
