#!/usr/bin/python3
"""The holdfast demo: a node is lost with its RAM, and training resumes bit for bit.

On this machine: a 3-node 2+1 cluster (deploy/local-cluster.sh), a 2-rank PyTorch job
(deploy/demo_train.py: one rank on node n0, one on n1, DistributedDataParallel over gloo)
snapshotting every step. Node n1 is lost mid-run: its holdfastd is SIGKILLed and its shared memory
and data directory are wiped, and the job crashes with it. A replacement n1 starts empty,
`holdfast recover --node n1` follows its rebuild from n0 and n2, the job restarts from the restore
point, and its losses are compared with an uninterrupted run, bit for bit. Everything it starts is
stopped and removed at the end, also on failure or Ctrl-C.

    deploy/demo.sh                      # builds, then runs this
    /usr/bin/python3 deploy/demo.py --build build-release [--steps 60] [--lose-at 25] [--keep]

Exit status 0 when the resumed run matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JOB = "demo"
LOST = 1  # the node lost: n1, where rank 1 trains


def say(text: str = "") -> None:
    print(text, flush=True)


def banner(n: int, text: str) -> None:
    say(f"\n\033[1m[{n}/6] {text}\033[0m" if sys.stdout.isatty() else f"\n[{n}/6] {text}")


def find(build: str, name: str) -> str:
    for dirpath, _, files in os.walk(build):
        if name in files and os.access(os.path.join(dirpath, name), os.X_OK):
            return os.path.join(dirpath, name)
    raise SystemExit(f"demo: no {name} under {build}; build it first (deploy/demo.sh does)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free a moment ago, drawn below the kernel's ephemeral range so
    that no outgoing connection (of this demo or of anything running alongside) takes it before
    the rank that listens on it binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.randrange(10000, max(11000, ephemeral_low))))
            except OSError:
                continue
            return s.getsockname()[1]
    raise SystemExit("demo: found no free TCP port on 127.0.0.1")


class Job:
    """The ranks of one run of demo_train.py, started as torchrun would start them."""

    def __init__(self, args, endpoints: list, resume: bool, snapshot: bool = True) -> None:
        port = free_port()
        env = dict(os.environ, PYTHONPATH=args.python_dir, OMP_NUM_THREADS="1",
                   WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", LOCAL_RANK="0",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        # The job's secrets (docs/security.md) live with the demo's cluster
        # directory, removed with it, not in $HOME.
        env.setdefault("HOLDFAST_SECRET_DIR", os.path.join(args.dir, "secrets"))
        self.procs = []
        for rank in range(2):
            cmd = [sys.executable, os.path.join(HERE, "demo_train.py"), "--job", JOB,
                   "--steps", str(args.steps), "--endpoint", endpoints[rank]]
            if resume:
                cmd.append("--resume")
            if not snapshot:
                cmd.append("--no-snapshot")
            if args.pace:
                cmd += ["--pace", str(args.pace)]
            self.procs.append(subprocess.Popen(cmd, env=dict(env, RANK=str(rank)),
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True))
        self.records: list = [[], []]

    def lines(self, rank: int):
        for line in self.procs[rank].stdout:
            rec = json.loads(line)
            self.records[rank].append(rec)
            yield rec

    def finish(self) -> None:
        errors = []
        for rank, p in enumerate(self.procs):
            out, err = p.communicate(timeout=900)
            self.records[rank] += [json.loads(x) for x in out.splitlines() if x.strip()]
            if p.returncode != 0:
                errors.append(f"rank {rank} exited with {p.returncode}:\n{err[-3000:]}")
        if errors:
            raise RuntimeError("\n".join(errors))

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for rank, p in enumerate(self.procs):
            out, _ = p.communicate()
            self.records[rank] += [json.loads(x) for x in out.splitlines() if x.strip()]

    def losses(self, rank: int) -> dict:
        return {r["step"]: r["loss"] for r in self.records[rank] if "step" in r}

    def final(self, rank: int) -> str:
        return next(r["final"] for r in self.records[rank] if "final" in r)

    def restored(self, rank: int):
        return next(r["restored"] for r in self.records[rank] if "restored" in r)


class Demo:
    def __init__(self, args) -> None:
        self.args = args
        self.holdfast = find(args.build, "holdfast")
        self.cluster = None
        self.replacement = None
        self.jobs: list = []

    # ---- the cluster ---------------------------------------------------------------------

    def local_cluster(self, *argv: str) -> None:
        subprocess.run([os.path.join(HERE, "local-cluster.sh"), *argv, "--dir", self.args.dir],
                       check=True)

    def start_cluster(self) -> None:
        self.local_cluster("start", "3", "--k", "2", "--m", "1", "--bin", self.args.build,
                           "--budget", "1GiB")
        with open(os.path.join(self.args.dir, "cluster.json"), encoding="utf-8") as f:
            self.cluster = json.load(f)

    def node(self, i: int) -> dict:
        return self.cluster["nodes"][i]

    def cli(self, node: int, *argv: str, check: bool = False) -> subprocess.CompletedProcess:
        cmd = [self.holdfast, "--socket", self.node(node)["socket"], *argv]
        say("$ holdfast " + " ".join(argv) + f"        (on n{node})")
        return subprocess.run(cmd, check=check)

    def status_json(self, node: int) -> dict:
        out = subprocess.run([self.holdfast, "--socket", self.node(node)["socket"], "status",
                              "--json"], capture_output=True, text=True)
        if not out.stdout.strip():
            return {}
        return json.loads(out.stdout)

    def restore_point(self, node: int) -> int:
        for job in self.status_json(node).get("jobs", []):
            if job["job_id"] == JOB:
                return job["restore_point"]
        return -1

    def lose_node(self, i: int) -> None:
        n = self.node(i)
        os.kill(n["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{n['pid']}") and time.monotonic() < deadline:
            with open(f"/proc/{n['pid']}/stat", encoding="utf-8") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
            time.sleep(0.05)
        for d in (n["shm_dir"], n["data_dir"]):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(n["shm_dir"], exist_ok=True)

    def start_replacement(self, i: int) -> None:
        n = self.node(i)
        with open(n["log"], "a", encoding="utf-8") as log:
            log.write("==== demo: replacement started ====\n")
            log.flush()
            self.replacement = subprocess.Popen(
                [self.cluster["holdfastd"], "--config", n["config"]], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.status_json(i):  # answering (the socket file alone is not enough)
            if self.replacement.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the replacement n{i} did not start; see {n['log']}")
            time.sleep(0.1)

    def print_logs(self, lines: int = 40) -> None:
        """The end of every daemon's log (they go with the cluster's directory)."""
        for i, n in enumerate(self.cluster["nodes"] if self.cluster else []):
            try:
                with open(n["log"], errors="replace") as f:
                    tail = f.readlines()[-lines:]
            except OSError:
                continue
            say(f"\n--- n{i}: the last {len(tail)} lines of {n['log']} ---")
            sys.stdout.write("".join(tail))

    def cleanup(self) -> None:
        for job in self.jobs:
            job.kill()
        if self.replacement is not None and self.replacement.poll() is None:
            self.replacement.terminate()
            try:
                self.replacement.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.replacement.kill()
        if self.cluster is not None and not self.args.keep:
            subprocess.run([os.path.join(HERE, "local-cluster.sh"), "stop", "--dir",
                            self.args.dir], stdout=subprocess.DEVNULL)
            say(f"\ncleaned up: daemons stopped, {self.args.dir} and the shared memory removed")
        elif self.cluster is not None:
            say(f"\n--keep: the cluster is still running; stop it with: "
                f"deploy/local-cluster.sh stop --dir {self.args.dir}")

    # ---- the story -----------------------------------------------------------------------

    def run(self) -> bool:
        a = self.args
        say("holdfast demo: a 3-node 2+1 erasure-coded cluster on this machine, a 2-rank PyTorch "
            "job\nsnapshotting every step, and node n1 lost with its RAM in the middle of training.")

        banner(1, f"reference: the same job, {a.steps} steps, never interrupted, no holdfast")
        t = time.monotonic()
        ref = Job(a, ["unused", "unused"], resume=False, snapshot=False)
        self.jobs.append(ref)
        ref.finish()
        say(f"done in {time.monotonic() - t:.1f} s; final loss {float.fromhex(ref.losses(0)[a.steps]):.4f}")

        banner(2, "a local cluster: n0, n1, n2 in one 2+1 group (deploy/local-cluster.sh)")
        self.start_cluster()
        self.cli(0, "status")

        banner(3, f"the job: rank 0 on n0, rank 1 on n1, a snapshot every step; n1 is lost "
                  f"after step {a.lose_at}")
        endpoints = [self.node(0)["endpoint"], self.node(1)["endpoint"]]
        run1 = Job(a, endpoints, resume=True)
        self.jobs.append(run1)
        for rec in run1.lines(0):
            if "step" in rec and (rec["step"] % 5 == 0 or rec["step"] == a.lose_at):
                say(f"  step {rec['step']:3d}  loss {float.fromhex(rec['loss']):.4f}  "
                    f"restore point {self.restore_point(0)}")
            if rec.get("step") == a.lose_at:
                break
        else:
            raise RuntimeError("the job ended before the loss")
        deadline = time.monotonic() + 60
        while self.restore_point(0) < a.lose_at - 5:
            if time.monotonic() > deadline:
                raise RuntimeError("the restore point does not follow the job")
            time.sleep(0.2)

        banner(4, "node n1 is lost: holdfastd SIGKILLed, its shared memory and data directory "
                  "wiped; the job crashes")
        self.lose_node(LOST)
        run1.kill()
        reached = max(run1.losses(0))
        say(f"  the job had reached step {reached}; n1's memory is gone")
        time.sleep(1.5)  # a few health checks: n0 sees n1 down
        self.cli(0, "status")

        banner(5, "a replacement n1 starts empty; holdfast recover rebuilds its share from n0 "
                  "and n2")
        self.start_replacement(LOST)
        rc = self.cli(LOST, "recover", "--node", f"n{LOST}", "--wait", "300").returncode
        if rc != 0:
            raise RuntimeError(f"holdfast recover exited with {rc}")

        banner(6, "the job restarts on n0 and the new n1 and resumes from the restore point")
        run2 = Job(a, endpoints, resume=True)
        self.jobs.append(run2)
        run2.finish()
        resumed = run2.restored(0)
        say(f"  both ranks restored step {run2.restored(0)} / {run2.restored(1)} and ran to step "
            f"{a.steps}")
        self.cli(LOST, "ls", "--job", JOB)

        # ---- the verdict
        same = True
        compared = 0
        for r in range(2):
            ref_losses = ref.losses(r)
            for s, loss in run1.losses(r).items():
                same &= loss == ref_losses[s]
            for s, loss in run2.losses(r).items():
                same &= loss == ref_losses[s]
                compared += 1
            same &= sorted(run2.losses(r)) == list(range(resumed + 1, a.steps + 1))
            same &= run2.final(r) == ref.final(r)
        say()
        if same and resumed == run2.restored(1):
            say(f"RESULT: the resumed run's losses (steps {resumed + 1}-{a.steps}, both ranks, "
                f"{compared} values) and final parameters equal the uninterrupted run's, bit for "
                "bit.")
            return True
        say("RESULT: MISMATCH: the resumed run differs from the uninterrupted one")
        return False


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build-release"))
    p.add_argument("--dir", default="/tmp/holdfast-demo")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--lose-at", type=int, default=25)
    p.add_argument("--pace", type=float, default=0.05, help="seconds of extra time per step")
    p.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    args = p.parse_args()
    args.build = os.path.abspath(args.build)
    args.python_dir = os.path.join(args.build, "python")
    if not os.path.isdir(os.path.join(args.python_dir, "holdfast")):
        raise SystemExit(f"demo: no Python package in {args.python_dir}; build it first")
    if not 5 < args.lose_at < args.steps:
        raise SystemExit("demo: --lose-at must be between 6 and --steps - 1")
    demo = Demo(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        return 0 if demo.run() else 1
    except (RuntimeError, subprocess.CalledProcessError) as e:
        say(f"\ndemo failed: {e}")
        demo.print_logs()
        return 1
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
