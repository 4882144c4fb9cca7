"""Checkpoints as safetensors, the ecosystem's safe weight format: tensors and JSON, no pickle.

A ``.safetensors`` file is an 8-byte header length, a JSON header (each tensor's dtype, shape and
byte range, plus a ``__metadata__`` map of strings) and the raw tensor bytes. The ``safetensors``
package parses and validates it (byte ranges contiguous, inside the file and matching the shapes;
a header under 100 MB), so nothing in the file can run code. This module maps mmengine's
checkpoint onto it:

* ``state_dict``: the tensors;
* ``meta``: the metadata entry ``"meta"``, one JSON object read as data only (strict JSON: no
  ``NaN``/``Infinity``, no repeated keys). Other metadata entries, such as the Hugging Face tools'
  ``"format": "pt"``, are not read. A ``meta['config']`` stays the string it is; nothing here
  evaluates it.

Such a file holds no optimizer, scheduler or message-hub state, so a run cannot resume from it
(:func:`check_resumable`). ``tools/publish_model.py`` writes these files.
"""
import json
import math
import os
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize_tensors

from ..errors import UserInputError
from .safe_globals import CheckpointError

__all__ = [
    'META_KEY', 'check_resumable', 'is_safetensors_file', 'load_safetensors_checkpoint',
    'safetensors_bytes', 'save_safetensors_checkpoint'
]

#: The ``__metadata__`` entry that holds the checkpoint's ``meta`` as JSON.
META_KEY = 'meta'
SUFFIX = '.safetensors'
MapLocation = Optional[Union[str, torch.device, Dict[str, str], Callable]]


def is_safetensors_file(filename: str) -> bool:
    """Whether ``filename`` names a safetensors checkpoint (by its ``.safetensors`` suffix)."""
    return filename.lower().endswith(SUFFIX)


def check_resumable(filename: str) -> None:
    """Refuse to resume a run from a ``.safetensors`` file: it holds weights and metadata only.

    Raises:
        CheckpointError: ``filename`` is a safetensors file; the message says what to do instead.
    """
    if is_safetensors_file(filename):
        raise CheckpointError(
            f'Cannot resume from {filename!r}: a .safetensors file holds the weights and their '
            'metadata only, no optimizer, LR scheduler or iteration state. Resume from the '
            "training run's own checkpoint (<work_dir>/iter_<N>.pth), or start a new run from "
            f'these weights with --cfg-options load_from={filename}.')


# --- writing ------------------------------------------------------------------------------------
def _check_json_data(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples become lists); refuses what JSON would change or drop."""
    if value is None or type(value) in (str, bool, int):
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise UserInputError(f'{where} is {value}, which strict JSON cannot hold.')
        return value
    if type(value) in (list, tuple):
        return [_check_json_data(v, f'{where}[{i}]') for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        bad = [k for k in value if type(k) is not str]
        if bad:
            raise UserInputError(f'{where} has non-string key(s) {bad[:3]}: JSON keys are strings.')
        return {k: _check_json_data(v, f'{where}[{k!r}]') for k, v in value.items()}
    raise UserInputError(f'{where} is a {type(value).__name__}, not JSON data (None, bool, int, '
                         'float, str, list or dict).')


def _own_tensors(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Dense, contiguous CPU copies: safetensors refuses views and tensors sharing memory."""
    tensors = {}
    for key, value in state_dict.items():
        if type(key) is not str or not isinstance(value, torch.Tensor):
            raise UserInputError(f'state_dict[{key!r}] is a {type(value).__name__}: a '
                                 'safetensors file holds only tensors under string keys.')
        if value.layout != torch.strided:
            raise UserInputError(f'state_dict[{key!r}] is a {value.layout} tensor; safetensors '
                                 'holds dense tensors only (call .to_dense()).')
        value = value.detach().resolve_conj().resolve_neg().to('cpu')
        tensors[key] = value.clone(memory_format=torch.contiguous_format)
    return tensors


def safetensors_bytes(state_dict: Mapping[str, torch.Tensor],
                      meta: Optional[Mapping[str, Any]] = None) -> bytes:
    """The bytes of a ``.safetensors`` file holding ``state_dict`` and ``meta`` (as JSON).

    Tensors are copied first (any device, layout or strides; shared or aliased storages become
    separate tensors), so every tensor round-trips bitwise.

    Raises:
        UserInputError: a value is not a dense tensor, ``meta`` is not JSON data, or a dtype is
            one safetensors cannot store; the message names the key.
    """
    metadata = {'format': 'pt'}  # what the Hugging Face tools expect to find
    if meta is not None:
        metadata[META_KEY] = json.dumps(_check_json_data(meta, 'meta'), allow_nan=False,
                                        ensure_ascii=False)
    tensors = _own_tensors(state_dict)
    try:
        return serialize_tensors(tensors, metadata=metadata)
    except (KeyError, ValueError, RuntimeError, SafetensorError) as error:  # e.g. complex128
        dtypes = sorted({str(t.dtype) for t in tensors.values()})
        raise UserInputError(f'safetensors cannot store these tensors (dtypes {dtypes}): '
                             f'{type(error).__name__}: {error}') from error


def save_safetensors_checkpoint(filename: str, state_dict: Mapping[str, torch.Tensor],
                                meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``state_dict`` and ``meta`` to ``filename`` (see :func:`safetensors_bytes`)."""
    data = safetensors_bytes(state_dict, meta)
    with open(filename, 'wb') as file:
        file.write(data)


# --- reading ------------------------------------------------------------------------------------
def _refuse_constant(name: str) -> None:
    raise ValueError(f'{name} is not plain JSON')


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f'key {repeated!r} is repeated (JSON readers disagree on which wins)')
    return result


def _parse_meta(metadata: Optional[Dict[str, str]], filename: str) -> Dict[str, Any]:
    """The checkpoint's ``meta`` from the header's metadata, as JSON data; ``{}`` if none."""
    text = (metadata or {}).get(META_KEY)
    if text is None:
        return {}
    try:
        meta = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(
            f'Could not load safetensors checkpoint {filename!r}: its metadata entry '
            f'{META_KEY!r} is not plain JSON ({type(error).__name__}: {str(error)[:200]}); '
            'expected a JSON object of data, as tools/publish_model.py writes.') from None
    if type(meta) is not dict:
        raise CheckpointError(
            f'Could not load safetensors checkpoint {filename!r}: its metadata entry '
            f'{META_KEY!r} is a JSON {type(meta).__name__}, expected a JSON object.')
    return meta


def _map_to(state_dict: 'OrderedDict[str, torch.Tensor]',
            map_location: MapLocation) -> 'OrderedDict[str, torch.Tensor]':
    """Move each storage where ``map_location`` says, with :func:`torch.load`'s own rules (a
    safetensors file is saved from the CPU, so its storages' location is ``'cpu'``)."""
    if map_location is None or str(map_location) == 'cpu':
        return state_dict
    restore = torch.serialization._get_restore_location(map_location)
    moved: Dict[int, Any] = {}  # storage pointer -> restored storage: each storage moves once
    for key, tensor in state_dict.items():
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in moved:
            moved[storage.data_ptr()] = restore(storage, 'cpu')
        target = moved[storage.data_ptr()]
        state_dict[key] = torch.empty(0, dtype=tensor.dtype, device=target.device).set_(
            target, tensor.storage_offset(), tensor.shape, tensor.stride())
    return state_dict


def load_safetensors_checkpoint(filename: str,
                                map_location: MapLocation = None) -> Dict[str, Any]:
    """Load a ``.safetensors`` file in mmengine's checkpoint shape, running nothing from it.

    Args:
        filename: Path of the file.
        map_location: As :func:`torch.load` takes it: ``None`` or ``'cpu'`` (the CPU, where
            safetensors loads), a device string or :class:`torch.device`, a dict mapping
            ``'cpu'`` to a location, or a callable ``(storage, 'cpu') -> storage``.

    Returns:
        ``{'state_dict': OrderedDict of tensors, 'meta': dict of JSON data}``.

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        CheckpointError: the file is not a valid safetensors file (truncated, a header whose
            sizes or offsets do not fit, ...) or its ``meta`` is not a plain JSON object.
    """
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        # pread: tensors own their memory. With the default mmap they stay views of the file,
        # which change when it does and fault (SIGBUS) once it is truncated.
        with safe_open(filename, framework='pt', device='cpu', backend='pread') as file:
            metadata = file.metadata()
            state_dict = OrderedDict((key, file.get_tensor(key)) for key in file.keys())
    except Exception as error:  # untrusted bytes: every failure is the file's, never a crash
        raise CheckpointError(
            f'Could not load safetensors checkpoint {filename!r}: it is corrupt, truncated or not '
            f'a safetensors file ({type(error).__name__}: {str(error)[:300]}).') from error
    return {'state_dict': _map_to(state_dict, map_location),
            'meta': _parse_meta(metadata, filename)}
