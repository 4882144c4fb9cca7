"""The installed package, as a user gets it from ``pip install .`` or a published wheel.

The wheel is built from a copy of the checkout and installed (not editable) into a throwaway
virtual environment that reuses this environment's installed stack (torch, mmcv, mmseg, mim:
one ``.pth`` line) but not the checkout. Then, from an empty directory, as a user would:
``mim train deeplabv3_plugin <config name>`` for 2 iterations on generated data,
``mim test deeplabv3_plugin <config name> --checkpoint ...``, ``mim search deeplabv3_plugin``, and
a host config inheriting a paper config by scope (``deeplabv3_plugin::deeplabv3/<name>.py``).
"""
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

from deeplabv3_plugin.datasets.synthetic_shapes import generate_synthetic_shapes
from helpers import REPO_ROOT as REPO

DEMO = 'deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-128x128.py'
PAPER = 'deeplabv3/deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py'
NOT_COPIED = shutil.ignore_patterns('.git', '.venv', 'work_dirs', 'data', 'build', 'dist',
                                    '*.egg-info', '__pycache__', '.pytest_cache')
MIM_SCRIPT = '#!{python}\nimport sys\nfrom mim.cli import cli\nsys.exit(cli())\n'


def _run(cmd, env, cwd, timeout=300):
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f'{" ".join(map(str, cmd))} exited {proc.returncode}\n'
                                  f'{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(python, env vars, empty dir) of a venv holding the built wheel, non-editable."""
    root = tmp_path_factory.mktemp('packaging')
    source = root / 'source'
    shutil.copytree(REPO, source, ignore=NOT_COPIED)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', PYTHONWARNINGS='ignore')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q',
          '-w', str(root / 'wheels'), str(source)], env, cwd=root)
    wheel = glob.glob(str(root / 'wheels' / 'deeplabv3_plugin-*.whl'))[0]

    target = root / 'venv'
    venv.EnvBuilder(with_pip=False).create(target)
    python = str(target / 'bin' / 'python')
    site = subprocess.check_output([python, '-c', 'import sysconfig; '
                                    'print(sysconfig.get_paths()["purelib"])'], text=True).strip()
    with open(osp.join(site, 'project_stack.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')  # torch, mmcv, mmseg, mim, pip
    _run([python, '-m', 'pip', 'install', '--no-deps', '--no-index', '--ignore-installed', '-q',
          wheel], env, cwd=root)
    with open(target / 'bin' / 'mim', 'w') as f:  # what pip writes for mim's console script
        f.write(MIM_SCRIPT.format(python=python))
    os.chmod(target / 'bin' / 'mim', 0o755)
    env['PATH'] = f'{target / "bin"}{os.pathsep}{env["PATH"]}'
    empty = root / 'user'
    empty.mkdir()
    return python, env, str(empty), wheel


def test_wheel_ships_configs_tools_and_model_index(installed):
    names = zipfile.ZipFile(installed[3]).namelist()
    for path in ('.mim/model-index.yml', '.mim/configs/deeplabv3/metafile.yaml',
                 f'.mim/configs/{PAPER}', f'.mim/configs/demo/{DEMO}', '.mim/tools/train.py',
                 '.mim/tools/test.py', '.mim/tools/infer.py'):
        assert f'deeplabv3_plugin/{path}' in names
    assert 'deeplabv3_plugin/paper/tables.yaml' in names  # the paper's numbers


@pytest.mark.slow(seconds=30)
def test_mim_train_and_test_by_config_name_from_an_empty_directory(installed):
    python, env, cwd, _ = installed
    data = osp.join(cwd, 'shapes')
    generate_synthetic_shapes(data, num_train=4, num_val=2, image_size=128, progress=False)
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    data_options = [f'{loader}.{key}' for loader in loaders for key in (
        f'dataset.data_root={data}', 'num_workers=0', 'persistent_workers=False')]
    _run(['mim', 'train', 'deeplabv3_plugin', DEMO, '--gpus', '0', '--work-dir', 'run',
          '--cfg-options', *data_options, 'train_dataloader.batch_size=2',
          'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
          'default_hooks.checkpoint.interval=2', 'model.backbone.base_channels=8',
          'model.decode_head.in_channels=64', 'model.decode_head.channels=16'], env, cwd)
    assert osp.isfile(osp.join(cwd, 'run', 'iter_2.pth'))
    tested = _run(['mim', 'test', 'deeplabv3_plugin', DEMO, '--gpus', '0', '--checkpoint',
                   'run/iter_2.pth', '--work-dir', 'run', '--cfg-options', *data_options[3:],
                   'model.backbone.base_channels=8', 'model.decode_head.in_channels=64',
                   'model.decode_head.channels=16'], env, cwd)
    assert 'mIoU' in tested.stdout + tested.stderr


@pytest.mark.slow
def test_host_config_inherits_a_paper_config_by_scope(installed):
    python, env, cwd, _ = installed
    with open(osp.join(cwd, 'host.py'), 'w') as f:
        f.write(f"_base_ = ['deeplabv3_plugin::{PAPER}']\n"
                'model = dict(decode_head=dict(num_classes=5))\n')
    built = _run([python, '-c', (
        'import deeplabv3_plugin\n'
        'print(deeplabv3_plugin.__file__)\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'from mmseg.registry import MODELS\n'
        "cfg = Config.fromfile('host.py')\n"
        'init_default_scope(cfg.default_scope)\n'
        'model = MODELS.build(cfg.model)\n'
        'print(cfg.model._scope_, type(model).__name__, cfg.model.backbone.multi_grid,\n'
        '      model.decode_head.num_classes, cfg.paper_ref.miou)\n')], env, cwd)
    where, result = built.stdout.strip().splitlines()[-2:]
    assert osp.join('venv', 'lib') in where and not where.startswith(REPO)  # the wheel's copy
    assert result == 'deeplabv3_plugin DeepLabV3 (1, 2, 4) 5 77.21'


def test_mim_search_lists_the_paper_configs(installed):
    python, env, cwd, _ = installed
    found = _run(['mim', 'search', 'deeplabv3_plugin', '--field', 'pascal voc 2012 val/miou'],
                 env, cwd).stdout
    assert found.count('config id: ') == 51  # the VOC val rows; test-set and Cityscapes rows apart
    assert ('config id: deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513\n'
            'pascal voc 2012 val/miou  77.21') in found
