"""tools/convert_torchvision.py and deeplabv3_plugin.converters.torchvision.

The source side is built here (torchvision is not installable beside torch 2.13, and nothing is
downloaded): ``helpers.torchvision_reference`` re-implements torchvision's
``deeplabv3_resnet50/101`` with its exact module names and forward, filled with random weights
*and* random BN statistics.
The converted plugin model, built from ``configs/torchvision/`` the way users build it, must give
the same logits. Widths are scaled down (``base_channels``) except in the CLI test, which runs the
real ResNet-50 shapes with the default config; the depth-50/101 key layouts are always the real
ones.
"""
import copy
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO_ROOT as REPO
from helpers.torchvision_reference import DeepLabV3 as TorchvisionDeepLabV3
from helpers.torchvision_reference import randomize_
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint, load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from helpers.tools import load_tool

from deeplabv3_plugin.checkpoint.segmentor import build_segmentor
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.converters.torchvision import (
    TorchvisionConversionError, check_torchvision_geometry,
    convert_state_dict, convert_torchvision_checkpoint, detect_resnet_depth,
    load_torchvision_state_dict, plugin_to_torchvision_key, torchvision_to_plugin_key)

CONFIG_DIR = osp.join(REPO, 'configs', 'torchvision')
R50 = osp.join(CONFIG_DIR, 'deeplabv3_r50-tv_os8_voc12aug-513x513.py')
R101 = osp.join(CONFIG_DIR, 'deeplabv3_r101-tv_os8_voc12aug-513x513.py')
TOOL = osp.join(REPO, 'tools', 'convert_torchvision.py')

# torchvision's structure at 1/8 width: base 8 -> layer4 256 channels, head 16, aux 128 -> 32.
SMALL = dict(base_channels=8, head_channels=16)
SMALL_OPTIONS = {
    'model.backbone.base_channels': 8,
    'model.backbone.stem_channels': 8,
    'model.decode_head.in_channels': 256,
    'model.decode_head.channels': 16,
    'model.auxiliary_head.in_channels': 128,
    'model.auxiliary_head.channels': 32,
    # Compare whole-image outputs: no padding of test images to the 513 x 513 canvas.
    'model.data_preprocessor.size': None,
    'model.data_preprocessor.test_cfg': None,
}


@pytest.fixture(scope='module')
def configs():
    """The two configs, loaded once (loading resolves mmseg:: bases, ~2 s each) at 1/8 width."""
    loaded = {}
    for depth, path in ((50, R50), (101, R101)):
        cfg = Config.fromfile(path)
        cfg.merge_from_dict(SMALL_OPTIONS)
        loaded[depth] = cfg
    return loaded


def _source(depth=50, seed=0, **kwargs):
    return randomize_(TorchvisionDeepLabV3(depth, **{**SMALL, **kwargs}), seed).eval()


def _save(tmp_path, module_or_state, name='tv.pth'):
    path = str(tmp_path / name)
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) \
        else module_or_state
    torch.save(state, path)
    return path


def _build_from_checkpoint(config, checkpoint, options=None):
    """Build the config's model and load the checkpoint as mmengine's Runner/load_from does."""
    cfg = copy.deepcopy(config)
    if options:
        cfg.merge_from_dict(options)
    init_default_scope('mmseg')
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    return model.eval()


def _plugin_logits(model, image_bgr):
    """The plugin's inference path: data preprocessor (BGR->RGB, mean/std) + test_step."""
    samples = []
    for _ in range(image_bgr.shape[0]):
        height, width = image_bgr.shape[2:]
        sample = SegDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             pad_shape=(height, width)))
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, height, width, dtype=torch.long))
        samples.append(sample)
    with torch.no_grad():
        results = model.test_step(dict(inputs=list(image_bgr), data_samples=samples))
    return torch.stack([r.seg_logits.data for r in results])


def _torchvision_logits(source, image_bgr):
    """torchvision's inference: RGB in [0, 1], ImageNet mean/std, forward()['out']."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = image_bgr.flip(1) / 255.0
    with torch.no_grad():
        return source((rgb - mean) / std)


def _image(shape=(2, 3, 37, 45), seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 255


def test_key_map_covers_torchvision_layout_both_ways():
    source = TorchvisionDeepLabV3(50, **SMALL)
    for key in source.state_dict():
        plugin_key = torchvision_to_plugin_key(key)
        assert plugin_key is not None, key
        assert plugin_to_torchvision_key(plugin_key) == key
    assert torchvision_to_plugin_key('classifier.0.convs.4.1.weight') == \
        'decode_head.aspp.image_pool.conv.weight'
    assert torchvision_to_plugin_key('aux_classifier.1.running_var') == \
        'auxiliary_head.convs.0.bn.running_var'
    assert torchvision_to_plugin_key('backbone.fc.weight') is None
    assert detect_resnet_depth(source.state_dict()) == 50
    assert detect_resnet_depth(TorchvisionDeepLabV3(101, **SMALL).state_dict()) == 101


def test_default_configs_take_torchvisions_real_shapes():
    """Full-width torchvision models against the unmodified configs, on the meta device."""
    for depth, path in ((50, R50), (101, R101)):
        cfg = Config.fromfile(path)
        init_default_scope('mmseg')
        with torch.device('meta'):
            source = TorchvisionDeepLabV3(depth)
            model = MODELS.build(cfg.model)
        converted, notes = convert_state_dict(source.state_dict(), model.state_dict())
        assert len(converted) == len(model.state_dict()) == len(source.state_dict())
        assert notes == []
        assert converted['decode_head.aspp.convs.0.conv.weight'].shape == (256, 2048, 1, 1)
        assert converted['auxiliary_head.convs.0.conv.weight'].shape == (256, 1024, 3, 3)


def test_converted_model_matches_torchvision(tmp_path, configs):
    source = _source()
    dst = str(tmp_path / 'converted.pth')
    meta = convert_torchvision_checkpoint(_save(tmp_path, source), dst, configs[50])

    checkpoint = _load_checkpoint(dst, map_location='cpu')  # the plugin's weights-only loader
    state = checkpoint['state_dict']
    assert len(state) == len(source.state_dict()) == meta['num_tensors']
    model = _build_from_checkpoint(configs[50], dst)
    # Every plugin tensor was filled from the source: equal to its torchvision counterpart.
    source_state = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, source_state[plugin_to_torchvision_key(key)]), key
    assert checkpoint['meta']['dataset_meta']['classes'][:2] == ['background', 'aeroplane']
    assert len(checkpoint['meta']['dataset_meta']['classes']) == 21
    assert meta['notes'] == [] and meta['config'] == R50

    # The architecture is torchvision's, pinned where the weights do not show it.
    backbone = model.backbone
    assert [backbone.layer3[i].conv2.dilation[0] for i in range(6)] == [1, 2, 2, 2, 2, 2]
    assert [backbone.layer4[i].conv2.dilation[0] for i in range(3)] == [2, 4, 4]
    assert backbone.conv1.kernel_size == (7, 7)
    assert model.decode_head.effective_rates == (12, 24, 36)

    image = _image()
    expected = _torchvision_logits(source, image)
    actual = _plugin_logits(model, image)
    assert actual.shape == expected['out'].shape == (2, 21, 37, 45)
    torch.testing.assert_close(actual, expected['out'], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and the auxiliary head on layer3
        aux = model.auxiliary_head(model.extract_feat(
            model.data_preprocessor(dict(inputs=list(image)))['inputs']))
    torch.testing.assert_close(
        F.interpolate(aux, size=image.shape[2:], mode='bilinear', align_corners=False),
        expected['aux'], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_cli_converts_and_picks_the_config_by_depth(tmp_path, configs):
    """The user's command: no --config, the r101 config is chosen from the source's depth."""
    source = _source(depth=101, seed=3)
    src = _save(tmp_path, source)
    dst = str(tmp_path / 'out' / 'deeplabv3_r101-tv_coco.pth')
    options = [f'{k}={"None" if v is None else v}' for k, v in SMALL_OPTIONS.items()]
    proc = subprocess.run([sys.executable, TOOL, src, dst, '--cfg-options', *options],
                          capture_output=True, text=True, cwd=str(tmp_path),
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'Converted {len(source.state_dict())} tensors of a torchvision DeepLabV3-ResNet101' \
        in proc.stdout
    assert 'deeplabv3_r101-tv_os8_voc12aug-513x513.py' in proc.stdout

    model = _build_from_checkpoint(configs[101], dst)
    assert len(model.backbone.layer3) == 23
    image = _image((1, 3, 33, 41))
    torch.testing.assert_close(
        _plugin_logits(model, image), _torchvision_logits(source, image)['out'],
        rtol=1e-5, atol=1e-5)


def test_source_without_aux_head_converts_with_a_note(tmp_path, configs):
    source = _source(aux_loss=False, seed=5)
    dst = str(tmp_path / 'noaux.pth')
    meta = convert_torchvision_checkpoint(_save(tmp_path, source), dst, configs[50])
    assert any('aux_classifier' in note for note in meta['notes'])
    state = _load_checkpoint(dst)['state_dict']
    assert not any(k.startswith('auxiliary_head.') for k in state)
    model = _build_from_checkpoint(configs[50], dst, {'model.auxiliary_head': None})
    image = _image((1, 3, 33, 33))
    torch.testing.assert_close(
        _plugin_logits(model, image), _torchvision_logits(source, image)['out'],
        rtol=1e-5, atol=1e-5)


def test_other_class_count_via_cfg_options(tmp_path, configs):
    source = _source(num_classes=5, seed=6)
    dst = str(tmp_path / 'five.pth')
    options = {'model.decode_head.num_classes': 5, 'model.auxiliary_head.num_classes': 5}
    meta = convert_torchvision_checkpoint(_save(tmp_path, source), dst, configs[50], options)
    assert 'dataset_meta' not in meta  # not the VOC classes: no names to claim
    model = _build_from_checkpoint(configs[50], dst, options)
    image = _image((1, 3, 33, 33))
    torch.testing.assert_close(
        _plugin_logits(model, image), _torchvision_logits(source, image)['out'],
        rtol=1e-5, atol=1e-5)


def test_old_source_without_num_batches_tracked_converts(tmp_path, configs):
    state = {k: v for k, v in _source().state_dict().items()
             if not k.endswith('num_batches_tracked')}
    dst = str(tmp_path / 'old.pth')
    convert_torchvision_checkpoint(_save(tmp_path, state), dst, configs[50])
    assert _load_checkpoint(dst)['state_dict']['backbone.bn1.num_batches_tracked'] == 0


@pytest.mark.parametrize('edit, message', [
    (lambda s: s.update({'backbone.fc.weight': torch.zeros(3, 3)}),
     r"1 key\(s\) that torchvision's DeepLabV3-ResNet does not have: backbone\.fc\.weight"),
    (lambda s: s.pop('classifier.0.project.1.running_var'),
     r'1 key\(s\) missing from the source: classifier\.0\.project\.1\.running_var'),
    (lambda s: s.update({'classifier.1.weight': torch.zeros(16, 16, 1, 1)}),
     r'shape mismatch\(es\): classifier\.1\.weight \(16, 16, 1, 1\) -> '
     r'decode_head\.extra_convs\.0\.conv\.weight \(16, 16, 3, 3\)'),
], ids=['extra-key', 'missing-key', 'wrong-shape'])
def test_bad_state_dict_names_the_keys_and_writes_nothing(tmp_path, configs, edit, message):
    state = dict(_source().state_dict())
    edit(state)
    dst = tmp_path / 'never.pth'
    with pytest.raises(TorchvisionConversionError, match=message):
        convert_torchvision_checkpoint(_save(tmp_path, state), str(dst), configs[50])
    assert os.listdir(tmp_path) == ['tv.pth']


def test_wrong_class_count_says_which_option_fixes_it(tmp_path, configs):
    with pytest.raises(TorchvisionConversionError,
                       match=r'the source predicts 5 classes, the config\'s decode_head 21: '
                       r'convert with --cfg-options model\.decode_head\.num_classes=5'):
        convert_torchvision_checkpoint(
            _save(tmp_path, _source(num_classes=5)), str(tmp_path / 'x.pth'), configs[50])


def test_depth_mismatch_names_both_depths(tmp_path, configs):
    with pytest.raises(TorchvisionConversionError,
                       match=r'ResNet-101 DeepLabV3, the config .* builds ResNet-50'):
        convert_torchvision_checkpoint(
            _save(tmp_path, _source(depth=101)), str(tmp_path / 'x.pth'), configs[50])


def test_unreadable_sources_are_named(tmp_path):
    with pytest.raises(UserInputError, match='missing.pth'):
        load_torchvision_state_dict(str(tmp_path / 'missing.pth'))
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(TorchvisionConversionError, match='notes.pth'):
        load_torchvision_state_dict(str(text))
    torch.save({'model': _source().state_dict(), 'epoch': 3}, str(tmp_path / 'reference.pth'))
    state = load_torchvision_state_dict(str(tmp_path / 'reference.pth'))  # torchvision's script
    assert 'classifier.4.weight' in state


def test_source_that_lacks_its_storage_bytes_is_refused(tmp_path):
    """A legacy-format file whose storages' bytes are not in it: torch.load, weights-only too,
    returns uninitialised memory as weights, which conversion would have written out."""
    path = tmp_path / 'legacy.pth'
    torch.save(_source().state_dict(), str(path), _use_new_zipfile_serialization=False)
    header, main_pickle, _ = load_tool('fuzz_checkpoint_loader').split_legacy(path.read_bytes())
    path.write_bytes(header + main_pickle + pickle.dumps([], 2))  # no storage listed, no bytes
    with pytest.raises(TorchvisionConversionError, match='legacy.pth'):
        load_torchvision_state_dict(str(path))


@pytest.mark.parametrize('option, message', [
    ({'model.backbone.contract_dilation': False},
     r'backbone\.layer3\.0\.conv2: \(stride, dilation, padding\)=\(1, 2, 2\), torchvision: '
     r"\(stride, dilation, padding\)=\(1, 1, 1\).* torchvision's backbone is "
     r"MultiGridResNet\(stem='torchvision', contract_dilation=True"),
    ({'model.backbone.stem': 'deep'},
     r'backbone\.stem\.0: \(.*\), torchvision: absent.*backbone\.conv1: absent, torchvision'),
    ({'model.output_stride': 16},
     r'backbone\.layer3\.0\.conv2: \(stride, dilation, padding\)=\(2, 1, 1\).* at output '
     r'stride 8'),
    ({'model.decode_head.align_corners': True},
     r'decode_head: align_corners=True, torchvision: align_corners=False'),
    ({'model.auxiliary_head.concat_input': True},
     r'auxiliary_head\.conv_cat\.conv: \(.*\), torchvision: absent'),
    ({'model.data_preprocessor.bgr_to_rgb': False},
     r'data_preprocessor: .*bgr_to_rgb=False, torchvision: .*bgr_to_rgb=True'),
    ({'model.backbone.norm_cfg.eps': 1e-3},
     r'backbone\.bn1: BN eps=0\.001, torchvision: BN eps=1e-05'),
], ids=['uncontracted', 'deep-stem', 'os16', 'align-corners', 'aux-concat', 'bgr', 'bn-eps'])
def test_config_that_is_not_torchvision_is_refused(configs, option, message):
    model = build_segmentor(configs[50], cfg_options=option)
    with pytest.raises(TorchvisionConversionError, match=message):
        check_torchvision_geometry(model)


def test_paper_protocol_variant_is_accepted(configs):
    """Train at OS 16, evaluate at OS 8: the eval-mode model is still torchvision's; the
    auxiliary head is optional (it only adds a training loss)."""
    model = build_segmentor(
        configs[50], cfg_options={'model.output_stride': 16, 'model.test_output_stride': 8})
    model.train()
    check_torchvision_geometry(model)
    assert model.training and model.decode_head.effective_rates == (6, 12, 18)
    check_torchvision_geometry(build_segmentor(configs[50], cfg_options={
        'model.auxiliary_head': None}))


def test_cli_bad_input_is_refused_naming_the_problem(tmp_path):
    junk = str(tmp_path / 'junk.pth')
    torch.save({'backbone.layer3.0.conv1.weight': torch.zeros(1), 'foo.bar': torch.zeros(1)},
               junk)
    dst = str(tmp_path / 'never.pth')
    with pytest.raises(UserInputError, match='backbone.layer3 has 1 units'):
        load_tool('convert_torchvision').main([junk, dst])
    assert not osp.exists(dst)
