"""ImageNet initialisation of the backbone, the way configs reach it: ``init_cfg=Pretrained``.

Checkpoints are local files built here in the two key layouts users start from (nothing is
downloaded): torchvision's ImageNet ResNet (``torchvision://resnet50``: 7x7 ``conv1``/``bn1``,
``layerN``, ``fc``) and mmseg's ResNet-V1c (``open-mmlab://resnet50_v1c``: deep ``stem.*``,
``layerN``, ``fc``). Models are built from the repo's configs by ``MODELS.build`` and initialised
with ``init_weights()``, as mmengine's Runner does, at 1/8 width. Every backbone tensor must come
from the file, and the log must say what was loaded, what was missing and why.
"""
import hashlib
import json
import logging
import os
import os.path as osp
from contextlib import contextmanager

import pytest
import torch
from helpers import REPO_ROOT as REPO
from helpers.torchvision_reference import ResNet as TorchvisionResNet
from helpers.torchvision_reference import randomize_
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmseg.models.backbones import ResNetV1c
from mmseg.registry import MODELS

import deeplabv3_plugin.runtime  # noqa: F401  (the model bases have no custom_imports; torchvision://)

MODELS_DIR = osp.join(REPO, 'configs', '_base_', 'models')
ASPP_R50 = osp.join(MODELS_DIR, 'deeplabv3-aspp_r50.py')
ASPP_R101 = osp.join(MODELS_DIR, 'deeplabv3-aspp_r101.py')
CASCADE_R50 = osp.join(MODELS_DIR, 'deeplabv3-cascade_r50.py')

WIDTH = 8  # base and stem channels; layer4 then has 32 * WIDTH = 256 channels
SMALL = {
    'model.backbone.base_channels': WIDTH,
    'model.backbone.stem_channels': WIDTH,
    'model.decode_head.in_channels': 32 * WIDTH,
    'model.decode_head.channels': 16,
}


def _torchvision_imagenet(depth=50, seed=0):
    """A ``torchvision.models.resnet50().state_dict()`` look-alike (with ``fc``)."""
    return randomize_(TorchvisionResNet(depth, base_channels=WIDTH), seed).state_dict()


def _openmmlab_v1c(depth=50, seed=0):
    """An ``open-mmlab://resnet50_v1c`` look-alike: mmseg ResNetV1c keys plus an ImageNet fc."""
    state = randomize_(ResNetV1c(depth=depth, stem_channels=WIDTH, base_channels=WIDTH),
                       seed).state_dict()
    state['fc.weight'] = torch.randn(1000, 32 * WIDTH)
    state['fc.bias'] = torch.randn(1000)
    return state


def _build(config, options):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({**SMALL, **options})
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


@contextmanager
def _log_lines():
    """Collect what mmengine's 'current' logger prints (where init_weights reports)."""
    lines = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def _assert_backbone_loaded(backbone, state, skip=('fc.', )):
    own = backbone.state_dict()
    for key, value in state.items():
        if key.startswith(skip):
            continue
        assert torch.equal(own[key], value), key


def test_torchvision_layout_into_torchvision_stem(tmp_path):
    state = _torchvision_imagenet()
    path = str(tmp_path / 'resnet50-0676ba61.pth')
    torch.save(state, path)
    # The paper's model with torchvision's stem, as for `torchvision://resnet50`.
    model = _build(ASPP_R50, {'model.backbone.stem': 'torchvision',
                              'model.backbone.init_cfg.checkpoint': path})
    with _log_lines() as lines:
        model.init_weights()
    _assert_backbone_loaded(model.backbone, state)
    log = '\n'.join(lines)
    assert f'load model from: {path}' in log
    assert 'unexpected key in source state_dict: fc.weight, fc.bias' in log
    assert 'missing keys' not in log


def test_openmmlab_v1c_layout_into_deep_stem(tmp_path):
    state = _openmmlab_v1c()
    path = str(tmp_path / 'resnet50_v1c.pth')
    torch.save(state, path)
    model = _build(ASPP_R50, {'model.backbone.init_cfg.checkpoint': path})
    with _log_lines() as lines:
        model.init_weights()
    _assert_backbone_loaded(model.backbone, state)
    assert 'missing keys' not in '\n'.join(lines)


@pytest.mark.parametrize('depth, config', [(50, ASPP_R50), (101, ASPP_R101)])
def test_openmmlab_scheme_of_the_configs_resolves_offline(tmp_path, monkeypatch, depth, config):
    """The configs' own ``open-mmlab://resnet{50,101}_v1c``, served from the download cache.

    The scheme resolves to a URL and an already downloaded file in
    ``$TORCH_HOME/hub/checkpoints`` is loaded without touching the network: the code path of a
    real first run after its download. The file's name must carry its own SHA-256 prefix (it is
    checked), so ``$MMENGINE_HOME/open_mmlab.json``, mmengine's override of its URL table, points
    the name at this file's URL.
    """
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    state = _openmmlab_v1c(depth, seed=depth)
    torch.save(state, str(cache / 'download.pth'))
    digest = hashlib.sha256((cache / 'download.pth').read_bytes()).hexdigest()
    name = f'resnet{depth}_v1c-{digest[:8]}.pth'  # published as resnet{depth}_v1c-<hash>.pth
    os.rename(cache / 'download.pth', cache / name)
    (tmp_path / 'mmengine').mkdir()
    (tmp_path / 'mmengine' / 'open_mmlab.json').write_text(json.dumps(
        {f'resnet{depth}_v1c': f'https://download.openmmlab.com/pretrain/third_party/{name}'}))
    model = _build(config, {})
    assert model.backbone.init_cfg['checkpoint'] == f'open-mmlab://resnet{depth}_v1c'
    with _log_lines() as lines:
        model.init_weights()
    _assert_backbone_loaded(model.backbone, state)
    assert any(f'open-mmlab://resnet{depth}_v1c' in line for line in lines)


def test_cascaded_blocks_start_from_block4_and_the_log_says_why(tmp_path):
    state = _openmmlab_v1c()
    path = str(tmp_path / 'resnet50_v1c.pth')
    torch.save(state, path)
    model = _build(CASCADE_R50, {'model.backbone.init_cfg.checkpoint': path,
                                 'model.decode_head.channels': 32 * WIDTH})
    fresh_conv1 = model.backbone.layer5[0].conv1.weight.detach().clone()
    with _log_lines() as lines:
        model.init_weights()
    backbone = model.backbone
    _assert_backbone_loaded(backbone, state)
    for name in ('layer5', 'layer6', 'layer7'):
        block = getattr(backbone, name).state_dict()
        for key, value in block.items():
            if key == '0.conv1.weight':  # 2048 -> 512 here, 1024 -> 512 in layer4: no donor
                assert value.shape != state[f'layer4.{key}'].shape
            elif not key.endswith('num_batches_tracked'):
                assert torch.equal(value, state[f'layer4.{key}']), (name, key)
    # layer5's first conv has no donor and keeps the weights it was constructed with
    assert torch.equal(backbone.layer5[0].conv1.weight, fresh_conv1)
    log = '\n'.join(lines)
    for name in ('layer5', 'layer6', 'layer7'):
        assert (f"the checkpoint has no {name}; cascade_init='block4' copied" in log), log
    assert 'not copied (no layer4 tensor of that shape, default initialisation kept): ' \
        '0.conv1.weight' in log
    assert 'missing keys in source state_dict: layer5.0.conv1.weight' in log


def test_cascade_init_random_keeps_the_initialisation(tmp_path):
    state = _openmmlab_v1c()
    path = str(tmp_path / 'resnet50_v1c.pth')
    torch.save(state, path)
    model = _build(CASCADE_R50, {'model.backbone.init_cfg.checkpoint': path,
                                 'model.backbone.cascade_init': 'random',
                                 'model.decode_head.channels': 32 * WIDTH})
    with _log_lines() as lines:
        model.init_weights()
    _assert_backbone_loaded(model.backbone, state)
    assert not torch.equal(model.backbone.layer5[1].conv2.weight,
                           state['layer4.1.conv2.weight'])
    assert "cascade_init='random' keeps its default initialisation" in '\n'.join(lines)


def test_wrong_layout_is_reported_key_by_key(tmp_path):
    """torchvision's 7x7 stem into the deep-stem config: the log names what did not load."""
    path = str(tmp_path / 'resnet50-0676ba61.pth')
    torch.save(_torchvision_imagenet(), path)
    model = _build(ASPP_R50, {'model.backbone.init_cfg.checkpoint': path})
    with _log_lines() as lines:
        model.init_weights()
    log = '\n'.join(lines)
    assert 'unexpected key in source state_dict: conv1.weight, bn1.weight' in log
    assert 'missing keys in source state_dict: stem.0.weight' in log
