"""Tests of holdfast._rng with the real Python, numpy and torch generators."""

from __future__ import annotations

import random
import unittest

import numpy as np
import torch

from holdfast._rng import rng_state, set_rng_state
from holdfast._state import flatten, item_bytes, torch_dtype, unflatten


def draw() -> list:
    """Numbers from every generator rng_state() covers, gaussians included (numpy caches one)."""
    return [
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        np.random.rand(3).tolist(),
        np.random.randn(3).tolist(),
        torch.rand(3).tolist(),
        torch.randn(3).tolist(),
        torch.randint(0, 2**31, (2,)).tolist(),
    ]


def through_snapshot(state):
    """`state` after flatten, a byte copy of every item, and unflatten."""
    items, skeleton = flatten(state)
    tensors = {}
    for item in items:
        restored = torch.empty(item.shape, dtype=torch_dtype(item.dtype_code))
        item_bytes(restored)[:] = np.frombuffer(bytes(item_bytes(item.tensor.cpu())), np.uint8)
        tensors[item.name] = restored
    return unflatten(skeleton, tensors)


class RngTest(unittest.TestCase):
    def setUp(self):
        random.seed(11)
        np.random.seed(12)
        torch.manual_seed(13)
        np.random.randn()  # leaves a cached gaussian in numpy's state

    def test_restore_repeats_the_sequences(self):
        state = rng_state()
        first = draw()
        set_rng_state(state)
        self.assertEqual(draw(), first)

    def test_round_trip_through_flatten(self):
        state = rng_state()
        first = draw()
        draw()  # move on further
        set_rng_state(through_snapshot(state))
        self.assertEqual(draw(), first)

    def test_state_contents(self):
        state = rng_state()
        version, words, gauss_next = random.getstate()
        self.assertEqual(state["python"]["version"], version)
        self.assertEqual(tuple(state["python"]["words"].tolist()), words)
        self.assertEqual(state["python"]["gauss_next"], gauss_next)
        # Words as tensors: saving them costs a few items, not ~1250 pickled ints.
        items, _ = flatten(state)
        self.assertLessEqual(len(items), 4 + len(state["cuda"]))
        self.assertTrue(torch.equal(state["torch"], torch.get_rng_state()))
        self.assertEqual(state["numpy"]["bit_generator"], "MT19937")
        self.assertEqual(state["numpy"]["key"].shape, (624,))
        self.assertTrue(np.array_equal(state["numpy"]["key"].numpy(), np.random.get_state()[1]))
        self.assertEqual(state["numpy"]["has_gauss"], 1)
        if torch.cuda.is_available():
            self.assertEqual(len(state["cuda"]), torch.cuda.device_count())
        else:
            self.assertEqual(state["cuda"], [])

    def test_snapshot_is_independent_of_later_draws(self):
        state = rng_state()
        saved_torch = state["torch"].clone()
        draw()
        self.assertTrue(torch.equal(state["torch"], saved_torch))

    def test_different_cuda_device_count_changes_nothing(self):
        state = rng_state()
        state["cuda"] = state["cuda"] + [torch.get_rng_state()]  # one generator too many
        draw()
        current = rng_state()
        expected = draw()
        set_rng_state(current)
        with self.assertRaisesRegex(ValueError, "CUDA"):
            set_rng_state(state)
        self.assertEqual(draw(), expected)

    def test_missing_keys(self):
        state = rng_state()
        del state["torch"]
        with self.assertRaisesRegex(ValueError, "torch"):
            set_rng_state(state)


if __name__ == "__main__":
    unittest.main()
