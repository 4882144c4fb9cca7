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
from helpers.tools import (BIN_DIR, PYTHON, REPO_ROOT, TINY_CONFIG, check_ok, eval_cmd,
                             load_tool, run, snapshot, train_cmd)

from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.cpu_features import cpu_features

#: |int8 - fp32| mIoU allowed for the 4-iteration tiny model, whose near-tied logits int8
#: rounding can flip (the real models' figures are in the README and benchmarks/).
INT8_TINY_TOLERANCE = 5.0


@pytest.fixture(scope='module')
def trained(tiny_run):
    """``(work_dir, checkpoint)`` of the session's finished 4-iteration run (conftest.py)."""
    work_dir, checkpoint, output = tiny_run
    assert 'Iter(train) [4/4]' in output
    assert re.search(r'Iter\(val\) \[2/2\].*mIoU', output), 'validation ran at the end'
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_test_output_stride_and_out(trained, data_env, tmp_path):
    _, checkpoint = trained
    out_dir = str(tmp_path / 'out')
    check_ok(run(eval_cmd(checkpoint, str(tmp_path / 'work'), '--output-stride', '8', '--out',
                          out_dir, '--backend', 'pytorch'), data_env))
    dumped = glob.glob(osp.join(str(tmp_path / 'work'), '*', 'tools_tiny.py'))
    # (exported graphs at OS 8: deploy/test_engines.py)
    assert 'test_output_stride=8' in open(dumped[0]).read()
    predictions = sorted(glob.glob(osp.join(out_dir, '*.png')))
    assert [osp.basename(p) for p in predictions] == ['img_004.png', 'img_005.png']
    assert cv2.imread(predictions[0], cv2.IMREAD_UNCHANGED).shape == (40, 40)


@pytest.mark.slow
def test_fast_path_is_default_and_predicts_like_the_plain_path(trained, data_env, tmp_path):
    """On PyTorch tools/test.py runs channels_last + folded BN by default; --no-fast runs the
    model as is (and, with --backend auto, on PyTorch)."""
    _, checkpoint = trained
    predictions, hooks = {}, {}
    for name, flags in (('fast', ['--backend', 'pytorch']), ('plain', ['--no-fast'])):
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------- precision by CPU: --bf16, --amp on the CPU, int8


def _dumped_config(run_dir_parent: str) -> str:
    return open(glob.glob(osp.join(run_dir_parent, '*', 'tools_tiny.py'))[0]).read()


@pytest.mark.slow
def test_bf16_flag_runs_bf16_only_where_native(trained, data_env, tmp_path):
    """--bf16 keeps float32 (with the measured cost) on a CPU that emulates bf16;
    --force-bf16 runs it anyway. On a CPU with AVX512-BF16/AMX both run bf16."""
    _, checkpoint = trained
    native = cpu_features().native_bf16
    for flag in ('--bf16', '--force-bf16'):
        work = str(tmp_path / flag)
        proc = check_ok(run(eval_cmd(checkpoint, work, flag), data_env))
        output = proc.stdout + proc.stderr
        forced = flag == '--force-bf16'
        assert f'bf16={native or forced}' in _dumped_config(work)
        if not native:
            assert re.search(r'no native bf16 .*took \d+\.\d+x its float32 time' if not forced
                             else r'forced on .*no native bf16.*\d+\.\d+x the float32 time',
                             output.replace('\n', ' ')), output[-3000:]
        assert re.search(r'mIoU: \d', output)


@pytest.mark.slow
def test_amp_on_the_cpu_trains_bf16_and_resumes_across_the_switch(trained, data_env, tmp_path):
    """--amp on a CPU is bf16 autocast in channels_last (refused where bf16 is emulated, unless
    forced); its checkpoints are float32 with the keys of a float32 run's, so a run resumes
    either way, across the layout switch too."""
    work_dir, fp32_checkpoint = trained
    if not cpu_features().native_bf16:
        error = _error_of(run(train_cmd(str(tmp_path / 'refused'), '--amp'), data_env))
        assert 'on a CPU mixed precision means bf16 autocast' in error
        assert re.search(r'took \d+\.\d+x its float32 time', error)
        assert '--force-bf16' in error
    amp = ['--amp', '--force-bf16']
    # float32 iteration 2 -> bf16 iterations 3..4
    bf16_dir = str(tmp_path / 'bf16')
    proc = check_ok(run(train_cmd(bf16_dir, *amp, '--resume', osp.join(work_dir, 'iter_2.pth')),
                        data_env))
    assert 'Iter(train) [4/4]' in proc.stdout + proc.stderr
    dumped = open(osp.join(bf16_dir, 'tools_tiny.py')).read()
    assert "type='BF16AutocastOptimWrapper'" in dumped and 'channels_last=True' in dumped
    from mmengine.runner.checkpoint import _load_checkpoint
    fp32 = _load_checkpoint(fp32_checkpoint, map_location='cpu')
    bf16 = _load_checkpoint(osp.join(bf16_dir, 'iter_4.pth'), map_location='cpu')
    assert bf16['state_dict'].keys() == fp32['state_dict'].keys()
    assert all(v.dtype == fp32['state_dict'][k].dtype for k, v in bf16['state_dict'].items())
    # saved from a channels_last model: the checkpoint keeps values, the layout changes nothing
    assert any(v.dim() == 4 and not v.is_contiguous() for v in bf16['state_dict'].values())
    assert bf16['optimizer'].keys() == fp32['optimizer'].keys()  # no loss scaler
    assert all(torch.isfinite(v).all() for v in bf16['state_dict'].values()
               if v.is_floating_point())
    # bf16 iteration 4 -> float32 iterations 5..6
    proc = check_ok(run(train_cmd(str(tmp_path / 'back'), '--resume',
                                  osp.join(bf16_dir, 'iter_4.pth'), '--cfg-options',
                                  'train_cfg.max_iters=6'), data_env))
    assert 'Iter(train) [6/6]' in proc.stdout + proc.stderr


def test_bf16_optim_wrapper_autocasts_and_keeps_float32_weights():
    from deeplabv3_plugin.engine.bf16_optim_wrapper import BF16AutocastOptimWrapper
    conv = torch.nn.Conv2d(3, 4, 3)
    wrapper = BF16AutocastOptimWrapper(torch.optim.SGD(conv.parameters(), lr=0.1))
    with wrapper.optim_context(conv):
        out = conv(torch.randn(1, 3, 8, 8))
    assert out.dtype == torch.bfloat16
    wrapper.update_params(out.float().square().mean())
    assert conv.weight.dtype == torch.float32 and conv.weight.grad is None  # zeroed after step
    state = wrapper.state_dict()
    wrapper.load_state_dict(dict(state, loss_scaler={'scale': 1.0}))  # a GPU AMP checkpoint


@pytest.mark.slow
def test_int8_export_and_its_miou_through_test_py(trained, data_env, in_process, tmp_path):
    """--int8 writes a QDQ model with dynamic sizes and image pooling; tools/test.py scores an
    .onnx model through the config's dataset and metric, the float32 one as the checkpoint."""
    _, checkpoint = trained
    export = osp.join(REPO_ROOT, 'tools', 'export_onnx.py')
    files = {name: str(tmp_path / f'{name}.onnx') for name in ('fp32', 'int8')}
    images = osp.join(data_env['DEEPLABV3_TOOLS_DATA'], 'JPEGImages')
    common = ['--shape', '1,3,40,40', '--check-shapes', '40x40', '2,3,48,64']
    check_ok(run([PYTHON, export, TINY_CONFIG, checkpoint, files['fp32'], *common], data_env))
    proc = check_ok(run([PYTHON, export, TINY_CONFIG, checkpoint, files['int8'], *common,
                         '--int8', '--calib-dir', images, '--calib-num', '4'], data_env))
    assert re.search(r'calibrated on 4 image\(s\).*int8: .*Conv x\d+', proc.stdout)
    assert 'ReduceMean x1' in proc.stdout  # image pooling is in the graph
    assert len(re.findall(r'int8 argmax equals pytorch on \d', proc.stdout)) == 2
    import onnx
    graph = onnx.load(files['int8']).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    assert any(node.op_type == 'QuantizeLinear' for node in graph.node)
    miou, test_tool = {}, in_process[1]  # scoring an .onnx file: test.py's main in-process
    for name, model in (('pytorch', checkpoint), *files.items()):
        work = str(tmp_path / f'test_{name}')
        test_tool.main(eval_cmd(model, work)[2:])
        miou[name] = _metrics_json(work)['mIoU']
    assert miou['fp32'] == pytest.approx(miou['pytorch'], abs=0.01), miou
    assert miou['int8'] == pytest.approx(miou['fp32'], abs=INT8_TINY_TOLERANCE), miou


def test_onnx_model_refuses_pytorch_only_options(in_process, tmp_path):
    _, test_tool = in_process
    model = tmp_path / 'model.onnx'
    model.write_bytes(b'')
    with pytest.raises(UserInputError, match='--output-stride 8, --precision bf16: not for an '
                       'ONNX model'):
        test_tool.main([TINY_CONFIG, str(model), '--output-stride', '8', '--bf16'])
