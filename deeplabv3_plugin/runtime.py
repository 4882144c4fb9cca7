"""Opt-in changes to mmengine itself, for the plugin's configs and tools.

``import deeplabv3_plugin`` only registers models, datasets, transforms and samplers. Importing
this module also changes how mmengine runs, which a host project may not want, so it is explicit:

* local checkpoint files load through
  :func:`deeplabv3_plugin.utils.checkpoint.load_local_checkpoint` (mmengine's
  ``CheckpointLoader`` scheme for plain paths). Under torch >= 2.6 mmengine's own loader fails
  on every checkpoint mmengine writes; this one loads them without unpickling anything but
  tensors, containers and checked ``HistoryBuffer``/numpy data;
* ``torchvision://NAME`` resolves without torchvision installed (mmengine's bundled URL table);
* ``CPUSafeDDP`` is registered in mmengine's root ``MODEL_WRAPPERS``, where ``Runner.wrap_model``
  looks model wrappers up.

The plugin's ``_base_`` runtime lists it in ``custom_imports`` and ``tools/*.py`` import it; a host
mmseg project adds ``'deeplabv3_plugin.runtime'`` to its own ``custom_imports`` to get the same.
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
    """Load ``torchvision://NAME`` (or ``modelzoo://NAME``) with or without torchvision.

    Without torchvision the URL comes from the table mmengine bundles
    (``mmengine/hub/torchvision_0.12.json``) and the file is read from torch hub's cache or
    downloaded, as mmengine would.

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
if MODEL_WRAPPERS.get('CPUSafeDDP') is None:
    MODEL_WRAPPERS.register_module(module=CPUSafeDDP)
