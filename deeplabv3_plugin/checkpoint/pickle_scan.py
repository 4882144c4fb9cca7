"""A linear-time scan of a checkpoint's pickle opcodes, before anything is unpickled.

torch's weights-only unpickler decides what a file may *name*, not what it may *cost*: nesting
that overflows the C stack when a tuple is hashed, a DAG of shared tuples that expands
exponentially, one byte per empty container, a tensor that grows its storage. :func:`scan_pickle`
reads the opcodes with :func:`pickletools.genops` and runs a symbolic stack machine that builds
nothing real, refusing (``UnsafeCheckpointError``) opcodes outside :data:`OPCODES`, globals and
calls outside :mod:`.pickle_calls`, nesting deeper than :data:`MAX_DEPTH`, objects that expand
beyond ``EXPANSION x opcodes + 65536`` items, non-scalar keys, containers filled after they were
used (so every size is final when checked), costs beyond the caller's budget, tensors outside
their storage. Each opcode costs O(1) besides reading its argument: time and memory are linear in
the pickle's length. ``docs/checkpoint_safety.md`` has the table of bounds.
"""
import _compat_pickle
import io
import pickletools
from functools import partialmethod
from typing import Any, Dict, List, Optional, Tuple

import torch

from .pickle_calls import (CONTAINERS, GLOBALS_ALLOWED, STORAGE_TYPES, Bytes, Node,
                           call_result, describe, is_global, is_scalar, is_tuple)
from .safe_globals import _SHORT, UnsafeCheckpointError, _refuse, _require

__all__ = ['OPCODES', 'MAX_DEPTH', 'ScanResult', 'scan_pickle']

#: The opcodes torch.save writes (protocol 2) that torch's weights-only unpickler reads.
OPCODES = frozenset((
    'PROTO', 'STOP', 'GLOBAL', 'REDUCE', 'NEWOBJ', 'BUILD', 'MARK', 'TUPLE', 'TUPLE1', 'TUPLE2',
    'TUPLE3', 'EMPTY_TUPLE', 'EMPTY_LIST', 'EMPTY_DICT', 'APPEND', 'APPENDS', 'SETITEM',
    'SETITEMS', 'NONE', 'NEWTRUE', 'NEWFALSE', 'BININT', 'BININT1', 'BININT2', 'LONG1',
    'BINFLOAT', 'BINUNICODE', 'SHORT_BINSTRING', 'BINPERSID', 'BINGET', 'LONG_BINGET',
    'BINPUT', 'LONG_BINPUT'))
MAX_DEPTH = 64
EXPANSION = 16
_CONSTANTS = {'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}


class ScanResult:
    """The storages the persistent ids name, ``key: (dtype, numel)`` as torch allocates them
    (first use wins, as in torch), and the pickle's top value (a scalar or :class:`Node`)."""

    def __init__(self) -> None:
        self.storages: Dict[str, Tuple[torch.dtype, int]] = {}
        self.root: Any = None


class _Scanner:

    def __init__(self, budget: Any, legacy: bool, result: ScanResult) -> None:
        self.budget, self.legacy, self.result = budget, legacy, result
        self.stack: List[Any] = []
        self.marks: List[List[Any]] = []
        self.memo: Dict[int, Any] = {}
        self.views: Dict[str, Tuple[torch.dtype, int]] = {}  # legacy storage views
        self.ops, self.buffer = 0, None  # buffer: the raw bytes, set by scan_pickle
        # the opcodes with a method of their own, looked up once rather than per opcode
        self.handlers = {name: getattr(self, '_' + name.lower()) for name in OPCODES
                         if hasattr(self, '_' + name.lower())}

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
                 lambda: f'{action} on {describe(top)}')
        return top

    def _node(self, kind: str, name: str = '', items: Optional[list] = None,
              cost: int = 256) -> Node:
        self.budget.charge(cost + 8 * len(items or ()), 'containers')
        node = Node(kind, name, [] if items is None and kind in CONTAINERS else items)
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
        _require(not node.sealed, lambda: f'items added to {describe(node)} after it was used')
        self.budget.charge((32 if node.kind == 'list' else 64) * len(items), what)
        for item in items:
            self._attach(node, item)
        node.items.extend(items)

    # --- opcodes -----------------------------------------------------------------------------
    def run(self, source: io.BytesIO) -> Any:
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
                self.stack.append(self._global(arg, pos))
            elif name == 'MARK':
                self.budget.charge(128, 'marks')
                self.marks.append(self.stack)
                self.stack = []
            elif name == 'STOP':
                _require(len(self.stack) == 1 and not self.marks,
                         'a pickle that ends with other than one value')
                return self.stack[0]
            else:
                self.handlers[name](arg)
        _refuse('a truncated pickle')  # genops stops only at STOP

    def _proto(self, arg: int) -> None:
        _require(2 <= arg <= 5, f'pickle protocol {arg}')

    def _global(self, arg: str, pos: int) -> Node:
        module, _, qualname = arg.partition(' ')
        raw = f'{module}\n{qualname}\n'.encode()
        # genops unescapes the names and torch does not: both must have read the same bytes
        _require(self.buffer[pos + 1:pos + 1 + len(raw)] == raw, 'a global name with escapes')
        if (module, qualname) in _compat_pickle.NAME_MAPPING:  # what torch reads Python 2 as
            module, qualname = _compat_pickle.NAME_MAPPING[(module, qualname)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f'{module}.{qualname}'
        _require(full in GLOBALS_ALLOWED, lambda: f'the global {_SHORT.repr(full)}')
        return self._node('global', full, cost=192)

    def _tuple(self, arg: None) -> None:
        items = self._pop_mark()  # before self.stack is read: it changes here
        self.stack.append(self._node('tuple', items=items, cost=192))

    def _tuple1(self, arg: None, n: int = 1) -> None:
        start = len(self.stack) - n
        _require(start >= 0, 'a pickle that pops an empty stack')
        items = self.stack[start:]
        del self.stack[start:]
        self.stack.append(self._node('tuple', items=items, cost=192))

    _empty_tuple = partialmethod(_tuple1, n=0)
    _tuple2, _tuple3 = partialmethod(_tuple1, n=2), partialmethod(_tuple1, n=3)

    def _empty(self, arg: None, kind: str) -> None:
        self.stack.append(self._node(kind, items=[]))

    _empty_list = partialmethod(_empty, kind='list')
    _empty_dict = partialmethod(_empty, kind='dict')

    def _append(self, arg: None) -> None:
        item = self._pop()
        self._grow(self._top('APPEND', 'list'), [item], 'list items')

    def _appends(self, arg: None) -> None:
        items = self._pop_mark()
        self._grow(self._top('APPENDS', 'list'), items, 'list items')

    def _setitems(self, arg: None, items: Optional[list] = None) -> None:
        items = self._pop_mark() if items is None else items
        _require(len(items) % 2 == 0, 'a SETITEMS with a key and no value')
        _require(all(map(is_scalar, items[::2])), lambda: 'dict keys other than scalars ('
                 f'{describe(next(k for k in items[::2] if not is_scalar(k)))})')
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
        _require(is_global(cls, 'mmengine.logging.history_buffer.HistoryBuffer')
                 and type(args) is Node and args.kind == 'tuple' and not args.items,
                 lambda: f'NEWOBJ of {describe(cls)}')
        self.stack.append(self._node('HistoryBuffer', items=[args]))

    def _build(self, arg: None) -> None:
        state = self._pop()
        inst = self._top('BUILD', 'HistoryBuffer', 'numpy.dtype', 'numpy array', 'odict')
        _require(not inst.sealed and not inst.built,
                 lambda: f'a BUILD on {describe(inst)} after it was built or used')
        if inst.kind == 'odict':  # nn.Module.state_dict()'s _metadata attribute
            _require(type(state) is Node and state.kind == 'dict' and len(state.items) == 2
                     and state.items[0] == '_metadata', 'an OrderedDict with attributes other '
                     'than _metadata')
        if inst.kind == 'numpy array':  # its data is copied once per array built
            data = state.items[4] if is_tuple(state, 5) else None
            _require(type(data) is Bytes, 'a malformed numpy array')
            self.budget.charge(2 * data.n, 'numpy arrays')
        inst.built = True
        self._attach(inst, state)

    def _binpersid(self, arg: None) -> None:
        pid = self._pop()
        _require(is_tuple(pid, 6 if self.legacy else 5), 'a persistent id other than a tensor '
                 'storage of this file format')
        tag, stype, key, location, numel = pid.items[:5]
        view = pid.items[5] if self.legacy else None
        _require(tag == 'storage' and type(stype) is Node and stype.name in STORAGE_TYPES
                 and type(key) is str and type(location) is str and len(location) < 64
                 and type(numel) is int and 0 <= numel < 2**48, 'a persistent id other than a '
                 'plain tensor storage')
        known, asked = self.result.storages, STORAGE_TYPES[stype.name]
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
            _require(is_tuple(view, 3) and type(view.items[0]) is str
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
        _require(type(func) is Node and func.kind == 'global' and is_tuple(args),
                 lambda: f'calling {describe(func)}')
        kind = call_result(self, func.name, args.items)
        if kind == 'bytes':
            self.stack.append(Bytes(len(args.items[0]) if args.items else 0))
            return
        node = self._node(kind, func.name)
        self._attach(node, args)
        self.stack.append(node)


def scan_pickle(source: io.BytesIO, budget: Any, legacy: bool = False,
                result: Optional[ScanResult] = None) -> ScanResult:
    """Scan one pickle from ``source`` (positioned at its start; left just after its STOP).

    Args:
        source: The file's bytes.
        budget: Charged for every object and byte the unpickler will allocate
            (``budget.charge(nbytes, what)`` raises when it runs out).
        legacy: Persistent ids have the legacy format's six fields (else the zip format's five).
        result: Storages found by earlier pickles of the same file (legacy), extended here.

    Raises:
        UnsafeCheckpointError: naming what was refused.
    """
    result = result or ScanResult()
    scanner = _Scanner(budget, legacy, result)
    scanner.buffer = source.getbuffer()
    try:
        result.root = scanner.run(source)
    except UnsafeCheckpointError:
        raise
    except ValueError as err:  # genops: a truncated argument or an unknown opcode byte
        _refuse(f'a malformed pickle ({_SHORT.repr(str(err))})')
    finally:
        scanner.buffer.release()
    return result
