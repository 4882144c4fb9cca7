"""The ``deeplabv3_plugin`` config scope: ``_base_ = ['deeplabv3_plugin::deeplabv3/<name>.py']``.

mmengine finds a scope's configs through ``MODULE2PACKAGE`` (the package's ``.mim/configs``) and
builds its components from registries of that scope: empty children of mmseg's, so the scope is
an alias of ``mmseg``. The plugin must be imported before such a config is loaded, because
mmengine reads ``_base_`` before ``custom_imports``.
"""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry
from mmseg import registry as mmseg_registry
from mmseg.utils import register_all_modules

__all__ = ['SCOPE', 'REGISTRIES']

SCOPE = 'deeplabv3_plugin'
register_all_modules(init_default_scope=False)  # children search parents' dicts, not modules
# ``locations``: else mmengine looks for a deeplabv3_plugin.utils.register_all_modules.
REGISTRIES = {
    name: parent.children.get(SCOPE)
    or Registry(parent.name, parent=parent, scope=SCOPE, locations=[SCOPE])
    for name, parent in ((n, getattr(mmseg_registry, n)) for n in mmseg_registry.__all__)
    if isinstance(parent, Registry)
}
MODULE2PACKAGE.setdefault(SCOPE, 'deeplabv3_plugin')
