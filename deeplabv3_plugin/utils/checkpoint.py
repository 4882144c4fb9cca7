"""Load the checkpoints mmengine writes without running anything the file says.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; under torch >= 2.6 that means
torch's weights-only unpickler, which refuses the ``HistoryBuffer`` and numpy objects of the
message hub in every checkpoint mmengine itself saves. Allowlisting those classes is not safe:
their ``__setstate__``/BUILD and numpy's constructors take the file's state as it comes.

So :func:`load_local_checkpoint` keeps torch's file formats and swaps the pickle machine for
:class:`~.safe_unpickler.SafeUnpickler`, then :func:`_materialize` builds each real object from
plain, validated data: numeric dtypes only, array bytes exactly filling the shape, histories of
equal length. No real class sees the file's state, no callable beyond the unpickler's list is
reachable, and nothing in the process changes (no class attribute, no torch safe-globals entry).
TorchScript archives and tar files (PyTorch < 0.4) are refused. The user's explicit escape hatch
for files they trust stays torch's own: ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
"""
import os
import pickle
import tarfile
import types
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .safe_globals import (CheckpointError, UnsafeCheckpointError, _is_int, _is_int_tuple,
                           _Record, _refuse, _require, is_record)
from .safe_unpickler import SafeUnpickler

__all__ = ['CheckpointError', 'UnsafeCheckpointError', 'load_local_checkpoint']


class Budget:
    """The bytes one load may still allocate: a small file cannot make the loader allocate much.

    Storages and numpy data are copies of the file's bytes, so a legitimate load needs little
    more than the file's size; 4x plus 1 MiB is ample.
    """

    def __init__(self, file_size: int) -> None:
        self.left, self.storages, self.last_loaded = 4 * file_size + 2**20, set(), None

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        _require(self.left >= 0, f'{what} taking more memory than a file of its size can hold')


# --- records -> real objects --------------------------------------------------------------------
def _real_dtype(rec: _Record, visit: Callable) -> np.dtype:
    state = rec.state
    _require(rec.built and type(state) is tuple and len(state) == 8
             and all(type(v) is int for v in (state[0], *state[5:])) and state[0] == 3
             and state[5:] == (-1, -1, 0) and type(state[1]) is str
             and state[1] in ('<', '>', '|', '=') and all(v is None for v in state[2:5]),
             f'a numpy dtype {rec.args[0]!r} with an unexpected state')
    dtype = np.dtype(rec.args[0])
    return dtype.newbyteorder(state[1]) if state[1] in '<>' else dtype


def _real_array(rec: _Record, visit: Callable) -> np.ndarray:
    state = rec.state
    _require(rec.built and type(state) is tuple and len(state) == 5, 'a malformed numpy array')
    version, shape, dtype, fortran, data = state
    _require(type(version) is int and version == 1 and _is_int_tuple(shape)
             and is_record(dtype, 'numpy.dtype') and type(fortran) is bool
             and type(data) is bytes, 'a malformed numpy array')
    dtype = visit(dtype)
    _require(len(data) == int(np.prod(shape, dtype=object)) * dtype.itemsize,
             lambda: f'a numpy array whose {len(data)} bytes do not fill its shape {shape}')
    array = np.frombuffer(data, dtype).reshape(shape, order='F' if fortran else 'C')
    return array.copy(order='K')


def _real_scalar(rec: _Record, visit: Callable) -> np.generic:
    dtype, data = visit(rec.args[0]), rec.args[1]
    _require(not rec.built and len(data) == dtype.itemsize, f'a malformed numpy {dtype} scalar')
    return np.frombuffer(data, dtype)[0]


_HISTORY_KEYS = frozenset(('max_length', '_log_history', '_count_history', 'statistics_methods'))


def _real_history_buffer(rec: _Record, visit: Callable) -> HistoryBuffer:
    state = rec.state  # dict keys are plain values (SafeUnpickler), so set() is cheap
    _require(rec.built and type(state) is dict and _HISTORY_KEYS - {'statistics_methods'}
             <= set(state) <= _HISTORY_KEYS, 'a HistoryBuffer with unexpected state keys')
    methods = state.get('statistics_methods', {})
    _require(type(methods) is dict and all(is_record(m, 'statistic') for m in methods.values()),
             'HistoryBuffer statistics methods other than getattr(HistoryBuffer, name)')
    logs, counts, max_length = (visit(state[k])
                                for k in ('_log_history', '_count_history', 'max_length'))
    _require(all(type(a) is np.ndarray and a.ndim == 1 for a in (logs, counts))
             and len(logs) == len(counts) and _is_int(max_length, 1) and len(logs) <= max_length,
             'a HistoryBuffer whose histories are not two 1-D arrays of equal length within '
             'max_length')
    # The statistics methods come from the running mmengine, never from the file.
    return HistoryBuffer(logs, counts, max_length)


_BUILDERS = {'numpy.dtype': _real_dtype, 'numpy array': _real_array, 'numpy scalar': _real_scalar,
             'HistoryBuffer': _real_history_buffer}


def _nbytes(obj: Any) -> int:
    if isinstance(obj, HistoryBuffer):
        return sum(a.nbytes for a in obj.data)
    return obj.nbytes if isinstance(obj, (np.ndarray, np.generic)) else 0


def _materialize(root: Any, budget: Budget) -> Any:
    """Replace each record in ``root`` by the real object; containers keep their identity.

    Dict keys and set items are plain values (SafeUnpickler), so only values are visited.
    """
    memo: Dict[int, Any] = {}  # id -> (original, result): originals stay alive, ids stay unique

    def visit(obj: Any) -> Any:
        if id(obj) in memo:
            return memo[id(obj)][1]
        kind = type(obj)
        if kind is list:
            memo[id(obj)] = (obj, obj)
            obj[:] = [visit(v) for v in obj]
        elif kind in (dict, OrderedDict):
            memo[id(obj)] = (obj, obj)
            for key, value in list(obj.items()):
                obj[key] = visit(value)
            if kind is OrderedDict and '_metadata' in vars(obj):
                obj._metadata = visit(obj._metadata)
        elif kind is tuple:
            memo[id(obj)] = (obj, tuple(visit(v) for v in obj))
        elif kind is _Record:
            _require(obj.kind in _BUILDERS, lambda: f'a {obj.kind} outside its object')
            memo[id(obj)] = (obj, _BUILDERS[obj.kind](obj, visit))
            budget.charge(_nbytes(memo[id(obj)][1]), f'a {obj.kind}')
        return memo[id(obj)][1] if id(obj) in memo else obj

    return visit(root)


# --- the loader ---------------------------------------------------------------------------------
def _safe_pickle_module(budget: Budget) -> types.ModuleType:
    """A pickle module for ``torch.load(pickle_module=...)`` whose unpickler is the safe one."""
    module = types.ModuleType('deeplabv3_plugin_safe_pickle')
    module.Unpickler = type('Unpickler', (SafeUnpickler, ), dict(budget=budget))

    def load(file: Any, **kwargs: Any) -> Any:  # torch reads a legacy file's other pickles here
        budget.last_loaded = _materialize(module.Unpickler(file, **kwargs).load(), budget)
        return budget.last_loaded

    module.load, module.UnpicklingError = load, pickle.UnpicklingError
    return module


def _check_format(file: Any, file_size: int) -> bool:
    """Refuse TorchScript archives (torch.load would run torch.jit.load), tar files and zips
    whose records inflate beyond the file; return whether ``file`` is a zip checkpoint."""
    is_zip = torch.serialization._is_zipfile(file)
    if is_zip:
        with torch.serialization._open_zipfile_reader(file) as archive:
            records = archive.get_all_records()
            _require('constants.pkl' not in records,
                     'a TorchScript archive (load it with torch.jit.load if you trust it)')
            _require(sum(archive.get_record_size(r) for r in records) <= file_size,
                     'compressed records (torch.save stores them uncompressed)')
    else:
        try:
            tarfile.open(fileobj=file, mode='r:', format=tarfile.PAX_FORMAT).close()
        except tarfile.TarError:
            pass
        else:
            _refuse('the tar format of PyTorch < 0.4')
    file.seek(0)
    return is_zip


def _env_flag(name: str) -> bool:
    return os.getenv(name, '0').lower() in ('1', 'y', 'yes', 'true')


def load_local_checkpoint(filename: str,
                          map_location: Optional[Union[str, torch.device, Callable]] = None) -> Any:
    """Load a local checkpoint (zip or legacy torch format) without running code from it.

    Args:
        filename: Path of the checkpoint file.
        map_location: Passed to :func:`torch.load`.

    Returns:
        What the file holds: a state dict, or mmengine's dict with ``state_dict``, ``meta``,
        ``message_hub`` (real ``HistoryBuffer``\\ s), ``optimizer``, ...

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        UnsafeCheckpointError: the file asks for anything beyond tensors, containers, plain
            values and mmengine's ``HistoryBuffer``/numpy data; the message names what.
        CheckpointError: the file is corrupt or truncated.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if _env_flag('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        return torch.load(filename, map_location=map_location)  # the user's explicit choice
    try:
        if _env_flag('TORCH_FORCE_WEIGHTS_ONLY_LOAD'):  # torch's own loader, as the user asked
            return torch.load(filename, map_location=map_location)
        with open(filename, 'rb') as file:
            size = os.fstat(file.fileno()).st_size
            budget = Budget(size)
            is_zip = _check_format(file, size)
            loaded = _materialize(torch.load(file, map_location=map_location, weights_only=False,
                                             pickle_module=_safe_pickle_module(budget)), budget)
            # A legacy file lists the storages whose bytes follow; any other one is uninitialised.
            keys = budget.last_loaded
            _require(is_zip or (type(keys) is list and all(type(k) is str for k in keys)
                                and budget.storages <= set(keys)),
                     'a storage whose bytes the file does not contain')
            return loaded
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it asks for {err}. This loader builds only '
            "tensors, containers, plain values and the HistoryBuffer and numpy data mmengine's "
            'checkpoints hold, because unpickling anything else can run code. If the file comes '
            'from a source you trust, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to load it with '
            'plain pickle.') from None
    except Exception as err:  # untrusted bytes: every failure is the file's, never a crash
        raise CheckpointError(f'Could not load checkpoint {filename!r}: it is corrupt, truncated '
                              f'or not a PyTorch checkpoint ({type(err).__name__}: '
                              f'{str(err)[:300]}).') from err
    finally:  # torch leaves the caller's map_location behind when a load fails
        torch.serialization._serialization_tls.map_location = None
