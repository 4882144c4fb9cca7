"""tools/demo.py end to end in a tiny mode: generate, train, test (single, MS+flip), overlays.

The run is the same command ``make demo`` runs, shrunk (a few 48-pixel images, two iterations)
so it checks the wiring, not the accuracy; the accuracy of the full run is in the README. One run
serves every test of the module, and a second one checks that a rerun is identical; refusals are
checked by calling the tool's ``main`` in this process.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from helpers import REPO_ROOT as REPO
from helpers.tools import load_tool

DEMO = osp.join(REPO, 'tools', 'demo.py')


def _run(*args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    return subprocess.run([sys.executable, DEMO, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def _args(work_dir, data_root):
    return ('--work-dir', str(work_dir), '--data-root', str(data_root), '--iters', '2',
            '--num-train', '4', '--num-val', '2', '--image-size', '48', '--seed', '1',
            '--threads', '1', '--cfg-options', 'model.backbone.contract_dilation=True')


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    """One tiny demo, run as ``make demo`` runs it; the tests below read it, never change it."""
    root = tmp_path_factory.mktemp('demo')
    done = _run(*_args(root / 'first', root / 'data'))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout


@pytest.mark.slow(seconds=35)
def test_demo_tiny_end_to_end(first_run):
    root, out = first_run
    work_dir, data_root = root / 'first', root / 'data'
    # --cfg-options go into the run's config, which the train and test steps read
    run_config = (work_dir / osp.basename(json.loads(
        (work_dir / 'summary.json').read_text())['config'])).read_text()
    assert 'contract_dilation=True' in run_config

    # the four steps are announced with the commands a user would type
    for step in ('1/4 dataset', '2/4 train', '3/4 evaluate, single scale',
                 '4/4 evaluate, multi-scale + flip'):
        assert f'==> {step}' in out
    assert 'python tools/train.py' in out and 'python tools/test.py' in out and '--tta' in out

    # the summary prints both mIoUs and where the pictures are
    match = re.search(r'val mIoU\s+single scale: ([\d.]+)\s+multi-scale \+ flip: ([\d.]+)', out)
    assert match, out[-2000:]
    summary = json.loads((work_dir / 'summary.json').read_text())
    results = summary['results']
    assert float(match.group(1)) == round(results['single_scale']['mIoU'], 2)
    assert float(match.group(2)) == round(results['ms_flip']['mIoU'], 2)
    # ... and which inference engine this CPU got, and why
    assert re.search(r'inference\s+(PyTorch float32 fast path|\w+ int8 )', out)
    assert summary['inference'] in out
    overlays = results['single_scale']['overlays']
    assert overlays.startswith(str(work_dir)) and osp.relpath(overlays, REPO) in out
    pictures = [f for f in os.listdir(overlays) if f.endswith('.png')]
    assert len(pictures) == 2, pictures  # one per validation image
    assert 'overlays' not in results['ms_flip']  # drawn once: the visualizer dominates a test
    assert osp.isfile(summary['checkpoint']) and summary['checkpoint'].startswith(str(work_dir))
    meta = json.loads((data_root / 'synthetic_shapes.json').read_text())
    assert (meta['num_train'], meta['num_val'], meta['seed']) == (4, 2, 1)


def test_demo_never_writes_into_an_earlier_run(first_run):
    root, _ = first_run
    work_dir = root / 'first'
    summary = (work_dir / 'summary.json').read_text()
    demo = load_tool('demo')
    with pytest.raises(demo.DemoError,
                       match=f'{re.escape(str(work_dir))}.*not an empty directory'):
        demo.main(list(_args(work_dir, root / 'data')))
    assert (work_dir / 'summary.json').read_text() == summary


def test_demo_refuses_a_mistyped_cfg_option(tmp_path):
    demo = load_tool('demo')
    with pytest.raises(demo.DemoError, match=r"Did you mean 'model.backbone.multi_grid'\?"):
        demo.main([
            '--work-dir', str(tmp_path / 'run'), '--data-root', str(tmp_path / 'data'),
            '--num-train', '2', '--num-val', '1', '--image-size', '48', '--cfg-options',
            'model.backbone.multi_gird=(1,2)'])
    assert not (tmp_path / 'run' / 'train').exists()


@pytest.mark.slow(seconds=35)
def test_demo_reruns_with_the_same_thread_count_are_identical(first_run):
    """The README's claim: a rerun of the demo (same seed, same thread count, which the demo
    fixes per machine) gives the same figures, down to every trained weight."""
    import torch

    root, _ = first_run
    done = _run(*_args(root / 'second', root / 'data'))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    first, second = (json.loads((root / name / 'summary.json').read_text())
                     for name in ('first', 'second'))
    for name in ('single_scale', 'ms_flip'):
        assert first['results'][name]['mIoU'] == second['results'][name]['mIoU']
    weights = [torch.load(run['checkpoint'], map_location='cpu', weights_only=False)['state_dict']
               for run in (first, second)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_demo_configs_keep_their_canvas_under_tta():
    """``--tta`` must not swap the demo's 192/128 px padding for the base's 513 px canvas.

    mmengine's Runner gives the top-level ``data_preprocessor`` to ``SegTTAModel``, which
    overwrites the wrapped model's with it; the demo configs therefore set both.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import deeplabv3_plugin  # noqa: F401
    from deeplabv3_plugin.cli import enable_tta

    init_default_scope('mmseg')
    for size in (192, 128):
        cfg = Config.fromfile(osp.join(
            REPO, 'configs/demo',
            f'deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-{size}x{size}.py'))
        enable_tta(cfg)
        model_cfg = cfg.model.to_dict()
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor.to_dict())  # as Runner
        tta = MODELS.build(model_cfg)
        assert type(tta).__name__ == 'SegTTAModel'
        assert tuple(tta.module.data_preprocessor.size) == (size, size)
        assert tuple(tta.module.data_preprocessor.test_cfg['size']) == (size, size)
