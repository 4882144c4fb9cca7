"""The ``deeplabv3_plugin`` config scope: ``_base_ = ['deeplabv3_plugin::deeplabv3/<name>.py']``.

A host config inherits a paper config by scope, as it inherits mmseg's (``mmseg::...``).
mmengine 0.10 needs two things for that, and this module provides both on import:

1. **The scope in mmengine's table of packages** (``mmengine.config.utils.MODULE2PACKAGE``), the
   only place ``Config.fromfile`` looks up ``pkg::path``; it then reads the installed package's
   ``.mim/configs`` (see ``setup.py``). mmengine parses ``_base_`` *before* it runs the config's
   ``custom_imports``, so the plugin must already be imported by the process that loads a host
   config: the plugin's ``tools/*.py``, ``mim train|test deeplabv3_plugin ...``, or a script that
   does ``import deeplabv3_plugin``.
2. **Registries of that scope.** mmengine tags every component of a scoped base with
   ``_scope_='deeplabv3_plugin'`` and builds it from the registry of that scope (it imports
   ``deeplabv3_plugin.registry`` to find them). The registries below are children of mmseg's,
   with nothing of their own, so every name resolves to mmseg's registries, where the plugin's
   components are registered: the scope is an alias of ``mmseg``, as mmengine's registry
   hierarchy intends for downstream projects.
"""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry
from mmseg import registry as mmseg_registry
from mmseg.utils import register_all_modules

__all__ = ['SCOPE', 'REGISTRIES']

SCOPE = 'deeplabv3_plugin'

# A child registry only searches the dicts of its parents, it does not import their modules:
# register mmseg's components now (mmseg's public helper; it does not touch the default scope).
register_all_modules(init_default_scope=False)

#: One empty child of each of mmseg's registries (MODELS, HOOKS, ...) with scope ``SCOPE``. Its
#: location is the plugin itself: without one, mmengine would look for a
#: ``deeplabv3_plugin.utils.register_all_modules`` (its fallback for scopes in MODULE2PACKAGE).
REGISTRIES = {
    name: parent.children.get(SCOPE)
    or Registry(parent.name, parent=parent, scope=SCOPE, locations=[SCOPE])
    for name, parent in ((n, getattr(mmseg_registry, n)) for n in mmseg_registry.__all__)
    if isinstance(parent, Registry)
}
# The package name mmengine hands to pkg_resources; it is also the package's directory name.
MODULE2PACKAGE.setdefault(SCOPE, 'deeplabv3_plugin')
