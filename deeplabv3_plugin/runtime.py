"""Opt-in changes to mmengine itself, for the plugin's configs and tools.

``import deeplabv3_plugin`` only registers components. Importing this module also sends every
``CheckpointLoader`` scheme through the plugin's routes
(:data:`~deeplabv3_plugin.checkpoint.routes.CHECKPOINT_ROUTES`): local paths, ``http(s)://``,
``open-mmlab://``, ``torchvision://`` (also without torchvision), ``mmcls://``, ... are loaded by
:func:`~deeplabv3_plugin.checkpoint.loader.load_local_checkpoint` (under torch >= 2.6 mmengine's
loader fails on every checkpoint mmengine writes; this one builds nothing but tensors, containers
and checked ``HistoryBuffer``/numpy data), downloads are hash-checked, and config text stored in a
checkpoint is made inert (:mod:`~deeplabv3_plugin.checkpoint.meta`). It also registers
``CPUSafeDDP`` in mmengine's root ``MODEL_WRAPPERS``. The ``_base_`` runtime lists it in
``custom_imports``; the tools import it.
"""
from mmengine.registry import MODEL_WRAPPERS

import deeplabv3_plugin  # noqa: F401  (the components the configs name)
from deeplabv3_plugin.engine.model_wrappers import CPUSafeDDP
from deeplabv3_plugin.checkpoint.routes import register_routes

register_routes()
if MODEL_WRAPPERS.get('CPUSafeDDP') is None:
    MODEL_WRAPPERS.register_module(module=CPUSafeDDP)
