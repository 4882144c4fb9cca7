"""Build hook: ship ``configs/``, ``tools/`` and ``model-index.yml`` inside the package.

Everything else is declared in ``setup.cfg``. OpenMMLab packages carry their configs and tools in
``<package>/.mim/`` (mmseg's ``setup.py`` does the same), which is where the tools that find them
look: ``mim train deeplabv3_plugin CONFIG`` runs ``.mim/tools/train.py`` on the config found under
the package, mmengine resolves ``deeplabv3_plugin::deeplabv3/<name>.py`` to
``.mim/configs/deeplabv3/<name>.py``, and ``mim search`` reads ``.mim/model-index.yml``.

Only regular builds (``pip install .``, ``python -m build``) copy: an editable install imports the
package from this checkout, whose ``configs/`` and ``tools/`` sit next to it already.
"""
import os
import os.path as osp
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

PACKAGE = 'deeplabv3_plugin'
MIM_FILES = ('configs', 'tools', 'model-index.yml')


class BuildPyWithMim(build_py):
    """``build_py`` that also copies :data:`MIM_FILES` to ``<build_lib>/deeplabv3_plugin/.mim``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        root = osp.dirname(osp.abspath(__file__))
        mim_dir = osp.join(self.build_lib, PACKAGE, '.mim')
        os.makedirs(mim_dir, exist_ok=True)
        for name in MIM_FILES:
            source, target = osp.join(root, name), osp.join(mim_dir, name)
            if osp.isdir(source):
                shutil.copytree(source, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(source, target)


setup(cmdclass={'build_py': BuildPyWithMim})
