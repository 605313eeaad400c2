#!/usr/bin/python3
"""torch.save / torch.load of a state dict to /dev/shm: the peer that
bench/smp_bench measures holdfastd's hand-off and restore against.

Run it with Debian's /usr/bin/python3 (python3-torch); other Pythons on PATH
may lack torch.

Two modes:

  torch_save_bench.py [--items 64] [--item-bytes 16M] [--repeats 7]
      Standalone: random fp32 tensors; prints the median and min-max of the
      timed torch.save and torch.load calls.

  torch_save_bench.py --serve --data FILE --out PATH [--items N]
      Driven by smp_bench over stdin/stdout, so that its calls interleave
      with smp_bench's other contenders. The state dict is built from the raw
      bytes of FILE (the very bytes smp_bench hands to holdfastd), cut into
      `items` fp32 tensors, each with its own storage, all written once (so
      the tensors are pre-faulted, like smp_bench's source buffer). Prints
      "ready <torch version> <numpy version> <python version>", then answers
      one line per command:
        save  -> "<seconds>"  times torch.save(state, PATH) only, then deletes
                              PATH (untimed)
        load  -> "<seconds>"  torch.save(state, PATH) untimed, then times
                              torch.load(PATH) only (the file is warm in the
                              tmpfs), checks the first and last tensors, then
                              deletes PATH and the loaded tensors (untimed)
        stage -> "ok"         torch.save(state, PATH), untimed, and keeps PATH
                              (for --load-once in another process)
        unstage -> "ok"       deletes PATH
        quit  -> exits
      Any failure prints "error <text>" and exits 1.

  torch_save_bench.py --load-once PATH
      Times torch.load(PATH) in this new process (fresh memory, as in a
      restarted trainer) and prints "<seconds>".
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch


def parse_bytes(text):
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale != 1 else text) * scale


def state_from_file(path, items):
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % (items * 4) != 0:
        raise ValueError(f"{path}: {raw.size} bytes do not split into {items} fp32 tensors")
    flat = torch.from_numpy(raw.view(np.float32))
    n = flat.numel() // items
    # clone(): one storage per tensor, as in a real state dict (views of one
    # storage would be written as a single storage).
    return {f"layer{i:02d}.weight": flat[i * n:(i + 1) * n].clone() for i in range(items)}


def random_state(items, item_bytes):
    n = item_bytes // 4
    return {f"layer{i:02d}.weight": torch.rand(n, dtype=torch.float32) for i in range(items)}


def time_save(state, path):
    start = time.perf_counter()
    torch.save(state, path)
    seconds = time.perf_counter() - start
    os.remove(path)
    return seconds


def time_load(state, path):
    torch.save(state, path)
    start = time.perf_counter()
    loaded = torch.load(path)
    seconds = time.perf_counter() - start
    os.remove(path)
    for name in (next(iter(state)), next(reversed(state))):
        if not torch.equal(loaded[name].view(torch.int32), state[name].view(torch.int32)):
            raise RuntimeError(f"torch.load returned different bytes for {name}")
    del loaded
    return seconds


def serve(args):
    state = state_from_file(args.data, args.items)
    versions = f"{torch.__version__} {np.__version__} {sys.version.split()[0]}"
    print(f"ready {versions}", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "save":
            print(f"{time_save(state, args.out):.9f}", flush=True)
        elif command == "load":
            print(f"{time_load(state, args.out):.9f}", flush=True)
        elif command == "stage":
            torch.save(state, args.out)
            print("ok", flush=True)
        elif command == "unstage":
            os.remove(args.out)
            print("ok", flush=True)
        elif command == "quit":
            return
        else:
            raise ValueError(f"unknown command '{command}'")


def standalone(args):
    state = random_state(args.items, args.item_bytes)
    total = args.items * args.item_bytes
    print(f"torch {torch.__version__}: {args.items} x {args.item_bytes} bytes fp32 -> {args.out}")
    for what, fn in (("torch.save", time_save), ("torch.load", time_load)):
        times = [fn(state, args.out) for _ in range(args.repeats)]
        med = statistics.median(times)
        print(f"{what}: {med:.3f} s median ({min(times):.3f}-{max(times):.3f}), "
              f"{total / med / 1e9:.2f} GB/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="take commands on stdin")
    parser.add_argument("--data", help="raw bytes to build the state dict from (--serve)")
    parser.add_argument("--out", default="/dev/shm/torch_save_bench.pt", help="file to save to")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--item-bytes", type=parse_bytes, default=16 << 20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--load-once", metavar="PATH", help="time one torch.load of PATH")
    args = parser.parse_args()
    try:
        if args.load_once:
            start = time.perf_counter()
            loaded = torch.load(args.load_once)
            print(f"{time.perf_counter() - start:.9f} {len(loaded)}", flush=True)
        elif args.serve:
            if not args.data:
                parser.error("--serve needs --data")
            serve(args)
        else:
            standalone(args)
    except Exception as e:  # reported on the protocol line, not as a traceback
        print(f"error {type(e).__name__}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
