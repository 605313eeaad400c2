#!/usr/bin/env python3
"""holdfast chaos driver: a real 2+1 cluster (three holdfastd, UCX over tcp) with one writer per
node (holdfast_snapshot_tool), faults injected at random times and at named failpoints, and the
invariants of docs/reliability-chaos.md checked after every fault.

    chaos.py [--trials N] [--seed S] [--json PATH] [--netns auto|on|off] [--keep-going]
             [--jobs J]

--jobs J runs J drivers side by side, each its own cluster (and namespaces), with the trials
split between them and seeds drawn from S; the summary adds theirs up and each violation's replay
names its driver's seed. Trials are mostly single-threaded waits on short-lived processes, so two
drivers on two cores do almost twice the trials per hour (docs/reliability-chaos.md).

Binaries come from the environment as for tests/python (HOLDFAST_HOLDFASTD, HOLDFAST_SNAPSHOT_TOOL,
HOLDFAST_STATUS_JSON, HOLDFAST_CLI); ctest sets them. HOLDFAST_CHAOS_TRIALS and
HOLDFAST_CHAOS_SEED are the defaults of --trials and --seed. Exit 0 when no invariant was violated,
1 otherwise, 2 when the cluster could not be run at all. Everything it starts (daemons, writers,
namespaces, /dev/shm and temp directories) is removed on exit, also on failure or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import daemon as hd  # noqa: E402  (tests/python/daemon.py: Daemon, Cluster, run_cli)

K, M = 2, 1
N = K + M
ITEM_BYTES = 96 << 10          # per item; rank r saves 3 + r % 2 items of ITEM_BYTES + 4096 r
BUDGET = 24 << 20              # per node
WINDOW = "64KiB"
SETTLE_TIMEOUT = 60.0          # a recoverable fault must be healed within this (liveness)
FD_SLACK = 64                  # fds a daemon may gain over its warm-up count
RSS_SLACK = 96 << 20           # anonymous RSS a daemon may gain over its warm-up value
WARMUP_CHECKS = 5              # trials a daemon process lives through before its baseline is taken

FAILPOINTS_COMMIT = ["commit.after_verify", "commit.before_catalog", "commit.after_catalog"]
FAILPOINTS_PROTECT = ["protect.roles_started", "protect.roles_done", "protect.after_record"]

# Fault kinds and their weights in the random schedule (every kind also appears at least once).
KINDS = {
    "none": 1.0,
    "writer_kill": 3.0,
    "daemon_kill": 2.0,
    "daemon_failpoint": 1.5,
    "daemon_wipe": 1.5,
    "sigstop": 1.5,
    "netcut": 1.0,
    "budget_full": 1.0,
    "corrupt": 1.5,
    "loss_beyond_m": 0.12,
}


class Violation(Exception):
    """An invariant does not hold: a bug in holdfast (or in this driver)."""


class Unavailable(Exception):
    """The cluster cannot be run here (no binaries)."""


def now() -> float:
    return time.monotonic()


def tool_env_ok() -> Optional[str]:
    for var in ("HOLDFAST_HOLDFASTD", "HOLDFAST_SNAPSHOT_TOOL", "HOLDFAST_STATUS_JSON",
                "HOLDFAST_CLI"):
        path = os.environ.get(var, "")
        if not path or not os.access(path, os.X_OK):
            return f"{var} is not set to an executable"
    return None


class Netns:
    """The network namespaces of tests/python/test_cluster_netns.py (one per node and a bridge),
    or None where this machine cannot make them."""

    @staticmethod
    def make(mode: str):
        if mode == "off":
            return None, "disabled (--netns off)"
        import test_cluster_netns as tn  # noqa: E402  (same directory as daemon.py)
        why = tn._unavailable()
        if why:
            if mode == "on":
                raise Unavailable(f"--netns on, but {why}")
            return None, why
        tn._sweep_stale()
        net = tn.Network()
        try:
            net.build()
        except Exception:
            net.delete()
            raise
        return net, ""


class Writer:
    """One holdfast_snapshot_tool process saving one step for one rank."""

    def __init__(self, cmd: List[str], rank: int, step: int) -> None:
        self.rank, self.step = rank, step
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
        self.out = self.err = ""
        self.killed = False
        self.done = False

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.killed = True

    def wait(self, timeout: float = 120.0) -> int:
        if self.done:
            return self.proc.returncode
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out, self.err = self.proc.communicate()
            raise Violation(f"writer rank {self.rank} step {self.step} hung for {timeout} s")
        self.done = True
        return self.proc.returncode

    def committed(self) -> bool:
        return f"committed {self.step} " in self.out


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(self.seed)
        self.cluster: Optional[hd.Cluster] = None
        self.status_client = hd.StatusClient()
        self.net = None
        self.netns_note = ""
        self.epoch = -1            # cluster generation; a new cluster after more than m losses
        self.job = ""
        self.content_seed = 0
        self.step = -1             # newest step every rank committed
        self.inflight = -1         # newest step writers were started for
        self.sizes: Dict[int, int] = {}   # step -> item bytes
        self.rp_max = -1           # newest agreed restore point of the current job
        self.node_rp: Dict[tuple, int] = {}  # (node, pid) -> newest restore point it reported
        self.corrupted = set()     # (node, step): damage injected and possibly still retained
        self.baselines: Dict[int, dict] = {}  # pid -> {"checks", "fds", "rss"}
        self.checks: Dict[str, int] = {}
        self.faults: Dict[str, int] = {}
        self.notes: Dict[str, int] = {}
        self.violations: List[dict] = []
        self.events: List[str] = []
        self.trial = -1
        self.trial_seed = 0
        self.t0 = self.t_trial = now()
        self.wall = 0.0
        self.interrupted = False
        self.trial_times: Dict[str, List[float]] = {}

    # ---- bookkeeping ----------------------------------------------------------------------

    def event(self, text: str) -> None:
        line = f"[trial {self.trial} +{now() - self.t_trial:.2f}s] {text}"
        self.events.append(line)
        if self.args.verbose:
            print(line, file=sys.stderr)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks[name] = self.checks.get(name, 0) + 1
        if not ok:
            raise Violation(f"{name}: {detail}")

    def note(self, name: str) -> None:
        self.notes[name] = self.notes.get(name, 0) + 1

    # ---- the cluster ----------------------------------------------------------------------

    def new_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None
        self.epoch += 1
        hosts = prefixes = None
        device = "lo"
        if self.net is not None:
            hosts = [self.net.address(i) for i in range(N)]
            prefixes = [self.net.prefix(i) for i in range(N)]
            device = "eth0"
        self.cluster = hd.Cluster(k=K, m=M, window=WINDOW, budget=f"{BUDGET >> 20}MiB",
                                  hosts=hosts, prefixes=prefixes, net_device=device,
                                  cluster_id=f"chaos{self.epoch}")
        self.cluster.start_all()
        self.job = f"chaos{self.epoch}"
        self.content_seed = (self.seed * 31 + self.epoch) & 0x7FFFFFFF
        self.step = -1
        self.inflight = -1
        self.sizes = {}
        self.rp_max = -1
        self.node_rp = {}
        self.corrupted = set()

    def node(self, i: int) -> hd.Daemon:
        return self.cluster.nodes[i]

    def tool(self, i: int, rank: int, args: List[str], job: Optional[str] = None,
             item_bytes: Optional[int] = None, items: Optional[int] = None,
             world: int = N, extra: Optional[List[str]] = None) -> List[str]:
        # Unix sockets are paths, reachable from the host namespace: no `ip netns exec` needed.
        d = self.node(i)
        return [hd.SNAPSHOT_TOOL, "--socket", d.socket, "--job", job or self.job, "--rank",
                str(rank), "--world-size", str(world), "--items",
                str(items if items is not None else 3 + rank % 2), "--item-bytes",
                str((item_bytes if item_bytes is not None else ITEM_BYTES) + 4096 * rank),
                "--seed", str(self.content_seed)] + list(extra or []) + args

    def cli(self, i: int, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return hd.run_cli("--socket", self.node(i).socket, *args, timeout=timeout)

    def cli_many(self, calls: List[tuple], timeout: float = 120.0) -> List[tuple]:
        """(node, args...) CLI calls run in parallel; [(exit code, stdout, stderr)]."""
        procs = [subprocess.Popen([hd.CLI, "--socket", self.node(c[0]).socket, *c[1:]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL) for c in calls]
        out = []
        for p in procs:
            try:
                o, e = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                o, e = p.communicate()
                raise Violation(f"cli_hung: {p.args} did not finish in {timeout} s")
            out.append((p.returncode, o, e))
        return out

    def start_node(self, i: int, failpoints: str = "") -> bool:
        """Starts node i (optionally armed with failpoints); False if it died while starting
        (a failpoint fired before it answered)."""
        if failpoints:
            os.environ["HOLDFAST_FAILPOINTS"] = failpoints
        try:
            self.node(i).start()
            return True
        except RuntimeError:
            if self.node(i).running():
                raise
            return False
        finally:
            os.environ.pop("HOLDFAST_FAILPOINTS", None)

    def ensure_up(self) -> None:
        for i in range(N):
            if not self.node(i).running():
                self.event(f"n{i} is down: restarting it")
                if not self.start_node(i):
                    raise Violation(f"n{i} did not start:\n{self.node(i).log()[-4000:]}")

    # ---- writes ---------------------------------------------------------------------------

    def launch(self, step: int, ranks=range(N), item_bytes: int = ITEM_BYTES) -> List[Writer]:
        # Once every rank's commit of `step` went through, it may become the restore point even
        # before the writers report back (or when a writer is killed after its commit).
        self.inflight = max(self.inflight, step)
        return [Writer(self.tool(r, r, ["save", "--steps", f"{step}:{step}"],
                                 item_bytes=item_bytes), r, step) for r in ranks]

    def finish_step(self, step: int, writers: List[Writer], item_bytes: int) -> None:
        """Waits for `writers`, then re-saves the ranks whose commit is not known (their writer or
        daemon was killed) until every rank has committed `step`."""
        pending = []
        for w in writers:
            rc = w.wait()
            if rc == 0 and w.committed():
                continue
            self.check("writer_error_is_clean", w.killed or rc == 1,
                       f"rank {w.rank} exit {rc}: {w.err.strip()}")
            pending.append(w.rank)
        attempts = 0
        while pending:
            attempts += 1
            if attempts > 20:
                raise Violation(f"ranks {pending} cannot commit step {step}: {self.last_err}")
            self.ensure_up()
            retry = []
            for w in self.launch(step, pending, item_bytes):
                rc = w.wait()
                if rc == 0 and w.committed():
                    continue
                # Its earlier attempt committed and the step is complete: it may not be
                # committed twice (FAILED_PRECONDITION), which is how a resumed rank learns it.
                if "FAILED_PRECONDITION" in w.err and self.holds_complete(w.rank, step):
                    self.note("resave_already_complete")
                    continue
                # The daemon took the retry for a resume from the restore point and dropped its
                # complete version of the step (held, so it cannot be redone): the step cannot
                # complete any more and the job moves on to the next one (see the doc's
                # findings).
                if "FAILED_PRECONDITION" in w.err and "save a newer step" in w.err:
                    self.note("step_abandoned_on_retry")
                    # Every rank did commit it, and a round already under way may still protect
                    # it: it stays a step a restore may legitimately return.
                    self.sizes[step] = item_bytes
                    self.event(f"rank {w.rank} may not redo step {step}: {w.err.strip()}")
                    self.finish_step(step + 1, self.launch(step + 1, range(N), item_bytes),
                                     item_bytes)
                    return
                self.last_err = w.err.strip()
                retry.append(w.rank)
            pending = retry
            if pending:
                time.sleep(0.2)
        self.step = step
        self.sizes[step] = item_bytes

    last_err = ""

    def holds_complete(self, i: int, step: int) -> bool:
        r = self.cli(i, "--json", "ls", "--job", self.job)
        if r.returncode != 0:
            return False
        return any(v["step"] == step and v["state"] != "partial"
                   for v in json.loads(r.stdout)["versions"])

    def save_clean(self) -> int:
        step = self.step + 1
        self.finish_step(step, self.launch(step), ITEM_BYTES)
        return step

    # ---- observation and invariants -------------------------------------------------------

    def statuses(self) -> Dict[int, dict]:
        """GetStatus of every running node (a node that does not answer within 2 s is left
        out)."""
        return self.status_client.ask({i: self.node(i).socket for i in range(N)
                                       if self.node(i).running()})

    def observe(self) -> dict:
        """Every running node's restore point of the job; checks that none moves backwards."""
        seen = {}
        for i, st in self.statuses().items():
            d = self.node(i)
            if "cluster" not in st or d.proc is None:
                continue
            c = st["cluster"]
            s = {"restore_point": -1, "newest_protected_step": -1, "rebuilding": c["rebuilding"]}
            for j in c["jobs"]:
                if j["job_id"] == self.job:
                    s["restore_point"] = int(j["restore_point"])
                    s["newest_protected_step"] = int(j["newest_protected_step"])
            rp = s["restore_point"]
            key = (i, d.proc.pid)
            prev = self.node_rp.get(key, -1)
            self.check("restore_point_monotonic_per_node", rp >= prev,
                       f"n{i} (pid {d.proc.pid}) reported restore point {rp} after {prev}")
            if rp >= 0:
                # A node that knows a restore point never names one older than the agreed one
                # (a trainer resuming there would load an older step than its peers).
                self.check("restore_point_not_behind_agreed", rp >= self.rp_max,
                           f"n{i} reports restore point {rp}, the group agreed on {self.rp_max}")
                self.check("restore_point_is_committed", rp in self.sizes or rp == self.inflight,
                           f"n{i} reports restore point {rp}; committed up to {self.step}, "
                           f"step {self.inflight} being saved")
            self.node_rp[key] = rp
            seen[i] = s
        return seen

    def settle(self, step: int, timeout: float = SETTLE_TIMEOUT, at_least: bool = False) -> None:
        """Liveness: every node up, none rebuilding, all agree the restore point is `step` (with
        `at_least`: agree on one value >= `step`, e.g. when the step being saved may get
        protected meanwhile)."""
        deadline = now() + timeout
        seen = {}
        while now() < deadline:
            seen = self.observe()
            points = {s["restore_point"] for s in seen.values()}
            if at_least and len(points) == 1 and min(points) >= step:
                step = min(points)
            if len(seen) == N and all(not s["rebuilding"] and s["restore_point"] == step
                                      for s in seen.values()):
                self.check("restore_point_agreed", True)
                self.check("restore_point_monotonic_agreed", step >= self.rp_max,
                           f"agreed {step} after {self.rp_max}")
                self.rp_max = step
                return
            time.sleep(0.05)
        raise Violation(f"liveness: restore point of {self.job} did not reach {step} on every node "
                        f"within {timeout:.0f} s: {seen}")

    def verify_restore(self, rank: int, step: Optional[int] = None,
                       expect_ok: bool = True) -> int:
        """Rank `rank` restores the restore point (or `step`) on its node and checks every byte
        against the content derived from (seed, step, rank, item). Returns the tool's exit
        code; wrong bytes served as good are a violation whatever was expected."""
        return self.verify_restores([(rank, step, expect_ok)])[0]

    def verify_restores(self, asks: List[tuple]) -> List[int]:
        """verify_restore for several (rank, step, expect_ok), run in parallel."""
        runs = []
        for rank, step, _ in asks:
            args = ["verify"] if step is None else ["verify", "--step", str(step)]
            runs.append(subprocess.Popen(self.tool(rank, rank, args), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True,
                                         stdin=subprocess.DEVNULL))
        codes = []
        for (rank, step, expect_ok), p in zip(asks, runs):
            try:
                out, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise Violation(f"restore_hung: rank {rank} step {step} did not finish in 120 s")
            codes.append(p.returncode)
            self.check_restore(rank, step, expect_ok, p.returncode, out, err)
        return codes

    def check_restore(self, rank: int, step: Optional[int], expect_ok: bool, rc: int, out: str,
                      err: str) -> None:
        self.check("never_wrong_bytes", "differs from what was saved" not in err
                   and "is named" not in err, f"rank {rank}: {err.strip()}")
        if rc == 0:
            words = out.split()
            got = int(words[1])
            items = 3 + rank % 2
            size = self.sizes.get(got)
            self.check("restore_is_a_committed_version", size is not None and got <= self.step,
                       f"rank {rank} restored step {got}; committed: {sorted(self.sizes)}")
            self.check("restore_exact_bytes", words[2:] == [f"items={items}",
                                                           f"bytes={items * (size + 4096 * rank)}"],
                       f"rank {rank} step {got}: {out.strip()}")
            if step is None:
                self.check("restore_is_the_restore_point", got == self.rp_max,
                           f"rank {rank} restored {got}, restore point {self.rp_max}")
            elif expect_ok:
                self.check("restore_of_named_step", got == step, f"asked {step}, got {got}")
        elif expect_ok:
            raise Violation(f"restore_available: rank {rank} step {step}: exit {rc} "
                            f"{err.strip()}")
        else:
            self.check("refusal_is_clean", rc in (1, 3), f"rank {rank} exit {rc}: {err.strip()}")

    def verify_all(self) -> None:
        self.verify_restores([(r, None, True) for r in range(N)])

    def resource_check(self) -> None:
        """Leaks: segment files vs what the catalog references and the daemon accounts; catalog
        entries (ls); fds and anonymous RSS of every daemon against its warm-up values."""
        answers = self.cli_many([(i, "--json", "verify") for i in range(N)] +
                                [(i, "--json", "ls") for i in range(N)])
        # Spare segments being made (snapshots.spares) are accounted before their files are
        # complete: compare once none is under way (milliseconds at these sizes).
        deadline = time.monotonic() + 30
        while True:
            statuses = self.statuses()
            if time.monotonic() > deadline or all(
                    int((st or {}).get("memory_preparing_bytes", 0) or 0) == 0
                    for st in statuses.values()):
                break
            time.sleep(0.05)
        for i in range(N):
            d = self.node(i)
            rc, text, err = answers[i]
            self.check("verify_answers", rc in (0, 5), f"n{i} verify exit "
                       f"{rc}: {text[-2000:]} {err[-2000:]}")
            out = json.loads(text)
            referenced = set()
            for v in out["versions"]:
                for nd in v["nodes"]:
                    for p in nd["problems"]:
                        # verify must find exactly the damage this driver injected.
                        self.check("verify_finds_only_injected_damage",
                                   (int(p["node_id"][1:]), p["step"]) in self.corrupted,
                                   f"n{i} verify: {p}")
                    if nd["node_id"] != d.node_id:
                        continue
                    referenced.update(nd["data_segments"])
                    if nd["parity_segment"]:
                        referenced.add(nd["parity_segment"])
            st = statuses[i]
            files = {f: os.stat(os.path.join(d.shm, f)).st_size for f in os.listdir(d.shm)}
            missing = referenced - set(files)
            self.check("referenced_segments_exist", not missing, f"n{i} lacks {missing}")
            used, pooled = int(st["memory_used_bytes"]), int(st["memory_pooled_bytes"])
            total = sum(files.values())
            stray = sum(sz for f, sz in files.items() if f not in referenced)
            self.check("segment_files_match_used_bytes", total == used,
                       f"n{i}: files {total} bytes ({len(files)}), daemon accounts {used}")
            self.check("unreferenced_segments_are_pooled", stray == pooled,
                       f"n{i}: {stray} bytes in unreferenced files, pooled {pooled}; files "
                       f"{sorted(files)} referenced {sorted(referenced)}")
            self.check("used_within_budget", used <= BUDGET, f"n{i} uses {used}")
            rc, text, err = answers[N + i]
            self.check("ls_answers", rc == 0, err)
            versions = json.loads(text)["versions"]
            mine = [v for v in versions if v["job_id"] == self.job]
            others = [v for v in versions if v["job_id"] != self.job]
            # retain 2, plus a pinned restore point, plus one being verified or protected.
            self.check("catalog_versions_bounded", len(mine) <= 4 and not others,
                       f"n{i} ls: {[(v['job_id'], v['step'], v['state']) for v in versions]}")
            self.check("catalog_steps_committed", all(v["step"] <= self.step for v in mine),
                       f"n{i} ls: {[v['step'] for v in mine]}, committed up to {self.step}")

    def sample_resources(self) -> None:
        """fds and anonymous RSS of every daemon process (cheap: /proc), against the values it had
        after its warm-up (WARMUP_CHECKS samples after it started)."""
        for i in range(N):
            d = self.node(i)
            if not d.running():
                continue
            pid = d.proc.pid
            try:
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                rss = 0
                with open(f"/proc/{pid}/status", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            rss = int(line.split()[1]) << 10
            except OSError:
                continue
            b = self.baselines.setdefault(pid, {"node": i, "samples": 0, "fds": 0, "rss": 0,
                                                "max_fds": 0, "max_rss": 0})
            b["samples"] += 1
            if b["samples"] == WARMUP_CHECKS:
                b["fds"], b["rss"] = fds, rss
            b["max_fds"], b["max_rss"] = max(b["max_fds"], fds), max(b["max_rss"], rss)
            if b["samples"] > WARMUP_CHECKS:
                self.check("daemon_fds_bounded", fds <= b["fds"] + FD_SLACK,
                           f"n{i} pid {pid}: {fds} fds, {b['fds']} after warm-up")
                self.check("daemon_rss_bounded", rss <= b["rss"] + RSS_SLACK,
                           f"n{i} pid {pid}: RssAnon {rss >> 20} MiB, {b['rss'] >> 20} MiB "
                           f"after warm-up")

    # ---- faults ---------------------------------------------------------------------------
    # Each one saves the trial's step with its fault, heals as an operator would, and leaves
    # the cluster settled on a new restore point with every invariant checked.

    def fault_none(self, rng: random.Random) -> None:
        self.save_clean()

    def fault_writer_kill(self, rng: random.Random) -> None:
        step = self.step + 1
        writers = self.launch(step)
        victim = rng.randrange(N)
        delay = rng.uniform(0.0, 0.25)
        time.sleep(delay)
        writers[victim].kill()
        self.event(f"SIGKILL writer rank {victim} at {delay:.3f}s")
        # The torn step is never visible: the restore point stays where it was meanwhile.
        self.observe()
        self.finish_step(step, writers, ITEM_BYTES)

    def fault_daemon_kill(self, rng: random.Random) -> None:
        step = self.step + 1
        writers = self.launch(step)
        i = rng.randrange(N)
        delay = rng.uniform(0.0, 0.4)
        time.sleep(delay)
        self.node(i).kill()
        self.event(f"SIGKILL n{i} at {delay:.3f}s")
        self.observe()
        time.sleep(rng.uniform(0.0, 0.5))
        self.ensure_up()
        self.finish_step(step, writers, ITEM_BYTES)

    def fault_daemon_failpoint(self, rng: random.Random) -> None:
        step = self.step + 1
        i = rng.randrange(N)
        point = rng.choice(FAILPOINTS_COMMIT + FAILPOINTS_PROTECT)
        self.node(i).stop()
        self.event(f"n{i} restarted with failpoint {point}")
        started = self.start_node(i, f"{point}=kill")
        writers = self.launch(step) if started else []
        if started:
            deadline = now() + 10
            while self.node(i).running() and now() < deadline:
                time.sleep(0.02)
        fired = not self.node(i).running()
        self.note(f"failpoint_{point}_{'fired' if fired else 'not_reached'}")
        if fired:
            self.check("failpoint_killed_daemon", self.node(i).proc.returncode == -9,
                       f"n{i} exit {self.node(i).proc.returncode}")
            self.observe()
        else:
            self.node(i).stop()  # disarm it
        self.ensure_up()
        self.finish_step(step, writers, ITEM_BYTES)

    def recover(self, i: int, expect: int) -> dict:
        r = self.cli(i, "--json", "recover", "--node", f"n{i}", "--wait", "60", timeout=120)
        self.check("recover_exit_code", r.returncode == expect,
                   f"recover n{i}: exit {r.returncode} (expected {expect}): {r.stdout} {r.stderr}")
        return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}

    def fault_daemon_wipe(self, rng: random.Random) -> None:
        step = self.step + 1
        i = rng.randrange(N)
        during_save = rng.random() < 0.5
        # Its RAM (shared-memory directory) is always lost; its disk (catalog) too in most
        # trials (a replacement machine: new incarnation), or kept (a reboot: same incarnation,
        # its recovery finds the segments gone and the group rebuilds them).
        disk_too = rng.random() < 0.65
        what = "RAM and disk wiped" if disk_too else "RAM wiped, catalog kept"
        writers = []
        if during_save:
            writers = self.launch(step)
            delay = rng.uniform(0.0, 0.4)
            time.sleep(delay)
            self.event(f"SIGKILL n{i} at {delay:.3f}s of the save, {what}")
        else:
            self.event(f"SIGKILL n{i}, {what}")
        if disk_too:
            self.cluster.kill(i, wipe=True)
        else:
            d = self.node(i)
            d.kill()
            shutil.rmtree(d.shm, ignore_errors=True)
            os.makedirs(d.shm)
        self.note("wipe_ram_and_disk" if disk_too else "wipe_ram_only")
        self.observe()
        # The operator starts a replacement with the lost node's id (sometimes it dies itself
        # while reading from the survivors) and follows it with `holdfast recover`.
        if rng.random() < 0.25:
            self.event(f"replacement n{i} armed with rebuild.reading")
            if self.start_node(i, "rebuild.reading=kill"):
                deadline = now() + 10
                while self.node(i).running() and now() < deadline:
                    time.sleep(0.02)
            fired = not self.node(i).running()
            if not fired:
                self.node(i).stop()  # disarm it
            self.note(f"failpoint_rebuild.reading_{'fired' if fired else 'not_reached'}")
        if not self.node(i).running():
            self.start_node(i)
        summary = self.recover(i, 0)
        self.check("recover_rebuilt", summary.get("result") == "rebuilt"
                   and not summary.get("unrecoverable"), f"recover n{i}: {summary}")
        # Up to m losses lose nothing: the group agrees on the same restore point again and the
        # replacement restores it bit for bit.
        self.settle(self.rp_max, at_least=during_save)
        if self.rp_max in self.sizes:  # else the step being saved: checked at the trial's end
            self.verify_restore(i)
        if not during_save:
            writers = self.launch(step)
        else:
            # What rank i committed of the step before the kill went with the node's RAM unless
            # the group protected it: its trainer saves it again (refused as already complete
            # if the rebuild brought it back).
            writers[i].wait()
            writers[i].out = ""
            writers[i].killed = True
        self.finish_step(step, writers, ITEM_BYTES)

    def fault_sigstop(self, rng: random.Random) -> None:
        step = self.step + 1
        i = rng.randrange(N)
        pause = rng.uniform(0.2, 2.5)
        writers = self.launch(step)
        time.sleep(rng.uniform(0.0, 0.2))
        pid = self.node(i).proc.pid
        os.kill(pid, signal.SIGSTOP)
        self.event(f"SIGSTOP n{i} for {pause:.2f}s")
        try:
            end = now() + pause
            while now() < end:
                self.observe()  # the others must keep answering and never go backwards
                time.sleep(0.1)
        finally:
            os.kill(pid, signal.SIGCONT)
        self.finish_step(step, writers, ITEM_BYTES)

    def fault_netcut(self, rng: random.Random) -> None:
        step = self.step + 1
        i = rng.randrange(N)
        cut = rng.uniform(0.2, 2.5)
        writers = self.launch(step)
        time.sleep(rng.uniform(0.0, 0.2))
        ns = self.net.nodes[i]
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)
        self.event(f"n{i} link down for {cut:.2f}s")
        try:
            end = now() + cut
            while now() < end:
                self.observe()
                time.sleep(0.1)
        finally:
            subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        self.finish_step(step, writers, ITEM_BYTES)

    def fault_budget_full(self, rng: random.Random) -> None:
        # A second job on node i (rank 0 of a job whose other local rank, 1, never saves: its
        # version stays partial, never protected) takes what is free and pooled there; then the
        # main job saves a step twice as large. Node i must refuse it with RESOURCE_EXHAUSTED or
        # find room by evicting what may be evicted; never lose a committed version.
        i = rng.randrange(N)
        hog = f"hog-n{i}"
        st = self.node(i).status()
        room = BUDGET - int(st["memory_used_bytes"]) + int(st["memory_pooled_bytes"])
        hog_bytes = max(room - (64 << 10), 4096)
        r = subprocess.run(self.tool(i, 0, ["save", "--steps", "0:0"], job=hog, items=1,
                                     item_bytes=hog_bytes, world=2,
                                     extra=["--local-ranks", "0", "--local-ranks", "1"]),
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        self.event(f"hog of {hog_bytes >> 10} KiB on n{i}: exit {r.returncode} {r.stderr.strip()}")
        self.check("hog_ok_or_exhausted", r.returncode == 0 or "RESOURCE_EXHAUSTED" in r.stderr,
                   r.stderr)
        step = self.step + 1
        big = 2 * ITEM_BYTES
        writers = self.launch(step, item_bytes=big)
        refused = False
        for w in writers:
            rc = w.wait()
            if w.rank == i and rc != 0:
                self.check("refusal_is_resource_exhausted", "RESOURCE_EXHAUSTED" in w.err,
                           f"rank {i}: {w.err.strip()}")
                refused = True
            else:
                self.check("write_ok_elsewhere", rc == 0, f"rank {w.rank}: {w.err.strip()}")
        self.note("budget_refused" if refused else "budget_found_room")
        st = self.node(i).status()
        self.check("used_within_budget", int(st["memory_used_bytes"]) <= BUDGET, str(st))
        # Committed versions are intact: the restore point restores bit for bit on node i.
        self.observe()
        self.verify_restore(i)
        d = self.cli(i, "--json", "drop", "--job", hog, "--all", "--yes", "--force")
        self.check("hog_dropped", d.returncode == 0, d.stderr)
        self.finish_step(step, [w for w in writers if w.rank != i] +
                         ([] if refused else [w for w in writers if w.rank == i]), big)
        if refused:
            self.finish_step(step, self.launch(step, [i], big), big)

    def fault_corrupt(self, rng: random.Random) -> None:
        self.save_clean()
        self.settle(self.step)
        i = rng.randrange(N)
        r = self.cli(i, "--json", "verify", "--job", self.job)
        self.check("verify_clean_before", r.returncode == 0, r.stdout[-2000:])
        candidates = []
        for v in json.loads(r.stdout)["versions"]:
            nd = next(n for n in v["nodes"] if n["node_id"] == f"n{i}")
            for seg in nd["data_segments"]:
                candidates.append((v["step"], "data", seg))
            if nd["parity_segment"]:
                candidates.append((v["step"], "parity", nd["parity_segment"]))
        step, kind, seg = rng.choice(candidates)
        path = os.path.join(self.node(i).shm, seg)
        size = os.path.getsize(path)
        offset = rng.randrange(size)
        mask = rng.randrange(1, 256)
        with open(path, "r+b") as f:
            f.seek(offset)
            b = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([b ^ mask]))
        self.corrupted.add((i, step))
        self.event(f"flipped byte {offset} of {size} (xor {mask:#x}) in the {kind} segment {seg} "
                   f"of n{i}, step {step}")
        # Detected: verify names it (exit 5)...
        r = self.cli(i, "--json", "verify", "--job", self.job, "--step", str(step))
        out = json.loads(r.stdout) if r.stdout.startswith("{") else {}
        problems = [p for v in out.get("versions", []) for n in v["nodes"] for p in n["problems"]]
        named = any(p["node_id"] == f"n{i}" and p["step"] == step for p in problems)
        self.check("corruption_detected_by_verify", r.returncode == 5 and named,
                   f"verify exit {r.returncode}, problems {problems}")
        # ...and a restore of that step either refuses or serves exact bytes (never wrong ones).
        rc = self.verify_restore(i, step, expect_ok=False)
        self.note(f"corrupt_{kind}_restore_{'refused' if rc else 'exact'}")
        if kind == "data":
            self.check("corrupt_data_never_served", rc != 0,
                       f"rank {i} restored corrupted step {step} without error")
        # Healing: a new step is protected, the damaged one leaves the restore point.
        self.save_clean()

    def fault_loss_beyond_m(self, rng: random.Random) -> None:
        self.save_clean()
        self.settle(self.step)
        lost = rng.sample(range(N), M + 1)
        self.event(f"SIGKILL {['n%d' % j for j in lost]}, RAM and disk wiped (more than m)")
        for j in lost:
            self.cluster.kill(j, wipe=True)
        for j in lost:
            self.start_node(j)
        self.recover(lost[0], 5)  # DATA_LOSS, reported
        st = self.cli(lost[0], "status")
        self.check("status_health_err", st.returncode == 7, st.stdout)
        for j in lost:
            # The lost ranks cannot restore: refused, never wrong bytes.
            self.verify_restore(j, expect_ok=False)
        survivor = next(j for j in range(N) if j not in lost)
        self.verify_restore(survivor, self.step, expect_ok=False)
        # As after losing the cluster: the job falls back to its disk checkpoint on a fresh one.
        self.event("new cluster")
        self.new_cluster()
        self.warm_up()

    def warm_up(self) -> None:
        """Two clean steps protected before the first fault on a new cluster."""
        for _ in range(2):
            self.save_clean()
            self.settle(self.step)

    # ---- the run --------------------------------------------------------------------------

    def schedule(self) -> List[str]:
        kinds = [k for k in KINDS if (k != "netcut" or self.net is not None)
                 and k not in self.args.skip]
        n = self.args.trials
        picks = kinds[:] if n >= len(kinds) else []
        weights = [KINDS[k] for k in kinds]
        picks += self.rng.choices(kinds, weights, k=max(0, n - len(picks)))
        self.rng.shuffle(picks)
        return picks[:n]

    def run(self) -> int:
        t0 = self.t0 = now()
        self.net, self.netns_note = Netns.make(self.args.netns)
        print(f"chaos: seed {self.seed} trials {self.args.trials} netns "
              f"{'on' if self.net else 'off (' + self.netns_note + ')'}", file=sys.stderr,
              flush=True)
        self.new_cluster()
        self.warm_up()
        schedule = self.schedule()
        last_print = now()
        for self.trial, kind in enumerate(schedule):
            self.trial_seed = self.rng.getrandbits(63)
            rng = random.Random(self.trial_seed)
            self.t_trial = now()
            self.events = []
            self.faults[kind] = self.faults.get(kind, 0) + 1
            try:
                getattr(self, f"fault_{kind}")(rng)
                self.ensure_up()
                self.settle(self.step)
                self.verify_all()
                self.sample_resources()
                if self.trial % self.args.resource_every == 0 or self.trial == len(schedule) - 1:
                    self.resource_check()
            except Violation as e:
                self.record_violation(kind, str(e))
                if not self.args.keep_going:
                    break
                self.new_cluster()
                self.warm_up()
            self.trial_times.setdefault(kind, []).append(now() - self.t_trial)
            if self.args.verbose:
                print(f"chaos: trial {self.trial} {kind} {now() - self.t_trial:.2f}s",
                      file=sys.stderr)
            if now() - last_print > 30:
                last_print = now()
                print(f"chaos: {self.trial + 1}/{len(schedule)} trials, "
                      f"{len(self.violations)} violations, {now() - t0:.0f} s", file=sys.stderr,
                      flush=True)
        self.wall = now() - t0
        return 0 if not self.violations else 1

    def record_violation(self, kind: str, what: str) -> None:
        v = {"trial": self.trial, "kind": kind, "trial_seed": self.trial_seed,
             "violation": what, "events": list(self.events),
             "replay": f"{sys.executable} {os.path.abspath(__file__)} --seed {self.seed} "
                       f"--trials {self.trial + 1} --netns {'on' if self.net else 'off'}"}
        if self.cluster is not None:
            # Every daemon's whole log (they accumulate over restarts), kept after cleanup.
            out = self.args.artifacts or os.path.join(tempfile.gettempdir(),
                                                      f"holdfast-chaos-{self.seed}")
            os.makedirs(out, exist_ok=True)
            for d in self.cluster.nodes:
                path = os.path.join(out, f"trial{self.trial}-{d.node_id}.log")
                with open(path, "w", encoding="utf-8") as f:
                    f.write(d.log())
            v["logs"] = out
        self.violations.append(v)
        print(f"\nchaos: VIOLATION in trial {self.trial} ({kind}, trial seed {self.trial_seed}):"
              f"\n  {what}\n  events:\n    " + "\n    ".join(self.events) +
              f"\n  replay: {v['replay']}\n  full daemon logs: {v.get('logs')}", file=sys.stderr)
        if self.cluster is not None:
            print(self.cluster.logs(tail=6000), file=sys.stderr)

    def summary(self) -> dict:
        return {
            "seed": self.seed, "trials": self.trial + 1, "trials_planned": self.args.trials,
            "interrupted": self.interrupted,
            "wall_seconds": round(self.wall, 1),
            "netns": bool(self.net), "netns_note": self.netns_note,
            "faults": dict(sorted(self.faults.items())),
            "invariant_checks": sum(self.checks.values()),
            "checks": dict(sorted(self.checks.items())),
            "outcomes": dict(sorted(self.notes.items())),
            "clusters": self.epoch + 1,
            "seconds_per_trial": {k: round(sum(v) / len(v), 2)
                                  for k, v in sorted(self.trial_times.items())},
            "daemon_resources": self.resource_summary(),
            "violations": self.violations,
        }

    def resource_summary(self) -> dict:
        """The longest-lived daemon processes: samples, fds and RssAnon after warm-up and max."""
        lived = sorted(((b["samples"], pid, b) for pid, b in self.baselines.items()
                        if b["samples"] > WARMUP_CHECKS), reverse=True)[:3]
        return {str(pid): {"node": f"n{b['node']}", "trials": n, "fds_after_warmup": b["fds"],
                           "fds_max": b["max_fds"], "rss_anon_mib_after_warmup":
                           round(b["rss"] / 2**20, 1), "rss_anon_mib_max":
                           round(b["max_rss"] / 2**20, 1)} for n, pid, b in lived}

    def close(self) -> None:
        self.status_client.close()
        if self.cluster is not None:
            for d in self.cluster.nodes:
                if d.running():
                    try:
                        os.kill(d.proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            self.cluster.close()
        if self.net is not None:
            self.net.delete()


def run_jobs(args: argparse.Namespace) -> int:
    """--jobs: `args.jobs` drivers in parallel, one summary."""
    seeds = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="holdfast-chaos-jobs-")
    children = []
    t0 = now()
    for j in range(args.jobs):
        trials = args.trials // args.jobs + (1 if j < args.trials % args.jobs else 0)
        seed = seeds.getrandbits(32)
        out = os.path.join(tmp, f"driver{j}.json")
        cmd = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--trials",
               str(trials), "--seed", str(seed), "--json", out, "--netns", args.netns,
               "--resource-every", str(args.resource_every)]
        cmd += ["--keep-going"] if args.keep_going else []
        cmd += ["--verbose"] if args.verbose else []
        cmd += ["--artifacts", args.artifacts] if args.artifacts else []
        for kind in args.skip:
            cmd += ["--skip", kind]
        print(f"chaos: driver {j}: seed {seed}, {trials} trials", file=sys.stderr, flush=True)
        children.append((seed, out, subprocess.Popen(cmd)))
    signal.signal(signal.SIGTERM, lambda *_: [c.terminate() for _, _, c in children])
    codes = []
    for _, _, child in children:
        while True:
            try:
                codes.append(child.wait())
                break
            except KeyboardInterrupt:
                for _, _, c in children:
                    c.terminate()
    parts = []
    for seed, out, _ in children:
        try:
            with open(out, encoding="utf-8") as f:
                parts.append(json.load(f))
        except (OSError, ValueError) as e:
            print(f"chaos: driver with seed {seed} left no summary ({e})", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

    def added(key: str) -> dict:
        total: Dict[str, int] = {}
        for part in parts:
            for k, v in part[key].items():
                total[k] = total.get(k, 0) + v
        return dict(sorted(total.items()))

    trials = sum(p["trials"] for p in parts)
    per_kind: Dict[str, List[float]] = {}
    for part in parts:
        for kind, secs in part["seconds_per_trial"].items():
            n = part["faults"].get(kind, 0)
            acc = per_kind.setdefault(kind, [0.0, 0])
            acc[0] += secs * n
            acc[1] += n
    s = {
        "seed": args.seed, "jobs": args.jobs, "driver_seeds": [p["seed"] for p in parts],
        "trials": trials, "trials_planned": args.trials,
        "interrupted": any(p["interrupted"] for p in parts) or len(parts) < args.jobs,
        "wall_seconds": round(now() - t0, 1),
        "netns": all(p["netns"] for p in parts) if parts else False,
        "netns_note": "; ".join(sorted({p["netns_note"] for p in parts if p["netns_note"]})),
        "faults": added("faults"), "invariant_checks": sum(p["invariant_checks"] for p in parts),
        "checks": added("checks"), "outcomes": added("outcomes"),
        "clusters": sum(p["clusters"] for p in parts),
        "seconds_per_trial": {k: round(v[0] / v[1], 2) for k, v in sorted(per_kind.items())
                              if v[1]},
        "daemon_resources": {f"driver{j}": p["daemon_resources"] for j, p in enumerate(parts)},
        "violations": [v for p in parts for v in p["violations"]],
    }
    write_summary(args, s)
    if any(c == 2 for c in codes) and not parts:
        return 2
    return 0 if not s["violations"] and all(c == 0 for c in codes) else 1


def write_summary(args: argparse.Namespace, s: dict) -> None:
    text = json.dumps(s, indent=2)
    if args.json == "-":
        print(text)
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(f"chaos summary: seed {s['seed']}, {s['trials']} trials"
          f"{' (interrupted)' if s['interrupted'] else ''} in {s['wall_seconds']} s, "
          f"faults {s['faults']}, {s['invariant_checks']} invariant checks, "
          f"{len(s['violations'])} violations; netns "
          f"{'on' if s['netns'] else 'off: ' + s['netns_note']}", file=sys.stderr)
    if s["violations"]:
        print(f"chaos: replay with: {s['violations'][0]['replay']}", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=int(os.environ.get("HOLDFAST_CHAOS_TRIALS",
                                                                    "200")))
    p.add_argument("--seed", type=lambda s: int(s, 0),
                   default=os.environ.get("HOLDFAST_CHAOS_SEED"))
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON to PATH ('-': stdout)")
    p.add_argument("--netns", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--keep-going", action="store_true",
                   help="after a violation, start a new cluster and go on")
    p.add_argument("--resource-every", type=int, default=10,
                   help="leak checks every N trials (and after the last)")
    p.add_argument("--artifacts", metavar="DIR",
                   help="where a violation's full daemon logs go (default "
                        "$TMPDIR/holdfast-chaos-<seed>)")
    p.add_argument("--skip", metavar="KIND", action="append", default=[], choices=sorted(KINDS),
                   help="leave this fault kind out of the schedule (repeatable)")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="drivers side by side, each with its own cluster (trials split)")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(32)
    elif isinstance(args.seed, str):
        args.seed = int(args.seed, 0)
    why = tool_env_ok()
    if why:
        print(f"chaos: cannot run: {why}", file=sys.stderr)
        return 2
    if args.jobs > 1:
        return run_jobs(args)
    chaos = Chaos(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    rc = 2
    try:
        rc = chaos.run()
    except Unavailable as e:
        print(f"chaos: cannot run: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        chaos.wall = now() - chaos.t0
        chaos.interrupted = True
        rc = 3
    except Exception as e:  # a crash of the driver: report what it was doing, like a violation
        chaos.wall = now() - chaos.t0
        chaos.record_violation("driver", f"driver error: {e!r}\n{traceback.format_exc()}")
        rc = 1
    finally:
        chaos.close()
    write_summary(args, chaos.summary())
    return rc


if __name__ == "__main__":
    sys.exit(main())
