"""Tests of holdfast._state: flatten / unflatten of training states with real torch objects."""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import os
import pickle
import tempfile
import typing
import unittest
import warnings
import weakref

import numpy as np
import torch

from holdfast._state import (TensorRef, dtype_code, flatten, item_bytes, torch_dtype,
                             unflatten)

Pair = collections.namedtuple("Pair", ["first", "second"])


class Point(typing.NamedTuple):
    x: typing.Any
    y: typing.Any


# holdfast.v1.DType, by torch dtype name.
EXPECTED_CODES = {
    "bool": 2, "uint8": 3, "int8": 4, "int16": 5, "uint16": 6, "int32": 7, "uint32": 8,
    "int64": 9, "uint64": 10, "float16": 11, "bfloat16": 12, "float32": 13, "float64": 14,
    "complex32": 15, "complex64": 16, "complex128": 17, "float8_e4m3fn": 18, "float8_e5m2": 19,
}
TORCH_DTYPES = {name: getattr(torch, name) for name in EXPECTED_CODES
                if isinstance(getattr(torch, name, None), torch.dtype)}


def restore_bytes(items) -> dict[str, torch.Tensor]:
    """What a load hands unflatten: fresh CPU tensors filled from a copy of each item's bytes."""
    tensors = {}
    for item in items:
        saved = bytes(item_bytes(item.tensor.cpu()))
        if len(saved) != item.nbytes:
            raise AssertionError(f"{item.name}: {len(saved)} bytes, nbytes says {item.nbytes}")
        restored = torch.empty(item.shape, dtype=torch_dtype(item.dtype_code))
        item_bytes(restored)[:] = np.frombuffer(saved, dtype=np.uint8)
        tensors[item.name] = restored
    return tensors


def round_trip(state, map_location=None):
    items, skeleton = flatten(state)
    return unflatten(skeleton, restore_bytes(items), map_location=map_location)


def random_tensor(shape, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """A tensor of `dtype` whose bytes are random (including NaN patterns for floats)."""
    tensor = torch.empty(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    item_bytes(tensor)[:] = torch.randint(
        0, 256, (tensor.numel() * tensor.element_size(),), dtype=torch.uint8,
        generator=generator).numpy()
    if dtype == torch.bool:
        tensor = tensor.view(torch.uint8).bitwise_and_(1).view(torch.bool)
    return tensor


def setUpModule():
    # torch warns once that complex32 is experimental; the runner's filter would show it.
    warnings.filterwarnings("ignore", message="ComplexHalf support is experimental")


class StateAssertions(unittest.TestCase):
    def assertBitEqual(self, actual: torch.Tensor, expected: torch.Tensor) -> None:
        """Same dtype, shape and bytes (NaN-safe)."""
        self.assertIsInstance(actual, torch.Tensor)
        self.assertEqual(actual.dtype, expected.dtype)
        self.assertEqual(actual.shape, expected.shape)
        self.assertTrue(actual.is_contiguous())
        expected = expected.detach().resolve_conj().resolve_neg().contiguous()
        self.assertTrue(torch.equal(torch.from_numpy(item_bytes(actual.detach().cpu())),
                                    torch.from_numpy(item_bytes(expected.cpu()))))

    def assertSameState(self, actual, expected, path: str = "state") -> None:
        """Same structure, types and values; tensors bit-equal; floats NaN-aware."""
        self.assertIs(type(actual), type(expected), path)
        if isinstance(expected, torch.Tensor):
            self.assertBitEqual(actual, expected)
            self.assertEqual(actual.requires_grad, expected.requires_grad, path)
            self.assertEqual(actual.device, expected.device, path)
        elif isinstance(expected, dict):
            self.assertEqual(list(actual.keys()), list(expected.keys()), path)
            for key in expected:
                self.assertSameState(actual[key], expected[key], f"{path}[{key!r}]")
        elif isinstance(expected, (list, tuple)):
            self.assertEqual(len(actual), len(expected), path)
            for i, (a, e) in enumerate(zip(actual, expected)):
                self.assertSameState(a, e, f"{path}[{i}]")
        elif isinstance(expected, float) and math.isnan(expected):
            self.assertTrue(math.isnan(actual), path)
        else:
            self.assertEqual(actual, expected, path)


class DTypeCodeTest(unittest.TestCase):
    def test_codes_match_holdfast_dtype(self):
        for name, dtype in TORCH_DTYPES.items():
            self.assertEqual(dtype_code(dtype), EXPECTED_CODES[name], name)
            self.assertIs(torch_dtype(EXPECTED_CODES[name]), dtype, name)

    def test_unsupported(self):
        with self.assertRaises(TypeError):
            dtype_code(torch.qint8)
        with self.assertRaises(ValueError):
            torch_dtype(1)  # DTYPE_BYTES: a blob, not a tensor dtype
        with self.assertRaises(ValueError):
            torch_dtype(0)


class ItemBytesTest(unittest.TestCase):
    def test_views_memory_for_every_dtype(self):
        for dtype in TORCH_DTYPES.values():
            tensor = torch.zeros((2, 3), dtype=dtype)
            view = item_bytes(tensor)
            self.assertEqual(view.dtype, np.uint8)
            self.assertEqual(view.shape, (6 * tensor.element_size(),))
            view[:] = 1
            self.assertTrue(torch.equal(tensor.view(torch.uint8),
                                        torch.ones_like(tensor.view(torch.uint8))), dtype)

    def test_zero_dim_and_empty(self):
        self.assertEqual(item_bytes(torch.tensor(1.5, dtype=torch.float64)).shape, (8,))
        self.assertEqual(item_bytes(torch.empty((0, 4))).shape, (0,))

    def test_rejects_non_contiguous(self):
        with self.assertRaises(ValueError):
            item_bytes(torch.zeros(3, 4).t())
        with self.assertRaises(ValueError):
            item_bytes(torch.zeros(3, dtype=torch.complex64).conj())


class FlattenItemsTest(StateAssertions):
    def test_items_describe_their_tensors(self):
        state = {"a": torch.arange(12, dtype=torch.int16).reshape(3, 4).t(),
                 "b": [torch.tensor(True), torch.empty((0, 7), dtype=torch.bfloat16)]}
        items, _ = flatten(state)
        self.assertEqual([item.name for item in items], ["t/0", "t/1", "t/2"])
        for item, original in zip(items, [state["a"], *state["b"]]):
            self.assertLessEqual(len(item.name), 200)
            self.assertTrue(item.tensor.is_contiguous())
            self.assertEqual(item.tensor.dtype, original.dtype)
            self.assertEqual(item.shape, tuple(original.shape))
            self.assertEqual(item.dtype_code, dtype_code(original.dtype))
            self.assertEqual(item.nbytes, original.numel() * original.element_size())
            self.assertEqual(item.device, "cpu")
            self.assertBitEqual(item.tensor, original)

    def test_contiguous_tensor_is_not_copied(self):
        big = torch.arange(100, dtype=torch.float32)
        items, _ = flatten({"slice": big[10:20]})
        self.assertEqual(items[0].tensor.data_ptr(), big[10:20].data_ptr())
        self.assertEqual(items[0].nbytes, 40)

    def test_skeleton_holds_no_tensor_bytes(self):
        pattern = b"HOLDFAST-PATTERN"
        data = torch.from_numpy(np.frombuffer(pattern * (4 * 2**20 // len(pattern)),
                                              dtype=np.uint8).copy())
        state = {"big": data.view(torch.float32), "step": 7, "name": "run"}
        items, skeleton = flatten(state)
        self.assertEqual(items[0].nbytes, 4 * 2**20)
        self.assertLess(len(skeleton), 1024)
        self.assertNotIn(pattern, skeleton)
        self.assertNotIn(pattern[:8], skeleton)
        self.assertSameState(unflatten(skeleton, restore_bytes(items)), state)


class RoundTripTest(StateAssertions):
    def test_module_state_dict(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
        model(torch.randn(8, 5))  # moves the running stats and num_batches_tracked
        state_dict = model.state_dict()
        self.assertEqual(state_dict["1.num_batches_tracked"].dtype, torch.int64)
        restored = round_trip(state_dict)
        self.assertSameState(restored, state_dict)
        self.assertEqual(restored._metadata, state_dict._metadata)
        fresh = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
        fresh.load_state_dict(restored)
        self.assertSameState(fresh.state_dict(), state_dict)

    def test_optimizer_and_scheduler(self):
        def train(model, optimizer, scheduler, steps, seed):
            generator = torch.Generator().manual_seed(seed)
            for _ in range(steps):
                optimizer.zero_grad()
                model(torch.randn(4, 3, generator=generator)).pow(2).sum().backward()
                optimizer.step()
                scheduler.step()

        def make():
            model = torch.nn.Linear(3, 2)
            optimizer = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
            return model, optimizer, scheduler

        torch.manual_seed(1)
        model, optimizer, scheduler = make()
        train(model, optimizer, scheduler, 3, seed=2)
        state = {"model": model.state_dict(), "opt": optimizer.state_dict(),
                 "sched": scheduler.state_dict(), "step": 3}
        restored = round_trip(state)
        self.assertSameState(restored, state)

        copy_model, copy_optimizer, copy_scheduler = make()
        copy_model.load_state_dict(restored["model"])
        copy_optimizer.load_state_dict(restored["opt"])
        copy_scheduler.load_state_dict(restored["sched"])
        train(model, optimizer, scheduler, 2, seed=3)
        train(copy_model, copy_optimizer, copy_scheduler, 2, seed=3)
        self.assertSameState(copy_model.state_dict(), model.state_dict())
        self.assertSameState(copy_optimizer.state_dict(), optimizer.state_dict())

    def test_nested_containers_and_plain_values(self):
        tensor = torch.arange(6.0)
        state = collections.OrderedDict(
            pair=Pair(first=tensor, second=[1, 2.5, None]),
            point=Point(x=(torch.tensor(3),), y={"deep": [[[torch.ones(2, 2)]]]}),
            values={"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"),
                    "str": "ünïcode", "none": None, "bool": True, "big": 2**80,
                    "complex": 1 - 2j, "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"),
                    "set": {1, "a"}, "frozenset": frozenset({(1, 2)}), "empty": ({}, [], ())},
            torch_values=[torch.float16, torch.device("cpu"), torch.device("cuda", 1),
                          torch.Size([2, 3])],
        )
        state[7] = "int key"
        state[("tuple", "key")] = tensor
        restored = round_trip(state)
        self.assertSameState(restored, state)
        self.assertIs(restored["pair"].first, restored[("tuple", "key")])

    def test_every_dtype(self):
        for seed, (name, dtype) in enumerate(TORCH_DTYPES.items()):
            state = {"2d": random_tensor((3, 5), dtype, seed),
                     "0-dim": random_tensor((), dtype, seed + 100),
                     "empty": random_tensor((4, 0), dtype)}
            with self.subTest(dtype=name):
                self.assertSameState(round_trip(state), state)

    def test_non_contiguous(self):
        base = torch.randn(6, 8, dtype=torch.float64)
        complex_base = torch.randn(4, 3, dtype=torch.complex64)
        state = {
            "transposed": base.t(),
            "step_slice": base[::2, 1::3],
            "expanded": torch.randn(3, 1).expand(3, 5),
            "conj": complex_base.conj(),
            "neg": complex_base.conj().imag,
            "plain_complex": complex_base,
        }
        self.assertFalse(state["transposed"].is_contiguous())
        self.assertTrue(state["conj"].is_conj())
        self.assertTrue(state["neg"].is_neg())
        restored = round_trip(state)
        self.assertSameState(restored, state)
        self.assertTrue(torch.equal(restored["conj"], complex_base.conj()))
        self.assertTrue(torch.equal(restored["plain_complex"], complex_base))

    def test_same_tensor_object_keeps_identity(self):
        weight = torch.randn(4, 4)
        state = {"encoder": weight, "decoder": [weight], "other": torch.randn(4, 4)}
        items, skeleton = flatten(state)
        self.assertEqual(len(items), 2)
        restored = unflatten(skeleton, restore_bytes(items))
        self.assertIs(restored["encoder"], restored["decoder"][0])
        self.assertIsNot(restored["encoder"], restored["other"])

    def test_tied_weights_in_state_dict_share_storage(self):
        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = torch.nn.Embedding(10, 4)
                self.head = torch.nn.Linear(4, 10, bias=False)
                self.head.weight = self.embed.weight

        state_dict = Tied().state_dict()
        # state_dict() detaches each entry: distinct objects viewing the same memory.
        self.assertIsNot(state_dict["embed.weight"], state_dict["head.weight"])
        items, skeleton = flatten(state_dict)
        self.assertEqual(len(items), 1)
        restored = unflatten(skeleton, restore_bytes(items))
        self.assertSameState(restored, state_dict)
        self.assertEqual(restored["embed.weight"].data_ptr(), restored["head.weight"].data_ptr())
        restored["embed.weight"][0, 0] = 42.0
        self.assertEqual(restored["head.weight"][0, 0].item(), 42.0)

    def test_overlapping_views_are_stored_separately(self):
        base = torch.randn(10)
        state = {"base": base, "slice": base[2:5], "typed": base.view(torch.int32)}
        items, skeleton = flatten(state)
        self.assertEqual(len(items), 3)
        self.assertSameState(unflatten(skeleton, restore_bytes(items)), state)

    def test_requires_grad(self):
        leaf = torch.nn.Parameter(torch.randn(3))
        frozen = torch.nn.Parameter(torch.randn(3), requires_grad=False)
        non_leaf = leaf * 2
        plain = torch.randn(3)
        restored = round_trip({"leaf": leaf, "frozen": frozen, "non_leaf": non_leaf,
                               "plain": plain, "again": leaf})
        self.assertIsInstance(restored["leaf"], torch.nn.Parameter)
        self.assertTrue(restored["leaf"].requires_grad)
        self.assertIs(restored["again"], restored["leaf"])
        self.assertIsInstance(restored["frozen"], torch.nn.Parameter)
        self.assertFalse(restored["frozen"].requires_grad)
        self.assertIs(type(restored["non_leaf"]), torch.Tensor)
        self.assertTrue(restored["non_leaf"].requires_grad)
        self.assertTrue(restored["non_leaf"].is_leaf)
        self.assertFalse(restored["plain"].requires_grad)
        self.assertBitEqual(restored["non_leaf"], non_leaf)

    def test_shared_containers_and_cycles(self):
        shared = [torch.ones(2)]
        cyclic: list = []
        cyclic.append(cyclic)
        restored = round_trip({"a": shared, "b": shared, "cycle": cyclic})
        self.assertIs(restored["a"], restored["b"])
        self.assertIs(restored["cycle"][0], restored["cycle"])


def fabricate_device(skeleton: bytes, device: str) -> bytes:
    """The skeleton of a {"w": tensor} state, rewritten to claim the tensor was on `device`."""
    state = pickle.loads(skeleton)  # trusted: the test made it
    state["w"] = dataclasses.replace(state["w"], device=device)
    return pickle.dumps(state, protocol=4)


class MapLocationTest(StateAssertions):
    def setUp(self):
        self.original = torch.randn(3, 2)
        self.items, self.skeleton = flatten({"w": self.original})

    def load(self, map_location, skeleton=None):
        return unflatten(skeleton or self.skeleton, restore_bytes(self.items), map_location)

    def test_cpu_targets(self):
        for map_location in (None, "cpu", torch.device("cpu"), {"cpu": "cpu"},
                             {"cuda:3": "cuda:0"}, {"cpu": torch.device("cpu")}):
            with self.subTest(map_location=map_location):
                restored = self.load(map_location)["w"]
                self.assertEqual(restored.device, torch.device("cpu"))
                self.assertBitEqual(restored, self.original)

    def test_callable(self):
        calls = []

        def to_double(tensor, location):
            calls.append(location)
            return tensor.double()

        restored = self.load(to_double)["w"]
        self.assertEqual(calls, ["cpu"])
        self.assertEqual(restored.dtype, torch.float64)
        self.assertTrue(torch.equal(restored, self.original.double()))
        restored = self.load(lambda storage, location: storage)["w"]
        self.assertBitEqual(restored, self.original)
        restored = self.load(lambda storage, location: None)["w"]  # None: the original device
        self.assertBitEqual(restored, self.original)

    def test_bad_map_location(self):
        with self.assertRaises(TypeError):
            self.load(42)
        with self.assertRaises(TypeError):
            self.load(lambda storage, location: "not a tensor")

    def test_saved_on_cuda_mapped_to_cpu(self):
        skeleton = fabricate_device(self.skeleton, "cuda:0")
        calls = []
        for map_location in ("cpu", torch.device("cpu"), {"cuda:0": "cpu"},
                             lambda storage, location: calls.append(location) or storage):
            with self.subTest(map_location=map_location):
                restored = self.load(map_location, skeleton)["w"]
                self.assertEqual(restored.device, torch.device("cpu"))
                self.assertBitEqual(restored, self.original)
        self.assertEqual(calls, ["cuda:0"])

    @unittest.skipIf(torch.cuda.is_available(),
                     "checks the error raised when CUDA is absent; this process has CUDA")
    def test_saved_on_cuda_without_cuda(self):
        skeleton = fabricate_device(self.skeleton, "cuda:0")
        for map_location in (None, {"cuda:1": "cpu"}, "cuda:0"):
            with self.subTest(map_location=map_location):
                with self.assertRaisesRegex(RuntimeError, r"'t/0'.*cuda:0.*CUDA is not available"):
                    self.load(map_location, skeleton)


class MaliciousSkeletonTest(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.marker = os.path.join(self.directory.name, "pwned")

    def tearDown(self):
        self.directory.cleanup()

    def assertRejected(self, skeleton: bytes) -> None:
        with self.assertRaises(pickle.UnpicklingError):
            unflatten(skeleton, {})
        self.assertFalse(os.path.exists(self.marker))

    def test_os_system_by_hand(self):
        # Protocol 0: GLOBAL os.system, MARK, STRING, TUPLE, REDUCE, STOP.
        self.assertRejected(b"cos\nsystem\n(S'touch " + self.marker.encode() + b"'\ntR.")

    def test_os_system_via_pickler(self):
        command = f"touch {self.marker}"

        class Exploit:
            def __reduce__(self):
                return (os.system, (command,))

        self.assertRejected(pickle.dumps({"w": Exploit()}, protocol=4))

    def test_other_callables(self):
        for target in (eval, getattr, collections.Counter, dataclasses.replace,
                       torch.load, np.frombuffer):
            with self.subTest(target=target):
                self.assertRejected(pickle.dumps(target, protocol=4))

    def test_builtins_only_with_the_arguments_of_their_pickles(self):
        # tests/fuzz/python_state_fuzz.cc: REDUCE of builtins.bytearray with an int allocated
        # what the int said (2 GiB for a few bytes), and set() over it ran past the fuzzer's
        # timeout. Each allowed builtin now accepts only what its own pickle passes it.
        def call(name: str, args: tuple) -> bytes:
            return (b"\x80\x04\x8c\x08builtins\x94\x8c" + bytes([len(name)]) + name.encode()
                    + b"\x94\x93\x94" + pickle.dumps(args, protocol=4)[2:-1] + b"R.")
        for name, args in (("bytearray", (10**9,)), ("bytearray", ([1, 2],)),
                           ("bytearray", ("text", "latin-1")), ("complex", ("1+2j",)),
                           ("set", (b"abc",)), ("frozenset", ({1: 2},)), ("set", ([1], [2]))):
            with self.subTest(name=name, args=args):
                self.assertRejected(call(name, args))
        for value in (bytearray(b"ab"), bytearray(), complex(1, -2.5), {1, 2}, frozenset({3})):
            for protocol in (3, 4):
                with self.subTest(value=value, protocol=protocol):
                    self.assertEqual(unflatten(pickle.dumps(value, protocol=protocol), {}), value)

    def test_namedtuple_of_unimported_module(self):
        # Protocol 0: GLOBAL of a module nobody imported, called with (1, 2).
        self.assertRejected(b"choldfast_not_imported\nPair\n(I1\nI2\ntR.")

    def test_accepts_namedtuples_of_imported_modules(self):
        self.assertEqual(unflatten(pickle.dumps(Pair(1, Point(2, 3)), protocol=4), {}),
                         Pair(1, Point(2, 3)))


class FlattenErrorTest(unittest.TestCase):
    def assertRejectsAt(self, state, path: str) -> None:
        with self.assertRaises(TypeError) as caught:
            flatten(state)
        self.assertIn(path, str(caught.exception))

    def test_sparse_tensor_names_its_path(self):
        state = {"opt": {"state": {0: {"exp_avg": torch.eye(3).to_sparse()}}}}
        self.assertRejectsAt(state, "state['opt']['state'][0]['exp_avg']")

    def test_quantized_tensor(self):
        quantized = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
        self.assertRejectsAt({"q": [quantized]}, "state['q'][0]")

    def test_arbitrary_objects(self):
        self.assertRejectsAt({"f": [1, object()]}, "state['f'][1]")
        self.assertRejectsAt({"np": np.float64(1.0)}, "state['np']")
        self.assertRejectsAt(Pair(first=1, second=lambda: 0), "state.second")
        self.assertRejectsAt(collections.defaultdict(list), "state")

    def test_local_namedtuple_class(self):
        local = collections.namedtuple("Local", ["a"])
        self.assertRejectsAt({"x": local(1)}, "state['x']")

    def test_meta_tensor(self):
        self.assertRejectsAt([torch.empty(3, device="meta")], "state[0]")


class UnflattenErrorTest(unittest.TestCase):
    def setUp(self):
        self.items, self.skeleton = flatten({"w": torch.zeros(2, 3)})

    def test_nothing_outlives_unflatten(self):
        # tests/fuzz/python_state_fuzz.cc: CPython's unpickler hides its memo from the garbage
        # collector, and the memo held a bound method of the unpickler: every unflatten leaked
        # the unpickler with every object of the skeleton, the restored state included (the
        # fuzzer's memory grew by ~17 KiB an input). A restored state must go when dropped,
        # also after a skeleton that fails half way.
        import holdfast._state as state_module
        restorers = []
        real_init = state_module._Restorer.__init__

        def tracked_init(restorer, *args, **kwargs):
            real_init(restorer, *args, **kwargs)
            restorers.append(weakref.ref(restorer))
        state_module._Restorer.__init__ = tracked_init
        self.addCleanup(setattr, state_module._Restorer, "__init__", real_init)
        tensors = {"t/0": torch.zeros(2, 3)}
        _, with_parameter = flatten({"p": torch.nn.Parameter(torch.zeros(2, 3)), "n": [1, 2]})
        state = unflatten(with_parameter, tensors)
        parameter = weakref.ref(state["p"])
        del state
        with self.assertRaises(ValueError):
            unflatten(self.skeleton, {})  # fails in the middle: its item is missing
        gc.collect()
        self.assertEqual(len(restorers), 2)
        self.assertIsNone(parameter(), "the restored state outlived unflatten")
        self.assertEqual([r for r in restorers if r() is not None], [],
                         "an unpickler outlived unflatten")

    def test_missing_item(self):
        with self.assertRaisesRegex(ValueError, "t/0"):
            unflatten(self.skeleton, {})

    def test_wrong_dtype_or_shape(self):
        for tensor in (torch.zeros(3, 2), torch.zeros(2, 3, dtype=torch.float64)):
            with self.subTest(tensor=tensor):
                with self.assertRaisesRegex(ValueError, "t/0"):
                    unflatten(self.skeleton, {"t/0": tensor})

    def test_skeleton_refs_are_tensor_refs(self):
        self.assertIsInstance(pickle.loads(self.skeleton)["w"], TensorRef)

    def test_damaged_skeleton_raises_unpickling_error(self):
        # b"" (EOFError) and frame_overflow (OverflowError) came from
        # tests/fuzz/python_state_fuzz.cc: unflatten documents UnpicklingError for a damaged
        # skeleton; the others raise it from the unpickler itself.
        tensors = {"t/0": torch.zeros(2, 3)}
        frame_overflow = b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff}."
        missing_memo = b"\x80\x04h\x07."  # BINGET of a memo slot never set
        # LONG_BINPUT at slot 2^32 - 16: CPython grows its memo table to the index (gigabytes
        # for 200 bytes in the fuzz run); refused before unpickling.
        huge_memo_index = b"\x80\x04Nr\xf0\xff\xff\xff."
        for damaged in (b"", self.skeleton[:-1], self.skeleton[:len(self.skeleton) // 2],
                        frame_overflow, missing_memo, huge_memo_index):
            with self.subTest(damaged=damaged):
                with self.assertRaises(pickle.UnpicklingError):
                    unflatten(damaged, tensors)


if __name__ == "__main__":
    unittest.main()
