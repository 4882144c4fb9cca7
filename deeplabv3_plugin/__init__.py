"""DeepLabV3 (Chen et al. 2017, arXiv:1706.05587) as an MMSegmentation 1.x plugin.

Importing it registers the models, datasets and samplers in mmseg's registries and the
``deeplabv3_plugin::`` config scope, nothing else.
``deeplabv3_plugin.runtime`` opts in to safe checkpoint loading and CPU distributed runs.
"""
from .version import __version__
from . import apis, datasets, deploy, engine, models, registry  # noqa: F401

__all__ = ['__version__']
