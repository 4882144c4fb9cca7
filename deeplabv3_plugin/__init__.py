"""DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) as an MMSegmentation 1.x plugin.

Importing the package registers its components in mmseg's registries (``MultiGridResNet``,
``DeepLabV3Head``, the ``DeepLabV3`` segmentor, ``BootstrapSampler`` ...) and makes checkpoints
written by mmengine loadable under torch >= 2.6 without unpickling arbitrary objects
(see :mod:`deeplabv3_plugin.utils.checkpoint`). Use it from any mmseg config with::

    custom_imports = dict(imports=['deeplabv3_plugin'], allow_failed_imports=False)
"""
from .version import __version__
from .utils import checkpoint as _checkpoint  # noqa: F401  (registers the safe loader)
from . import apis, datasets, engine, models  # noqa: F401

__all__ = ['__version__']
