"""Captures and restores the random number generators a training loop draws from.

``rng_state() -> dict`` returns, under fixed keys:

- ``"python"``: ``random.getstate()`` as a dict: ``version`` (int), ``words`` (the 625 Mersenne
  Twister words as an int64 tensor) and ``gauss_next`` (float or None);
- ``"numpy"``: the global numpy generator's state, a dict with ``bit_generator`` (str), ``key``
  (the 624 uint32 words as an int64 tensor), ``pos``, ``has_gauss`` (ints) and ``cached_gaussian``
  (float); present only if numpy is importable;
- ``"torch"``: ``torch.get_rng_state()`` (a CPU uint8 tensor);
- ``"cuda"``: ``torch.cuda.get_rng_state_all()`` (one CPU uint8 tensor per CUDA device); an empty
  list when CUDA is not available.

The dict is a state ``holdfast._state.flatten`` handles, so it can be saved with the training
state. The generators' words are tensors, not tuples of ints, so that saving them every step
costs a few tensor items instead of walking and pickling ~1250 Python ints. ``set_rng_state(state)`` restores every generator in it; it raises ValueError if the state
holds a different number of CUDA devices than this process sees, or a numpy state while numpy is
not importable. Tensors restored to a GPU (by a map_location) are accepted.
"""

from __future__ import annotations

import random
from typing import Any

import torch

try:
    import numpy
except ImportError:  # numpy is optional
    numpy = None

__all__ = ["rng_state", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """The states of the Python, numpy, torch CPU and CUDA generators; see the module docstring."""
    version, words, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "words": torch.tensor(words, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if numpy is not None:
        bit_generator, key, pos, has_gauss, cached_gaussian = numpy.random.get_state()
        state["numpy"] = {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(key.astype(numpy.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the generators from a `rng_state()` result; see the module docstring.

    Checks everything before restoring anything, so a ValueError leaves the generators unchanged.
    """
    missing = {"python", "torch", "cuda"} - state.keys()
    if missing:
        raise ValueError(f"not an rng_state(): missing {sorted(missing)}")
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(state["cuda"]) != cuda_count:
        raise ValueError(f"the RNG state holds {len(state['cuda'])} CUDA generators but this "
                         f"process sees {cuda_count} CUDA devices")
    if "numpy" in state and numpy is None:
        raise ValueError("the RNG state holds a numpy generator but numpy is not importable")

    saved_python = state["python"]
    random.setstate((
        saved_python["version"],
        tuple(saved_python["words"].cpu().tolist()),
        saved_python["gauss_next"],
    ))
    torch.set_rng_state(state["torch"].cpu())
    if cuda_count:
        torch.cuda.set_rng_state_all([generator.cpu() for generator in state["cuda"]])
    if "numpy" in state:
        saved = state["numpy"]
        numpy.random.set_state((
            saved["bit_generator"],
            saved["key"].cpu().numpy().astype(numpy.uint32),
            saved["pos"],
            saved["has_gauss"],
            saved["cached_gaussian"],
        ))
