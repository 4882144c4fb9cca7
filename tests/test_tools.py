"""tools/train.py, tools/test.py and mim, run as subprocesses the way users run them.

One tiny training run (module fixture: 4 iterations on a generated 40x40 VOC-layout dataset) gives
the work dir and checkpoint the other tests evaluate, break and protect.
"""
import glob
import json
import os.path as osp
import re
import shutil

import cv2
import pytest
import torch

import deeplabv3_plugin.runtime  # noqa: F401  (the safe checkpoint loader the tools use)
from tools_testutils import (BIN_DIR, TINY_CONFIG, check_ok, eval_cmd, load_tool,
                             make_voc_dataset, run, snapshot, tool_env, train_cmd)

from deeplabv3_plugin.engine import UserInputError


@pytest.fixture(scope='module')
def data_env(tmp_path_factory):
    return tool_env(make_voc_dataset(str(tmp_path_factory.mktemp('voc'))))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_env):
    """``(work_dir, checkpoint)`` of a finished 4-iteration run."""
    work_dir = str(tmp_path_factory.mktemp('train'))
    proc = check_ok(run(train_cmd(work_dir), data_env))
    output = proc.stdout + proc.stderr
    assert 'Iter(train) [4/4]' in output
    assert re.search(r'Iter\(val\) \[2/2\].*mIoU', output), 'validation ran at the end'
    checkpoint = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth')) and osp.isfile(checkpoint)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip() == checkpoint
    return work_dir, checkpoint


def _error_of(proc) -> str:
    """The one-paragraph error a tool prints for bad input (exit status 2, no traceback)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr


def _metrics_json(run_dir_parent: str) -> dict:
    found = glob.glob(osp.join(run_dir_parent, '*', '*.json'))
    assert found, f'no metrics json under {run_dir_parent}'
    with open(sorted(found)[-1]) as f:
        return json.load(f)


def test_train_writes_a_loadable_checkpoint(trained):
    _, checkpoint = trained
    # Loaded the way every tool loads it: weights-only, through the plugin's registered loader.
    from mmengine.runner.checkpoint import _load_checkpoint
    state = _load_checkpoint(checkpoint, map_location='cpu')
    assert state['meta']['iter'] == 4
    assert any(k.startswith('decode_head.') for k in state['state_dict'])
    assert isinstance(state['state_dict']['decode_head.conv_seg.weight'], torch.Tensor)


def test_test_in_the_training_work_dir_overwrites_nothing(trained, data_env):
    work_dir, checkpoint = trained
    before = snapshot(work_dir)
    proc = check_ok(run(eval_cmd(checkpoint, work_dir), data_env))
    assert re.search(r'mIoU: \d', proc.stdout + proc.stderr)
    after = snapshot(work_dir)
    assert {k: v for k, v in after.items() if k in before} == before, 'a file was changed'
    new = sorted(set(after) - set(before))
    run_dirs = {name.split(osp.sep)[0] for name in new}
    assert len(run_dirs) == 1, new  # everything new is in the test run's own timestamped dir
    assert osp.basename(TINY_CONFIG) in {osp.basename(n) for n in new}
    assert 'mIoU' in _metrics_json(work_dir)


def test_test_tta_and_show_dir(trained, data_env, tmp_path):
    _, checkpoint = trained
    show_dir = str(tmp_path / 'show')
    check_ok(run(eval_cmd(checkpoint, str(tmp_path / 'work'), '--tta', '--show-dir', show_dir),
                 data_env))
    dumped = glob.glob(osp.join(str(tmp_path / 'work'), '*', 'tools_tiny.py'))
    assert "type='SegTTAModel'" in open(dumped[0]).read()
    assert 'mIoU' in _metrics_json(str(tmp_path / 'work'))
    overlays = sorted(glob.glob(osp.join(show_dir, 'vis_data', 'vis_image', '*.png')))
    assert [osp.basename(p) for p in overlays] == ['test_img_004.jpg_0.png',
                                                   'test_img_005.jpg_0.png']
    overlay = cv2.imread(overlays[0])
    # Ground truth and prediction side by side, each blended over the 40x40 image.
    assert overlay.shape == (40, 80, 3)


def test_test_output_stride_and_out(trained, data_env, tmp_path):
    _, checkpoint = trained
    out_dir = str(tmp_path / 'out')
    check_ok(run(eval_cmd(checkpoint, str(tmp_path / 'work'), '--output-stride', '8', '--out',
                          out_dir), data_env))
    dumped = glob.glob(osp.join(str(tmp_path / 'work'), '*', 'tools_tiny.py'))
    assert 'test_output_stride=8' in open(dumped[0]).read()
    predictions = sorted(glob.glob(osp.join(out_dir, '*.png')))
    assert [osp.basename(p) for p in predictions] == ['img_004.png', 'img_005.png']
    assert cv2.imread(predictions[0], cv2.IMREAD_UNCHANGED).shape == (40, 40)


def test_fast_path_is_default_and_predicts_like_the_plain_path(trained, data_env, tmp_path):
    """tools/test.py runs channels_last + folded BN by default; --no-fast runs the model as is."""
    _, checkpoint = trained
    predictions, hooks = {}, {}
    for name, flags in (('fast', []), ('plain', ['--no-fast'])):
        work, out = str(tmp_path / f'work_{name}'), str(tmp_path / f'out_{name}')
        check_ok(run(eval_cmd(checkpoint, work, '--out', out, *flags), data_env))
        hooks[name] = open(glob.glob(osp.join(work, '*', 'tools_tiny.py'))[0]).read()
        predictions[name] = [cv2.imread(p, cv2.IMREAD_UNCHANGED)
                             for p in sorted(glob.glob(osp.join(out, '*.png')))]
    assert "type='FastInferenceHook'" in hooks['fast']
    assert 'FastInferenceHook' not in hooks['plain']
    assert len(predictions['fast']) == len(predictions['plain']) == 2
    for fast, plain in zip(predictions['fast'], predictions['plain']):
        # Folding BN reorders float32 arithmetic (~1e-6 relative): labels may only differ where
        # two classes tie to that precision.
        assert (fast == plain).mean() >= 0.999


def test_unknown_cfg_option_key(data_env, tmp_path):
    # As a subprocess: bad input exits with status 2 and one paragraph, no traceback.
    error = _error_of(run(train_cmd(str(tmp_path), '--cfg-options', 'model.backbone.dept=50',
                                    'train_cfg.max_iters=2'), data_env))
    assert '--cfg-options: 1 key(s) do not fit' in error
    assert "'model.backbone.dept'" in error and "Did you mean 'model.backbone.depth'?" in error
    assert not glob.glob(osp.join(str(tmp_path), '*')), 'nothing may be written'


@pytest.fixture
def in_process(data_env, monkeypatch):
    """The tools' ``main(argv)`` in this process, for errors raised before any run starts."""
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    return load_tool('train'), load_tool('test')


def test_missing_config_file(in_process, tmp_path):
    train_tool, test_tool = in_process
    missing = str(tmp_path / 'no_such_config.py')
    with pytest.raises(UserInputError, match=f"config file '{missing}' does not exist"):
        train_tool.main([missing, '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(UserInputError, match=f"config file '{missing}' does not exist"):
        test_tool.main([missing, 'x.pth'])
    assert not osp.exists(tmp_path / 'w')


def test_missing_checkpoint_file(in_process, tmp_path):
    _, test_tool = in_process
    missing = str(tmp_path / 'iter_9.pth')
    with pytest.raises(UserInputError, match=f"checkpoint '{missing}' does not exist"):
        test_tool.main([TINY_CONFIG, missing, '--work-dir', str(tmp_path / 'w')])
    train_tool = in_process[0]
    with pytest.raises(UserInputError, match="checkpoint '.*' does not exist"):
        train_tool.main([TINY_CONFIG, '--resume', missing, '--work-dir', str(tmp_path / 'w')])


def test_output_stride_needs_a_segmentor_with_it(in_process, trained, tmp_path):
    _, test_tool = in_process
    _, checkpoint = trained
    with pytest.raises(UserInputError, match="--output-stride 8: model type 'EncoderDecoder'"):
        test_tool.main([TINY_CONFIG, checkpoint, '--output-stride', '8', '--work-dir',
                        str(tmp_path), '--cfg-options', 'model.type=EncoderDecoder'])


def test_tta_needs_tta_config(in_process, trained, tmp_path):
    _, test_tool = in_process
    _, checkpoint = trained
    with pytest.raises(UserInputError, match='--tta: the config has no tta_pipeline'):
        test_tool.main([TINY_CONFIG, checkpoint, '--tta', '--cfg-options', 'tta_pipeline=None'])


def test_checkpoint_of_another_model_is_refused(trained, data_env):
    work_dir, checkpoint = trained
    before = snapshot(work_dir)
    # Same config with a wider head: the checkpoint was trained for another model.
    error = _error_of(run(eval_cmd(checkpoint, work_dir, '--cfg-options',
                                   'model.decode_head.channels=16'), data_env))
    assert f"Checkpoint '{checkpoint}' does not fit the DeepLabV3 model" in error
    assert re.search(r'decode_head\.\S+: checkpoint \(8, .*\) vs model \(16, ', error)
    after = snapshot(work_dir)
    assert {k: v for k, v in after.items() if k in before} == before


def test_failed_resume_keeps_the_checkpoints(trained, data_env):
    work_dir, checkpoint = trained
    before = snapshot(work_dir)
    error = _error_of(run(train_cmd(work_dir, '--resume', '--cfg-options',
                                    'model.decode_head.channels=16'), data_env))
    assert f"Checkpoint '{checkpoint}' does not fit" in error
    after = snapshot(work_dir)
    assert {k: v for k, v in after.items() if k in before and k.endswith('.pth')} == \
        {k: v for k, v in before.items() if k.endswith('.pth')}
    assert after['last_checkpoint'] == before['last_checkpoint']
    # Logs of earlier runs are kept (a new run only adds its own timestamped directory).
    assert all(k in after for k in before if k.endswith('.log'))


def test_mim_train_and_test_with_the_plugin_config(data_env, tmp_path):
    mim = osp.join(BIN_DIR, 'mim')
    assert osp.isfile(mim) or shutil.which('mim'), 'openmim is part of the environment'
    work_dir = str(tmp_path / 'mim_train')
    proc = check_ok(run([mim, 'train', 'mmseg', TINY_CONFIG, '--work-dir', work_dir,
                         '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2'],
                        data_env))
    assert 'Training finished successfully' in proc.stdout + proc.stderr
    checkpoint = osp.join(work_dir, 'iter_2.pth')
    assert osp.isfile(checkpoint)
    proc = check_ok(run([mim, 'test', 'mmseg', TINY_CONFIG, '--checkpoint', checkpoint,
                         '--work-dir', str(tmp_path / 'mim_test')], data_env))
    assert 'Testing finished successfully' in proc.stdout + proc.stderr
    assert 'mIoU' in _metrics_json(str(tmp_path / 'mim_test'))
