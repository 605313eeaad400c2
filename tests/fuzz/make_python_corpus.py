#!/usr/bin/python3
"""Writes tests/fuzz/corpus/python_state/: skeletons made by holdfast._state.flatten from real
training-like states, whose tensor items match those python_state_fuzz.cc passes to unflatten
(t/0 float32 [4], t/1 int64 [2, 3], t/2 bfloat16 [1], t/3 uint8 [0]).

Usage: make_python_corpus.py OUT_DIR   (run by tests/fuzz/run.sh --seeds)
"""
import collections
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "client", "python"))
import torch  # noqa: E402
from holdfast import _state  # noqa: E402


def tensors():
    return (torch.arange(4, dtype=torch.float32), torch.zeros(2, 3, dtype=torch.int64),
            torch.ones(1, dtype=torch.bfloat16), torch.zeros(0, dtype=torch.uint8))


def states():
    a, b, c, d = tensors()
    yield "model_and_optimizer", {
        "model": collections.OrderedDict([("w", a)]),
        "optimizer": {"state": {0: {"step": 3, "exp_avg": b}}, "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "bias": c,
        "empty": d,
    }
    od = collections.OrderedDict([("w", a), ("ids", b)])
    od._metadata = {"": {"version": 1}}
    yield "ordered_dict_metadata", {"sd": od, "c": c, "e": d}
    yield "plain_values", {
        "w": a, "ids": b, "c": c, "e": d,
        "values": [None, True, 7, 2.5, 1 + 2j, "text", b"raw", bytearray(b"ba")],
        "sets": ({1, 2}, frozenset({"x"})),
        "torch": (torch.float16, torch.device("cpu"), torch.Size([2, 3])),
    }
    shared = [a, a, b, c, d]
    shared.append(shared)  # a cycle
    yield "shared_and_cyclic", shared
    p = torch.nn.Parameter(a.clone())
    yield "parameter", {"p": p, "ids": b, "c": c, "e": d}


def main() -> None:
    out = os.path.join(sys.argv[1], "python_state")
    os.makedirs(out, exist_ok=True)
    for name, state in states():
        items, skeleton = _state.flatten(state)
        want = [(f"t/{i}", t.dtype, t.shape) for i, t in enumerate(tensors())]
        assert [(i.name, i.tensor.dtype, i.tensor.shape) for i in items] == want, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(skeleton)
        print(f"{name}: {len(skeleton)} bytes, items "
              f"{[(i.name, str(i.tensor.dtype), tuple(i.tensor.shape)) for i in items]}")


if __name__ == "__main__":
    main()
