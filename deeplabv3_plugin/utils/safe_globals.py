"""What a checkpoint may name, for the safe loader: :data:`GLOBALS`, and nothing else.

Each global maps to a checked stand-in: containers and plain values, tensors through checked
wrappers of torch's ``_rebuild_*``, ``torch.Size``/``torch.device``/dtypes, and inert *records*
for ``HistoryBuffer`` and numpy dtypes, arrays and scalars (numpy 1.x and 2.x names), which
:mod:`.checkpoint` turns into real objects from checked data. Every check tests a value's type
before comparing or hashing it, and messages are built only on failure, from short reprs.
"""
import pickle
import reprlib
import types
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, Union

import torch

from deeplabv3_plugin.engine.errors import UserInputError

__all__ = ['CheckpointError', 'GLOBALS', 'UnsafeCheckpointError']


class CheckpointError(pickle.UnpicklingError, UserInputError):
    """A checkpoint file could not be loaded; the tools print it in one paragraph, exit 2."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asks for something the safe loader refuses to build."""


_SHORT = reprlib.Repr()  # short reprs of the file's values, for messages
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 2
#: Types a dict key or set item may have: hashing them is cheap and runs nothing.
_SCALARS = (str, int, float, bool, bytes, type(None))


def _refuse(what: str) -> None:
    raise UnsafeCheckpointError(what)


def _require(ok: bool, what: Union[str, Callable[[], str]]) -> None:
    """Refuse unless ``ok``; ``what`` may be a function, so a message is only built on failure."""
    if not ok:
        _refuse(what if isinstance(what, str) else what())


def _is_int(x: Any, low: int = 0, high: int = 2**63) -> bool:
    return type(x) is int and low <= x < high


def _is_int_tuple(x: Any, max_len: int = 64) -> bool:
    return isinstance(x, tuple) and len(x) <= max_len and all(_is_int(v) for v in x)


def _is_key(x: Any) -> bool:
    return type(x) in _SCALARS or (type(x) is tuple and all(type(v) in _SCALARS for v in x))


# --- inert records ------------------------------------------------------------------------------
class _Record:
    """Built in place of a real object: its kind (``numpy.dtype``, ``numpy array``, ``numpy
    scalar``, ``HistoryBuffer``, ``statistic``), arguments and BUILD state, nothing else."""
    __slots__ = ('kind', 'args', 'state', 'built')

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind, self.args, self.state, self.built = kind, args, None, False

    def build(self, state: Any) -> None:
        _require(not self.built, lambda: f'a second BUILD on a {self.kind}')
        self.state, self.built = state, True


def is_record(obj: Any, kind: str) -> bool:
    return type(obj) is _Record and obj.kind == kind


# The numpy.ndarray and HistoryBuffer globals: markers, valid only where the pickle needs them.
_NDARRAY, _HISTORY_BUFFER = _Record('numpy.ndarray class'), _Record('HistoryBuffer class')
#: Numeric dtypes an array or scalar may have (no object, void, string or datetime dtypes).
_NUMERIC_DTYPES = frozenset('b1 i1 i2 i4 i8 u1 u2 u4 u8 f2 f4 f8 c8 c16'.split())
#: Tensor storages: the plain dtypes (no quantized storages, which need a quantizer).
_STORAGE_DTYPES = frozenset((torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                             torch.int64, torch.float16, torch.bfloat16, torch.float32,
                             torch.float64, torch.complex64, torch.complex128))


# --- the only callables a checkpoint can reach --------------------------------------------------
def _ordered_dict(*args: Any) -> OrderedDict:
    _require(not args, 'OrderedDict called with arguments')  # items come with SETITEMS
    return OrderedDict()


def _counter(items: Any = None) -> Counter:  # an lr scheduler's milestones
    _require(items is None or (type(items) is dict and all(
        _is_key(k) and type(v) is int for k, v in items.items())), 'a malformed Counter')
    return Counter(items or {})


def _size(dims: Any = ()) -> torch.Size:
    _require(_is_int_tuple(dims), 'torch.Size of something other than non-negative ints')
    return torch.Size(dims)


def _device(kind: Any, index: Any = None) -> torch.device:
    _require(type(kind) is str and len(kind) < 32 and (index is None or _is_int(index, 0, 2**16)),
             'a malformed torch.device')
    return torch.device(kind) if index is None else torch.device(kind, index)


def _latin1(text: Any, encoding: Any = 'latin1') -> bytes:
    """``_codecs.encode``: how protocol 2 pickles ``bytes``; only that use is allowed."""
    _require(type(text) is str and type(encoding) is str and encoding in ('latin1', 'latin-1'),
             '_codecs.encode other than the latin-1 encoding of a string')
    return text.encode('latin1')


def _bytes(*args: Any) -> bytes:  # protocol 2 writes b'' as bytes()
    _require(not args, 'bytes() called with arguments')
    return b''


def _set(items: Any = ()) -> set:
    _require(type(items) is list and all(map(_is_key, items)), 'a set of other than plain values')
    return set(items)


def _frozenset(items: Any = ()) -> frozenset:
    return frozenset(_set(items))


def _check_tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> None:
    _require(isinstance(storage, torch.storage.TypedStorage),
             'a tensor rebuilt from something other than a storage')
    _require(_is_int(offset) and _is_int_tuple(size) and _is_int_tuple(stride)
             and len(size) == len(stride), 'a tensor with a malformed offset, size or stride')
    # Legacy storages are resizable: torch would grow them, uninitialised, to fit the view.
    _require(0 in size or offset + sum((n - 1) * s for n, s in zip(size, stride)) < storage._size(),
             'a tensor outside its storage')


def _no_hooks(hooks: Any) -> None:
    _require(type(hooks) in (dict, OrderedDict) and not hooks, 'a tensor with backward hooks')


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    _check_tensor_args(storage, offset, size, stride)
    return torch._utils._rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> torch.Tensor:
    _check_tensor_args(storage, offset, size, stride)
    _require(type(requires_grad) is bool, 'a tensor whose requires_grad is not a bool')
    _no_hooks(hooks)
    _require(metadata is None or (type(metadata) is dict and len(metadata) <= 2 and all(
        type(k) is str and k in ('conj', 'neg') and type(v) is bool for k, v in metadata.items())),
        'a tensor with metadata other than its conj/neg bits')
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
                                           OrderedDict(), metadata)


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any) -> torch.nn.Parameter:
    _require(type(data) is torch.Tensor and type(requires_grad) is bool,
             'a Parameter rebuilt from something other than a tensor')
    _no_hooks(hooks)
    return torch.nn.Parameter(data, requires_grad)


def _reconstruct(cls: Any, shape: Any, code: Any) -> _Record:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``; the array itself comes with BUILD."""
    _require(cls is _NDARRAY, 'a numpy array of another class than numpy.ndarray')
    return _Record('numpy array')


def _dtype(code: Any, align: Any = False, copy: Any = True) -> _Record:
    _require(type(code) is str and code in _NUMERIC_DTYPES,
             lambda: f'numpy dtype {_SHORT.repr(code)} (only numeric dtypes are allowed)')
    return _Record('numpy.dtype', code)


def _scalar(dtype: Any, data: Any = None) -> _Record:
    _require(is_record(dtype, 'numpy.dtype') and type(data) is bytes,
             'a numpy scalar of something other than a numeric dtype and raw bytes')
    return _Record('numpy scalar', dtype, data)


def _statistic(owner: Any, name: Any) -> _Record:
    """``getattr(HistoryBuffer, name)``, kept as a name and never looked up: the rebuilt
    ``HistoryBuffer`` uses the statistics methods of the running mmengine."""
    _require(owner is _HISTORY_BUFFER and type(name) is str and len(name) < 100
             and name.isidentifier() and not name.startswith('_'),
             lambda: f'getattr({getattr(owner, "kind", type(owner).__name__)}, '
             f'{_SHORT.repr(name)})')
    return _Record('statistic', name)


#: Every global a checkpoint may name, mapped to what it becomes.
GLOBALS: Dict[str, Any] = {
    'collections.OrderedDict': _ordered_dict,
    'collections.Counter': _counter,
    'torch._utils._rebuild_tensor': _rebuild_tensor,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'torch.Size': _size,
    'torch.device': _device,
    '_codecs.encode': _latin1,
    **{f'builtins.{f.__name__[1:]}': f for f in (_bytes, _set, _frozenset)},
    'builtins.getattr': _statistic,
    'mmengine.logging.history_buffer.HistoryBuffer': _HISTORY_BUFFER,
    'numpy.ndarray': _NDARRAY,
    'numpy.dtype': _dtype,
    **{f'{module}.{name}': f for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
       for name, f in (('_reconstruct', _reconstruct), ('scalar', _scalar))},
    **{f'torch.{name}': value for name, value in vars(torch).items()
       if isinstance(value, torch.dtype)},
}
_CALLABLES = [f for f in GLOBALS.values() if isinstance(f, types.FunctionType)]
