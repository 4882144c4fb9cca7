"""The inference engines (deeplabv3_plugin.deploy): the choice table, and every backend and
precision through ``tools/test.py`` and ``tools/infer.py`` run as subprocesses on a trained tiny
model, against the PyTorch float32 predictions.

The mIoU effect of int8 and bf16 on the demo model (within 0.5 and 0.2 of fp32) is measured by
``benchmarks/run.py --accuracy``; here a 4-iteration model, whose near-tied logits int8 rounding
can flip, is held to pixel agreement.
"""
import glob
import json
import os
import os.path as osp
import re
import time

import cv2
import numpy as np
import pytest
from mmengine.logging import MMLogger

from helpers.tools import REPO_ROOT, TINY_CONFIG, eval_cmd, load_tool

from deeplabv3_plugin.deploy import engines
from deeplabv3_plugin.deploy.engines import Engine, choose_engine
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.cpu_features import CPUFeatures

FLAGS = {'native-bf16': {'avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_int8'},
         'vnni': {'avx2', 'avx512f', 'avx512_vnni'}, 'avx2': {'avx2', 'fma'}}


@pytest.fixture(params=sorted(FLAGS))
def kind(request, monkeypatch):
    features = CPUFeatures(f'test CPU ({request.param})', frozenset(FLAGS[request.param]), 'AVX2')
    monkeypatch.setattr(engines, 'cpu_features', lambda: features)
    return request.param


#: What ``auto`` must pick per CPU kind, written out by hand from the measurements.
EXPECTED = {
    'native-bf16': dict(exact=Engine('pytorch', 'fp32', compile=True),
                        fast=Engine('openvino', 'int8'), bf16=Engine('openvino', 'bf16')),
    'vnni': dict(exact=Engine('pytorch', 'fp32'), fast=Engine('openvino', 'int8'),
                 bf16=Engine('pytorch', 'bf16')),
    'avx2': dict(exact=Engine('onnxruntime', 'fp32'), fast=Engine('onnxruntime', 'int8'),
                 bf16=Engine('pytorch', 'bf16')),
}


def test_auto_picks_the_measured_engine_per_cpu_kind(kind):
    exact, reason = choose_engine(goal='exact')
    assert exact == EXPECTED[kind]['exact']
    assert f"CPU kind '{kind}'" in reason and 'test CPU' in reason
    assert choose_engine(goal='fast')[0] == EXPECTED[kind]['fast']
    assert choose_engine(precision='bf16')[0] == EXPECTED[kind]['bf16']
    # An explicit backend keeps the goal's precision where it can run it.
    assert choose_engine('openvino', goal='fast')[0] == Engine('openvino', 'int8')
    assert choose_engine('pytorch', goal='fast')[0].precision in ('fp32', 'bf16')


def test_gpu_and_distributed_runs_stay_on_pytorch(kind):
    assert choose_engine(device='cuda:0', goal='fast')[0] == Engine('pytorch', 'fp32')
    engine, reason = choose_engine(distributed=True, goal='fast')
    assert engine == Engine('pytorch', 'fp32') and 'distributed' in reason
    with pytest.raises(UserInputError, match='runs on the CPU'):
        choose_engine('openvino', device='cuda')


@pytest.mark.parametrize('backend,precision,message', [
    ('tensorrt', 'auto', "--backend 'tensorrt': expected one of auto, pytorch, onnxruntime"),
    ('auto', 'fp16', "--precision 'fp16': expected one of auto, fp32, bf16, int8"),
    ('pytorch', 'int8', 'int8 runs on the exported graph'),
    ('onnxruntime', 'bf16', 'ONNX Runtime has no bf16 mode'),
])
def test_impossible_choices_are_refused(backend, precision, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        choose_engine(backend, precision)


@pytest.fixture(scope='module')
def checkpoint(tiny_run):
    return tiny_run[1]


@pytest.fixture
def eval_tool(data_env, monkeypatch):
    """``tools/test.py`` imported, for refusals raised before any evaluation starts."""
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    return load_tool('test')


def fresh_logger(name: str) -> None:
    """A new current mmengine logger, writing to this test's captured output: what the tool
    logs before it builds its runner goes to the current logger, which an earlier test made."""
    MMLogger.get_instance(f'{__name__}.{name}.{time.monotonic_ns()}', log_level='INFO')


@pytest.fixture
def evaluate(checkpoint, data_env, tmp_path, monkeypatch, capfd):
    """``evaluate(name, *flags)``: (mIoU, label maps, log) of ``tools/test.py`` with ``flags``,
    its ``main`` run in this process (tests/tools/ run the tool as a subprocess)."""
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    tool = load_tool('test')

    def run_test(name, *flags):
        work, out = str(tmp_path / f'work_{name}'), str(tmp_path / f'out_{name}')
        fresh_logger(name)
        capfd.readouterr()
        tool.main(eval_cmd(checkpoint, work, '--out', out, *flags)[2:])
        log = ''.join(capfd.readouterr())
        metrics = sorted(glob.glob(osp.join(work, '*', '*.json')))
        with open(metrics[-1]) as f:
            miou = json.load(f)['mIoU']
        labels = [cv2.imread(p, cv2.IMREAD_UNCHANGED) for p in sorted(glob.glob(out + '/*.png'))]
        return miou, np.stack(labels), log

    return run_test


ENGINES = [('onnxruntime', 'fp32'), ('openvino', 'fp32'), ('onnxruntime', 'int8'),
           ('openvino', 'int8')]


@pytest.mark.slow
def test_every_engine_scores_the_config_like_pytorch(evaluate):
    """Each backend and precision runs the config's dataset, pipeline and metric: float32
    engines give PyTorch's mIoU, int8 agrees on most pixels; the graph is exported once per
    checkpoint and reused, the int8 graph calibrated on the training split."""
    reference, expected, log = evaluate('pytorch', '--backend', 'pytorch')
    assert 'Inference engine: pytorch fp32' in log
    for backend, precision in ENGINES:
        miou, labels, log = evaluate(backend + precision, '--backend', backend, '--precision',
                                     precision)
        assert f'Inference engine: {backend} {precision}' in log
        agreement = (labels == expected).mean()
        if precision == 'fp32':
            assert abs(miou - reference) <= 0.01 and agreement >= 0.999, (backend, miou, agreement)
        else:
            assert agreement >= 0.9, (backend, agreement)
    exported = glob.glob(osp.join(os.environ['DEEPLABV3_PLUGIN_CACHE'], 'engines', '*',
                                  'fp32.onnx'))
    assert len(exported) == 1  # one export served both engines and both precisions
    assert len(glob.glob(osp.join(osp.dirname(exported[0]), 'int8-*.onnx'))) == 1
    stamp = os.stat(exported[0]).st_mtime_ns
    _, _, log = evaluate('again', '--backend', 'onnxruntime', '--precision', 'int8')
    assert 'Exporting' not in log and 'Quantizing' not in log and 'Reusing the cached' in log
    assert os.stat(exported[0]).st_mtime_ns == stamp


@pytest.mark.slow
def test_auto_and_fast_say_what_they_chose(evaluate):
    _, _, log = evaluate('auto')
    assert re.search(r"Inference engine: \w+ fp32 .*CPU kind '[\w-]+'", log)
    _, _, log = evaluate('fast', '--fast', '--tta')
    assert re.search(r"Inference engine: \w+ (int8|fp32|bf16) .*measured", log)


@pytest.mark.slow
def test_output_stride_is_part_of_the_exported_graph(evaluate):
    miou16, labels16, _ = evaluate('os16', '--backend', 'pytorch', '--output-stride', '8')
    miou, labels, _ = evaluate('os8', '--backend', 'openvino', '--output-stride', '8')
    assert abs(miou - miou16) <= 0.01 and (labels == labels16).mean() >= 0.999


@pytest.mark.parametrize('flags,message', [
    (['--backend', 'tensorrt'], "--backend 'tensorrt': expected one of"),
    (['--backend', 'onnxruntime', '--no-fast'], '--no-fast: options of the PyTorch path'),
    (['--bf16', '--precision', 'int8'], '--bf16 --precision int8: choose one precision'),
])
def test_bad_engine_options_are_refused(checkpoint, eval_tool, tmp_path, flags, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        eval_tool.main(eval_cmd(checkpoint, str(tmp_path / 'work'), *flags)[2:])


def test_int8_calibration_without_a_training_split_says_what_to_pass(checkpoint, eval_tool,
                                                                     tmp_path):
    with pytest.raises(UserInputError, match='int8 calibration') as info:
        eval_tool.main(eval_cmd(checkpoint, str(tmp_path / 'work'), '--precision', 'int8',
                                '--backend', 'onnxruntime', '--cfg-options',
                                'train_dataloader.dataset.ann_file=missing_split.txt')[2:])
    assert '--calib-dir' in str(info.value) and 'missing_split.txt' in str(info.value)


@pytest.mark.slow
def test_infer_tool_runs_on_every_backend(checkpoint, data_env, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    images = sorted(glob.glob(osp.join(data_env['DEEPLABV3_TOOLS_DATA'], 'JPEGImages',
                                       '*.jpg')))[:2]
    tool, labels = load_tool('infer'), {}
    for backend in ('pytorch', 'onnxruntime', 'openvino'):
        out = str(tmp_path / backend)
        fresh_logger(backend)
        assert tool.main([TINY_CONFIG, checkpoint, *images, '--out', out, '--backend', backend,
                          '--precision', 'fp32']) in (None, 0)
        assert f'DeepLabV3Inferencer: {backend} fp32' in ''.join(capfd.readouterr())
        labels[backend] = np.stack([cv2.imread(p, cv2.IMREAD_UNCHANGED)
                                    for p in sorted(glob.glob(out + '/*_label.png'))])
    assert (labels['onnxruntime'] == labels['pytorch']).mean() >= 0.999
    assert (labels['openvino'] == labels['pytorch']).mean() >= 0.999


def test_init_model_runs_an_exported_engine(checkpoint, data_env, monkeypatch):
    """The inference API: ``init_model(backend=...)`` returns the cached graph as a segmentor
    that ``inference_model`` runs like the PyTorch model."""
    from deeplabv3_plugin.apis import inference_model, init_model
    monkeypatch.setenv('DEEPLABV3_TOOLS_DATA', data_env['DEEPLABV3_TOOLS_DATA'])
    config = osp.join(REPO_ROOT, 'tests', 'configs', 'tools_tiny.py')
    image = sorted(glob.glob(osp.join(data_env['DEEPLABV3_TOOLS_DATA'], 'JPEGImages',
                                      '*.jpg')))[0]
    expected = inference_model(init_model(config, checkpoint), image)
    for backend, precision in (('onnxruntime', 'fp32'), ('openvino', 'bf16')):
        model = init_model(config, checkpoint, backend=backend, precision=precision)
        assert type(model).__name__ == 'ExportedSegmentor' and model.backend == backend
        assert model.dataset_meta == init_model(config, checkpoint).dataset_meta
        # bf16 on OpenVINO: its own bf16 where native, else float32; either way near fp32
        assert (inference_model(model, image) == expected).mean() >= 0.99
