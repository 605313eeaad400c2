"""holdfast.Snapshotter against a real holdfastd: save / load round trips, handles, errors."""

from __future__ import annotations

import collections
import os
import threading
import unittest
from unittest import mock

import torch

import holdfast
from daemon import Daemon, require_daemon


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(-1).view(torch.uint8), b.contiguous().view(-1).view(torch.uint8))


def _training_state(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        model(torch.randn(8, 32)).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    extra = {
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "half_t": torch.randn(4, 6).half().t(),  # non-contiguous
        "bool": torch.rand(7) > 0.5,
        "int8": torch.randint(-100, 100, (9,), dtype=torch.int8),
        "complex": torch.randn(3, dtype=torch.complex64),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
        "big": torch.randn(1 << 20),  # 4 MiB: several copy pieces
    }
    return {
        "model": model.state_dict(),
        "optim": opt.state_dict(),
        "sched": sched.state_dict(),
        "extra": extra,
        "meta": {"epoch": 3, "name": "run", "lr": float("nan"), "none": None, "tuple": (1, "a")},
        "rng": holdfast.rng_state(),
    }


def _assert_same(test: unittest.TestCase, a, b, path="state") -> None:
    if isinstance(a, torch.Tensor):
        test.assertIsInstance(b, torch.Tensor, path)
        test.assertTrue(_bits_equal(a, b), path)
    elif isinstance(a, dict):
        test.assertEqual(type(a), type(b), path)
        test.assertEqual(list(a.keys()), list(b.keys()), path)
        for k in a:
            _assert_same(test, a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        test.assertEqual(type(a), type(b), path)
        test.assertEqual(len(a), len(b), path)
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(test, x, y, f"{path}[{i}]")
    elif isinstance(a, float) and a != a:
        test.assertTrue(b != b, path)
    else:
        test.assertEqual(a, b, path)


class SnapshotterTest(unittest.TestCase):
    def setUp(self) -> None:
        require_daemon()
        self.daemon = Daemon()
        self.addCleanup(self.daemon.close)

    def snapshotter(self, **kw) -> holdfast.Snapshotter:
        s = holdfast.Snapshotter("job", endpoint=self.daemon.endpoint, **kw)
        self.addCleanup(s.close)
        return s

    def test_round_trip_is_bit_exact(self) -> None:
        snap = self.snapshotter(rank=0, world_size=1)
        self.assertIsNone(snap.latest_step())
        state = _training_state()
        h = snap.save(10, state)
        self.assertEqual(h.step, 10)
        self.assertTrue(h.wait_staged())
        stats = h.wait()
        self.assertEqual(stats["step"], 10)
        self.assertTrue(stats["version_complete"])
        self.assertTrue(h.done())
        self.assertIsNone(h.exception())
        self.assertEqual(snap.latest_step(), 10)
        step, loaded = snap.load()
        self.assertEqual(step, 10)
        _assert_same(self, state, loaded)
        # The restored state loads back into fresh objects.
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
        )
        model.load_state_dict(loaded["model"])
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt.load_state_dict(loaded["optim"])

    def test_tensors_may_change_once_staged(self) -> None:
        snap = self.snapshotter()
        t = torch.arange(1 << 20, dtype=torch.float32)
        h = snap.save(1, {"t": t})
        h.wait_staged()
        t.zero_()
        h.wait()
        _, loaded = snap.load(1)
        self.assertTrue(torch.equal(loaded["t"], torch.arange(1 << 20, dtype=torch.float32)))

    def test_load_a_given_step_and_map_location(self) -> None:
        snap = self.snapshotter()
        for step in (1, 2):
            snap.save(step, {"w": torch.full((3,), float(step)), "step": step}).wait()
        step, state = snap.load(1, map_location="cpu")
        self.assertEqual((step, state["step"]), (1, 1))
        self.assertTrue(torch.equal(state["w"], torch.full((3,), 1.0)))
        _, state = snap.load(map_location=lambda t, loc: t.to(torch.device("cpu")))
        self.assertEqual(state["step"], 2)

    def test_no_snapshot_raises_not_found(self) -> None:
        snap = self.snapshotter()
        with self.assertRaises(holdfast.HoldfastError) as cm:
            snap.load()
        self.assertEqual(cm.exception.code_name, "NOT_FOUND")

    def test_step_not_newer_fails_on_the_handle(self) -> None:
        snap = self.snapshotter()
        snap.save(5, {"x": torch.ones(4)}).wait()
        h = snap.save(5, {"x": torch.ones(4)})
        with self.assertRaises(holdfast.HoldfastError) as cm:
            h.wait()
        self.assertEqual(cm.exception.code_name, "FAILED_PRECONDITION")
        self.assertIsInstance(h.exception(), holdfast.HoldfastError)
        self.assertEqual(snap.latest_step(), 5)

    def test_daemon_gone_fails_on_the_handle_and_training_goes_on(self) -> None:
        snap = self.snapshotter(rpc_timeout=10.0)
        snap.save(1, {"x": torch.ones(4)}).wait()
        self.daemon.kill()
        h = snap.save(2, {"x": torch.ones(4)})
        with self.assertRaises(holdfast.HoldfastError) as cm:
            h.wait()
        self.assertEqual(cm.exception.code_name, "UNAVAILABLE")
        self.assertIn("step 2", str(cm.exception))
        # Training code catches it and continues; the next save fails the same way.
        self.assertIsInstance(snap.save(3, {"x": torch.ones(4)}).exception() or
                              _wait_error(snap.save(3, {"x": torch.ones(4)})),
                              holdfast.HoldfastError)

    def test_saving_goes_on_across_a_daemon_restart(self) -> None:
        snap = self.snapshotter()
        snap.save(1, {"x": torch.ones(4)}).wait()
        self.daemon.restart()
        snap.save(2, {"x": torch.full((4,), 2.0)}).wait()
        step, state = snap.load()
        self.assertEqual(step, 2)
        self.assertTrue(torch.equal(state["x"], torch.full((4,), 2.0)))

    def test_rank_and_world_from_torchrun_env(self) -> None:
        env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
        with mock.patch.dict(os.environ, env):
            snap = holdfast.Snapshotter("job-env", endpoint=self.daemon.endpoint)
        self.addCleanup(snap.close)
        self.assertEqual((snap.rank, snap.world_size, snap.local_ranks), (3, 4, [2, 3]))
        with mock.patch.dict(os.environ, {"HOLDFAST_ENDPOINT": self.daemon.socket}):
            snap2 = holdfast.Snapshotter("job-env2", rank=0, world_size=1)
        self.addCleanup(snap2.close)
        self.assertEqual(snap2.endpoint, self.daemon.endpoint)
        with self.assertRaises(ValueError):
            holdfast.Snapshotter("job", rank=2, world_size=2, endpoint=self.daemon.endpoint)

    def test_wait_releases_the_gil(self) -> None:
        snap = self.snapshotter(copy_threads=1)
        big = {"t%d" % i: torch.randn(4 << 20) for i in range(8)}  # 128 MiB
        ticks = []
        stop = threading.Event()

        def ticker() -> None:
            while not stop.is_set():
                ticks.append(1)
                stop.wait(0.001)

        h = snap.save(1, big)
        t = threading.Thread(target=ticker)
        t.start()
        before = len(ticks)
        h.wait()
        stop.set()
        t.join()
        self.assertGreater(len(ticks), before)

    def test_namedtuple_and_ordered_dict_structure(self) -> None:
        snap = self.snapshotter()
        state = collections.OrderedDict(a=[torch.ones(2), (torch.zeros(1), "s")], b={"c": 1})
        snap.save(1, state).wait()
        _, loaded = snap.load()
        _assert_same(self, state, loaded)


class LoadIntoTest(unittest.TestCase):
    def setUp(self) -> None:
        require_daemon()
        self.daemon = Daemon()
        self.addCleanup(self.daemon.close)
        self.snap = holdfast.Snapshotter("job", endpoint=self.daemon.endpoint)
        self.addCleanup(self.snap.close)

    def test_restores_in_place_into_an_existing_state(self) -> None:
        saved = _training_state(seed=1)
        self.snap.save(4, saved).wait()
        target = _training_state(seed=2)  # same structure, other values
        weight = target["model"]["0.weight"]
        ptr = weight.data_ptr()
        step, restored = self.snap.load_into(target)
        self.assertEqual(step, 4)
        _assert_same(self, saved, restored)
        # Written in place: the caller's tensor holds the saved bytes, same memory.
        self.assertEqual(weight.data_ptr(), ptr)
        self.assertTrue(_bits_equal(weight, saved["model"]["0.weight"]))
        self.assertTrue(_bits_equal(target["extra"]["half_t"], saved["extra"]["half_t"]))

    def test_mismatched_structure_is_refused_and_nothing_written(self) -> None:
        self.snap.save(1, {"a": torch.ones(4), "b": torch.zeros(2)}).wait()
        other = {"a": torch.full((5,), 7.0), "b": torch.zeros(2)}
        with self.assertRaises(ValueError):
            self.snap.load_into(other)
        self.assertTrue(torch.equal(other["a"], torch.full((5,), 7.0)))
        with self.assertRaises(ValueError):
            self.snap.load_into({"a": torch.ones(4)})


def _wait_error(h):
    try:
        h.wait()
    except holdfast.HoldfastError as e:
        return e
    return None


if __name__ == "__main__":
    unittest.main()
