"""Splits a training state into tensor items and a small picklable skeleton, and back.

A state is any nesting of dict, collections.OrderedDict, list, tuple, namedtuple, set and
frozenset whose leaves are torch tensors (or nn.Parameters) and plain values: None, bool, int,
float, complex, str, bytes, bytearray, torch.dtype, torch.device, torch.Size. Types are matched
exactly (no dict subclasses but OrderedDict, whose attributes, such as a state_dict's
``_metadata``, are kept; no numpy scalars or enums). Shared and cyclic containers are kept. Tensor
bytes never go through pickle; only the remainder (the skeleton) does.

API
---
``flatten(state) -> (items, skeleton)``
    ``items`` is a list of ``TensorItem`` (name "t/0", "t/1", ...; a contiguous, detached tensor on
    its original device, holding the bytes to save). ``skeleton`` is a protocol-4 pickle of a copy
    of ``state`` in which every tensor is a ``TensorRef``. Raises TypeError naming the path of the
    first object it cannot save, e.g. ``state['opt']['state'][0]['exp_avg']``.
``unflatten(skeleton, tensors, map_location=None)``
    Rebuilds the state from the skeleton and ``tensors`` (item name -> CPU tensor with the item's
    dtype and shape), placing tensors like ``torch.load``'s ``map_location``. Restored tensors are
    contiguous; requires_grad and the nn.Parameter type are restored. A restored tensor may be the
    very tensor passed in ``tensors``.
``dtype_code(dtype)`` / ``torch_dtype(code)``
    Map torch dtypes to holdfast DType codes (holdfast.v1.DType) and back.
``item_bytes(tensor)``
    A writable uint8 numpy view of a CPU contiguous tensor's bytes, for any dtype.

Sharing
-------
A tensor object that appears several times is saved once and restored as one object. Distinct
tensor objects that are the same view of the same memory (same device, dtype, data pointer, shape
and strides, as the entries of tied weights in a ``state_dict()``) are also saved once; they are
restored as distinct tensors sharing storage, as ``torch.load`` does. Other overlapping views
(a tensor and a slice of it) are saved separately and restored without shared storage.
Non-contiguous tensors are saved as contiguous copies; original strides are not kept. Tensors that
require grad are detached; the restored tensor is a leaf with ``requires_grad=True``.

Skeleton safety
---------------
The skeleton comes from shared memory, so ``unflatten`` unpickles it with a restricted unpickler
that resolves only: the containers and scalars above, ``collections.OrderedDict``, ``torch.Size``,
``torch.device``, torch dtypes, ``TensorRef``, and namedtuple classes. A namedtuple class is any
class that is a tuple subclass with ``_fields`` and ``_make``, found by attribute lookup (no dunder
names) in a module that is already imported: the unpickler never imports modules, so import the
module defining a namedtuple before loading a state that holds one. Anything else raises
``pickle.UnpicklingError``. The builtins a skeleton may call (bytearray, complex, set, frozenset)
accept only the arguments their pickles carry, so unpickling takes memory and time bounded by the
skeleton's length: ``bytearray(10**9)`` in a skeleton is refused, not allocated.
"""

from __future__ import annotations

import collections
import io
import pickle
import pickletools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

import torch

if TYPE_CHECKING:
    import numpy

__all__ = [
    "TensorItem",
    "TensorRef",
    "dtype_code",
    "flatten",
    "item_bytes",
    "torch_dtype",
    "unflatten",
]

# holdfast.v1.DType codes by torch dtype name; names this torch lacks are skipped.
# Code 1 (DTYPE_BYTES, an opaque blob) has no torch dtype.
_CODES_BY_NAME = {
    "bool": 2,
    "uint8": 3,
    "int8": 4,
    "int16": 5,
    "uint16": 6,
    "int32": 7,
    "uint32": 8,
    "int64": 9,
    "uint64": 10,
    "float16": 11,
    "bfloat16": 12,
    "float32": 13,
    "float64": 14,
    "complex32": 15,
    "complex64": 16,
    "complex128": 17,
    "float8_e4m3fn": 18,
    "float8_e5m2": 19,
}
_CODE_BY_DTYPE: dict[torch.dtype, int] = {
    getattr(torch, name): code
    for name, code in _CODES_BY_NAME.items()
    if isinstance(getattr(torch, name, None), torch.dtype)
}
_DTYPE_BY_CODE: dict[int, torch.dtype] = {code: dtype for dtype, code in _CODE_BY_DTYPE.items()}

# Leaf values kept as they are; exact types, so that subclasses (enums, numpy scalars) whose
# classes the restricted unpickler would refuse are rejected at save time instead.
_PLAIN_TYPES = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device,
     torch.Size}
)
# Builtins a protocol-4 pickle of the plain values above refers to by name.
_PICKLE_PROTOCOL = 4

# What the unpickler raises for a truncated or garbled pickle besides UnpicklingError (the pickle
# documentation names AttributeError, EOFError, ImportError and IndexError; OverflowError was found
# by tests/fuzz/python_state_fuzz.cc). unflatten turns them into UnpicklingError.
_DAMAGED_PICKLE_ERRORS = (AttributeError, EOFError, ImportError, IndexError, OverflowError)

MapLocation = Union[
    None,
    str,
    torch.device,
    dict[str, Union[str, torch.device]],
    Callable[[torch.Tensor, str], Union[torch.Tensor, None]],
]


@dataclass
class TensorItem:
    """One tensor to save."""

    name: str  # unique within one flatten() result: "t/0", "t/1", ...
    tensor: torch.Tensor  # contiguous, detached, original dtype, shape and device
    dtype_code: int  # holdfast.v1.DType
    shape: tuple[int, ...]
    nbytes: int  # tensor.numel() * tensor.element_size()
    device: str  # "cpu" or "cuda:N"
    source: torch.Tensor  # the tensor of the state (first one seen, for shared views)


@dataclass(frozen=True)
class TensorRef:
    """Stands for a tensor in the skeleton. Part of the skeleton format: change with care."""

    name: str  # the TensorItem holding the bytes
    dtype_code: int
    shape: tuple[int, ...]
    device: str  # where the tensor was: "cpu" or "cuda:N"
    requires_grad: bool
    parameter: bool  # an nn.Parameter

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (TensorRef, (self.name, self.dtype_code, self.shape, self.device,
                            self.requires_grad, self.parameter))


def dtype_code(dtype: torch.dtype) -> int:
    """The holdfast DType code of `dtype`; TypeError if holdfast cannot store it."""
    code = _CODE_BY_DTYPE.get(dtype)
    if code is None:
        raise TypeError(f"holdfast cannot store tensors of dtype {dtype}")
    return code


def torch_dtype(code: int) -> torch.dtype:
    """The torch dtype of holdfast DType `code`; ValueError if this torch has none."""
    dtype = _DTYPE_BY_CODE.get(code)
    if dtype is None:
        raise ValueError(f"holdfast DType code {code} has no dtype in torch {torch.__version__}")
    return dtype


def item_bytes(tensor: torch.Tensor) -> numpy.ndarray:
    """A uint8 numpy array viewing (not copying) the bytes of a CPU contiguous tensor.

    Writing to the array writes the tensor. ValueError for CUDA, non-contiguous, or lazily
    conjugated / negated tensors (whose memory does not hold their values).
    """
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError("item_bytes needs a contiguous CPU tensor")
    if tensor.is_conj() or tensor.is_neg():
        raise ValueError("item_bytes needs a tensor without a lazy conjugate or negative bit")
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


def flatten(state: Any) -> tuple[list[TensorItem], bytes]:
    """Splits `state` into tensor items and a skeleton; see the module docstring."""
    flattener = _Flattener()
    copy = flattener.walk(state, "state")
    return flattener.items, pickle.dumps(copy, protocol=_PICKLE_PROTOCOL)


def unflatten(skeleton: bytes, tensors: dict[str, torch.Tensor],
              map_location: MapLocation = None) -> Any:
    """Rebuilds a state from `skeleton` and `tensors`; see the module docstring.

    `map_location` follows torch.load: None restores each tensor to its original device (a
    RuntimeError names the tensor if that is a CUDA device this process lacks); a str or
    torch.device moves every tensor there; a dict maps original device strings ("cuda:1") to
    devices, others stay; a callable(cpu_tensor, original_device_str) returns the tensor to use, or
    None for the original device. Raises pickle.UnpicklingError for a skeleton naming anything but
    the allowed classes or that is not a whole pickle, ValueError if `tensors` lacks an item or
    has a wrong dtype or shape. A damaged skeleton whose sizes or memo indices exceed its own
    length is refused before unpickling (CPython's unpickler would allocate what it claims).
    """
    _check_claims(skeleton)
    try:
        return _Unpickler(skeleton, tensors, map_location).load()
    except _DAMAGED_PICKLE_ERRORS as e:
        raise pickle.UnpicklingError(
            f"holdfast skeleton is damaged: {type(e).__name__}: {e}") from e


# Opcodes whose argument is a memo index (the unpickler grows its memo table to the index).
_MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _check_claims(skeleton: bytes) -> None:
    """Walks the skeleton's opcodes without running them (pickletools.genops reads each length-
    prefixed argument only as far as the data goes) and refuses a memo index or frame size beyond
    what a pickle of this length can hold: found by tests/fuzz/python_state_fuzz.cc, where 200
    bytes made CPython's unpickler allocate gigabytes."""
    limit = len(skeleton)
    try:
        for op, arg, _ in pickletools.genops(skeleton):
            if (op.name in _MEMO_OPS or op.name == "FRAME") and isinstance(arg, int) \
                    and not 0 <= arg <= limit:
                raise pickle.UnpicklingError(
                    f"holdfast skeleton is damaged: {op.name} {arg} in a pickle of {limit} bytes")
    except pickle.UnpicklingError:
        raise
    except Exception as e:  # genops: ValueError for a bad opcode or a short argument
        raise pickle.UnpicklingError(
            f"holdfast skeleton is damaged: {type(e).__name__}: {e}") from e


class _Flattener:
    """Copies a state, replacing tensors by TensorRefs and collecting TensorItems."""

    def __init__(self) -> None:
        self.items: list[TensorItem] = []
        self._refs: dict[int, TensorRef] = {}  # id(tensor) -> its ref
        self._names_by_view: dict[tuple[Any, ...], str] = {}  # see _view_key
        self._copies: dict[int, Any] = {}  # id(container) -> its copy, for shared containers

    def walk(self, obj: Any, path: str) -> Any:
        kind = type(obj)
        if kind in _PLAIN_TYPES:
            return obj
        if isinstance(obj, torch.Tensor):
            return self._tensor(obj, path)
        copy = self._copies.get(id(obj))
        if copy is not None:
            return copy
        if kind is dict or kind is collections.OrderedDict:
            copy = self._copies[id(obj)] = kind()
            for key, value in obj.items():
                copy[self.walk(key, f"{path} (key {key!r})")] = self.walk(value, f"{path}[{key!r}]")
            # An OrderedDict's attributes, as the `_metadata` of a module state_dict().
            for attr, value in getattr(obj, "__dict__", {}).items():
                setattr(copy, attr, self.walk(value, f"{path}.{attr}"))
        elif kind is list:
            copy = self._copies[id(obj)] = []
            copy.extend(self.walk(value, f"{path}[{i}]") for i, value in enumerate(obj))
        elif kind is tuple:
            copy = tuple(self.walk(value, f"{path}[{i}]") for i, value in enumerate(obj))
        elif kind is set or kind is frozenset:
            copy = kind(self.walk(value, f"{path}{{...}}") for value in obj)
        elif _is_namedtuple_class(kind):
            _check_namedtuple(obj, path)
            copy = kind._make(self.walk(getattr(obj, field), f"{path}.{field}")
                              for field in kind._fields)
        else:
            raise TypeError(f"{path}: holdfast cannot save an object of type "
                            f"{kind.__module__}.{kind.__qualname__}")
        self._copies[id(obj)] = copy
        return copy

    def _tensor(self, tensor: torch.Tensor, path: str) -> TensorRef:
        ref = self._refs.get(id(tensor))
        if ref is not None:
            return ref
        _check_tensor(tensor, path)
        code = _CODE_BY_DTYPE.get(tensor.dtype)
        if code is None:
            raise TypeError(f"{path}: holdfast cannot store tensors of dtype {tensor.dtype}")
        key = _view_key(tensor)
        name = self._names_by_view.get(key)
        if name is None:
            name = self._names_by_view[key] = f"t/{len(self.items)}"
            data = tensor.detach().resolve_conj().resolve_neg().contiguous()
            self.items.append(TensorItem(
                name=name, tensor=data, dtype_code=code, shape=tuple(data.shape),
                nbytes=data.numel() * data.element_size(), device=str(data.device),
                source=tensor))
        ref = self._refs[id(tensor)] = TensorRef(
            name=name, dtype_code=code, shape=tuple(tensor.shape), device=str(tensor.device),
            requires_grad=tensor.requires_grad, parameter=isinstance(tensor, torch.nn.Parameter))
        return ref


def _view_key(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Equal for tensors that are the same view of the same memory (hence hold the same values)."""
    return (tensor.device, tensor.dtype, tensor.data_ptr(), tuple(tensor.shape), tensor.stride(),
            tensor.is_conj(), tensor.is_neg())


def _check_tensor(tensor: torch.Tensor, path: str) -> None:
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise TypeError(f"{path}: holdfast cannot save tensor subclass {type(tensor).__qualname__}")
    if tensor.layout != torch.strided or tensor.is_nested:
        raise TypeError(f"{path}: holdfast cannot save {tensor.layout} or nested tensors; "
                        "convert to a dense tensor first")
    if tensor.is_quantized:
        raise TypeError(f"{path}: holdfast cannot save quantized tensors")
    if tensor.device.type not in ("cpu", "cuda"):
        raise TypeError(f"{path}: holdfast cannot save tensors on device {tensor.device}")


def _is_namedtuple_class(obj: Any) -> bool:
    return (isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields")
            and hasattr(obj, "_make"))


def _check_namedtuple(obj: tuple, path: str) -> None:
    """Rejects namedtuples the copy or the restricted unpickler would get wrong."""
    kind = type(obj)
    if _find_loaded_class(kind.__module__, kind.__qualname__) is not kind:
        raise TypeError(f"{path}: namedtuple class {kind.__qualname__} cannot be found by name in "
                        f"module {kind.__module__}; define it at module level")
    if getattr(obj, "__dict__", None):
        raise TypeError(f"{path}: namedtuple {kind.__qualname__} has instance attributes besides "
                        "its fields, which holdfast would lose")


def _find_loaded_class(module: str, qualname: str) -> Any:
    """`module`.`qualname` if the module is already imported and the path has no dunder names."""
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        if obj is None or part.startswith("__"):
            return None
        obj = getattr(obj, part, None)
    return obj


def _skeleton_bytearray(*args: Any) -> bytearray:
    """builtins.bytearray as a skeleton may call it: with the bytes it holds (how protocol 4
    pickles one), never with a size or an iterable, which would let a few bytes of skeleton ask
    for gigabytes or minutes of work (found by tests/fuzz/python_state_fuzz.cc)."""
    if not args:
        return bytearray()
    if len(args) == 1 and type(args[0]) is bytes:
        return bytearray(args[0])
    raise pickle.UnpicklingError("holdfast skeleton calls bytearray with other arguments than "
                                 "its bytes")


def _skeleton_complex(*args: Any) -> complex:
    """builtins.complex as a skeleton may call it: with its real and imaginary parts."""
    if len(args) <= 2 and all(type(a) in (int, float) for a in args):
        return complex(*args)
    raise pickle.UnpicklingError("holdfast skeleton calls complex with other arguments than "
                                 "two numbers")


def _skeleton_set(kind: type) -> Callable[..., Any]:
    """builtins.set / frozenset as a skeleton may call them (protocol 3 pickles sets so):
    with a list or tuple the skeleton holds, so the work is bounded by its length."""
    def build(*args: Any) -> Any:
        if not args:
            return kind()
        if len(args) == 1 and type(args[0]) in (list, tuple):
            return kind(args[0])
        raise pickle.UnpicklingError(f"holdfast skeleton calls {kind.__name__} with other "
                                     "arguments than a list of its items")
    return build


# The builtins a skeleton may call, each checking its arguments.
_SAFE_BUILTINS: dict[str, Callable[..., Any]] = {
    "bytearray": _skeleton_bytearray,
    "complex": _skeleton_complex,
    "set": _skeleton_set(set),
    "frozenset": _skeleton_set(frozenset),
}


class _Unpickler(pickle.Unpickler):
    """Unpickles a skeleton, turning each TensorRef into a tensor placed per map_location."""

    def __init__(self, skeleton: bytes, tensors: dict[str, torch.Tensor],
                 map_location: MapLocation) -> None:
        super().__init__(io.BytesIO(skeleton))
        # find_class hands out the restorer's bound method, and the unpickler keeps it in its
        # memo. CPython's unpickler does not show its memo to the garbage collector, so a bound
        # method of the unpickler itself there would make a cycle nothing frees: every unflatten
        # would leak the unpickler and all the skeleton's objects (the restored state with them;
        # found by tests/fuzz/python_state_fuzz.cc, whose memory grew with every input).
        self._restorer = _Restorer(tensors, map_location)

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "TensorRef":
            return self._restorer.restore
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch":
            if name == "Size":
                return torch.Size
            if name == "device":
                return torch.device
            if isinstance(getattr(torch, name, None), torch.dtype):
                return getattr(torch, name)
        found = _find_loaded_class(module, name)
        if _is_namedtuple_class(found):
            return found
        raise pickle.UnpicklingError(
            f"holdfast skeleton refers to {module}.{name}, which is not an allowed class (plain "
            "containers and scalars, OrderedDict, torch.Size/device/dtype, namedtuples from "
            "already imported modules)")


class _Restorer:
    """Turns TensorRefs into tensors placed per map_location; holds no reference to the
    unpickler (see _Unpickler.__init__)."""

    def __init__(self, tensors: dict[str, torch.Tensor], map_location: MapLocation) -> None:
        self._tensors = tensors
        self._map_location = map_location
        self._placed: dict[str, torch.Tensor] = {}  # item name -> its first restored tensor

    def restore(self, name: str, dtype_code: int, shape: tuple[int, ...], device: str,
                requires_grad: bool, parameter: bool) -> torch.Tensor:
        placed = self._placed.get(name)
        if placed is None:
            tensor = placed = self._placed[name] = self._place(name, dtype_code, shape, device)
        else:
            # Another object viewing the same memory: share the storage, not the object.
            tensor = placed.detach()
        if parameter:
            return torch.nn.Parameter(tensor, requires_grad=requires_grad)
        return tensor.requires_grad_(requires_grad)

    def _place(self, name: str, dtype_code: int, shape: tuple[int, ...],
               location: str) -> torch.Tensor:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise ValueError(f"holdfast skeleton refers to tensor item {name!r}, which is missing")
        dtype = torch_dtype(dtype_code)
        if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"tensor item {name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                             f"the skeleton says {dtype} {tuple(shape)}")
        target: Any = location
        map_location = self._map_location
        if isinstance(map_location, (str, torch.device)):
            target = map_location
        elif isinstance(map_location, dict):
            target = map_location.get(location, location)
        elif callable(map_location):
            mapped = map_location(tensor, location)
            if isinstance(mapped, torch.Tensor):
                return mapped
            if mapped is not None:
                raise TypeError(f"map_location returned {type(mapped).__qualname__} for tensor "
                                f"item {name!r}; expected a tensor or None")
        elif map_location is not None:
            raise TypeError(f"unsupported map_location {map_location!r}")
        device = torch.device(target)
        if device.type == "cuda":
            _check_cuda_device(name, location, device)
        return tensor.to(device)


def _check_cuda_device(name: str, location: str, device: torch.device) -> None:
    """RuntimeError, as torch.load raises, if `device` does not exist in this process."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"tensor item {name!r} (saved on {location}) would be restored to {device}, but CUDA "
            "is not available; pass map_location='cpu' (or a torch.device) to restore it elsewhere")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(
            f"tensor item {name!r} (saved on {location}) would be restored to {device}, but this "
            f"process sees {torch.cuda.device_count()} CUDA devices; pass a map_location")
