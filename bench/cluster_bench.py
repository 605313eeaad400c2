#!/usr/bin/python3
"""cluster_bench: cross-node protection and rebuild (issue 5) next to the network-bound limit.

Run with /usr/bin/python3 after a Release build of holdfastd and holdfast_snapshot_tool:

    cmake -S . -B /tmp/b-bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DHOLDFAST_BUILD_TESTS=OFF \\
          -DHOLDFAST_PYTHON=OFF
    cmake --build /tmp/b-bench -j2 --target holdfastd holdfast_snapshot_tool
    /usr/bin/python3 bench/cluster_bench.py --build /tmp/b-bench \\
        --json bench/results/cluster_bench.json --txt bench/results/cluster_bench.txt

In one run, on loopback with UCX_TLS=tcp (UCX_NET_DEVICES=lo), it measures:

1. The limit: ucx_perftest tag_bw (bench/ucx_limit.py) with the cluster's window as message size,
   and with 4 MiB messages, on the same transport, before the clusters, next to each cluster and
   after them; also several perftest pairs at once, to see whether the loopback carries more than
   one pair does. Beside it, what memory costs on this machine: a process's first touch of shared
   memory (write into a fresh segment; read of a segment another process wrote), and plain TCP
   over lo sending a segment another process wrote against the same bytes from one reused 1 MiB
   buffer (which is what ucx_perftest sends from).
2. For each cluster (default: EC 2+1 on 3 nodes, replication copies=1 on 2 nodes, EC 4+2 on 6
   nodes, replication copies=2 on 3 nodes; each EC code is compared with the replication that
   tolerates as many losses), per repeat on a freshly started cluster:
   * every node runs one rank (holdfast_snapshot_tool save) writing S bytes of step 1, then of
     step 2, ... (--steps), each step once the previous one is the restore point;
   * protection of each step: from the last rank's commit to the restore point reaching it on
     every node (the "restore point a -> b" log lines), and the coordinator's own "protected in
     X ms". Step 1 finds no segment to reuse; later steps may reuse the segments of step N-2;
   * memory on every node from GetStatus after step 1 and after the last step: segments held,
     parity held, against S;
   * rebuild: the last node is SIGKILLed, its shared memory and data directory wiped, and a
     daemon with the same node id started: from that start to its "rebuilt ..." log line (the
     daemon's own "in T s" too), and the bytes it read;
   * CPU seconds every daemon used in each phase (/proc/<pid>/stat), the machine's busy share
     (/proc/stat), and the bytes that crossed the loopback (/sys/class/net/lo/statistics), so
     each figure can be told apart as CPU- or network-bound.
3. Ratios to the network-bound time (limit time / our time; goals: protection >= 0.7, rebuild
   >= 0.5). Bytes that must cross the network per node for protection: (k+m-1)/k x S for EC (each
   member sends its S to the encoders, each encoder forwards (m-1) parity chunks of S/k),
   r x S for replication. A rebuild reads n x S into the replacement (k chunks for each of its n
   chunks of S/k; for replication one copy of each of its 1 + r buffers). Two limits:
   * per node: bytes per node / perftest bandwidth, as if each daemon had its own NIC and CPUs;
   * aggregate: every daemon shares this machine's one loopback and two cores, so all nodes'
     bytes go through it: nodes x bytes per node / perftest bandwidth. This is the honest one
     here; the per-node one is what separate machines would allow.
   For a rebuild only the replacement receives, so both limits are n x S / bandwidth.

Investigation options: --shm-root DIR puts the daemons' segments on another tmpfs (e.g. one
mounted with huge=always); --perf DIR adds one uncounted repeat per cluster under `perf record`
(daemons only) with flat reports; --protect-nice N sets the cluster file's protect_nice;
--peer-tls runs every cluster with mutual TLS on the control address (the UCX data is not
encrypted either way).

GetStatus is called with a minimal gRPC client over the daemon's Unix socket (HTTP/2 with prior
knowledge, one unary call per connection), because Debian's Python has no grpcio in our stack;
the response is decoded field by field from proto/holdfast/v1/snapshot.proto.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import ucx_limit  # noqa: E402
from holdfast_status import get_status  # noqa: E402

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
JOB = "bench"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 512MiB, 1GiB)")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    return int(m.group(1)) * {"": 1, "K": KIB, "M": MIB, "G": GIB}[unit]


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build-rel"),
                   help="build directory with smp/holdfastd and client/holdfast_snapshot_tool")
    p.add_argument("--clusters", default="ec2+1,rep1,ec4+2,rep2",
                   help="comma list of ecK+M and repR (replication with R copies on R+1 nodes)")
    p.add_argument("--small-group-bytes", type=parse_size, default=GIB,
                   help="S per node for EC 2+1 and replication copies=1")
    p.add_argument("--large-group-bytes", type=parse_size, default=512 * MIB,
                   help="S per node for EC 4+2 and replication copies=2 (6 daemons + 6 ranks "
                        "share 2 cores and the memory of one machine)")
    p.add_argument("--item-bytes", type=parse_size, default=64 * MIB, help="bytes per saved item")
    p.add_argument("--window", type=parse_size, default=MIB, help="cluster transfer window")
    p.add_argument("--repeats", type=int, default=3, help="fresh clusters per configuration")
    p.add_argument("--steps", type=int, default=3,
                   help="steps saved and protected one after another per cluster (step 1: fresh "
                        "segments everywhere; the last: segments reused where the daemon can)")
    p.add_argument("--perftest-repeats", type=int, default=3)
    p.add_argument("--perftest-pairs", type=int, default=3,
                   help="also run up to this many perftest pairs at once (0: skip)")
    p.add_argument("--verify", default="background", help="holdfastd --verify")
    p.add_argument("--retain", type=int, default=1,
                   help="holdfastd --retain (the restore point stays pinned whatever this is; 1 "
                        "keeps memory to two versions per node while the next is protected)")
    p.add_argument("--protect-nice", type=int,
                   help="cluster file protect_nice (default: the daemon's, 5)")
    p.add_argument("--tmp", default=tempfile.gettempdir(), help="sockets, data dirs, logs")
    p.add_argument("--shm-root", default="/dev/shm",
                   help="tmpfs under which each daemon gets its shared-memory directory")
    p.add_argument("--keep-logs", help="copy every daemon log here")
    p.add_argument("--json", help="write every sample here")
    p.add_argument("--txt", help="write the printed report here")
    p.add_argument("--timeout", type=float, default=120,
                   help="seconds for any one phase; a repeat that overruns is reported as failed")
    p.add_argument("--peer-tls", action="store_true",
                   help="mutual TLS on the control address (cluster.tls, docs/security.md): a "
                        "throwaway CA and node certificates made with the openssl CLI; UCX data "
                        "is not encrypted either way")
    p.add_argument("--perf", metavar="DIR",
                   help="one extra, uncounted repeat per cluster under perf record (the daemons "
                        "only): DIR/<cluster>-{protect,rebuild}.data and .txt reports")
    return p.parse_args()


# ---- output ---------------------------------------------------------------------------------

REPORT: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    REPORT.append(line)


def stats(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": xs[0], "max": xs[-1], "n": len(xs),
            "samples": xs}


# ---- processes ------------------------------------------------------------------------------

CHILDREN: list[subprocess.Popen] = []
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def loopback_bytes() -> int:
    with open("/sys/class/net/lo/statistics/tx_bytes") as f:
        return int(f.read())


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) (\w+)\s+(\S+) (.*)$")


class Daemon:
    """One holdfastd of the cluster, with its own socket, data dir, shm dir and log."""

    def __init__(self, binary: str, root: str, node_id: str, cluster_file: str, budget: int,
                 verify: str, shm_root: str, retain: int, tls_args: list[str] | None = None):
        self.binary = binary
        self.tls_args = tls_args or []
        self.node_id = node_id
        self.dir = os.path.join(root, node_id)
        self.socket = os.path.join(self.dir, "sock")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "daemon.log")
        tag = f"{os.getpid()}_{os.path.basename(root)}_{node_id}".replace("-", "_")
        self.shm_dir = os.path.join(shm_root, f"hfb-{tag}")
        self.shm_prefix = f"hfb_{node_id}"
        self.cluster_file = cluster_file
        self.budget = budget
        self.verify = verify
        self.retain = retain
        self.proc: subprocess.Popen | None = None
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(self.shm_dir, exist_ok=True)

    def start(self) -> None:
        argv = [self.binary, "--node-id", self.node_id, "--socket", self.socket,
                "--data-dir", self.data_dir, "--shm-dir", self.shm_dir,
                "--shm-prefix", self.shm_prefix, "--memory-budget", str(self.budget),
                "--verify", self.verify, "--retain", str(self.retain), "--log-level", "info",
                "--cluster", self.cluster_file, "--ucx-tls", "tcp", "--ucx-net-devices", "lo",
                *self.tls_args]
        env = dict(os.environ, UCX_TLS="tcp", UCX_NET_DEVICES="lo")
        with open(self.log_path, "a") as log:
            log.write(f"==== cluster_bench: starting {' '.join(argv)} ====\n")
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        CHILDREN.append(self.proc)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict | None:
        if not self.running():
            return None
        try:
            return get_status(self.socket)
        except (OSError, ConnectionError, ValueError, IndexError):
            return None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"{self.node_id} exited during start-up:\n{self.tail()}")
            if self.status() is not None:
                return
            time.sleep(0.02)
        raise RuntimeError(f"{self.node_id} did not answer GetStatus:\n{self.tail()}")

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def wipe(self) -> None:
        """The node's RAM and disk are lost: shared memory and data directory go."""
        assert not self.running()
        shutil.rmtree(self.shm_dir, ignore_errors=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.shm_dir, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write("==== cluster_bench: shared memory and data directory wiped ====\n")

    def cpu(self) -> float | None:
        return cpu_seconds(self.proc.pid) if self.running() else None

    def log_lines(self):
        """(wall time, level, text) of every log line of this daemon."""
        out = []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                m = LOG_LINE.match(line.rstrip("\n"))
                if m:
                    ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                    out.append((ts, m.group(2), m.group(4)))
        return out

    def tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.shm_dir, ignore_errors=True)


class Tool:
    """holdfast_snapshot_tool save for one rank; records when it printed "committed <step>"."""

    def __init__(self, binary: str, daemon: Daemon, rank: int, world: int, items: int,
                 item_bytes: int, step: int):
        argv = [binary, "--socket", daemon.socket, "--job", JOB, "--rank", str(rank),
                "--world-size", str(world), "--items", str(items), "--item-bytes",
                str(item_bytes), "--seed", "7", "save", "--steps", f"{step}:{step}"]
        self.step = step
        self.committed_at: float | None = None
        self.output: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        CHILDREN.append(self.proc)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(f"committed {self.step} ") and self.committed_at is None:
                self.committed_at = time.time()
            self.output.append(line)

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        if self.proc.returncode != 0 or self.committed_at is None:
            raise RuntimeError("snapshot tool failed: " + "".join(self.output)[-2000:])


class Profiler:
    """perf record of some processes until stop(); then a flat report next to the data."""

    def __init__(self, pids, path: str):
        self.path = path
        with open(path[:-len(".data")] + ".log", "w") as log:
            self.proc = subprocess.Popen(
                ["perf", "record", "-F", "1999", "-g", "-o", path, "-p", ",".join(map(str, pids))],
                stdout=log, stderr=subprocess.STDOUT)
        CHILDREN.append(self.proc)
        time.sleep(0.2)  # perf attaches

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        for sort, suffix in (("comm,dso,sym", ".txt"), ("comm,dso", "-dso.txt")):
            with open(self.path[:-len(".data")] + suffix, "w") as out:
                subprocess.run(["perf", "report", "-i", self.path, "--no-children", "--sort", sort,
                                "--stdio", "-g", "none", "--percent-limit", "0.3"],
                               stdout=out, stderr=subprocess.DEVNULL)


def cleanup_children() -> None:
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()


# ---- one cluster ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spec:
    def __init__(self, name: str, S: int):
        self.name = name
        self.S = S
        m = re.fullmatch(r"ec(\d+)\+(\d+)", name)
        r = re.fullmatch(r"rep(\d+)", name)
        if m:
            self.k, self.m, self.copies = int(m.group(1)), int(m.group(2)), 0
            self.nodes = self.k + self.m
            self.label = f"EC {self.k}+{self.m}"
            self.code = f"{{k: {self.k}, m: {self.m}}}"
            self.net_per_node = (self.k + self.m - 1) * S // self.k
            self.parity_per_node = self.m * S // self.k
        elif r:
            self.copies = int(r.group(1))
            self.k, self.m = 1, self.copies
            self.nodes = 1 + self.copies
            self.label = f"replication copies={self.copies}"
            self.code = f"{{mode: replicate, copies: {self.copies}}}"
            self.net_per_node = self.copies * S
            self.parity_per_node = self.copies * S
        else:
            raise SystemExit(f"unknown cluster {name!r}: ecK+M or repR")
        self.losses = self.m
        self.rebuild_bytes = self.nodes * S  # k chunks of S/k for each of its n chunks


def make_peer_cert(pki: str, node_id: str) -> list[str]:
    """holdfastd flags for a certificate naming node_id (SAN DNS:<id>) from a CA made in pki."""
    os.makedirs(pki, exist_ok=True)
    ca, ca_key = os.path.join(pki, "ca.pem"), os.path.join(pki, "ca.key")
    key_opts = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    quiet = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not os.path.exists(ca):
        subprocess.run(["openssl", "req", "-x509", *key_opts, "-keyout", ca_key, "-out", ca,
                        "-days", "2", "-subj", "/CN=holdfast-bench-ca"], **quiet)
    cert, key = os.path.join(pki, f"{node_id}.pem"), os.path.join(pki, f"{node_id}.key")
    csr, ext = os.path.join(pki, f"{node_id}.csr"), os.path.join(pki, f"{node_id}.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=DNS:{node_id}\nextendedKeyUsage=serverAuth,clientAuth\n")
    subprocess.run(["openssl", "req", *key_opts, "-keyout", key, "-out", csr,
                    "-subj", f"/CN={node_id}"], **quiet)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", ext], **quiet)
    return ["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]


class Cluster:
    def __init__(self, args, spec: Spec, root: str):
        self.spec = spec
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.cluster_file = os.path.join(root, "cluster.yaml")
        lines = [f"cluster_id: bench-{os.getpid()}", f"code: {spec.code}",
                 f"window: {fmt_size(args.window)}"]
        if args.protect_nice is not None:
            lines.append(f"protect_nice: {args.protect_nice}")
        lines.append("nodes:")
        for i in range(spec.nodes):
            lines.append(f"  - {{id: n{i}, control: 127.0.0.1:{free_port()}, "
                         f"data: 127.0.0.1:{free_port()}}}")
        with open(self.cluster_file, "w") as f:
            f.write("\n".join(lines) + "\n")
        # Two versions (the restore point and the step being protected), each with its parity,
        # and slack for a pooled segment.
        budget = 2 * (spec.S + spec.parity_per_node) + spec.S // 2 + 256 * MIB
        daemon = os.path.join(args.build, "smp", "holdfastd")
        tls = [make_peer_cert(os.path.join(root, "pki"), f"n{i}") if args.peer_tls else None
               for i in range(spec.nodes)]
        self.daemons = [Daemon(daemon, root, f"n{i}", self.cluster_file, budget, args.verify,
                               args.shm_root, args.retain, tls[i])
                        for i in range(spec.nodes)]

    def start(self, timeout: float) -> None:
        for d in self.daemons:
            d.start()
        for d in self.daemons:
            d.wait_ready(timeout)
        # Every node sees every member up before anything is saved.
        self.wait(lambda st: all(m["up"] for m in st["cluster"]["members"]), timeout,
                  "every member up")

    def wait(self, pred, timeout: float, what: str, nodes=None, interval: float = 0.05) -> float:
        nodes = self.daemons if nodes is None else nodes
        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            ok = True
            for d in nodes:
                st = d.status()
                last[d.node_id] = st
                if st is None or st["cluster"] is None or not pred(st):
                    ok = False
                    break
            if ok:
                return time.time()
            time.sleep(interval)
        detail = {k: (v["cluster"] if v else None) for k, v in last.items()}
        raise RuntimeError(f"{self.spec.label}: timed out waiting for {what}: {detail}\n"
                           + "\n".join(f"--- {d.node_id}\n{d.tail(3000)}" for d in nodes))

    def cpu(self) -> dict:
        return {d.node_id: d.cpu() for d in self.daemons}

    def stop(self, keep_logs: str | None, tag: str) -> None:
        for d in self.daemons:
            d.stop()
        for d in self.daemons:
            if keep_logs:
                os.makedirs(keep_logs, exist_ok=True)
                shutil.copy(d.log_path, os.path.join(keep_logs, f"{tag}-{d.node_id}.log"))
            d.remove()
        shutil.rmtree(self.root, ignore_errors=True)


def cpu_delta(before: dict, after: dict) -> float:
    return sum(after[k] - before[k] for k in after
               if after.get(k) is not None and before.get(k) is not None)


def find_all(lines, pattern: str):
    rx = re.compile(pattern)
    return [(ts, m) for ts, _level, text in lines for m in [rx.search(text)] if m]


def find_line(lines, pattern: str, after: float = 0.0):
    rx = re.compile(pattern)
    for ts, _level, text in lines:
        if ts >= after - 0.002:
            m = rx.search(text)
            if m:
                return ts, m
    return None, None


def protect_step(args, cluster: "Cluster", spec: Spec, step: int, perf_dir: str | None) -> dict:
    """Every node's rank saves `step` (a new tool process each); times its protection."""
    items = max(1, spec.S // args.item_bytes)
    item_bytes = spec.S // items
    tool = os.path.join(args.build, "client", "holdfast_snapshot_tool")
    cpu0 = cluster.cpu()
    tools = [Tool(tool, d, rank, spec.nodes, items, item_bytes, step)
             for rank, d in enumerate(cluster.daemons)]
    # The phase starts when the last rank has committed (protection cannot start earlier).
    deadline = time.monotonic() + args.timeout
    while any(t.committed_at is None and t.proc.poll() is None for t in tools):
        if time.monotonic() > deadline:
            break
        time.sleep(0.002)
    cpu1, lo1, mc1 = cluster.cpu(), loopback_bytes(), machine_cpu()
    profiler = None
    if perf_dir:
        profiler = Profiler([d.proc.pid for d in cluster.daemons],
                            os.path.join(perf_dir, f"{spec.name}-protect-step{step}.data"))
    for t in tools:
        t.wait(args.timeout)
    t_commit = max(t.committed_at for t in tools)
    t_poll = cluster.wait(
        lambda st: st["cluster"]["jobs"].get(JOB, {}).get("restore_point", -1) >= step,
        args.timeout, f"restore point {step}")
    cpu2, lo2, mc2 = cluster.cpu(), loopback_bytes(), machine_cpu()
    if profiler:
        profiler.stop()
    logs = {d.node_id: d.log_lines() for d in cluster.daemons}
    rp_times = []
    for d in cluster.daemons:
        ts, _ = find_line(logs[d.node_id], rf"job {JOB}: restore point -?\d+ -> {step}$")
        rp_times.append(ts)
    # The coordinator's line (n0 unless it was down); the last one if the step was protected
    # again (a rank that registered late makes a round that covers fewer ranks).
    rounds = [(ts, m) for lines in logs.values() for ts, m in find_all(
        lines, rf"job {JOB} step {step} protected in ([\d.]+) ms")]
    ts_round, m_round = max(rounds, key=lambda x: x[0]) if rounds else (None, None)
    if m_round is None:
        raise RuntimeError("no 'protected in' line in any log:\n" + cluster.daemons[0].tail())
    round_s = float(m_round.group(1)) / 1e3
    t_rp = max(rp_times) if all(rp_times) else t_poll
    return {
        "step": step,
        "bytes_per_node": spec.S,
        "commit_spread_s": t_commit - min(t.committed_at for t in tools),
        "end_to_end_s": t_rp - t_commit,
        "end_to_end_polled_s": t_poll - t_commit,
        "round_s": round_s,
        "rounds": len(rounds),
        "failed_rounds": [m.group(1) for lines in logs.values() for _, m in find_all(
            lines, rf"protecting job {JOB} step {step} failed after [\d.]+ ms: (.*)")],
        "commit_to_round_start_s": ts_round - round_s - t_commit,
        "round_end_to_restore_point_s": t_rp - ts_round,
        "cpu_s": cpu_delta(cpu1, cpu2),
        "cpu_s_save": cpu_delta(cpu0, cpu1),
        "loopback_bytes": lo2 - lo1,
        "machine_busy": (mc2[0] - mc1[0]) / max(mc2[1] - mc1[1], 1e-9),
        "tool_lines": [t.output[-1].strip() if t.output else "" for t in tools],
    }


def catalog_bytes(path: str) -> int:
    """What the catalog holds: RocksDB's tables, WAL and manifest as written (st_size, not the
    WAL's preallocation), without its own info LOG files, which are not per-version metadata."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if f.startswith("LOG"):
                continue
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def rss_anon(pid: int) -> int:
    """The process's private memory (heap, stacks, UCX and gRPC buffers), not its segments."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory(cluster: "Cluster") -> list:
    out = []
    for d in cluster.daemons:
        st = d.status()
        held = st["memory_used_bytes"] - st["memory_pooled_bytes"]
        out.append({"node": d.node_id, "used": st["memory_used_bytes"],
                    "pooled": st["memory_pooled_bytes"], "held": held,
                    "parity": st["cluster"]["parity_bytes"],
                    "data": held - st["cluster"]["parity_bytes"],
                    # Metadata: the catalog (RocksDB: records, manifests, WAL) on disk.
                    "catalog": catalog_bytes(d.data_dir),
                    "anon": rss_anon(d.proc.pid) if d.proc else 0})
    return out


def run_repeat(args, spec: Spec, rep: int, perf_dir: str | None = None) -> dict:
    root = os.path.join(args.tmp, f"hf-cluster-bench-{os.getpid()}-{spec.name}-{rep}")
    cluster = Cluster(args, spec, root)
    sample: dict = {"repeat": rep, "steps": []}
    try:
        run_phases(args, cluster, spec, sample, perf_dir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        # Reported with the results, never averaged in: a repeat that did not finish.
        sample["error"] = str(e)[:6000]
    finally:
        cluster.stop(args.keep_logs, f"{spec.name}-r{rep}")
    return sample


def run_phases(args, cluster: "Cluster", spec: Spec, sample: dict, perf_dir: str | None) -> None:
    """Start, save and protect --steps steps, measure memory, lose a node and rebuild it."""
    cluster.start(args.timeout)
    # Step 1 on a fresh cluster: every parity segment is new. Later steps: the previous
    # step stays the restore point until the new one is protected; from step 3 on the
    # parity and data segments of step N-2 can be reused.
    for step in range(1, args.steps + 1):
        profile = perf_dir if step in (1, args.steps) else None
        sample["steps"].append(protect_step(args, cluster, spec, step, profile))
        if step == 1:
            sample["memory"] = memory(cluster)
    sample["memory_last"] = memory(cluster)
    step = args.steps

    # ---- rebuild of the last node (never the coordinator)
    victim = cluster.daemons[-1]
    victim.kill()
    victim.wipe()
    cpu3, lo3, mc3 = cluster.cpu(), loopback_bytes(), machine_cpu()
    t_start = time.time()
    victim.start()
    profiler = None
    if perf_dir:
        profiler = Profiler([d.proc.pid for d in cluster.daemons],
                            os.path.join(perf_dir, f"{spec.name}-rebuild.data"))
    victim.wait_ready(args.timeout)
    t_ready = time.time()
    t_done = cluster.wait(
        lambda st: (not st["cluster"]["rebuilding"]
                    and st["cluster"]["jobs"].get(JOB, {}).get("newest_protected_step", -1)
                    >= step),
        args.timeout, "the rebuild", nodes=[victim])
    cpu4, lo4, mc4 = cluster.cpu(), loopback_bytes(), machine_cpu()
    if profiler:
        profiler.stop()
    cpu4[victim.node_id + "-replacement"] = cpu4.pop(victim.node_id)
    cpu3[victim.node_id + "-replacement"] = 0.0
    vlog = victim.log_lines()
    ts_begin, _ = find_line(vlog, rf"job {JOB} step {step} is protected by the group but not "
                                  "here: rebuilding it", after=t_start)
    ts_rebuilt, m = find_line(
        vlog, rf"rebuilt job {JOB} step {step}: (\d+) chunks, ([\d.]+) MiB read from "
              r"survivors in ([\d.]+) s", after=t_start)
    if m is None:
        raise RuntimeError("no 'rebuilt' line in the replacement's log:\n" + victim.tail())
    st = victim.status()
    sample["rebuild"] = {
        "victim": victim.node_id,
        "end_to_end_s": ts_rebuilt - t_start,
        "end_to_end_polled_s": t_done - t_start,
        "startup_s": t_ready - t_start,
        "start_to_rebuild_begin_s": (ts_begin - t_start) if ts_begin else None,
        "daemon_s": float(m.group(3)),
        "chunks": int(m.group(1)),
        "bytes_read": float(m.group(2)) * MIB,
        "cpu_s": cpu_delta(cpu3, cpu4),
        "loopback_bytes": lo4 - lo3,
        "machine_busy": (mc4[0] - mc3[0]) / max(mc4[1] - mc3[1], 1e-9),
        "replacement_memory": {"used": st["memory_used_bytes"],
                               "pooled": st["memory_pooled_bytes"],
                               "parity": st["cluster"]["parity_bytes"]},
    }


# ---- the limit ------------------------------------------------------------------------------

def perftest_pairs(pairs: int, message_bytes: int) -> dict:
    """`pairs` ucx_perftest server/client pairs started together; their summed bandwidth."""
    results: list = [None] * pairs
    errors: list = []
    barrier = threading.Barrier(pairs)

    def one(i):
        try:
            barrier.wait()
            t0 = time.time()
            r = ucx_limit.run(message_bytes)
            results[i] = (r["bytes_per_second"], t0, time.time())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if errors:
        raise errors[0]
    return {"pairs": pairs, "sum_bytes_per_second": sum(r[0] for r in results),
            "each": [r[0] for r in results],
            "cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


def perftest_once(size: int) -> dict:
    """One ucx_perftest pair (tcp on lo), with the CPU seconds both processes used."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = ucx_limit.run(size)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r["cpu_s"] = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    r["bytes_moved"] = r["iterations"] * size
    return r


def measure_limits(args) -> dict:
    sizes = sorted({args.window, 4 * MIB})
    out: dict = {"single": {}, "concurrent": {}}
    for size in sizes:
        out["single"][size] = [perftest_once(size) for _ in range(args.perftest_repeats)]
    for pairs in range(2, args.perftest_pairs + 1):
        out["concurrent"][pairs] = perftest_pairs(pairs, args.window)
    return out


# ---- first touches --------------------------------------------------------------------------

def _touch_child(mode: str, path: str, nbytes: int) -> None:
    """In a fresh process, as a daemon maps a segment: map `path` shared, prefault it
    (MADV_POPULATE_WRITE, as SegmentStore does), then time two passes that write (mode "write",
    creating the file) or read (mode "read") every byte. Prints the two times as JSON."""
    import ctypes
    import mmap
    flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if mode == "write" else 0)
    fd = os.open(path, flags, 0o600)
    if mode == "write":
        os.posix_fallocate(fd, 0, nbytes)
    mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mm.madvise(23)  # MADV_POPULATE_WRITE
    view = ctypes.c_char.from_buffer(mm)
    addr = ctypes.addressof(view)
    chunk = ctypes.create_string_buffer(MIB)
    times = []
    for value in (1, 2):
        t0 = time.perf_counter()
        if mode == "write":
            ctypes.memset(addr, value, nbytes)
        else:
            for off in range(0, nbytes, MIB):
                ctypes.memmove(chunk, addr + off, MIB)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times))


def measure_first_touch(shm_root: str, nbytes: int = 256 * MIB, repeats: int = 3) -> dict:
    """What touching a page for the first time costs a process on this machine: a fresh segment
    written by one process (the encoder's parity, a rebuilt chunk), then read by another (the
    daemon reading what a client wrote). Second passes over the same pages for comparison."""
    path = os.path.join(shm_root, f"hfb-touch-{os.getpid()}")
    out = {"bytes": nbytes, "write": [], "read": []}
    try:
        for _ in range(repeats):
            for mode in ("write", "read"):
                r = subprocess.run([sys.executable, os.path.abspath(__file__), "--touch-child",
                                    mode, path, str(nbytes)], stdout=subprocess.PIPE, text=True,
                                   check=True)
                first, second = json.loads(r.stdout)
                out[mode].append({"first_bytes_per_second": nbytes / first,
                                  "second_bytes_per_second": nbytes / second})
    finally:
        if os.path.exists(path):
            os.unlink(path)
    for mode in ("write", "read"):
        out[mode + "_first_bytes_per_second"] = statistics.median(
            x["first_bytes_per_second"] for x in out[mode])
    return out


def _send_child(path: str, nbytes: int, port: int) -> None:
    """In a fresh process, as a daemon sends a segment a client wrote: map `path`, prefault it,
    read every page once (the checksum before a send), then send it over TCP to 127.0.0.1:`port`
    in 1 MiB windows twice (first and second pass), then send as many bytes from one reused
    1 MiB buffer (what ucx_perftest does). Prints CPU seconds and wall time of each as JSON."""
    import ctypes
    import mmap
    fd = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    mm.madvise(23)  # MADV_POPULATE_WRITE
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    chunk = ctypes.create_string_buffer(MIB)
    for off in range(0, nbytes, MIB):
        ctypes.memmove(chunk, addr + off, MIB)
    view = memoryview(mm)
    reused = memoryview(bytearray(b"\1" * MIB))
    out = {}
    with socket.create_connection(("127.0.0.1", port)) as s:
        for name in ("first_pass", "second_pass", "reused_buffer"):
            c0, t0 = time.process_time(), time.perf_counter()
            for off in range(0, nbytes, MIB):
                s.sendall(reused if name == "reused_buffer" else view[off:off + MIB])
            out[name] = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}
    view.release()
    print(json.dumps(out))


def measure_tcp_stream(shm_root: str, nbytes: int = 512 * MIB) -> dict:
    """Plain TCP over lo from memory in the state the daemon finds it (a segment another process
    wrote, read once), against the same bytes from one reused buffer: what the per-page first
    touches of this VM cost the sender's kernel copy."""
    path = os.path.join(shm_root, f"hfb-send-{os.getpid()}")
    subprocess.run([sys.executable, os.path.abspath(__file__), "--touch-child", "write", path,
                    str(nbytes)], stdout=subprocess.DEVNULL, check=True)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
            ls.bind(("127.0.0.1", 0))
            ls.listen(1)
            port = ls.getsockname()[1]
            child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--send-child",
                                      path, str(nbytes), str(port)], stdout=subprocess.PIPE,
                                     text=True)
            CHILDREN.append(child)
            conn, _ = ls.accept()
            with conn:
                buf = bytearray(MIB)
                while conn.recv_into(buf):
                    pass
            out = json.loads(child.communicate()[0])
    finally:
        os.unlink(path)
    for v in out.values():
        v["sender_cpu_s_per_gb"] = v["cpu_s"] / (nbytes / 1e9)
        v["gb_per_s"] = nbytes / v["wall_s"] / 1e9
    out["bytes"] = nbytes
    return out


# ---- main -----------------------------------------------------------------------------------

def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def mount_of(path: str) -> str:
    """The /proc/mounts line of the filesystem holding `path`."""
    path = os.path.realpath(path)
    best = ""
    with open("/proc/mounts") as f:
        for line in f:
            point = line.split()[1]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) >= len(best.split()[1] if best else ""):
                best = line.strip()
    return best


def stale_binaries(build: str) -> str | None:
    """A warning when holdfastd is older than the newest commit to the code it is built from."""
    try:
        newest = int(subprocess.run(
            ["git", "-C", ROOT, "log", "-1", "--format=%ct", "--", "smp", "client", "ec", "proto",
             "CMakeLists.txt"], stdout=subprocess.PIPE, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None
    built = os.path.getmtime(os.path.join(build, "smp", "holdfastd"))
    if built < newest:
        return "holdfastd is older than the last commit to smp/ client/ ec/ proto/: rebuild it"
    return None


def machine(shm_root: str) -> dict:
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                stdout=subprocess.PIPE, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    return {"cpu": first("/proc/cpuinfo", "model name"), "cores": os.cpu_count(),
            "memory": first("/proc/meminfo", "MemTotal"), "kernel": platform.release(),
            "ucx": ucx_limit.ucx_version(), "commit": commit,
            "shm_mount": mount_of(shm_root),
            "thp": read_text("/sys/kernel/mm/transparent_hugepage/enabled"),
            "thp_shmem": read_text("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
            "loadavg_before": os.getloadavg()}


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--touch-child":
        _touch_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--send-child":
        _send_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    args = parse_args()
    for exe in ("smp/holdfastd", "client/holdfast_snapshot_tool"):
        if not os.access(os.path.join(args.build, exe), os.X_OK):
            raise SystemExit(f"{os.path.join(args.build, exe)} missing: build it first")
    def on_term(*_):
        say("cluster_bench: SIGTERM received; stopping the daemons")
        sys.exit(1)
    signal.signal(signal.SIGTERM, on_term)
    specs = []
    for name in args.clusters.split(","):
        name = name.strip()
        small = name in ("ec2+1", "rep1")
        spec = Spec(name, args.small_group_bytes if small else args.large_group_bytes)
        if spec.S % args.item_bytes and spec.S > args.item_bytes:
            raise SystemExit(f"{name}: S={spec.S} is not a multiple of --item-bytes")
        specs.append(spec)

    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine(args.shm_root)
    info["stale_build"] = stale_binaries(args.build)
    if info["stale_build"]:
        say("WARNING: " + info["stale_build"])
    say(f"cluster_bench {started:%Y-%m-%d %H:%M} UTC, commit {info['commit']}, "
        f"{info['cpu']} x{info['cores']}, UCX {info['ucx']}, UCX_TLS=tcp on lo, "
        f"window {fmt_size(args.window)}, shm {args.shm_root}, "
        f"load {info['loadavg_before'][0]:.2f}")
    result = {"machine": info, "args": {k: v for k, v in vars(args).items()},
              "started_utc": started.isoformat(), "clusters": {}}
    try:
        limits = measure_limits(args)
        touch = measure_first_touch(args.shm_root)
        tcp_stream = [measure_tcp_stream(args.shm_root)]
        clusters = {}
        for spec in specs:
            # The limit again next to each cluster: the machine is shared and its load moves.
            limits["single"][args.window].append(perftest_once(args.window))
            samples = []
            for rep in range(args.repeats):
                s = run_repeat(args, spec, rep)
                samples.append(s)
                if "error" in s:
                    say(f"  {spec.label:22s} S={fmt_size(spec.S)} repeat {rep}: FAILED after "
                        f"{len(s['steps'])} step(s): {s['error'].splitlines()[0][:300]}")
                    continue
                r = s["rebuild"]
                say(f"  {spec.label:22s} S={fmt_size(spec.S)} repeat {rep}: protect " + ", ".join(
                    f"step {p['step']} {p['end_to_end_s']:.2f} s (round {p['round_s']:.2f}, "
                    f"cpu {p['cpu_s']:.1f})" for p in s["steps"])
                    + f"; rebuild {r['end_to_end_s']:.2f} s (daemon {r['daemon_s']:.2f} s, "
                    f"{r['bytes_read'] / GIB:.2f} GiB, cpu {r['cpu_s']:.1f} s)")
            clusters[spec.name] = samples
            if args.perf:
                os.makedirs(args.perf, exist_ok=True)
                s = run_repeat(args, spec, args.repeats, perf_dir=args.perf)
                result.setdefault("profiled", {})[spec.name] = s
                if "error" in s:
                    say(f"  {spec.label:22s} profiled repeat FAILED: "
                        f"{s['error'].splitlines()[0][:300]}")
                    continue
                say(f"  {spec.label:22s} profiled repeat (not counted): protect "
                    + ", ".join(f"{p['end_to_end_s']:.2f} s" for p in s["steps"])
                    + f", rebuild {s['rebuild']['end_to_end_s']:.2f} s; perf data in {args.perf}")
        # A second look at the limit after the clusters: drift on a shared machine.
        limits_after = measure_limits(argparse.Namespace(
            window=args.window, perftest_repeats=1, perftest_pairs=0))
        touch_after = measure_first_touch(args.shm_root, repeats=1)
        tcp_stream.append(measure_tcp_stream(args.shm_root))
    finally:
        cleanup_children()
    info["loadavg_after"] = os.getloadavg()

    # ---- the report
    def bw_runs(lim):
        return {size: [r["bytes_per_second"] for r in runs] for size, runs in lim["single"].items()}
    before, after = bw_runs(limits), bw_runs(limits_after)
    all_runs = {size: before[size] + after.get(size, []) for size in before}
    bw = statistics.median(all_runs[args.window])
    say()
    say("limit: ucx_perftest tag_bw over tcp/lo, one pair (GB/s = 1e9 B/s; median (min-max); "
        "before + after the clusters):")
    perftest_cpu_per_gb = {}
    for size, rates in all_runs.items():
        runs = limits["single"][size]
        cpu_per_gb = statistics.median(r["cpu_s"] / (r["bytes_moved"] / 1e9) for r in runs)
        perftest_cpu_per_gb[size] = cpu_per_gb
        say(f"  {fmt_size(size):>6s} messages: {statistics.median(rates) / 1e9:.2f} GB/s "
            f"({min(rates) / 1e9:.2f}-{max(rates) / 1e9:.2f}), {len(rates)} runs; "
            f"{cpu_per_gb:.2f} CPU s per GB moved (server + client)")
    for pairs, c in limits["concurrent"].items():
        say(f"  {pairs} pairs at once, {fmt_size(args.window)}: {c['sum_bytes_per_second'] / 1e9:.2f}"
            f" GB/s summed ({', '.join(f'{x / 1e9:.2f}' for x in c['each'])})")
    say(f"  limit used: {bw / 1e9:.2f} GB/s (one pair, {fmt_size(args.window)} messages = the "
        "cluster window)")
    touches = {mode: [x["first_bytes_per_second"] for x in touch[mode] + touch_after[mode]]
               for mode in ("write", "read")}
    seconds = {mode: [x["second_bytes_per_second"] for x in touch[mode] + touch_after[mode]]
               for mode in ("write", "read")}
    w_rate, r_rate = (statistics.median(touches[m]) for m in ("write", "read"))
    say(f"first touch of shared memory in {args.shm_root} by a process (after MADV_POPULATE_WRITE), "
        f"{fmt_size(touch['bytes'])}: write {w_rate / 1e9:.2f} GB/s "
        f"({min(touches['write']) / 1e9:.2f}-{max(touches['write']) / 1e9:.2f}), "
        f"read of another process's pages {r_rate / 1e9:.2f} GB/s "
        f"({min(touches['read']) / 1e9:.2f}-{max(touches['read']) / 1e9:.2f}); second passes "
        f"{statistics.median(seconds['write']) / 1e9:.1f} / "
        f"{statistics.median(seconds['read']) / 1e9:.1f} GB/s")
    say(f"plain TCP over lo, {fmt_size(tcp_stream[0]['bytes'])} in 1 MiB sends, sender CPU s per GB "
        f"and GB/s (before / after the clusters):")
    for name, what in (("first_pass", "a segment another process wrote, read once, first send"),
                       ("second_pass", "the same segment sent again"),
                       ("reused_buffer", "one reused 1 MiB buffer (as ucx_perftest)")):
        say(f"  {what:56s} " + " / ".join(
            f"{t[name]['sender_cpu_s_per_gb']:.2f} s/GB {t[name]['gb_per_s']:.2f} GB/s"
            for t in tcp_stream))

    # Repeats that failed are listed, not averaged in.
    done = {name: [x for x in samples if "error" not in x] for name, samples in clusters.items()}
    failed_repeats = {name: [x for x in samples if "error" in x]
                      for name, samples in clusters.items()}
    measured = [spec for spec in specs if done[spec.name]]
    summary = {}
    first = lambda x: x["steps"][0]  # noqa: E731
    last = lambda x: x["steps"][-1]  # noqa: E731
    say()
    say("protection (last rank's commit -> restore point on every node; 'round': the coordinator's "
        "'protected in'), step 1 on a fresh cluster and the last step; rebuild (replacement started "
        "-> 'rebuilt' logged; 'daemon': its own 'in T s'); median (min-max) over repeats; "
        "ratio = limit time / our time")
    say(f"{'cluster':22s} {'S/node':>6s} {'figure':24s} {'ours s':>19s} {'limit/node s':>12s} "
        f"{'ratio':>5s} {'limit aggr s':>12s} {'ratio':>5s}")
    for spec in measured:
        samples = done[spec.name]
        n = spec.nodes
        lim_node = spec.net_per_node / bw
        lim_aggr = n * spec.net_per_node / bw
        lim_rebuild = spec.rebuild_bytes / bw
        figs = {"protect step 1": ([first(x)["end_to_end_s"] for x in samples], lim_node, lim_aggr),
                "protect step 1 round": ([first(x)["round_s"] for x in samples], lim_node, lim_aggr)}
        if args.steps > 1:
            figs[f"protect step {args.steps}"] = ([last(x)["end_to_end_s"] for x in samples],
                                                  lim_node, lim_aggr)
            figs[f"protect step {args.steps} round"] = ([last(x)["round_s"] for x in samples],
                                                        lim_node, lim_aggr)
        figs["rebuild"] = ([x["rebuild"]["end_to_end_s"] for x in samples], lim_rebuild,
                           lim_rebuild)
        figs["rebuild (daemon)"] = ([x["rebuild"]["daemon_s"] for x in samples], lim_rebuild,
                                    lim_rebuild)
        summary[spec.name] = {"label": spec.label, "nodes": n, "S": spec.S,
                              "net_bytes_per_node": spec.net_per_node,
                              "rebuild_bytes": spec.rebuild_bytes,
                              "limit_bytes_per_second": bw, "figures": {}}
        for fig, (xs, ln, la) in figs.items():
            st = stats(xs)
            med = st["median"]
            say(f"{spec.label:22s} {fmt_size(spec.S):>6s} {fig:24s} {med:7.3f} "
                f"({st['min']:5.2f}-{st['max']:5.2f}) {ln:12.3f} {ln / med:5.2f} {la:12.3f} "
                f"{la / med:5.2f}")
            summary[spec.name]["figures"][fig] = {"seconds": st, "limit_per_node_s": ln,
                                                  "limit_aggregate_s": la,
                                                  "ratio_per_node": ln / med,
                                                  "ratio_aggregate": la / med}
    for spec in specs:
        for x in failed_repeats[spec.name]:
            say(f"note: {spec.label} repeat {x['repeat']} FAILED after {len(x['steps'])} step(s) "
                f"and is left out: {x['error'].splitlines()[0][:300]}")
        again = sum(1 for x in done[spec.name] for p in x["steps"] if p["rounds"] != 1)
        if again:
            say(f"note: {spec.label}: {again} step(s) protected in more than one round "
                "(the figures above use the last round)")
        failed = [(x["repeat"], p["step"], why) for x in done[spec.name] for p in x["steps"]
                  for why in p["failed_rounds"]]
        for rep_, step, why in failed:
            say(f"note: {spec.label} repeat {rep_} step {step}: a round failed first (its time is "
                f"in the end-to-end figure): {why[:160]}")
    say()
    say("where the time goes (medians): daemons = CPU seconds of all daemons in the phase / "
        "(wall x cores), machine = the whole machine's busy share; CPU s per GB that crosses the "
        "loopback (ucx_perftest: above); loopback = bytes over lo / bytes that must cross")
    cores = os.cpu_count()
    for spec in measured:
        samples = done[spec.name]
        crossing = spec.nodes * spec.net_per_node
        row = {}
        for label, get in (("step 1", first), (f"step {args.steps}", last)):
            ps = [get(x) for x in samples]
            row[label] = {
                "daemons_busy": statistics.median(p["cpu_s"] / (p["end_to_end_polled_s"] * cores)
                                                  for p in ps),
                "machine_busy": statistics.median(p["machine_busy"] for p in ps),
                "cpu_s_per_gb": statistics.median(p["cpu_s"] / (crossing / 1e9) for p in ps),
                "loopback_ratio": statistics.median(p["loopback_bytes"] for p in ps) / crossing,
                "commit_to_round_start_s": statistics.median(p["commit_to_round_start_s"]
                                                             for p in ps),
                "round_end_to_restore_point_s": statistics.median(
                    p["round_end_to_restore_point_s"] for p in ps),
            }
            if args.steps == 1:
                break
        rb = [x["rebuild"] for x in samples]
        row["rebuild"] = {
            "daemons_busy": statistics.median(r["cpu_s"] / (r["end_to_end_polled_s"] * cores)
                                              for r in rb),
            "machine_busy": statistics.median(r["machine_busy"] for r in rb),
            "cpu_s_per_gb": statistics.median(r["cpu_s"] / (spec.rebuild_bytes / 1e9) for r in rb),
            "loopback_ratio": statistics.median(r["loopback_bytes"] for r in rb) / spec.rebuild_bytes,
            "start_to_rebuild_begin_s": statistics.median(r["start_to_rebuild_begin_s"] or 0
                                                          for r in rb),
        }
        for label, v in row.items():
            extra = (f"commit -> round start {v['commit_to_round_start_s'] * 1e3:.0f} ms, round end "
                     f"-> restore point {v['round_end_to_restore_point_s'] * 1e3:.0f} ms"
                     if label != "rebuild" else
                     f"replacement start -> rebuild begins {v['start_to_rebuild_begin_s'] * 1e3:.0f} ms")
            say(f"  {spec.label if label == 'step 1' else '':22s} {label:8s} daemons "
                f"{v['daemons_busy']:4.0%} (machine {v['machine_busy']:4.0%}), "
                f"{v['cpu_s_per_gb']:.2f} CPU s/GB, loopback {v['loopback_ratio']:.2f}x; {extra}")
        summary[spec.name]["where"] = row

    say()
    say("memory per node after step 1 is protected (GetStatus; held = used - pooled), and "
        "network per node")
    say(f"  {'cluster':24s} {'tolerates':>9s} {'S':>7s} {'held/S':>7s} {'parity/S':>8s} "
        f"{'expected':>8s} {'net/S':>6s} {'rebuild read/S':>14s} {'held/S last step':>16s}")
    for spec in measured:
        samples = done[spec.name]
        held = statistics.median(m["held"] / spec.S for s in samples for m in s["memory"])
        held_last = statistics.median(m["held"] / spec.S for s in samples for m in s["memory_last"])
        parity = statistics.median(m["parity"] / spec.S for s in samples for m in s["memory"])
        read = statistics.median(s["rebuild"]["bytes_read"] / spec.S for s in samples)
        say(f"  {spec.label:24s} {spec.losses:>9d} {fmt_size(spec.S):>7s} {held:7.3f} "
            f"{parity:8.3f} {1 + spec.parity_per_node / spec.S:8.3f} "
            f"{spec.net_per_node / spec.S:6.2f} {read:14.2f} {held_last:16.3f}")
        summary[spec.name].update(held_per_S=held, parity_per_S=parity, rebuild_read_per_S=read,
                                  held_per_S_last_step=held_last)
        catalogs = [m["catalog"] / spec.S for s in samples for m in s["memory_last"] if "catalog" in m]
        anons = [m["anon"] for s in samples for m in s["memory_last"] if m.get("anon")]
        if catalogs:
            summary[spec.name]["metadata_per_S"] = statistics.median(catalogs)
        if anons:
            summary[spec.name]["daemon_anon_bytes"] = statistics.median(anons)
            say(f"  {'':24s} catalog on disk / S {statistics.median(catalogs):.5f}, daemon "
                f"private memory {statistics.median(anons) / MIB:.0f} MiB (median per node)")

    say()
    say("goals (issue 5), against the aggregate limit (the honest one on one machine):")
    for spec in measured:
        f = summary[spec.name]["figures"]
        prot = [f"step {k.split()[2]} {v['ratio_aggregate']:.2f}" for k, v in f.items()
                if k.startswith("protect") and not k.endswith("round")]
        best = max(v["ratio_aggregate"] for k, v in f.items()
                   if k.startswith("protect") and not k.endswith("round"))
        rb = f["rebuild"]["ratio_aggregate"]
        say(f"  {spec.label:22s} protection >= 0.7x: {', '.join(prot)} "
            f"({'met' if best >= 0.7 else 'MISSED'}); rebuild >= 0.5x: {rb:.2f} "
            f"({'met' if rb >= 0.5 else 'MISSED'})")
    say(f"load average before {info['loadavg_before'][0]:.2f}, after {info['loadavg_after'][0]:.2f}")

    result.update(limits=limits, limits_after=limits_after, limit_bytes_per_second=bw,
                  perftest_cpu_s_per_gb=perftest_cpu_per_gb, first_touch=touch,
                  first_touch_after=touch_after, tcp_stream=tcp_stream,
                  clusters=clusters, summary=summary)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        say(f"wrote {os.path.relpath(args.json, ROOT)}")
    if args.txt:
        with open(args.txt, "w") as f:
            f.write("\n".join(REPORT) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup_children()
