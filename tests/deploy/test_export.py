"""tools/export_onnx.py and deeplabv3_plugin.deploy.export on small models.

Image pooling is where exported DeepLabV3 graphs usually lose their dynamic sizes, so the
exported graph is run by ONNX Runtime at sizes and batch sizes other than the traced one and
compared with the PyTorch model's own inference path (``test_step``: data preprocessor, whole
inference, resize), and with torchvision's forward for a converted torchvision model.
"""
import copy
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from helpers import REPO_ROOT as REPO
from helpers.torchvision_reference import DeepLabV3 as TorchvisionDeepLabV3
from helpers.torchvision_reference import randomize_
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from deeplabv3_plugin.apis.inference import build_segmentor
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.deploy.export import export_onnx, parse_shape, run_onnxruntime
from deeplabv3_plugin.converters.torchvision import convert_torchvision_checkpoint

TOOL = osp.join(REPO, 'tools', 'export_onnx.py')
ASPP_CONFIG = osp.join(REPO, 'configs', '_base_', 'models', 'deeplabv3-aspp_r50.py')
TV_CONFIG = osp.join(REPO, 'configs', 'torchvision', 'deeplabv3_r50-tv_os8_voc12aug-513x513.py')
# The paper's ASPP model (deep stem, image pooling) on a ResNet-18 at 1/8 width, trained at
# OS 16; no padding canvas, so PyTorch's test_step is whole-image inference like the graph.
SMALL_ASPP = {
    'model.backbone.depth': 18,
    'model.backbone.base_channels': 8,
    'model.backbone.stem_channels': 8,
    'model.backbone.multi_grid': None,
    'model.decode_head.in_channels': 64,
    'model.decode_head.channels': 16,
    'model.data_preprocessor.size': None,
    'model.data_preprocessor.test_cfg': None,
}


def _image(shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 255


def _mmseg_logits(model, image):
    """The PyTorch inference path users run: test_step on raw BGR images."""
    samples = []
    for _ in range(image.shape[0]):
        size = tuple(image.shape[2:])
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *size, dtype=torch.long))
        samples.append(sample)
    with torch.no_grad():
        results = model.test_step(dict(inputs=list(image), data_samples=samples))
    return torch.stack([r.seg_logits.data for r in results]).numpy()


def _dynamic_dims(onnx_file):
    graph = onnx.load(onnx_file).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    return [bool(d.dim_param) for d in dims], {node.op_type for node in graph.node}


def _option_args(options):
    return [f'{k}={"None" if v is None else v}' for k, v in options.items()]


@pytest.mark.slow
def test_tool_exports_aspp_model_at_output_stride_8(tmp_path):
    """Train-at-16 model exported at OS 8 (--output-stride), checked by the tool and here."""
    model = build_segmentor(ASPP_CONFIG, cfg_options=SMALL_ASPP)
    randomize_(model, seed=1)  # random BN statistics too: a dropped BN would show
    checkpoint = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    out = str(tmp_path / 'model.onnx')
    proc = subprocess.run(
        [sys.executable, TOOL, ASPP_CONFIG, checkpoint, out, '--output-stride', '8',
         '--shape', '1,3,97,129', '--check-shapes', '65x65', '2,3,48,80',
         '--cfg-options', *_option_args(SMALL_ASPP)],
        capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if 'max |onnxruntime - pytorch|' in line]
    assert [line.split(':')[0] for line in lines] == ['input 1x3x65x65', 'input 2x3x48x80']
    assert all(line.endswith('OK') for line in lines), lines

    dynamic, ops = _dynamic_dims(out)
    assert dynamic == [True, False, True, True]  # batch, 3 channels, height, width
    assert 'ReduceMean' in ops  # image pooling, exported as a mean over H, W

    # Independently of the tool: ONNX Runtime vs mmseg's test_step at OS 8, at a third size.
    reference = build_segmentor(ASPP_CONFIG, checkpoint, SMALL_ASPP, output_stride=8)
    assert reference.backbone.current_output_stride == 8
    assert reference.decode_head.effective_rates == (12, 24, 36)
    image = _image((1, 3, 40, 56), seed=2)
    np.testing.assert_allclose(
        run_onnxruntime(out, image.numpy()), _mmseg_logits(reference, image),
        rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_converted_torchvision_model_exports_to_torchvisions_logits(tmp_path):
    """torchvision weights -> plugin checkpoint -> ONNX gives torchvision's logits."""
    source = randomize_(TorchvisionDeepLabV3(50, base_channels=8, head_channels=16), 3).eval()
    src, converted = str(tmp_path / 'tv.pth'), str(tmp_path / 'converted.pth')
    torch.save(source.state_dict(), src)
    options = {
        'model.backbone.base_channels': 8, 'model.backbone.stem_channels': 8,
        'model.decode_head.in_channels': 256, 'model.decode_head.channels': 16,
        'model.auxiliary_head.in_channels': 128, 'model.auxiliary_head.channels': 32}
    cfg = Config.fromfile(TV_CONFIG)
    convert_torchvision_checkpoint(src, converted, copy.deepcopy(cfg), options)
    model = build_segmentor(TV_CONFIG, converted, options)
    out = str(tmp_path / 'tv.onnx')
    export_onnx(model, out, (1, 3, 65, 65))

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    for shape in ((1, 3, 33, 47), (2, 3, 50, 38)):
        image = _image(shape, seed=shape[2])
        with torch.no_grad():
            expected = source((image.flip(1) / 255 - mean) / std)['out'].numpy()
        np.testing.assert_allclose(run_onnxruntime(out, image.numpy()), expected,
                                   rtol=1e-4, atol=1e-5)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model = build_segmentor(ASPP_CONFIG, cfg_options=SMALL_ASPP)
    state = model.state_dict()
    state['decode_head.conv_seg.weight'] = torch.zeros(5, 16, 1, 1)
    del state['decode_head.aspp.project.bn.running_var']
    checkpoint = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=state), checkpoint)
    with pytest.raises(UserInputError, match=r'does not fit the DeepLabV3 model.*1 tensor\(s\) '
                       r'have another shape \(decode_head\.conv_seg\.weight.*1 model key\(s\) '
                       r'are missing .*decode_head\.aspp\.project\.bn\.running_var'):
        build_segmentor(ASPP_CONFIG, checkpoint, SMALL_ASPP)
    with pytest.raises(UserInputError, match='nowhere.pth'):
        build_segmentor(ASPP_CONFIG, str(tmp_path / 'nowhere.pth'), SMALL_ASPP)


def test_output_stride_needs_the_plugin_segmentor():
    cfg = Config.fromfile(ASPP_CONFIG)
    cfg.model.type = 'EncoderDecoder'
    del cfg.model['output_stride'], cfg.model['test_output_stride']
    with pytest.raises(UserInputError, match=r'output stride 8: .* EncoderDecoder'):
        build_segmentor(cfg, cfg_options=SMALL_ASPP, output_stride=8)


@pytest.mark.parametrize('text, shape', [('65x97', (1, 3, 65, 97)), ('2,3,40,48', (2, 3, 40, 48))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize('text', ['1,1,64,64', '16x16', 'big', '1,3,64'])
def test_parse_shape_rejects_bad_shapes(text):
    with pytest.raises(UserInputError, match='shape'):
        parse_shape(text)
