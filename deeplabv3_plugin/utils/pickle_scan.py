"""A linear-time scan of a checkpoint's pickle opcodes, before anything is unpickled.

torch's weights-only unpickler decides what a file may *name*; it does not bound what a small file
may *cost*: nesting that overflows the C stack when a tuple is hashed, a DAG of shared tuples
that expands exponentially, one byte per empty container, a tensor that grows its storage. So
:func:`scan_pickle` reads the opcodes with :func:`pickletools.genops` and runs a symbolic stack
machine that builds nothing real. It refuses (``UnsafeCheckpointError``):

* any opcode outside :data:`OPCODES` (what ``torch.save`` writes at protocol 2, and what torch's
  weights-only unpickler reads), any global outside :data:`GLOBALS_ALLOWED`, and calls whose
  arguments are not what ``torch.save``/numpy/mmengine write;
* nesting deeper than :data:`MAX_DEPTH`; an object whose expanded size (shared references
  counted each time) exceeds ``EXPANSION x opcodes + 65536``;
* dict keys and set items that are not scalars (str, bytes, int, float, bool, None);
* items added to a container after it was put inside another (so every size above is final);
* a cost (objects and bytes the unpickler will allocate) beyond the caller's budget;
* tensors outside their storage, storages whose bytes the file does not hold.

Each opcode costs O(1) apart from reading its argument, so time and memory grow linearly with the
pickle's length. Values are kept only for scalars and tuples (persistent ids, shapes, dtypes).
"""
import _compat_pickle
import pickletools
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

import torch

from .safe_globals import _SHORT, NUMERIC_DTYPES, UnsafeCheckpointError, _refuse, _require

__all__ = ['OPCODES', 'GLOBALS_ALLOWED', 'MAX_DEPTH', 'ScanResult', 'scan_pickle']

#: The opcodes torch.save writes (protocol 2) that torch's weights-only unpickler reads.
OPCODES = frozenset((
    'PROTO', 'STOP', 'GLOBAL', 'REDUCE', 'NEWOBJ', 'BUILD', 'MARK', 'TUPLE', 'TUPLE1', 'TUPLE2',
    'TUPLE3', 'EMPTY_TUPLE', 'EMPTY_LIST', 'EMPTY_DICT', 'APPEND', 'APPENDS', 'SETITEM',
    'SETITEMS', 'NONE', 'NEWTRUE', 'NEWFALSE', 'BININT', 'BININT1', 'BININT2', 'LONG1',
    'BINFLOAT', 'BINUNICODE', 'SHORT_BINSTRING', 'BINPERSID', 'BINGET', 'LONG_BINGET',
    'BINPUT', 'LONG_BINPUT'))
MAX_DEPTH = 64
EXPANSION = 16
#: The legacy storage classes of plain dtypes (no quantized storages), by global name.
_STORAGE_TYPES = {f'torch.{name}Storage': torch.serialization.StorageType(f'{name}Storage').dtype
                  for name in ('Bool', 'Byte', 'Char', 'Short', 'Int', 'Long', 'Half', 'BFloat16',
                               'Float', 'Double', 'ComplexFloat', 'ComplexDouble')}
_REBUILD_TENSOR = ('torch._utils._rebuild_tensor', 'torch._utils._rebuild_tensor_v2')
#: Globals a checkpoint may name; everything else is refused before torch sees the file.
GLOBALS_ALLOWED = frozenset((
    'collections.OrderedDict', 'collections.Counter', 'torch.Size', 'torch.device',
    '_codecs.encode', 'builtins.bytes', 'builtins.set', 'builtins.getattr',
    'torch._utils._rebuild_parameter', *_REBUILD_TENSOR, *_STORAGE_TYPES,
    'mmengine.logging.history_buffer.HistoryBuffer', 'numpy.ndarray', 'numpy.dtype',
    *(f'{m}.{n}' for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
      for n in ('_reconstruct', 'scalar')),
    *(str(v) for v in vars(torch).values() if isinstance(v, torch.dtype))))
_SCALAR_TYPES = (str, int, float, bool, type(None))
_HASH_MODULUS = 2**61 - 1  # sys.hash_info.modulus on 64-bit builds
_CONSTANTS = {'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}
_CONTAINERS = ('list', 'dict', 'odict', 'counter')


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


def _is_scalar(value: Any) -> bool:
    """A dict key or set item: hashing it is cheap, and no two such ints share a hash (ints
    beyond 2**61 - 1 wrap onto small ones and would make every insertion a collision)."""
    if type(value) is int:
        return -_HASH_MODULUS < value < _HASH_MODULUS
    return type(value) in _SCALAR_TYPES or type(value) is Bytes


def _ints(value: Any) -> bool:
    return type(value) is Node and value.kind == 'tuple' and len(value.items) <= 64 and all(
        type(v) is int and 0 <= v < 2**62 for v in value.items)


class ScanResult:
    """What the loader checks against the file: the storages each persistent id names.

    ``storages`` maps a key to ``(dtype, numel)`` as torch will allocate it (first use wins, as in
    torch); ``root`` is the pickle's top value (a scalar or :class:`Node`).
    """

    def __init__(self) -> None:
        self.storages: Dict[str, Tuple[torch.dtype, int]] = {}
        self.root: Any = None


class _Scanner:

    def __init__(self, budget: 'Budget', legacy: bool, result: ScanResult) -> None:
        self.budget, self.legacy, self.result = budget, legacy, result
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.views: Dict[str, Tuple[torch.dtype, int]] = {}  # legacy storage views
        self.ops = 0

    # --- helpers -----------------------------------------------------------------------------
    def _pop(self) -> Any:
        _require(bool(self.stack), 'a pickle that pops an empty stack')
        return self.stack.pop()

    def _pop_mark(self) -> List[Any]:
        _require(bool(self.marks), 'a pickle that closes a MARK it never opened')
        items, self.stack = self.stack, self.marks.pop()
        return items

    def _top(self, action: str, *kinds: str) -> Node:
        _require(bool(self.stack), 'a pickle that reads an empty stack')
        top = self.stack[-1]
        _require(type(top) is Node and top.kind in kinds,
                 lambda: f'{action} on {_describe(top)}')
        return top

    def _node(self, kind: str, name: str = '', items: Optional[list] = None,
              cost: int = 256) -> Node:
        self.budget.charge(cost + 8 * len(items or ()), 'containers')
        node = Node(kind, name, [] if items is None and kind in _CONTAINERS else items)
        for child in items or ():
            self._attach(node, child)
        return node

    def _attach(self, parent: Node, child: Any) -> None:
        """``child`` goes inside ``parent``: its size is final, so it may not grow any more."""
        if type(child) is not Node:
            parent.size += 1
            return
        child.sealed = True
        parent.size = min(parent.size + child.size, 2**62)
        parent.depth = max(parent.depth, child.depth + 1)
        _require(parent.depth <= MAX_DEPTH, f'nesting deeper than {MAX_DEPTH} levels')
        _require(parent.size <= EXPANSION * self.ops + 65536,
                 'an object that expands to far more items than the file holds (shared '
                 'references counted each time)')

    def _grow(self, node: Node, items: list, what: str) -> None:
        _require(not node.sealed, lambda: f'items added to {_describe(node)} after it was used')
        self.budget.charge((32 if node.kind == 'list' else 64) * len(items), what)
        for item in items:
            self._attach(node, item)
        node.items.extend(items)

    # --- opcodes -----------------------------------------------------------------------------
    def run(self, source: BinaryIO, data: Optional[bytes]) -> Any:
        for op, arg, pos in pickletools.genops(source):
            self.ops += 1
            name = op.name
            _require(name in OPCODES, lambda: f'the pickle opcode {name} (torch.save never '
                     'writes it at protocol 2)')
            self.budget.charge(16, 'pickle opcodes')
            if name in _CONSTANTS:
                self.stack.append(_CONSTANTS[name])
            elif name in ('BININT', 'BININT1', 'BININT2', 'LONG1', 'BINFLOAT'):
                self.budget.charge(32, 'numbers')
                self.stack.append(arg)
            elif name in ('BINUNICODE', 'SHORT_BINSTRING'):
                _require(name == 'BINUNICODE' or arg.isascii(), 'a non-ASCII Python 2 string')
                self.budget.charge(len(arg) + 64, 'strings')
                self.stack.append(arg)
            elif name == 'GLOBAL':
                self.stack.append(self._global(arg, source, data, pos))
            elif name == 'MARK':
                self.budget.charge(128, 'marks')
                self.marks.append(self.stack)
                self.stack = []
            elif name == 'STOP':
                _require(len(self.stack) == 1 and not self.marks,
                         'a pickle that ends with other than one value')
                return self.stack[0]
            else:
                getattr(self, '_' + name.lower())(arg)
        _refuse('a truncated pickle')  # genops stops only at STOP

    def _proto(self, arg: int) -> None:
        _require(2 <= arg <= 5, f'pickle protocol {arg}')

    def _global(self, arg: str, source: BinaryIO, data: Optional[bytes], pos: int) -> Node:
        module, _, qualname = arg.partition(' ')
        raw = f'{module}\n{qualname}\n'.encode()
        # genops unescapes the names and torch does not: both must have read the same bytes
        if data is not None:
            same = data[pos + 1:pos + 1 + len(raw)] == raw
        else:
            here = source.tell()
            source.seek(pos + 1)
            same = source.read(len(raw)) == raw
            source.seek(here)
        _require(same, 'a global name with escapes')
        if (module, qualname) in _compat_pickle.NAME_MAPPING:  # what torch reads Python 2 as
            module, qualname = _compat_pickle.NAME_MAPPING[(module, qualname)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f'{module}.{qualname}'
        _require(full in GLOBALS_ALLOWED, lambda: f'the global {_SHORT.repr(full)}')
        return self._node('global', full, cost=192)

    def _empty_tuple(self, arg: None) -> None:
        self.stack.append(self._node('tuple', items=[], cost=192))

    def _tuple(self, arg: None) -> None:
        items = self._pop_mark()  # before self.stack is read: it changes here
        self.stack.append(self._node('tuple', items=items, cost=192))

    def _tuple1(self, arg: None, n: int = 1) -> None:
        _require(len(self.stack) >= n, 'a pickle that pops an empty stack')
        items = self.stack[-n:]
        del self.stack[-n:]
        self.stack.append(self._node('tuple', items=items, cost=192))

    def _tuple2(self, arg: None) -> None:
        self._tuple1(arg, 2)

    def _tuple3(self, arg: None) -> None:
        self._tuple1(arg, 3)

    def _empty_list(self, arg: None) -> None:
        self.stack.append(self._node('list', items=[]))

    def _empty_dict(self, arg: None) -> None:
        self.stack.append(self._node('dict', items=[]))

    def _append(self, arg: None) -> None:
        item = self._pop()
        self._grow(self._top('APPEND', 'list'), [item], 'list items')

    def _appends(self, arg: None) -> None:
        items = self._pop_mark()
        self._grow(self._top('APPENDS', 'list'), items, 'list items')

    def _setitems(self, arg: None, items: Optional[list] = None) -> None:
        items = self._pop_mark() if items is None else items
        _require(len(items) % 2 == 0, 'a SETITEMS with a key and no value')
        _require(all(map(_is_scalar, items[::2])), lambda: 'dict keys other than scalars ('
                 f'{_describe(next(k for k in items[::2] if not _is_scalar(k)))})')
        self._grow(self._top('SETITEMS', 'dict', 'odict', 'counter'), items, 'dict items')

    def _setitem(self, arg: None) -> None:
        value, key = self._pop(), self._pop()
        self._setitems(arg, [key, value])

    def _binput(self, arg: int) -> None:
        _require(bool(self.stack), 'a pickle that memoizes an empty stack')
        if arg not in self.memo:
            self.budget.charge(128, 'memo entries')
        self.memo[arg] = self.stack[-1]

    _long_binput = _binput

    def _binget(self, arg: int) -> None:
        _require(arg in self.memo, 'a pickle that reads a memo entry it never wrote')
        self.budget.charge(8, 'memo reads')
        self.stack.append(self.memo[arg])

    _long_binget = _binget

    def _newobj(self, arg: None) -> None:
        args, cls = self._pop(), self._pop()
        _require(_is_global(cls, 'mmengine.logging.history_buffer.HistoryBuffer')
                 and type(args) is Node and args.kind == 'tuple' and not args.items,
                 lambda: f'NEWOBJ of {_describe(cls)}')
        self.stack.append(self._node('HistoryBuffer', items=[args]))

    def _build(self, arg: None) -> None:
        state = self._pop()
        inst = self._top('BUILD', 'HistoryBuffer', 'numpy.dtype', 'numpy array', 'odict')
        _require(not inst.sealed and not inst.built,
                 lambda: f'a BUILD on {_describe(inst)} after it was built or used')
        if inst.kind == 'odict':  # nn.Module.state_dict()'s _metadata attribute
            _require(type(state) is Node and state.kind == 'dict' and len(state.items) == 2
                     and state.items[0] == '_metadata', 'an OrderedDict with attributes other '
                     'than _metadata')
        if inst.kind == 'numpy array':  # its data is copied once per array built
            data = state.items[4] if _is_tuple(state, 5) else None
            _require(type(data) is Bytes, 'a malformed numpy array')
            self.budget.charge(2 * data.n, 'numpy arrays')
        inst.built = True
        self._attach(inst, state)

    def _binpersid(self, arg: None) -> None:
        pid = self._pop()
        _require(_is_tuple(pid, 6 if self.legacy else 5), 'a persistent id other than a tensor '
                 'storage of this file format')
        tag, stype, key, location, numel = pid.items[:5]
        view = pid.items[5] if self.legacy else None
        _require(tag == 'storage' and type(stype) is Node and stype.name in _STORAGE_TYPES
                 and type(key) is str and type(location) is str and len(location) < 64
                 and type(numel) is int and 0 <= numel < 2**48, 'a persistent id other than a '
                 'plain tensor storage')
        known, asked = self.result.storages, _STORAGE_TYPES[stype.name]
        # torch allocates a storage on its first use; the zip reader also on every use after an
        # empty one (it keeps only storages with data)
        if (key not in known or (not self.legacy and known[key][1] == 0)) and \
                key not in self.views:
            self.budget.charge(numel * asked.itemsize, 'tensor storages')
            known[key] = (asked, numel)
        dtype, size = self.views[key] if key in self.views else known[key]
        if size == 0:  # torch makes a new empty storage of the asked dtype
            dtype = asked
        if view is not None:  # torch slices the storage's bytes with the asked dtype
            _require(_is_tuple(view, 3) and type(view.items[0]) is str
                     and all(type(v) is int and v >= 0 for v in view.items[1:])
                     and (view.items[1] + view.items[2]) * asked.itemsize
                     <= size * dtype.itemsize, 'a storage view outside its storage')
            view_key = view.items[0]
            if view_key not in self.views and view_key not in known:
                self.views[view_key] = (asked, view.items[2])
            dtype, size = self.views[view_key] if view_key in self.views else known[view_key]
        storage = self._node('storage', cost=192)
        storage.extra = (dtype, size)
        self.stack.append(storage)

    def _reduce(self, arg: None) -> None:
        args = self._pop()
        func = self._pop()
        _require(type(func) is Node and func.kind == 'global' and _is_tuple(args),
                 lambda: f'calling {_describe(func)}')
        check = _CALLS.get(func.name)
        _require(check is not None, lambda: f'calling {func.name}')
        kind = check(self, *args.items) if _arity_ok(check, args.items) else None
        _require(kind is not None, lambda: f'{func.name} called with unexpected arguments')
        if kind == 'bytes':
            self.stack.append(Bytes(len(args.items[0]) if args.items else 0))
            return
        node = self._node(kind, func.name)
        self._attach(node, args)
        self.stack.append(node)


def _arity_ok(check: Any, args: list) -> bool:
    code = check.__code__
    return code.co_argcount - 1 - len(check.__defaults__ or ()) <= len(args) < code.co_argcount


def _is_tuple(value: Any, n: Optional[int] = None) -> bool:
    return type(value) is Node and value.kind == 'tuple' and (n is None or len(value.items) == n)


def _is_global(value: Any, name: str) -> bool:
    return type(value) is Node and value.kind == 'global' and value.name == name


def _is_empty_odict(value: Any) -> bool:
    return type(value) is Node and value.kind == 'odict' and not value.items and not value.built


def _describe(value: Any) -> str:
    if type(value) is Node:
        return f'{value.name} (a {value.kind})' if value.name else f'a {value.kind}'
    return f'a {type(value).__name__}' if type(value) is not Bytes else 'bytes'


# --- what each callable may be given --------------------------------------------------------------
def _odict(scan: _Scanner) -> str:
    return 'odict'


def _counter(scan: _Scanner, items: Any = None) -> Optional[str]:
    ok = items is None or (type(items) is Node and items.kind == 'dict')
    return 'counter' if ok else None


def _size(scan: _Scanner, dims: Any = None) -> Optional[str]:
    return 'object' if dims is None or _ints(dims) else None


def _device(scan: _Scanner, kind: Any, index: Any = None) -> Optional[str]:
    ok = type(kind) is str and len(kind) < 32 and (index is None or type(index) is int)
    return 'object' if ok else None


def _encode(scan: _Scanner, text: Any, encoding: Any) -> Optional[str]:
    ok = type(text) is str and type(encoding) is str and encoding in ('latin1', 'latin-1')
    if ok:
        scan.budget.charge(len(text) + 64, 'bytes')
    return 'bytes' if ok else None


def _empty_bytes(scan: _Scanner) -> str:
    return 'bytes'


def _set(scan: _Scanner, items: Any = None) -> Optional[str]:
    if items is None:
        return 'object'
    if type(items) is not Node or items.kind != 'list':
        return None
    if items.extra is None:  # checked once: the list is sealed from here on
        items.extra = all(map(_is_scalar, items.items))
    return 'object' if items.extra else None


def _statistic(scan: _Scanner, owner: Any, name: Any) -> Optional[str]:
    _require(_is_global(owner, 'mmengine.logging.history_buffer.HistoryBuffer')
             and type(name) is str and name.isidentifier() and not name.startswith('_')
             and len(name) < 100,
             lambda: f'getattr({_describe(owner)}, {_SHORT.repr(name)})')
    return 'statistic'


def _reconstruct(scan: _Scanner, cls: Any, shape: Any, code: Any) -> Optional[str]:
    return 'numpy array' if _is_global(cls, 'numpy.ndarray') else None


def _dtype(scan: _Scanner, code: Any, align: Any = False, copy: Any = True) -> Optional[str]:
    _require(type(code) is str and code in NUMERIC_DTYPES,
             lambda: f'numpy dtype {_SHORT.repr(code)} (only numeric dtypes are allowed)')
    return 'numpy.dtype'


def _scalar(scan: _Scanner, dtype: Any, data: Any) -> Optional[str]:
    ok = type(dtype) is Node and dtype.kind == 'numpy.dtype' and type(data) is Bytes
    return 'object' if ok and data.n <= 16 else None


def _tensor(scan: _Scanner, storage: Any, offset: Any, size: Any, stride: Any,
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


def _parameter(scan: _Scanner, data: Any, requires_grad: Any, hooks: Any = None) -> Optional[str]:
    ok = (type(data) is Node and data.kind == 'tensor' and type(requires_grad) is bool
          and (hooks is None or _is_empty_odict(hooks)))
    return 'tensor' if ok else None


_CALLS = {
    'collections.OrderedDict': _odict, 'collections.Counter': _counter, 'torch.Size': _size,
    'torch.device': _device, '_codecs.encode': _encode, 'builtins.bytes': _empty_bytes,
    'builtins.set': _set, 'builtins.getattr': _statistic, 'numpy.dtype': _dtype,
    'torch._utils._rebuild_parameter': _parameter,
    **{name: _tensor for name in _REBUILD_TENSOR},
    **{f'{m}.{n}': f for m in ('numpy.core.multiarray', 'numpy._core.multiarray')
       for n, f in (('_reconstruct', _reconstruct), ('scalar', _scalar))},
}


def scan_pickle(source: BinaryIO, budget: Any, legacy: bool = False,
                result: Optional[ScanResult] = None, data: Optional[bytes] = None) -> ScanResult:
    """Scan one pickle from ``source`` (positioned at its start; left just after its STOP).

    Args:
        source: The file, or a ``BytesIO`` of ``data``.
        budget: Charged for every object and byte the unpickler will allocate
            (``budget.charge(nbytes, what)`` raises when it runs out).
        legacy: Persistent ids have the legacy format's six fields (else the zip format's five).
        result: Storages found by earlier pickles of the same file (legacy), extended here.
        data: The pickle's bytes, when they are in memory.

    Raises:
        UnsafeCheckpointError: naming what was refused.
    """
    result = result or ScanResult()
    try:
        result.root = _Scanner(budget, legacy, result).run(source, data)
    except UnsafeCheckpointError:
        raise
    except ValueError as err:  # genops: a truncated argument or an unknown opcode byte
        _refuse(f'a malformed pickle ({_SHORT.repr(str(err))})')
    return result
