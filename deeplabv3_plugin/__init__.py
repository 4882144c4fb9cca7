"""DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) as an MMSegmentation 1.x plugin.

Importing the package registers its components in mmseg's registries (``MultiGridResNet``,
``DeepLabV3Head``, the ``DeepLabV3`` segmentor, ``BootstrapSampler`` ...) and nothing else. Use it
from any mmseg config with::

    custom_imports = dict(imports=['deeplabv3_plugin'], allow_failed_imports=False)

Add ``'deeplabv3_plugin.runtime'`` to ``imports`` for the safe loading of mmengine checkpoints
under torch >= 2.6 and CPU distributed runs (see :mod:`deeplabv3_plugin.runtime`).
"""
from .version import __version__
from . import apis, datasets, engine, models  # noqa: F401

__all__ = ['__version__']
