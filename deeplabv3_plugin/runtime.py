"""Opt-in changes to mmengine itself, for the plugin's configs and tools.

``import deeplabv3_plugin`` only registers components. Importing this module also makes plain
checkpoint paths load through :func:`~deeplabv3_plugin.utils.checkpoint.load_local_checkpoint`
(under torch >= 2.6 mmengine's loader fails on every checkpoint mmengine writes; this one unpickles
nothing but tensors, containers and checked ``HistoryBuffer``/numpy data), resolves
``torchvision://NAME`` without torchvision, and registers ``CPUSafeDDP`` in mmengine's root
``MODEL_WRAPPERS``. The ``_base_`` runtime lists it in ``custom_imports``; the tools import it.
"""
import os.path as osp
from typing import Any, Optional, Union

import mmengine
import torch
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner.checkpoint import CheckpointLoader, load_from_http, load_from_torchvision

import deeplabv3_plugin  # noqa: F401  (the components the configs name)
from deeplabv3_plugin.engine.model_wrappers import CPUSafeDDP
from deeplabv3_plugin.utils.checkpoint import load_local_checkpoint

__all__ = ['load_from_torchvision_zoo']


def load_from_torchvision_zoo(filename: str,
                              map_location: Optional[Union[str, torch.device]] = None) -> Any:
    """Load ``torchvision://NAME``; without torchvision, from mmengine's bundled URL table."""
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
if MODEL_WRAPPERS.get('CPUSafeDDP') is None:
    MODEL_WRAPPERS.register_module(module=CPUSafeDDP)
