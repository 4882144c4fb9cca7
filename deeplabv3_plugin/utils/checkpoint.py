"""Weights-only loading of the checkpoints mmengine writes, for torch >= 2.6.

Since torch 2.6, ``torch.load`` unpickles with ``weights_only=True`` by default: only tensors,
containers and an allowlist of globals are rebuilt, so a checkpoint cannot run code on load.
mmengine 0.10.7 calls ``torch.load`` without ``weights_only``, and the checkpoints it saves
carry the training state of its ``MessageHub`` (``HistoryBuffer`` objects holding numpy arrays
and numpy scalars). Those globals are not on torch's allowlist, so ``tools/test.py CONFIG CKPT``,
``load_from`` and ``resume`` fail on every checkpoint mmengine itself wrote.

This module fixes that the safe way, through mmengine's public extension point
(``mmengine.runner.CheckpointLoader.register_scheme``): local checkpoint files are loaded by
:func:`load_local_checkpoint`, which keeps torch's weights-only unpickler and allows exactly the
globals listed in :data:`MMENGINE_CHECKPOINT_GLOBALS` for the duration of that one load
(``torch.serialization.safe_globals`` is a context manager; torch's global allowlist is left
untouched). Anything else a checkpoint pickles is refused with :class:`UnsafeCheckpointError`,
which names what was refused.

One global needs care: pickle protocol 2 (``torch.save``'s default) writes the methods held in
``HistoryBuffer._statistics_methods`` as ``getattr(HistoryBuffer, 'min')``. Allowing the builtin
``getattr`` would reopen arbitrary attribute access (and with it code execution) during
unpickling, so the name ``builtins.getattr`` is instead bound, for these loads only, to
:func:`_history_buffer_statistic`, which rebuilds exactly those methods and refuses anything else.

torch's own escape hatch still works and stays the user's decision: with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment torch loads full pickles (only do that
for files you trust).

``torchvision://NAME`` (ImageNet backbones in torchvision's layout) is also registered: mmengine
looks its URL up by importing torchvision, which is often absent from an mmseg environment
(and not installable beside every torch build); :func:`load_from_torchvision_zoo` falls back to
the URL table mmengine itself bundles, so such configs load from torch hub's download cache
(``$TORCH_HOME/hub/checkpoints``) or download as usual.

The schemes are registered when :mod:`deeplabv3_plugin` is imported, which every tool of this
project does and every config does through ``custom_imports``.
"""
import os.path as osp
import pickle
from typing import Any, List, Optional, Union

import mmengine
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import (CheckpointLoader, load_from_http,
                                        load_from_torchvision)

__all__ = [
    'MMENGINE_CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'load_local_checkpoint',
    'load_from_torchvision_zoo'
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references objects outside :data:`MMENGINE_CHECKPOINT_GLOBALS`."""


def _numpy_checkpoint_globals() -> List[Any]:
    """The numpy objects that pickled arrays, dtypes and scalars reference (numpy 1.x and 2.x)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
        np.uint64, np.float16, np.float32, np.float64)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner: Any, name: str) -> Any:
    """Stand-in for ``getattr`` while unpickling: only ``HistoryBuffer``'s statistics methods."""
    allowed = set(_HISTORY_BUFFER_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed and hasattr(HistoryBuffer, name):
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'getattr({getattr(owner, "__qualname__", type(owner).__name__)}, {name!r}) is not '
        f'allowed; only HistoryBuffer statistics methods {sorted(allowed)} may be rebuilt')


#: Every global a checkpoint written by mmengine's ``Runner`` references besides tensors:
#: the message hub's ``HistoryBuffer`` (and its statistics methods, see
#: :func:`_history_buffer_statistic`) and the numpy arrays, dtypes and scalars it holds.
MMENGINE_CHECKPOINT_GLOBALS: List[Any] = [
    HistoryBuffer, *_numpy_checkpoint_globals(),
    (_history_buffer_statistic, 'builtins.getattr'),
]


def _global_name(entry: Any) -> str:
    if isinstance(entry, tuple):  # the (stand-in, 'module.name') entry of the allowlist
        return 'getattr(HistoryBuffer, <statistics method>)'
    return f'{entry.__module__}.{entry.__qualname__}'


def load_local_checkpoint(filename: str,
                          map_location: Optional[Union[str, torch.device]] = None) -> Any:
    """Load a local checkpoint with torch's weights-only unpickler and mmengine's globals.

    Args:
        filename: Path of the checkpoint file.
        map_location: Passed to :func:`torch.load`.

    Returns:
        Whatever the file holds (usually a dict with ``state_dict``, ``meta``, ``message_hub``,
        ``optimizer``...).

    Raises:
        FileNotFoundError: ``filename`` is not a file.
        UnsafeCheckpointError: the file pickles globals other than the allowed ones.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    try:
        with torch.serialization.safe_globals(MMENGINE_CHECKPOINT_GLOBALS):
            # weights_only is left to torch's default (True since 2.6) so that the user's
            # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD escape hatch keeps working.
            return torch.load(filename, map_location=map_location)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f'Refused to load checkpoint {filename!r}: {_what_was_refused(filename, err)}. '
            'Checkpoints written by mmengine contain nothing but tensors and '
            f'{", ".join(sorted(_global_name(g) for g in MMENGINE_CHECKPOINT_GLOBALS))}. '
            "Unpickling other objects can execute code, so checkpoints are loaded with torch's "
            'weights-only unpickler. If the file comes from a source you trust, re-save its '
            'state_dict with torch.save, or set the environment variable '
            'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 at your own risk.') from err


def _what_was_refused(filename: str, err: Exception) -> str:
    """Name the refused globals, or the refused ``getattr`` call, for the error message."""
    allowed = {g[1] if isinstance(g, tuple) else _global_name(g)
               for g in MMENGINE_CHECKPOINT_GLOBALS}
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip-format checkpoint: torch's own message says what failed
        found = []
    refused = sorted(set(found) - allowed)
    if refused:
        return f'it pickles {", ".join(refused)}, which is not allowed'
    # torch wraps the unpickler's own message between its boilerplate; keep just that line.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    detail = next((ln for i, ln in enumerate(lines) if i and 'WeightsUnpickler error' in
                   lines[i - 1]), lines[0] if lines else type(err).__name__)
    return f'it rebuilds an object that is not allowed ({detail.strip()})'


def load_from_torchvision_zoo(filename: str,
                              map_location: Optional[Union[str, torch.device]] = None) -> Any:
    """Load ``torchvision://NAME`` (or the deprecated ``modelzoo://NAME``), torchvision optional.

    With torchvision installed this is mmengine's own loader. Without it, the URL comes from
    the table mmengine bundles (``mmengine/hub/torchvision_0.12.json``: ``resnet18`` ...
    ``resnet152`` and the other classic ImageNet models), and the file is read from torch hub's
    cache or downloaded, exactly as mmengine would.

    Args:
        filename: ``torchvision://resnet50`` and the like.
        map_location: Passed to :func:`torch.load`.

    Raises:
        KeyError: the name is not in the table; the message lists the known names.
    """
    try:
        import torchvision  # noqa: F401
    except ImportError:
        name = filename.split('://', 1)[1]
        urls = mmengine.load(osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))
        if name not in urls:
            raise KeyError(f'{filename}: unknown torchvision model {name!r} (torchvision is not '
                           f'installed, so only these names are known: {", ".join(sorted(urls))})')
        return load_from_http(urls[name], map_location=map_location)
    return load_from_torchvision(filename, map_location=map_location)


CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
CheckpointLoader.register_scheme(
    prefixes=('modelzoo://', 'torchvision://'), loader=load_from_torchvision_zoo, force=True)
