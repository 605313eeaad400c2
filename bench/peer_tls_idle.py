#!/usr/bin/python3
"""peer_tls_idle: the control plane's constant CPU cost with mutual TLS on vs off.

An idle 2+1 cluster (three holdfastd on loopback, no job) still polls every member ten times a
second (GroupState over the control address). This starts such a cluster with cluster.tls off
and on, alternately, waits until every member sees every other up, and measures the CPU seconds
all daemons use over --seconds. Protection traffic itself is UCX (not encrypted either way), so
this is what TLS adds outside the rounds; the rounds' own control calls are a few per round.

    /usr/bin/python3 bench/peer_tls_idle.py --build build-dev --seconds 20 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_bench as cb  # noqa: E402  (its Daemon, certificates and CPU readers)


def run(build: str, tls: bool, seconds: float, rep: int) -> float:
    root = os.path.join(tempfile.gettempdir(), f"hf-tls-idle-{os.getpid()}-{rep}-{int(tls)}")
    os.makedirs(root, exist_ok=True)
    cluster_file = os.path.join(root, "cluster.yaml")
    with open(cluster_file, "w") as f:
        f.write(f"cluster_id: idle-{os.getpid()}\ncode: {{k: 2, m: 1}}\nnodes:\n")
        for i in range(3):
            f.write(f"  - {{id: n{i}, control: 127.0.0.1:{cb.free_port()}, "
                    f"data: 127.0.0.1:{cb.free_port()}}}\n")
    daemons = []
    try:
        for i in range(3):
            flags = cb.make_peer_cert(os.path.join(root, "pki"), f"n{i}") if tls else None
            d = cb.Daemon(os.path.join(build, "smp", "holdfastd"), root, f"n{i}", cluster_file,
                          256 * cb.MIB, "background", "/dev/shm", 1, flags)
            d.start()
            daemons.append(d)
        deadline = time.monotonic() + 60
        while True:
            sts = [d.status() for d in daemons]
            if all(st and all(m["up"] for m in st["cluster"]["members"]) for st in sts):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("members not all up within 60 s")
            time.sleep(0.1)
        time.sleep(2)
        before = sum(d.cpu() for d in daemons)
        t0 = time.monotonic()
        time.sleep(seconds)
        used = sum(d.cpu() for d in daemons) - before
        return used / (time.monotonic() - t0)
    finally:
        for d in daemons:
            d.stop()
            shutil.rmtree(d.shm_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default="build-dev")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    print(f"peer_tls_idle {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load {os.getloadavg()[0]:.2f}, {args.seconds:.0f} s per sample")
    results = {False: [], True: []}
    for rep in range(args.repeats):
        for tls in (False, True):
            share = run(args.build, tls, args.seconds, rep)
            results[tls].append(share)
            print(f"  repeat {rep} tls {'on ' if tls else 'off'}: 3 idle daemons use "
                  f"{share * 1000:.1f} ms CPU per second")
    for tls in (False, True):
        xs = results[tls]
        print(f"tls {'on ' if tls else 'off'}: {sum(xs) / len(xs) * 1000:.1f} ms CPU/s "
              f"(min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f})")
    print(f"load after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
