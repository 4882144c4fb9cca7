"""Inference API: init_model + inference_model on the plugin's demo config and a checkpoint.

The fast path is the default and must give the plain path's label maps (bf16: >= 99% of the
pixels); inputs and arguments that cannot work fail with errors that name them.
"""
import mmcv
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint
from mmseg.apis import inference_model as mmseg_inference_model
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import deeplabv3_plugin  # noqa: F401
from deeplabv3_plugin.apis import FastInferenceModel, inference_model, init_model
from deeplabv3_plugin.datasets.synthetic_shapes import CLASSES
from deeplabv3_plugin.errors import UserInputError
from deeplabv3_plugin.cpu_features import cpu_features

from helpers.demo import randomize_bn, tiny_demo_config


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A config file, a checkpoint with dataset_meta, and two demo images of different sizes."""
    root = tmp_path_factory.mktemp('api')
    cfg = tiny_demo_config(str(root / 'shapes'))
    # the paper's configs use SyncBN, which init_model must turn into BN for one process
    cfg.model.backbone.norm_cfg = cfg.model.decode_head.norm_cfg = dict(type='SyncBN')
    config = str(root / 'tiny_demo.py')
    cfg.dump(config)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    randomize_bn(model)
    checkpoint = str(root / 'tiny_demo.pth')
    save_checkpoint(dict(state_dict=model.state_dict(),
                         meta=dict(dataset_meta=dict(classes=CLASSES))), checkpoint)
    image = mmcv.imread(str(root / 'shapes' / 'JPEGImages' / 'shapes_val_00000.jpg'))
    small = str(root / 'small.png')
    mmcv.imwrite(mmcv.imresize(image, (96, 80)), small)
    return dict(config=config, checkpoint=checkpoint, image=image, small=small)


def test_init_model_is_fast_by_default(demo):
    model = init_model(demo['config'], demo['checkpoint'])
    assert isinstance(model, FastInferenceModel)
    assert model.num_fused_bn > 0
    assert model.dataset_meta['classes'] == CLASSES
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    plain = init_model(demo['config'], demo['checkpoint'], fast=False)
    assert not isinstance(plain, FastInferenceModel) and not plain.training
    # SyncBN in the config (the paper's configs use it) becomes BN: CPU inference works
    assert any(isinstance(m, _BatchNorm) for m in plain.modules())
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())


def test_inference_model_fast_equals_plain(demo):
    fast = init_model(demo['config'], demo['checkpoint'])
    plain = init_model(demo['config'], demo['checkpoint'], fast=False)
    label = inference_model(fast, demo['image'])
    assert isinstance(label, np.ndarray) and label.dtype == np.int64
    assert label.shape == demo['image'].shape[:2]
    assert set(np.unique(label)) <= set(range(len(CLASSES)))
    assert (label == inference_model(plain, demo['image'])).mean() >= 0.999


def test_inference_model_mixes_files_and_arrays(demo):
    """A list gives a list, each map at its image's size; an array before a file path works
    (mmseg's inference_model edits the config so that the path then fails)."""
    model = init_model(demo['config'], demo['checkpoint'])
    labels = inference_model(model, [demo['image'], demo['small']])
    assert isinstance(labels, list) and len(labels) == 2
    assert labels[0].shape == demo['image'].shape[:2]
    assert labels[1].shape == (80, 96)
    np.testing.assert_array_equal(labels[0], inference_model(model, demo['image']))
    np.testing.assert_array_equal(labels[1], inference_model(model, demo['small']))


def test_bf16_only_where_native_unless_forced(demo):
    """bf16=True is bf16 on a CPU with AVX512-BF16/AMX and float32 elsewhere (emulated bf16 is
    slower); force_bf16=True is bf16 everywhere."""
    asked = init_model(demo['config'], demo['checkpoint'], bf16=True)
    assert asked.bf16 == cpu_features().native_bf16
    assert init_model(demo['config'], demo['checkpoint'], force_bf16=True).bf16


def test_bf16_agrees_with_fp32(demo):
    fp32 = init_model(demo['config'], demo['checkpoint'])
    bf16 = init_model(demo['config'], demo['checkpoint'], force_bf16=True)
    assert bf16.bf16
    agreement = (inference_model(bf16, demo['image']) == inference_model(fp32, demo['image']))
    assert agreement.mean() >= 0.99


def test_mmseg_apis_accept_the_fast_model(demo):
    """mmseg's own inference_model runs the fast model (it reads .cfg, calls test_step).

    mmseg only drops steps named LoadAnnotations, so it gets a label-free pipeline here; the
    plugin's inference_model also drops the demo's CheckSegSample.
    """
    model = init_model(demo['config'], demo['checkpoint'])
    model.cfg.test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]
    sample = mmseg_inference_model(model, demo['small'])
    np.testing.assert_array_equal(sample.pred_sem_seg.data[0].numpy(),
                                  inference_model(model, demo['small']))
    assert sample.seg_logits.data.dtype == torch.float32


def test_init_model_bad_arguments(demo, tmp_path):
    with pytest.raises(UserInputError, match='config file .*missing.py'):
        init_model(str(tmp_path / 'missing.py'))
    with pytest.raises(UserInputError, match='checkpoint .*missing.pth'):
        init_model(demo['config'], str(tmp_path / 'missing.pth'))
    with pytest.raises(RuntimeError, match='gpu0'):
        init_model(demo['config'], device='gpu0')
    with pytest.raises(ValueError, match='bf16=True .* needs fast=True'):
        init_model(demo['config'], fast=False, bf16=True)
    with pytest.raises(UserInputError, match='does not fit .*decode_head'):
        init_model(demo['config'], demo['checkpoint'],
                   cfg_options={'model.decode_head.channels': 24})


def test_inference_model_bad_images(demo, tmp_path):
    model = init_model(demo['config'])
    with pytest.raises(FileNotFoundError, match='nothing.jpg'):
        inference_model(model, str(tmp_path / 'nothing.jpg'))
    with pytest.raises(ValueError, match=r'shape \(4, 4, 5\)'):
        inference_model(model, np.zeros((4, 4, 5), np.uint8))
    assert inference_model(model, []) == []
