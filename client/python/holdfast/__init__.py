"""holdfast: in-memory, erasure-coded snapshots of a PyTorch training job.

A trainer keeps its latest state in the RAM of the holdfastd daemon on its node, so that after a
crash the restarted trainer resumes in seconds, bit for bit::

    import holdfast

    snap = holdfast.Snapshotter("my-job")              # rank/world size from torchrun's env
    step, state = 0, None
    if snap.latest_step() is not None:
        step, state = snap.load()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optim"])
        holdfast.set_rng_state(state["rng"])
    for step in range(step + 1, steps + 1):
        loss = model(batch(step)).sum()
        loss.backward()
        if handle is not None:
            handle.wait_staged()       # before tensors change: the optimizer step
        optimizer.step()
        optimizer.zero_grad()
        handle = snap.save(step, {"model": model.state_dict(), "optim": optimizer.state_dict(),
                                  "rng": holdfast.rng_state()})

``save`` returns at once; the library copies the tensors into the daemon's shared memory on its own
threads (CUDA tensors with cudaMemcpyAsync on its own stream) while the trainer computes. The
handle's ``wait_staged()`` returns once the tensors may change again; ``wait()`` once the snapshot
is committed. Tensor bytes never go through pickle: only the small remainder of the state (the
structure, plain values) does, as one opaque item.

Errors raise ``holdfast.HoldfastError`` with the daemon's status and message.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from . import _state
from ._errors import HoldfastError
from ._rng import rng_state, set_rng_state

__all__ = [
    "DEFAULT_ENDPOINT",
    "HoldfastError",
    "SaveHandle",
    "Snapshotter",
    "rng_state",
    "set_rng_state",
]

DEFAULT_ENDPOINT = "unix:/run/holdfast/holdfastd.sock"

# The pickled structure of a snapshot is stored as this opaque item.
_SKELETON_ITEM = "__holdfast_skeleton__"
_DTYPE_BYTES = 1
_DEVICE_CPU, _DEVICE_CUDA = 0, 1


def _native():
    # Imported lazily so that the pure-Python parts (and their tests) work without the build.
    from . import _holdfast

    return _holdfast


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


class SaveHandle:
    """One asynchronous snapshot.

    ``wait_staged(timeout=None)``: blocks until the library no longer reads the saved tensors (the
    trainer may change them); returns False on timeout, raises the snapshot's error.
    ``wait(timeout=None)``: blocks until committed; returns a dict of timings, None on timeout,
    raises the snapshot's error. ``done()``: committed or failed. ``exception()``: the error of a
    finished snapshot, else None (does not block).
    """

    def __init__(self, native_handle, keepalive) -> None:
        self._handle = native_handle
        # The tensors (and contiguous copies) the library reads until staged, and the skeleton.
        self._keepalive = keepalive
        self._error: Optional[BaseException] = None
        self._stats: Optional[dict] = None

    @property
    def step(self) -> int:
        return self._handle.step

    def staged(self) -> bool:
        return self._handle.staged()

    def done(self) -> bool:
        return self._handle.done()

    def wait_staged(self, timeout: Optional[float] = None) -> bool:
        try:
            staged = self._handle.wait_staged(timeout)
        except HoldfastError as e:
            self._error = e
            self._keepalive = None
            raise
        if staged:
            self._keepalive = None
        return staged

    def wait(self, timeout: Optional[float] = None) -> Optional[dict]:
        if self._stats is not None:
            return self._stats
        if self._error is not None:
            raise self._error
        try:
            stats = self._handle.wait(timeout)
        except HoldfastError as e:
            self._error = e
            self._keepalive = None
            raise
        if stats is not None:
            self._stats = stats
            self._keepalive = None
        return stats

    def exception(self) -> Optional[BaseException]:
        if not self._handle.done():
            return None
        try:
            self.wait()
        except HoldfastError as e:
            return e
        return None

    def __del__(self) -> None:
        # Never let the tensors go while the library may still read them.
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.release()

    def __repr__(self) -> str:
        state = "done" if self.done() else "staged" if self.staged() else "staging"
        return f"<holdfast.SaveHandle step={self.step} {state}>"


class Snapshotter:
    """The connection of one trainer rank to the holdfastd of its node.

    ``job``: the job's id, the same on every rank. ``rank`` / ``world_size``: default to torchrun's
    RANK / WORLD_SIZE (else 0 / 1). The ranks on this node are derived from LOCAL_RANK and
    LOCAL_WORLD_SIZE (else just this rank). ``endpoint``: $HOLDFAST_ENDPOINT, else
    ``unix:/run/holdfast/holdfastd.sock``; a bare path means a Unix socket. ``copy_threads``:
    threads that copy and checksum (0: up to 4, as many as the machine has).
    """

    def __init__(
        self,
        job: str,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        endpoint: Optional[str] = None,
        *,
        local_ranks: Optional[list] = None,
        copy_threads: int = 0,
        rpc_timeout: float = 60.0,
    ) -> None:
        if not job:
            raise ValueError("holdfast.Snapshotter needs a job id")
        env_rank = _env_int("RANK")
        self.rank = rank if rank is not None else (env_rank if env_rank is not None else 0)
        env_world = _env_int("WORLD_SIZE")
        self.world_size = (
            world_size if world_size is not None else (env_world if env_world is not None else 1)
        )
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if local_ranks is None:
            local_rank = _env_int("LOCAL_RANK")
            local_world = _env_int("LOCAL_WORLD_SIZE")
            if local_rank is not None and local_world is not None:
                first = self.rank - local_rank
                local_ranks = list(range(first, first + local_world))
            else:
                local_ranks = [self.rank]
        self.local_ranks = list(local_ranks)
        endpoint = endpoint or os.environ.get("HOLDFAST_ENDPOINT") or DEFAULT_ENDPOINT
        if endpoint.startswith("/"):
            endpoint = "unix:" + endpoint
        self.endpoint = endpoint
        self.job = job
        self._client = _native().Client(
            endpoint, job, self.rank, self.world_size, self.local_ranks, copy_threads, rpc_timeout
        )

    # ---- saving ---------------------------------------------------------------------------

    def save(self, step: int, state: Any) -> SaveHandle:
        """Starts saving ``state`` as this rank's snapshot of ``step``; returns at once.

        ``state``: nested dicts / lists / tuples of tensors (CPU or CUDA, any dtype) and plain
        Python values. The tensors must not change until the handle is staged.
        """
        items, skeleton = _state.flatten(state)
        skeleton_tensor = torch.frombuffer(bytearray(skeleton), dtype=torch.uint8)
        native_items = []
        cuda_devices = set()
        for item in items:
            t = item.tensor
            if t.device.type == "cuda":
                device, index = _DEVICE_CUDA, t.device.index or 0
                cuda_devices.add(index)
            elif t.device.type == "cpu":
                device, index = _DEVICE_CPU, 0
            else:
                raise TypeError(f"item {item.name}: tensors on {t.device} cannot be saved")
            native_items.append(
                (item.name, item.dtype_code, list(item.shape), t.data_ptr(), item.nbytes, device,
                 index)
            )
        native_items.append(
            (_SKELETON_ITEM, _DTYPE_BYTES, [], skeleton_tensor.data_ptr(), len(skeleton),
             _DEVICE_CPU, 0)
        )
        # The library copies on its own stream: the work that produced the tensors (queued on
        # the current streams) must be finished first.
        for index in sorted(cuda_devices):
            torch.cuda.current_stream(index).synchronize()
        handle = self._client.save_async(int(step), native_items)
        return SaveHandle(handle, (items, skeleton_tensor))

    # ---- loading --------------------------------------------------------------------------

    def latest_step(self) -> Optional[int]:
        """The step to resume from, or None: in a cluster the restore point (the newest step
        committed on every rank and protected in every group, the same on every node), else the
        newest step every rank of the job on this node has committed."""
        return self._client.latest_step()

    def load(self, step: Optional[int] = None, map_location=None):
        """Returns ``(step, state)``: the newest complete step (or ``step``) with its state.

        Tensors are bit-identical to the saved ones and placed as ``torch.load``'s
        ``map_location`` would (default: where they were saved). Raises HoldfastError
        (NOT_FOUND) when there is no such snapshot.
        """
        if step is None:
            step = self._client.latest_step()
            if step is None:
                raise HoldfastError(5, "NOT_FOUND", f"job {self.job} has no complete snapshot")
        (infos,) = self._client.list_items(step)
        native = _native()
        tensors = {}
        targets = []
        skeleton = None
        for name, dtype_code, shape, nbytes in infos:
            if name == _SKELETON_ITEM:
                skeleton = torch.empty(nbytes, dtype=torch.uint8)
                buf = skeleton
            else:
                buf = torch.empty(shape, dtype=_state.torch_dtype(dtype_code))
                if buf.numel() * buf.element_size() != nbytes:
                    raise HoldfastError(
                        15, "DATA_LOSS", f"item {name}: {nbytes} bytes do not fit shape {shape}"
                    )
                tensors[name] = buf
            if nbytes:
                native.prefault(buf.data_ptr(), nbytes)
            targets.append((name, buf.data_ptr(), nbytes))
        if skeleton is None:
            raise HoldfastError(
                9, "FAILED_PRECONDITION",
                f"step {step} of job {self.job} was not saved by holdfast.Snapshotter "
                f"(no {_SKELETON_ITEM} item)",
            )
        restored = self._client.restore(step, targets)
        state = _state.unflatten(skeleton.numpy().tobytes(), tensors, map_location)
        return restored, state

    def load_into(self, state: Any, step: Optional[int] = None):
        """Restores ``step`` (newest when None) into the tensors of ``state``, in place.

        ``state`` must have the structure that was saved (the same model's ``state_dict()``, an
        optimizer that has state, ...): its tensors, in the same order, must match the saved ones
        in dtype and shape (ValueError otherwise; nothing is written then). Contiguous CPU tensors
        are written directly by the library (no allocation, no extra copy); others through a
        staging buffer. Returns ``(step, restored)``: the saved structure, with plain values from
        the snapshot and the tensors of ``state``.
        """
        if step is None:
            step = self._client.latest_step()
            if step is None:
                raise HoldfastError(5, "NOT_FOUND", f"job {self.job} has no complete snapshot")
        (infos,) = self._client.list_items(step)
        items, _ = _state.flatten(state)
        saved = {name: (code, tuple(shape), nbytes) for name, code, shape, nbytes in infos}
        skeleton_info = saved.pop(_SKELETON_ITEM, None)
        if skeleton_info is None:
            raise HoldfastError(
                9, "FAILED_PRECONDITION",
                f"step {step} of job {self.job} was not saved by holdfast.Snapshotter")
        if {i.name for i in items} != set(saved):
            raise ValueError(f"the state has {len(items)} tensors, step {step} has {len(saved)}: "
                             "not the structure that was saved")
        for item in items:
            want = saved[item.name]
            if (item.dtype_code, item.shape, item.nbytes) != want:
                raise ValueError(
                    f"tensor {item.name} of the state is {item.tensor.dtype} {list(item.shape)}, "
                    f"the saved one has dtype code {want[0]} and shape {list(want[1])}")
        native = _native()
        skeleton = torch.empty(skeleton_info[2], dtype=torch.uint8)
        targets = [(_SKELETON_ITEM, skeleton.data_ptr(), skeleton.numel())]
        direct, staged = {}, []
        for item in items:
            src = item.source
            if src.device.type == "cpu" and src.is_contiguous() and not src.is_conj() \
                    and not src.is_neg() and item.tensor.data_ptr() == src.data_ptr():
                buf = src.detach()
                direct[item.name] = buf
            else:
                buf = torch.empty(item.shape, dtype=src.dtype)
                if item.nbytes:
                    native.prefault(buf.data_ptr(), item.nbytes)
                staged.append((item, buf))
            targets.append((item.name, buf.data_ptr(), item.nbytes))
        restored = self._client.restore(step, targets)
        with torch.no_grad():
            for item, buf in staged:
                item.source.copy_(buf)
        # The structure and plain values from the snapshot around the caller's tensors (detached
        # views of them, or the very tensors where unflatten can pass them through).
        structure = _state.unflatten(skeleton.numpy().tobytes(),
                                     {item.name: item.source.detach() for item in items})
        return restored, structure

    def drop(self, step: Optional[int] = None) -> None:
        """Frees one step of the job (every step when None)."""
        self._client.drop(step)

    def close(self) -> None:
        """Finishes the snapshots already asked for and disconnects."""
        self._client.close()

    def __enter__(self) -> "Snapshotter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<holdfast.Snapshotter job={self.job!r} rank={self.rank}/{self.world_size} "
            f"endpoint={self.endpoint!r}>"
        )
