"""The pickle machine of the safe checkpoint loader: it can only build what ``GLOBALS`` names.

:class:`SafeUnpickler` is pure Python, so every opcode is ours: REDUCE, NEWOBJ and BUILD work only
on the stand-ins of :mod:`.safe_globals`; items go only into real lists, dicts and sets, with
plain values as keys (so no hash or comparison can cost more than the file's size); storages,
copies and tensors are charged to the load's memory budget; opcodes torch.save never writes are
refused.
"""
import _compat_pickle
import pickle
from collections import Counter, OrderedDict
from typing import Any, Callable

import torch

from .safe_globals import (_CALLABLES, _HISTORY_BUFFER, _NDARRAY, _SHORT, _STORAGE_DTYPES,
                           GLOBALS, _is_int, _is_key, _Record, _refuse, _require)

__all__ = ['SafeUnpickler']


# --- the unpickler ------------------------------------------------------------------------------
class SafeUnpickler(pickle._Unpickler):  # the pure-Python machine, so every opcode is ours
    """Builds only what :data:`GLOBALS` names; BUILD, REDUCE and NEWOBJ are checked."""
    dispatch = dict(pickle._Unpickler.dispatch)
    budget: Any = None  # set per load: a checkpoint.Budget

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        read = self._file_read  # a declared length is never allocated before it is charged
        self._file_read = lambda n=-1: read(n if 0 <= n <= self.budget.left else self.budget.left)

    def _storage_loader(self, pid: Any) -> Any:  # until torch assigns its own (never, in raw files)
        _refuse('a persistent id outside a tensor checkpoint')

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # protocol 2 writes Python 2 names
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f'{module}.{name}'
        _require(full in GLOBALS, lambda: f'the global {_SHORT.repr(full)}')
        return GLOBALS[full]

    @property
    def persistent_load(self) -> Callable:
        return self._storage_loader

    @persistent_load.setter
    def persistent_load(self, torch_loader: Callable) -> None:
        # torch assigns its storage loader here; storages are checked before it allocates
        def load(pid: Any) -> Any:
            _require(type(pid) is tuple and len(pid) in (5, 6) and type(pid[0]) is str
                     and pid[0] == 'storage'
                     and type(pid[1]) is torch.serialization.StorageType
                     and pid[1].dtype in _STORAGE_DTYPES and type(pid[2]) is str
                     and type(pid[3]) is str and _is_int(pid[4]),
                     'a persistent id other than a plain tensor storage')
            if pid[2] not in self.budget.storages:  # a storage read again is not allocated again
                self.budget.storages.add(pid[2])
                self.budget.charge(pid[4] * pid[1].dtype.itemsize, 'a storage')
            view = pid[5] if len(pid) == 6 else None
            _require(view is None or (type(view) is tuple and len(view) == 3
                                      and type(view[0]) is str and _is_int(view[1])
                                      and _is_int(view[2]) and view[1] + view[2] <= pid[4]),
                     'a storage view outside its storage')
            return torch_loader(pid)
        self._storage_loader = load

    def _refuse_opcode(self) -> None:
        _refuse('an opcode torch.save never writes (INST, OBJ, EXT or out-of-band buffers)')

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        _require(any(func is f for f in _CALLABLES) and type(args) is tuple,
                 lambda: f'calling {getattr(func, "kind", type(func).__name__)}')
        self.stack[-1] = result = func(*args)
        if type(result) in (bytes, set, frozenset, torch.Size, Counter):  # copies of memo items
            self.budget.charge(len(result) * (1 if type(result) is bytes else 64), 'data')
        elif isinstance(result, torch.Tensor):  # a view costs its object, not its storage
            self.budget.charge(512, 'tensors')

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        _require(cls is _HISTORY_BUFFER and type(args) is tuple and not args,
                 'NEWOBJ of anything but HistoryBuffer()')
        self.append(_Record('HistoryBuffer'))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        _require(type(kwargs) is dict and not kwargs, 'NEWOBJ_EX with keyword arguments')
        self._load_newobj()

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is _Record and inst is not _NDARRAY and inst is not _HISTORY_BUFFER:
            inst.build(state)
        elif type(inst) is OrderedDict:  # nn.Module.state_dict() pickles its _metadata this way
            _require(type(state) is dict and all(type(k) is str and k == '_metadata'
                                                 for k in state),
                     'an OrderedDict with attributes other than _metadata')
            inst.__dict__.update(state)
        else:
            _refuse(f'BUILD on {type(inst).__name__}')

    def _target(self, *kinds: type) -> Any:
        obj = self.stack[-1]
        _require(type(obj) in kinds, lambda: f'adding items to a {type(obj).__name__}')
        return obj

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._target(list).append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._target(list).extend(items)

    def _set_items(self, items: list) -> None:
        _require(len(items) % 2 == 0 and all(map(_is_key, items[::2])),
                 'dict keys other than plain values')
        target = self._target(dict, OrderedDict, Counter)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set_items([key, value])

    def _load_setitems(self) -> None:
        self._set_items(self.pop_mark())

    def _load_additems(self) -> None:
        items = self.pop_mark()
        _require(all(map(_is_key, items)), 'set items other than plain values')
        self._target(set).update(items)

    for _op, _fn in ((pickle.REDUCE, _load_reduce), (pickle.NEWOBJ, _load_newobj),
                     (pickle.NEWOBJ_EX, _load_newobj_ex), (pickle.BUILD, _load_build),
                     (pickle.APPEND, _load_append), (pickle.APPENDS, _load_appends),
                     (pickle.SETITEM, _load_setitem), (pickle.SETITEMS, _load_setitems),
                     (pickle.ADDITEMS, _load_additems), (pickle.INST, _refuse_opcode),
                     (pickle.OBJ, _refuse_opcode), (pickle.EXT1, _refuse_opcode),
                     (pickle.EXT2, _refuse_opcode), (pickle.EXT4, _refuse_opcode),
                     (pickle.BYTEARRAY8, _refuse_opcode), (pickle.NEXT_BUFFER, _refuse_opcode),
                     (pickle.READONLY_BUFFER, _refuse_opcode)):
        dispatch[_op[0]] = _fn
    del _op, _fn
