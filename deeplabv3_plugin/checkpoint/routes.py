"""Every route mmengine's ``CheckpointLoader`` knows, through the safe loader.

mmengine 0.10.7 resolves ``open-mmlab://``, ``openmmlab://``, ``torchvision://``, ``modelzoo://``,
``mmcls://`` and ``http(s)://`` to ``torch.hub.load_state_dict_from_url``, whose ``weights_only``
default is ``False``: a file planted in the download cache, or served at the URL, runs its code.
``s3://``/``petrel://`` and ``pavi://`` call ``torch.load`` themselves. Here each scheme resolves
its name exactly as mmengine does (its own URL tables, ``$MMENGINE_HOME/open_mmlab.json``,
deprecated names), the file is downloaded with torch.hub's own download into torch.hub's cache
path, its SHA-256 is checked against the prefix in its name (torch.hub's ``NAME-<hash>.EXT``
convention) on download *and* when it is already cached, and it is loaded by
:func:`~.checkpoint.load_local_checkpoint`. The hash only proves the file is the published one;
the safe loader is what keeps a hostile file from running code. Config text in the result is made
inert by :func:`~.meta.inert_meta`. ``deeplabv3_plugin.runtime`` registers
:data:`CHECKPOINT_ROUTES`.
"""
import hashlib
import logging
import os
import os.path as osp
import tempfile
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import mmengine
import torch
from mmengine.dist import get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader, _get_mmengine_home,
                                        _process_mmcls_checkpoint,
                                        get_deprecated_model_names, get_external_models,
                                        get_mmcls_models, get_torchvision_models)

from ..errors import UserInputError
from .loader import CheckpointError, load_local_checkpoint
from .meta import inert_meta

__all__ = ['CHECKPOINT_ROUTES', 'cached_download', 'file_sha256', 'load_from_local',
           'load_from_url', 'register_routes']

MapLocation = Optional[Union[str, torch.device, Callable]]


def load_from_local(filename: str, map_location: MapLocation = None) -> Any:
    """A local file through the safe loader, its config text made inert."""
    return inert_meta(load_local_checkpoint(filename, map_location))


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as file:
        for block in iter(lambda: file.read(2**20), b''):
            digest.update(block)
    return digest.hexdigest()


def cached_download(url: str, model_dir: Optional[str] = None, progress: bool = False) -> str:
    """The path of ``url`` in torch.hub's download cache, downloaded there if absent.

    The cache path is torch.hub's: ``model_dir`` (default ``torch.hub.get_dir()/checkpoints``,
    i.e. ``$TORCH_HOME/hub/checkpoints``) joined with the URL's file name. When that name holds a
    hash prefix (``resnet50-0676ba61.pth``), a download is checked by torch.hub and a cached file
    here, before anything reads it.

    Raises:
        CheckpointError: the download or the cached file does not match the hash in its name.
    """
    name = osp.basename(urlparse(url).path)
    if name in ('', '.', '..'):
        raise UserInputError(f'Checkpoint URL {url!r} names no file to download.')
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(model_dir, name)
    match = torch.hub.HASH_REGEX.search(name)
    hash_prefix = match.group(1) if match else ''
    if not osp.exists(path):
        os.makedirs(model_dir, exist_ok=True)
        print_log(f'Downloading {url} to {path}', logger='current')
        try:  # writes a temporary file, checks the hash, then moves it into place
            torch.hub.download_url_to_file(url, path, hash_prefix or None, progress=progress)
        except RuntimeError as err:  # torch.hub's 'invalid hash value (expected ..., got ...)'
            raise CheckpointError(f'Download of checkpoint {url!r} refused: {err}.') from err
    elif hash_prefix:
        digest = file_sha256(path)
        if not digest.startswith(hash_prefix):
            raise CheckpointError(
                f'Refused to load checkpoint {path!r}, the download cache of {url!r}: its '
                f'SHA-256 starts with {digest[:len(hash_prefix)]}, not with the {hash_prefix} its '
                'name promises, so it is not the published file. Delete it to download it again.')
    return path


def load_from_url(filename: str, map_location: MapLocation = None,
                  model_dir: Optional[str] = None) -> Any:
    """``http(s)://``: :func:`cached_download`, then the safe loader. Distributed, rank 0
    downloads first and the other ranks wait for it, as in mmengine's ``load_from_http``."""
    progress = os.isatty(0)
    rank, world_size = get_dist_info()
    if rank == 0:
        path = cached_download(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = cached_download(filename, model_dir, progress)
    return load_from_local(path, map_location)


def _url_of(table: Mapping[str, Optional[str]], name: str, filename: str, source: str) -> str:
    if name not in table:
        raise UserInputError(f'Checkpoint {filename!r}: unknown model name {name!r} (not in '
                             f'{source}; known: {", ".join(sorted(table))}).')
    if not table[name]:
        raise UserInputError(f'Checkpoint {filename!r}: {source} lists no weights for {name!r}.')
    return table[name]


def _split(filename: str) -> Tuple[str, str]:
    prefix, name = filename.split('://', 1)
    return prefix + '://', name


def load_from_openmmlab(filename: str, map_location: MapLocation = None) -> Any:
    """``open-mmlab://NAME``/``openmmlab://NAME`` through mmengine's tables (its bundled
    ``hub/openmmlab.json`` updated by ``$MMENGINE_HOME/open_mmlab.json``; deprecated names
    renamed with mmengine's warning); a table entry that is not a URL is a file under
    ``$MMENGINE_HOME``."""
    prefix, name = _split(filename)
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}{name} is deprecated in favor of {prefix}{deprecated[name]}',
                  logger='current', level=logging.WARNING)
        name = deprecated[name]
    url = _url_of(get_external_models(), name, filename, "mmengine's open-mmlab model table")
    if url.startswith(('http://', 'https://')):
        return load_from_url(url, map_location)
    path = osp.join(_get_mmengine_home(), url)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} can not be found.')
    return load_from_local(path, map_location)


def torchvision_urls() -> Dict[str, Optional[str]]:
    """mmengine's ``torchvision://`` names; without torchvision, its bundled table of
    torchvision 0.12 (the names mmengine knows for every torchvision version)."""
    try:
        return get_torchvision_models()
    except ImportError:
        return mmengine.load(osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))


def load_from_torchvision(filename: str, map_location: MapLocation = None) -> Any:
    """``torchvision://NAME``, and ``modelzoo://NAME`` (its deprecated alias)."""
    prefix, name = _split(filename)
    if prefix == 'modelzoo://':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use "torchvision://" '
                  'instead', logger='current', level=logging.WARNING)
    return load_from_url(
        _url_of(torchvision_urls(), name, filename, 'the torchvision model table'), map_location)


def load_from_mmcls(filename: str, map_location: MapLocation = None) -> Any:
    """``mmcls://NAME``: mmengine's mmcls table; the backbone's weights, renamed as mmengine
    does."""
    url = _url_of(get_mmcls_models(), _split(filename)[1], filename, "mmengine's mmcls table")
    return _process_mmcls_checkpoint(load_from_url(url, map_location))


def _load_fetched(name: str, fetch: Callable[[str], None], map_location: MapLocation) -> Any:
    """``fetch(path)`` writes the file into a temporary directory; load it from there."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, osp.basename(name) or 'checkpoint.pth')
        fetch(path)
        return load_from_local(path, map_location)


def load_from_ceph(filename: str, map_location: MapLocation = None,
                   backend: str = 'petrel') -> Any:
    """``s3://``, ``petrel://`` (optionally ``NAME:`` in front), through mmengine's file
    backend."""
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)

    def fetch(path: str) -> None:
        with open(path, 'wb') as file:
            file.write(data)

    return _load_fetched(filename, fetch, map_location)


def load_from_pavi(filename: str, map_location: MapLocation = None) -> Any:
    """``pavi://PATH``: downloaded by pavi's model cloud."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError('Please install pavi to load checkpoint from modelcloud.') from None
    model = modelcloud.get(_split(filename)[1])
    return _load_fetched(model.name, model.download, map_location)


#: ``(prefixes, loader)`` for ``CheckpointLoader.register_scheme``: every scheme mmengine
#: registers, with its prefixes (regular expressions, as mmengine matches them).
CHECKPOINT_ROUTES: Sequence[Tuple[Tuple[str, ...], Callable[..., Any]]] = (
    (('', ), load_from_local),
    (('http://', 'https://'), load_from_url),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('mmcls://', ), load_from_mmcls),
    ((r'(\S+\:)?s3://', r'(\S+\:)?petrel://'), load_from_ceph),
    (('pavi://', ), load_from_pavi),
)


def register_routes() -> None:
    """Send every scheme of mmengine's ``CheckpointLoader`` through :data:`CHECKPOINT_ROUTES`
    (``deeplabv3_plugin.runtime`` does it on import; the model builders before they load)."""
    for prefixes, loader in CHECKPOINT_ROUTES:
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)
