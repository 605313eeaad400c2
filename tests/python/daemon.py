"""Private holdfastd processes for Python tests: one daemon, or a cluster of them.

Daemon: its own socket, catalog and shared-memory directory. Cluster: k+m daemons sharing one
cluster file (docs/cluster.md), data over UCX tcp; on loopback by default, or at addresses and
behind a command prefix the test gives (e.g. `ip netns exec NS`, one network namespace per node).

Binaries come from the environment, set by ctest to the build's: $HOLDFAST_HOLDFASTD (holdfastd),
$HOLDFAST_SNAPSHOT_TOOL (holdfast_snapshot_tool), $HOLDFAST_STATUS_JSON (holdfast_status_json:
GetStatus as JSON, since Debian's Python has no gRPC module) and $HOLDFAST_CLI (the `holdfast`
operator CLI). Tests that need one skip when it is
not set. Daemons get SIGKILL when the test process dies, so a test killed by ctest's timeout
leaves none behind.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from typing import Optional, Sequence

HOLDFASTD = os.environ.get("HOLDFAST_HOLDFASTD", "")
SNAPSHOT_TOOL = os.environ.get("HOLDFAST_SNAPSHOT_TOOL", "")
STATUS_JSON = os.environ.get("HOLDFAST_STATUS_JSON", "")
CLI = os.environ.get("HOLDFAST_CLI", "")

# Job secrets the client library stores (docs/security.md) go to a private
# directory of this test process, removed at exit, not to $HOME.
if "HOLDFAST_SECRET_DIR" not in os.environ:
    _SECRET_DIR = tempfile.mkdtemp(prefix="hf-secrets-")
    os.environ["HOLDFAST_SECRET_DIR"] = _SECRET_DIR
    atexit.register(shutil.rmtree, _SECRET_DIR, True)

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _executable(path: str) -> bool:
    return bool(path) and os.access(path, os.X_OK)


def require_daemon() -> None:
    if not _executable(HOLDFASTD):
        raise unittest.SkipTest("HOLDFAST_HOLDFASTD is not set to a holdfastd binary")


def require_cluster_tools() -> None:
    require_daemon()
    if not _executable(SNAPSHOT_TOOL):
        raise unittest.SkipTest("HOLDFAST_SNAPSHOT_TOOL is not set to a holdfast_snapshot_tool")
    if not _executable(STATUS_JSON):
        raise unittest.SkipTest("HOLDFAST_STATUS_JSON is not set to a holdfast_status_json")


def require_cli() -> None:
    if not _executable(CLI):
        raise unittest.SkipTest("HOLDFAST_CLI is not set to a holdfast binary")


def run_cli(*args: str, prefix: Sequence[str] = (), stdin: Optional[str] = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess:
    """`holdfast ARGS` behind `prefix`; stdin is /dev/null unless given, so the CLI never sees a
    terminal."""
    require_cli()
    return subprocess.run(list(prefix) + [CLI] + list(args), input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def failed(test: unittest.TestCase) -> bool:
    """True once `test` (or one of its subtests) has failed or raised; usable in a cleanup,
    where `test._outcome.success` reads True (Python 3.11 resets it for every cleanup)."""
    outcome = getattr(test, "_outcome", None)
    result = getattr(outcome, "result", None)
    if result is None:
        return False
    return any(t is test or getattr(t, "test_case", None) is test
               for t, _ in list(result.errors) + list(result.failures))


def free_ports(count: int) -> list:
    """`count` different TCP ports on 127.0.0.1 that were free a moment ago.

    Drawn at random below the kernel's ephemeral range, so an outgoing
    connection of a test running alongside cannot take one before the daemon
    binds it; all are held bound until the set is complete, so none repeats
    (the C++ harness's FreePorts does the same)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    low, high = 10000, max(11000, ephemeral_low)
    socks = []
    try:
        for _ in range(100 * count):
            if len(socks) == count:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randrange(low, high)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < count:
            raise RuntimeError(f"found {len(socks)} of {count} free ports")
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def _die_with_parent() -> None:
    # Runs in the child between fork and exec; the setting survives exec (also through
    # `ip netns exec`, which execs the command in place).
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class StatusClient:
    """One long-lived `holdfast_status_json --serve`: GetStatus over channels kept open, for
    callers that poll many daemons often (the chaos driver polls every 50 ms while it waits for
    the cluster to settle; a process start and a new gRPC channel per node and poll cost about a
    third of that suite's CPU). `ask` answers for the daemons that answered; it never raises."""

    LINE_TIMEOUT = 10.0  # the helper's own deadline is 2 s a question

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.pending = b""  # read from the helper, not yet a whole line

    def _line(self) -> bytes:
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.proc.stdout], [], [], self.LINE_TIMEOUT)
            if not ready:
                raise OSError("holdfast_status_json --serve did not answer")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise OSError("holdfast_status_json --serve exited")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def ask(self, sockets: dict[int, str]) -> dict[int, dict]:
        if not sockets:
            return {}
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([STATUS_JSON, "--serve"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         bufsize=0)
            self.pending = b""
        out = {}
        try:
            self.proc.stdin.write("".join(f"{path}\n" for path in sockets.values()).encode())
            self.proc.stdin.flush()
            for i in sockets:
                answer = json.loads(self._line())
                if "error" not in answer:
                    out[i] = answer
        except OSError:
            self.close()  # started again at the next question
            return {}
        return out

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.pending = b""


class Daemon:
    """holdfastd on <tmp>/sock with segments in /dev/shm/<unique>/; removed by close().

    `prefix` is put before the command (e.g. ["ip", "netns", "exec", "ns0"]). With start=False
    the caller starts it. The log accumulates over restarts.
    """

    def __init__(self, budget: str = "1GiB", retain: int = 2, extra: Optional[list] = None,
                 node_id: str = "pytest", prefix: Sequence[str] = (), start: bool = True) -> None:
        require_daemon()
        self.node_id = node_id
        self.prefix = list(prefix)
        self.root = tempfile.mkdtemp(prefix="hf-pytest-")
        self.shm = tempfile.mkdtemp(prefix="hf-pytest-", dir="/dev/shm")
        self.socket = os.path.join(self.root, "sock")
        self.endpoint = "unix:" + self.socket
        self.data_dir = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "daemon.log")
        self.args = [
            HOLDFASTD, "--node-id", node_id, "--socket", self.socket,
            "--data-dir", self.data_dir, "--shm-dir", self.shm,
            "--shm-prefix", "hfpy", "--memory-budget", budget, "--retain", str(retain),
            "--log-level", "info",
        ] + list(extra or [])
        self.proc: Optional[subprocess.Popen] = None
        if start:
            self.start()

    def start(self, timeout: float = 30.0) -> None:
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # left by a killed daemon; we wait for the new one below
        self._note("starting holdfastd")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.prefix + self.args, stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"holdfastd {self.node_id} exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"holdfastd {self.node_id} did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        if not os.path.exists(self.socket):
            return False
        return not _executable(STATUS_JSON) or self.status() is not None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def wipe(self) -> None:
        """Removes the shared memory and the catalog of a stopped daemon: the next start() is a
        replacement node that lost its RAM and its disk."""
        if self.running():
            raise RuntimeError(f"wipe {self.node_id} after stopping it")
        shutil.rmtree(self.shm, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.shm)
        self._note("shared memory and data directory wiped (the node's RAM is lost)")

    def status(self) -> Optional[dict]:
        """GetStatus as a dict (int64 fields are strings, as in proto JSON); None when the
        daemon does not answer."""
        if not _executable(STATUS_JSON):
            raise unittest.SkipTest("HOLDFAST_STATUS_JSON is not set to a holdfast_status_json")
        r = subprocess.run([STATUS_JSON, self.socket], capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def cli(self, *args: str, stdin: Optional[str] = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess:
        """`holdfast --socket <this daemon's socket> ARGS` (behind the node's prefix)."""
        return run_cli("--socket", self.socket, *args, prefix=self.prefix, stdin=stdin,
                       timeout=timeout)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _note(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"==== test: {text} ====\n")

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.shm, ignore_errors=True)


class Cluster:
    """k+m holdfastd nodes n0..n(k+m-1) in one group, sharing <tmp>/cluster.yaml.

    `hosts[i]` is node i's address (default 127.0.0.1), `prefixes[i]` the command prefix of its
    daemon and tools, `net_device` the UCX network device (--ucx-net-devices) of every node.
    Ports are ones free on this host. Nothing is started until start_all(); close() removes all.
    """

    def __init__(self, k: int = 2, m: int = 1, *, window: str = "256KiB",
                 budget: str = "512MiB", hosts: Optional[Sequence[str]] = None,
                 prefixes: Optional[Sequence[Sequence[str]]] = None, net_device: str = "lo",
                 cluster_id: str = "pytest") -> None:
        require_cluster_tools()
        n = k + m
        hosts = list(hosts or ["127.0.0.1"] * n)
        prefixes = [list(p) for p in (prefixes or [()] * n)]
        assert len(hosts) == n and len(prefixes) == n
        self.root = tempfile.mkdtemp(prefix="hf-pycluster-")
        self.cluster_file = os.path.join(self.root, "cluster.yaml")
        lines = [f"cluster_id: {cluster_id}", f"code: {{k: {k}, m: {m}}}", f"window: {window}",
                 "nodes:"]
        ports = free_ports(2 * n)
        self.control = [f"{host}:{ports[2 * i]}" for i, host in enumerate(hosts)]
        for i, host in enumerate(hosts):
            lines.append(f"  - {{id: n{i}, control: {host}:{ports[2 * i]}, "
                         f"data: {host}:{ports[2 * i + 1]}}}")
        with open(self.cluster_file, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.nodes = []
        for i in range(n):
            extra = ["--cluster", self.cluster_file, "--ucx-tls", "tcp",
                     "--ucx-net-devices", net_device]
            self.nodes.append(Daemon(budget=budget, extra=extra, node_id=f"n{i}",
                                     prefix=prefixes[i], start=False))

    def start_all(self) -> None:
        for d in self.nodes:
            d.start()

    def kill(self, i: int, wipe: bool) -> None:
        """SIGKILLs node i; with `wipe` its RAM and catalog are lost too."""
        self.nodes[i].kill()
        if wipe:
            self.nodes[i].wipe()

    # ---- status ---------------------------------------------------------------------------

    def job_status(self, i: int, job: str) -> Optional[dict]:
        """Node i's cluster view of `job`: {"restore_point", "newest_protected_step",
        "rebuilding"} as ints/bool (-1: none), or None when the node does not answer."""
        st = self.nodes[i].status() if self.nodes[i].running() else None
        if st is None or "cluster" not in st:
            return None
        c = st["cluster"]
        out = {"restore_point": -1, "newest_protected_step": -1, "rebuilding": c["rebuilding"]}
        for j in c["jobs"]:
            if j["job_id"] == job:
                out["restore_point"] = int(j["restore_point"])
                out["newest_protected_step"] = int(j["newest_protected_step"])
        return out

    def wait_restore_point(self, job: str, step: int, timeout: float = 60.0,
                           agreed: bool = False) -> int:
        """Until every running node reports a restore point >= step (with `agreed`: the same
        one on every node); returns the smallest."""
        deadline = time.monotonic() + timeout
        seen = {}
        while time.monotonic() < deadline:
            seen = {d.node_id: self.job_status(i, job) for i, d in enumerate(self.nodes)
                    if d.running()}
            points = [s["restore_point"] if s else None for s in seen.values()]
            if None not in points and min(points) >= step and (
                    not agreed or len(set(points)) == 1):
                return min(points)
            time.sleep(0.05)
        raise AssertionError(f"restore point of {job} did not reach {step} on every node"
                             f"{' (agreed)' if agreed else ''}: {seen}")

    def wait_holds(self, i: int, job: str, step: int, timeout: float = 60.0) -> None:
        """Until node i holds `step` of `job` (or a newer one) protected and is not
        rebuilding: a replacement has rebuilt its share."""
        deadline = time.monotonic() + timeout
        s = None
        while time.monotonic() < deadline:
            s = self.job_status(i, job)
            if s and not s["rebuilding"] and s["newest_protected_step"] >= step:
                return
            time.sleep(0.05)
        raise AssertionError(f"n{i} does not hold {job} step {step} protected: {s}")

    # ---- the snapshot tool ----------------------------------------------------------------

    def tool_command(self, i: int, job: str, rank: int, world: int, item_bytes: int,
                     args: Sequence[str], seed: int = 7) -> list:
        """holdfast_snapshot_tool for `rank` on node i (behind node i's prefix); ranks differ in
        item count and size, as in tests/smp/cluster_harness.cc."""
        d = self.nodes[i]
        return d.prefix + [
            SNAPSHOT_TOOL, "--socket", d.socket, "--job", job, "--rank", str(rank),
            "--world-size", str(world), "--items", str(3 + rank % 2),
            "--item-bytes", str(item_bytes + 4096 * rank), "--seed", str(seed),
        ] + list(args)

    def logs(self, tail: int = 12000) -> str:
        return "".join(f"\n--- {d.node_id} log ---\n{d.log()[-tail:]}" for d in self.nodes)

    def close(self) -> None:
        for d in self.nodes:
            d.close()
        shutil.rmtree(self.root, ignore_errors=True)
