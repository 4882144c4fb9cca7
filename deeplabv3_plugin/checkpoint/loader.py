"""Load the checkpoints mmengine writes with torch's own weights-only unpickler, safely.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; under torch >= 2.6 that is torch's
weights-only unpickler, which refuses the ``HistoryBuffer`` and numpy objects of the message hub
in every checkpoint mmengine saves. Allowlisting those classes is not safe: their
``__setstate__`` and numpy's constructors take the file's state as it comes.

:func:`load_local_checkpoint` keeps torch's formats *and* torch's parser, so no file can mean one
thing to torch and another here:

1. the file's pickles are scanned first (:mod:`.pickle_scan`): linear time, bounded nesting,
   expansion and memory, only the globals, opcodes and calls mmengine's checkpoints contain,
   tensors inside storages the file really holds;
2. ``torch.load(weights_only=True)`` unpickles, with the inert records of :mod:`.safe_globals`
   standing in for ``HistoryBuffer`` and numpy (added to torch's safe globals for the load only,
   in place of any caller's entries of the same names, which are back afterwards);
3. :func:`_materialize` builds each real object from the records' plain, checked data.

TorchScript archives, tar files (PyTorch < 0.4) and raw pickles are refused. The user's explicit
escape hatch for files they trust stays torch's own: ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``.
"""
import io
import os
import tarfile
import threading
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .pickle_scan import Node, ScanResult, scan_pickle
from .safe_globals import (NDARRAY, NUMERIC_DTYPES, ArrayRecord, CheckpointError, DtypeRecord,
                           HistoryBufferRecord, Record, ScalarRecord, StatisticRecord,
                           UnsafeCheckpointError, _Marker, _refuse, _require, torch_safe_globals)
from .safetensors_format import is_safetensors_file, load_safetensors_checkpoint

__all__ = ['CheckpointError', 'UnsafeCheckpointError', 'load_local_checkpoint', 'memory_budget']


def memory_budget(file_size: int) -> int:
    """What one load may allocate, in bytes: twice the file, plus 32 MiB for a small file."""
    return 2 * file_size + 32 * 2**20


class Budget:
    """The bytes a load may still allocate; the scan charges what the unpickler will build."""

    def __init__(self, file_size: int) -> None:
        self.left = memory_budget(file_size)

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes
        if self.left < 0:
            _refuse(f'{what} taking more memory than a file of its size can hold')


# --- the file, scanned before torch reads it ------------------------------------------------------
def _scan_zip(file: Any, size: int) -> None:
    with torch.serialization._open_zipfile_reader(file) as archive:
        records = set(archive.get_all_records())
        _require('constants.pkl' not in records,
                 'a TorchScript archive (load it with torch.jit.load if you trust it)')
        _require(sum(archive.get_record_size(r) for r in records) <= size,
                 'compressed records (torch.save stores them uncompressed)')
        _require('data.pkl' in records, 'a zip file without data.pkl')
        data = archive.get_record('data.pkl')
        scan = scan_pickle(io.BytesIO(data), Budget(size))
        for key, (dtype, numel) in scan.storages.items():
            name = f'data/{key}'
            _require(name in records and archive.get_record_size(name) == numel * dtype.itemsize,
                     lambda: f'a storage {key!r} whose bytes the file does not hold')


def _scan_legacy(file: Any, size: int) -> None:
    """The legacy format: five pickles (magic number, protocol, system info, the object, the
    storage keys), then each storage's element count and bytes, in the keys' order."""
    budget, scan = Budget(size), ScanResult()
    for expected in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION):
        root = scan_pickle(file, budget, True, scan).root
        _require(type(root) is int and root == expected,
                 'a file that is not a PyTorch checkpoint (no magic number)')
    for _ in range(2):  # the system info, then the object
        scan_pickle(file, budget, True, scan)
    keys = scan_pickle(file, budget, True, ScanResult()).root
    _require(type(keys) is Node and keys.kind == 'list' and all(type(k) is str for k in keys.items)
             and sorted(keys.items) == sorted(scan.storages),
             'storage keys other than the storages the file declares')
    offset = file.tell()
    for key in keys.items:
        dtype, numel = scan.storages[key]
        file.seek(offset)
        declared = int.from_bytes(file.read(8), 'little')
        offset += 8 + numel * dtype.itemsize
        _require(declared == numel and offset <= size,
                 lambda: f'a storage {key!r} whose bytes the file does not hold')


def _scan(file: Any, size: int) -> None:
    if torch.serialization._is_zipfile(file):
        _scan_zip(file, size)
    else:
        try:
            tarfile.open(fileobj=file, mode='r:', format=tarfile.PAX_FORMAT).close()
        except tarfile.TarError:
            file.seek(0)
            _scan_legacy(file, size)
        else:
            _refuse('the tar format of PyTorch < 0.4')
    file.seek(0)


# --- records -> real objects --------------------------------------------------------------------
def _is_int_tuple(x: Any) -> bool:
    return type(x) is tuple and len(x) <= 64 and all(type(v) is int and v >= 0 for v in x)


def _real_dtype(rec: Record, visit: Callable) -> np.dtype:
    state = rec.state
    _require(rec.built and type(rec.args[0]) is str and rec.args[0] in NUMERIC_DTYPES
             and type(state) is tuple and len(state) == 8
             and all(type(v) is int for v in (state[0], *state[5:])) and state[0] == 3
             and state[5:] == (-1, -1, 0) and type(state[1]) is str
             and state[1] in ('<', '>', '|', '=') and all(v is None for v in state[2:5]),
             lambda: f'a numpy dtype {rec.args[:1]!r} with an unexpected state')
    dtype = np.dtype(rec.args[0])
    return dtype.newbyteorder(state[1]) if state[1] in '<>' else dtype


def _real_array(rec: Record, visit: Callable) -> np.ndarray:
    state = rec.state
    _require(rec.built and len(rec.args) == 3 and rec.args[0] is NDARRAY and type(state) is tuple
             and len(state) == 5, 'a malformed numpy array')
    version, shape, dtype, fortran, data = state
    _require(type(version) is int and version == 1 and _is_int_tuple(shape)
             and type(dtype) is DtypeRecord and type(fortran) is bool and type(data) is bytes,
             'a malformed numpy array')
    dtype = visit(dtype)
    _require(len(data) == int(np.prod(shape, dtype=object)) * dtype.itemsize,
             lambda: f'a numpy array whose {len(data)} bytes do not fill its shape {shape}')
    array = np.frombuffer(data, dtype).reshape(shape, order='F' if fortran else 'C')
    return array.copy(order='K')


def _real_scalar(rec: Record, visit: Callable) -> np.generic:
    _require(not rec.built and len(rec.args) == 2 and type(rec.args[0]) is DtypeRecord
             and type(rec.args[1]) is bytes, 'a malformed numpy scalar')
    dtype, data = visit(rec.args[0]), rec.args[1]
    _require(len(data) == dtype.itemsize, f'a malformed numpy {dtype} scalar')
    return np.frombuffer(data, dtype)[0]


_HISTORY_KEYS = frozenset(('max_length', '_log_history', '_count_history', 'statistics_methods'))


def _real_history_buffer(rec: Record, visit: Callable) -> HistoryBuffer:
    state = rec.state  # dict keys are scalars (the scan), so set() is cheap
    _require(rec.built and not rec.args and type(state) is dict
             and _HISTORY_KEYS - {'statistics_methods'} <= set(state) <= _HISTORY_KEYS,
             'a HistoryBuffer with unexpected state keys')
    methods = state.get('statistics_methods', {})
    _require(type(methods) is dict and all(
        type(m) is StatisticRecord and m.args[0] is HistoryBufferRecord
        and type(m.args[1]) is str and not m.args[1].startswith('_') for m in methods.values()),
        'HistoryBuffer statistics methods other than getattr(HistoryBuffer, name)')
    logs, counts, max_length = (visit(state[k])
                                for k in ('_log_history', '_count_history', 'max_length'))
    _require(all(type(a) is np.ndarray and a.ndim == 1 for a in (logs, counts))
             and len(logs) == len(counts) and type(max_length) is int
             and len(logs) <= max_length, 'a HistoryBuffer whose histories are not two 1-D '
             'arrays of equal length within max_length')
    # The statistics methods come from the running mmengine, never from the file.
    return HistoryBuffer(logs, counts, max_length)


_BUILDERS = {DtypeRecord: _real_dtype, ArrayRecord: _real_array, ScalarRecord: _real_scalar,
             HistoryBufferRecord: _real_history_buffer}


def _materialize(root: Any) -> Any:
    """Replace each record in ``root`` by the real object; containers keep their identity.

    Dict keys and set items are scalars (the scan), so only values are visited. Nothing of the
    stand-ins survives: every container type torch may build here is walked.
    """
    memo: Dict[int, Any] = {}  # id -> (original, result): originals stay alive, ids stay unique

    def visit(obj: Any) -> Any:
        if id(obj) in memo:
            return memo[id(obj)][1]
        kind = type(obj)
        if kind is list:
            memo[id(obj)] = (obj, obj)
            obj[:] = [visit(v) for v in obj]
        elif kind in (dict, OrderedDict, Counter):
            memo[id(obj)] = (obj, obj)
            for key, value in list(obj.items()):
                obj[key] = visit(value)
            _require(kind is not Counter or all(type(v) is int for v in obj.values()),
                     'a Counter of other than integers')
            if kind is OrderedDict and '_metadata' in vars(obj):
                obj._metadata = visit(obj._metadata)
        elif kind is tuple:
            memo[id(obj)] = (obj, tuple(visit(v) for v in obj))
        elif kind in _BUILDERS:
            memo[id(obj)] = (obj, _BUILDERS[kind](obj, visit))
        else:
            _require(not isinstance(obj, (Record, _Marker)) and not callable(obj),
                     lambda: f'a {getattr(obj, "kind", type(obj).__name__)} outside its object')
        return memo[id(obj)][1] if id(obj) in memo else obj

    return visit(root)


# --- the loader ---------------------------------------------------------------------------------
def _global_name(entry: Any) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


_LOCK = threading.Lock()


@contextmanager
def _stand_ins() -> Iterator[None]:
    """torch's safe globals with the stand-ins, and without the caller's entries of the same
    names (torch resolves a name held twice by set order: the real ``HistoryBuffer`` a caller
    allowlisted could win). Afterwards the caller's entries are back, and what torch itself
    registered meanwhile (its DTensor classes, on a first load) is kept."""
    serialization = torch.serialization
    ours = torch_safe_globals()
    names = {name for _, name in ours}
    before = serialization.get_safe_globals()
    serialization.clear_safe_globals()
    serialization.add_safe_globals([g for g in before if _global_name(g) not in names] + ours)
    try:
        yield
    finally:
        added = [g for g in serialization.get_safe_globals() if g not in ours and g not in before]
        serialization.clear_safe_globals()
        serialization.add_safe_globals(before + added)


def _env_flag(name: str) -> bool:
    return os.getenv(name, '0').lower() in ('1', 'y', 'yes', 'true')


def load_local_checkpoint(filename: str,
                          map_location: Optional[Union[str, torch.device, Callable]] = None) -> Any:
    """Load a local checkpoint (zip or legacy torch format) without running code from it.

    Args:
        filename: Path of the checkpoint file; ``*.safetensors`` loads through the
            ``safetensors`` package.
        map_location: Passed to :func:`torch.load`.

    Returns:
        What the file holds: a state dict, or mmengine's dict with ``state_dict``, ``meta``,
        ``message_hub`` (real ``HistoryBuffer``\\ s), ``optimizer``, ...

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        UnsafeCheckpointError: the file asks for anything beyond tensors, containers, plain
            values and mmengine's ``HistoryBuffer``/numpy data, or exceeds the scan's bounds;
            the message names what.
        CheckpointError: the file is corrupt or truncated.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if is_safetensors_file(filename):  # no pickle at all
        return load_safetensors_checkpoint(filename, map_location)
    if _env_flag('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'):
        return torch.load(filename, map_location=map_location)  # the user's explicit choice
    try:
        with open(filename, 'rb') as file:  # read once: what is scanned is what torch reads
            file = io.BytesIO(file.read())
        _scan(file, len(file.getbuffer()))
        with _LOCK, _stand_ins():  # torch's safe globals are the whole process's
            loaded = torch.load(file, map_location=map_location, weights_only=True)
        return _materialize(loaded)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: it asks for {err}. This loader builds only '
            "tensors, containers, plain values and the HistoryBuffer and numpy data mmengine's "
            'checkpoints hold, within bounds on nesting and memory, because unpickling anything '
            'else can run code or exhaust the machine. If the file comes from a source you '
            'trust, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 to load it with plain pickle.') from None
    except Exception as err:  # untrusted bytes: every failure is the file's, never a crash
        raise CheckpointError(f'Could not load checkpoint {filename!r}: it is corrupt, truncated '
                              f'or not a PyTorch checkpoint ({type(err).__name__}: '
                              f'{str(err)[:300]}).') from err
    finally:  # torch leaves the caller's map_location behind when a load fails
        torch.serialization._serialization_tls.map_location = None
