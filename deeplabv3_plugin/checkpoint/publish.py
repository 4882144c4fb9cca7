"""Publish a trained checkpoint as ``OUT-<hash8>.safetensors`` plus ``OUT-<hash8>.json``.

Naming follows torch.hub's convention (mmseg's ``publish_model.py`` uses the same): ``<hash8>`` is
the first 8 hex digits of the SHA-256 of the ``.safetensors`` file's bytes, after the last
``-``, so ``torch.hub.download_url_to_file(url, dst, hash_prefix)`` and
``load_state_dict_from_url(check_hash=True)`` verify a download against its name. torch.hub takes
the first ``-<hex digits>.`` of a name as the hash, so ``OUT`` must not contain one itself.

What is kept: the weights (``state_dict``) and ``meta`` with the source's ``dataset_meta``
(classes, palette), ``iter``/``epoch`` and the versions that published it. What is dropped:
everything else (optimizer, message hub, LR schedulers, EMA copy, config text). The JSON sidecar
repeats ``meta`` with the file's name, size, tensor count and full SHA-256, for model indexes.
"""
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Any, Dict, List

import mmengine
import mmseg
import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch.hub import HASH_REGEX

from ..datasets.safe_write import open_within
from ..errors import UserInputError
from ..version import __version__
from .safetensors_format import SUFFIX, safetensors_bytes

__all__ = ['PublishedModel', 'publish_model']

#: Entries of the source's ``meta`` that a published model keeps.
KEPT_META = ('dataset_meta', 'epoch', 'iter')


@dataclass(frozen=True)
class PublishedModel:
    """What :func:`publish_model` wrote: the weights file, its sidecar, hash and metadata."""
    weights: str
    sidecar: str
    sha256: str
    meta: Dict[str, Any]
    dropped: List[str]


def _stem(out: str) -> str:
    """``OUT`` without a ``.safetensors`` suffix; refuses a name torch.hub would misread."""
    stem = out[:-len(SUFFIX)] if out.lower().endswith(SUFFIX) else out
    name = osp.basename(stem)
    if not name:
        raise UserInputError(f'OUT {out!r} names a directory; expected a path prefix such as '
                             'work_dirs/deeplabv3_r101_voc (the hash and suffix are appended).')
    match = HASH_REGEX.search(f'{name}-00000000{SUFFIX}')
    if match.start() != len(name):
        raise UserInputError(
            f'OUT {out!r}: torch.hub reads the hash from the first "-<hex digits>." in a file '
            f'name and would read {match.group(0)!r} from {name!r}; choose a name without '
            'a "-" followed by hex digits and a ".".')
    return stem


def _published_meta(source_meta: Any, source: str) -> Dict[str, Any]:
    meta = {key: source_meta[key] for key in KEPT_META
            if isinstance(source_meta, dict) and source_meta.get(key) is not None}
    meta.update(mmseg_version=mmseg.__version__, mmengine_version=mmengine.__version__,
                torch_version=str(torch.__version__), deeplabv3_plugin_version=__version__,
                source_checkpoint=osp.basename(source))
    return meta


def publish_model(checkpoint: str, out: str) -> PublishedModel:
    """Load ``checkpoint`` through mmengine's :class:`CheckpointLoader` (the plugin's safe loader
    once ``deeplabv3_plugin.runtime`` is imported, as the tools do), keep its weights and
    metadata, and write ``<out>-<hash8>.safetensors`` and ``<out>-<hash8>.json``.

    Raises:
        UserInputError: ``out`` is a name torch.hub would misread, the checkpoint holds no
            tensors, or its weights or metadata cannot be stored (the message names the key).
        CheckpointError: the checkpoint cannot be loaded safely.
    """
    stem = _stem(out)
    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(loaded, dict):
        raise UserInputError(f'Checkpoint {checkpoint!r} holds a {type(loaded).__name__}; '
                             'expected a dict (an mmengine checkpoint or a state dict).')
    has_state = isinstance(loaded.get('state_dict'), dict)
    state_dict = loaded['state_dict'] if has_state else loaded
    dropped = sorted(k for k in loaded if k not in ('state_dict', 'meta')) if has_state else []
    if not state_dict or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserInputError(f'Checkpoint {checkpoint!r} has no state_dict of tensors (keys: '
                             f'{sorted(map(str, loaded))[:8]}); expected a checkpoint written by '
                             'tools/train.py or a state dict.')
    meta = _published_meta(loaded.get('meta') if has_state else None, checkpoint)
    print_log(f'{checkpoint}: {len(state_dict)} tensors kept; dropped: '
              f'{", ".join(dropped) or "nothing"}', logger='current')
    data = safetensors_bytes(state_dict, meta)
    sha256 = hashlib.sha256(data).hexdigest()
    directory = osp.dirname(stem) or '.'
    os.makedirs(directory, exist_ok=True)
    weights, sidecar = (f'{stem}-{sha256[:8]}{suffix}' for suffix in (SUFFIX, '.json'))
    with open_within(directory, osp.basename(weights)) as file:
        file.write(data)
    record = dict(file=osp.basename(weights), sha256=sha256, bytes=len(data),
                  num_tensors=len(state_dict), meta=meta)
    with open_within(directory, osp.basename(sidecar), 'w', encoding='utf-8') as file:
        json.dump(record, file, indent=2, ensure_ascii=False)
        file.write('\n')
    print_log(f'wrote {weights} ({len(data) / 2**20:.1f} MiB, sha256 {sha256}) and {sidecar}',
              logger='current')
    return PublishedModel(weights, sidecar, sha256, meta, dropped)
