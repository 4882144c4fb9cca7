r"""What a checkpoint's pickle may hold, as :mod:`.pickle_scan` sees it without building it.

Values on the scan's stack are scalars (kept as they are), :class:`Bytes` (only a length) or
:class:`Node`\ s (containers, tuples, globals, the results of calls). :data:`GLOBALS_ALLOWED` is
every global a checkpoint may name; :data:`CALLS` says, per callable, what arguments the writers
of checkpoints give it (``torch.save``, numpy, mmengine) and what its result is.
"""
from typing import Any, Optional

import torch

from .safe_globals import _SHORT, NUMERIC_DTYPES, _require

__all__ = ['Bytes', 'CALLS', 'CONTAINERS', 'GLOBALS_ALLOWED', 'Node', 'STORAGE_TYPES',
           'call_result', 'describe', 'is_global', 'is_scalar', 'is_tuple']

#: The legacy storage classes of plain dtypes (no quantized storages), by global name.
STORAGE_TYPES = {
    f'torch.{name}Storage': torch.serialization.StorageType(f'{name}Storage').dtype
    for name in ('Bool', 'Byte', 'Char', 'Short', 'Int', 'Long', 'Half', 'BFloat16', 'Float',
                 'Double', 'ComplexFloat', 'ComplexDouble')}
_REBUILD_TENSOR = ('torch._utils._rebuild_tensor', 'torch._utils._rebuild_tensor_v2')
#: Globals a checkpoint may name; everything else is refused before torch sees the file.
GLOBALS_ALLOWED = frozenset((
    'collections.OrderedDict', 'collections.Counter', 'torch.Size', 'torch.device',
    '_codecs.encode', 'builtins.bytes', 'builtins.set', 'builtins.getattr',
    'torch._utils._rebuild_parameter', *_REBUILD_TENSOR, *STORAGE_TYPES,
    'mmengine.logging.history_buffer.HistoryBuffer', 'numpy.ndarray', 'numpy.dtype',
    *(f'{m}.{n}' for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
      for n in ('_reconstruct', 'scalar')),
    *(str(v) for v in vars(torch).values() if isinstance(v, torch.dtype))))
_SCALAR_TYPES = (str, int, float, bool, type(None))
_HASH_MODULUS = 2**61 - 1  # sys.hash_info.modulus on 64-bit builds
CONTAINERS = ('list', 'dict', 'odict', 'counter')


class Bytes:
    """A ``bytes`` value in the scan: only its length is kept."""
    __slots__ = ('n', )

    def __init__(self, n: int) -> None:
        self.n = n


class Node:
    """A non-scalar value on the symbolic stack: its kind, its items, what it expands to."""
    __slots__ = ('kind', 'name', 'items', 'size', 'depth', 'sealed', 'built', 'extra')

    def __init__(self, kind: str, name: str = '', items: Optional[list] = None) -> None:
        self.kind, self.name, self.items, self.extra = kind, name, items, None
        self.size, self.depth, self.sealed, self.built = 1, 1, False, False


def is_scalar(value: Any) -> bool:
    """A dict key or set item: hashing it is cheap, and no two such ints share a hash (ints
    beyond 2**61 - 1 wrap onto small ones and would make every insertion a collision)."""
    if type(value) is int:
        return -_HASH_MODULUS < value < _HASH_MODULUS
    return type(value) in _SCALAR_TYPES or type(value) is Bytes


def _ints(value: Any) -> bool:
    return type(value) is Node and value.kind == 'tuple' and len(value.items) <= 64 and all(
        type(v) is int and 0 <= v < 2**62 for v in value.items)


def is_tuple(value: Any, n: Optional[int] = None) -> bool:
    return type(value) is Node and value.kind == 'tuple' and (n is None or len(value.items) == n)


def is_global(value: Any, name: str) -> bool:
    return type(value) is Node and value.kind == 'global' and value.name == name


def _is_empty_odict(value: Any) -> bool:
    return type(value) is Node and value.kind == 'odict' and not value.items and not value.built


def describe(value: Any) -> str:
    if type(value) is Node:
        return f'{value.name} (a {value.kind})' if value.name else f'a {value.kind}'
    return f'a {type(value).__name__}' if type(value) is not Bytes else 'bytes'


# --- what each callable may be given --------------------------------------------------------------
def _odict(scan: Any) -> str:
    return 'odict'


def _counter(scan: Any, items: Any = None) -> Optional[str]:
    ok = items is None or (type(items) is Node and items.kind == 'dict')
    return 'counter' if ok else None


def _size(scan: Any, dims: Any = None) -> Optional[str]:
    return 'object' if dims is None or _ints(dims) else None


def _device(scan: Any, kind: Any, index: Any = None) -> Optional[str]:
    ok = type(kind) is str and len(kind) < 32 and (index is None or type(index) is int)
    return 'object' if ok else None


def _encode(scan: Any, text: Any, encoding: Any) -> Optional[str]:
    ok = type(text) is str and type(encoding) is str and encoding in ('latin1', 'latin-1')
    if ok:
        scan.budget.charge(len(text) + 64, 'bytes')
    return 'bytes' if ok else None


def _empty_bytes(scan: Any) -> str:
    return 'bytes'


def _set(scan: Any, items: Any = None) -> Optional[str]:
    if items is None:
        return 'object'
    if type(items) is not Node or items.kind != 'list':
        return None
    if items.extra is None:  # checked once: the list is sealed from here on
        items.extra = all(map(is_scalar, items.items))
    return 'object' if items.extra else None


def _statistic(scan: Any, owner: Any, name: Any) -> Optional[str]:
    _require(is_global(owner, 'mmengine.logging.history_buffer.HistoryBuffer')
             and type(name) is str and name.isidentifier() and not name.startswith('_')
             and len(name) < 100,
             lambda: f'getattr({describe(owner)}, {_SHORT.repr(name)})')
    return 'statistic'


def _reconstruct(scan: Any, cls: Any, shape: Any, code: Any) -> Optional[str]:
    return 'numpy array' if is_global(cls, 'numpy.ndarray') else None


def _dtype(scan: Any, code: Any, align: Any = False, copy: Any = True) -> Optional[str]:
    _require(type(code) is str and code in NUMERIC_DTYPES,
             lambda: f'numpy dtype {_SHORT.repr(code)} (only numeric dtypes are allowed)')
    return 'numpy.dtype'


def _scalar(scan: Any, dtype: Any, data: Any) -> Optional[str]:
    ok = type(dtype) is Node and dtype.kind == 'numpy.dtype' and type(data) is Bytes
    return 'object' if ok and data.n <= 16 else None


def _tensor(scan: Any, storage: Any, offset: Any, size: Any, stride: Any,
            requires_grad: Any = False, hooks: Any = None, metadata: Any = None) -> Optional[str]:
    if not (type(storage) is Node and storage.kind == 'storage' and type(offset) is int
            and offset >= 0 and _ints(size) and _ints(stride)
            and len(size.items) == len(stride.items) and type(requires_grad) is bool
            and (hooks is None or _is_empty_odict(hooks))
            and (metadata is None or (type(metadata) is Node and metadata.kind == 'dict'
                                      and not metadata.items))):
        return None
    numel = storage.extra[1]
    if 0 in size.items:
        return 'tensor'
    extent = offset + sum((n - 1) * s for n, s in zip(size.items, stride.items))
    elements = 1
    for n in size.items:
        elements = min(elements * n, numel + 1)
    _require(extent < numel, 'a tensor outside its storage')
    _require(elements <= numel, 'a tensor of more elements than its storage (a broadcast view, '
             'which torch.save writes only for expanded tensors)')
    scan.budget.charge(1024 + 32 * len(size.items), 'tensors')
    return 'tensor'


def _parameter(scan: Any, data: Any, requires_grad: Any, hooks: Any = None) -> Optional[str]:
    ok = (type(data) is Node and data.kind == 'tensor' and type(requires_grad) is bool
          and (hooks is None or _is_empty_odict(hooks)))
    return 'tensor' if ok else None


CALLS = {
    'collections.OrderedDict': _odict, 'collections.Counter': _counter, 'torch.Size': _size,
    'torch.device': _device, '_codecs.encode': _encode, 'builtins.bytes': _empty_bytes,
    'builtins.set': _set, 'builtins.getattr': _statistic, 'numpy.dtype': _dtype,
    'torch._utils._rebuild_parameter': _parameter,
    **{name: _tensor for name in _REBUILD_TENSOR},
    **{f'{m}.{n}': f for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
       for n, f in (('_reconstruct', _reconstruct), ('scalar', _scalar))},
}


def call_result(scan: Any, name: str, args: list) -> str:
    """The kind of what calling the global ``name`` with ``args`` builds; refused unless the
    writers of checkpoints make that call with such arguments."""
    check = CALLS.get(name)
    _require(check is not None, lambda: f'calling {name}')
    code = check.__code__
    arity = code.co_argcount - 1 - len(check.__defaults__ or ()) <= len(args) < code.co_argcount
    kind = check(scan, *args) if arity else None
    _require(kind is not None, lambda: f'{name} called with unexpected arguments')
    return kind
