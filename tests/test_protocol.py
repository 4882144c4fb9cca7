"""The official DeepLab training protocol, setting by setting, as the paper configs build it.

The reference is tensorflow/models `research/deeplab` (train.py flags, utils/train_utils.py,
input_preprocess.py, core/preprocess_utils.py, model.py); docs/protocol.md lists every setting
with the test that pins it. Everything here goes through the configs as users reach them:
``Config.fromfile``, ``MODELS.build``, mmengine's ``build_optim_wrapper`` and ``train_step``,
mmcv's ``Compose`` of the configured transforms.
"""
import copy
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmseg.registry import MODELS, TRANSFORMS
from torch.nn.modules.batchnorm import _BatchNorm

import deeplabv3_plugin  # noqa: F401  (registers the plugin's components)
from helpers.configs import fast_and_scoped  # noqa: F401  (autouse: one thread, mmseg scope)
from helpers.configs import (INTEROP_CONFIG, REPO, SIZE, load,
                             random_samples, shrunk_model_cfg)

PAPER = osp.join(REPO, 'configs', 'deeplabv3',
                 'deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py')
FROZEN_BN = [osp.join(REPO, 'configs', 'deeplabv3', name) for name in (
    'deeplabv3-aspp-frozenbn_r101-d16-mg124_1xb16-30k_voc12aug-513x513.py',
    'deeplabv3-aspp-frozenbn_r101-d8-coco-pre_1xb16-30k-bootstrap_voc12trainval-513x513.py')]
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # train.py: min 0.5, max 2.0, step 0.25
MEAN_BGR = (103.53, 116.28, 123.675)


def fresh_model(path: str, **head):
    """The config's model (tiny widths, plain BN, 33 x 33 canvas), built anew: these tests train."""
    cfg = shrunk_model_cfg(load(path).model)
    cfg['data_preprocessor'] = dict(cfg['data_preprocessor'], size=(SIZE, SIZE))
    cfg['decode_head'].update(head)
    torch.manual_seed(0)
    return MODELS.build(ConfigDict(cfg))


# ----------------------------------------------------------------------------------- the loss
def official_loss(logits: torch.Tensor, labels: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """train_utils.add_softmax_cross_entropy_loss_for_each_scale, upsample_logits=True,
    top_k_percent_pixels=1.0: logits resized to the label (bilinear, align_corners=True), softmax
    cross entropy per pixel, summed over the whole batch, divided by num_present (the number of
    non-ignored pixels, at least 1e-5)."""
    logits = F.interpolate(logits, labels.shape[-2:], mode='bilinear', align_corners=True)
    flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    target = labels.reshape(-1)
    keep = (target != ignore).float()
    one_hot = F.one_hot(torch.where(target == ignore, 0, target), flat.shape[1]).float()
    pixel = -(one_hot * F.log_softmax(flat, dim=1)).sum(dim=1) * keep
    return pixel.sum() / keep.sum().clamp(min=1e-5)


def _labels_with_padding(num_classes=21):
    """Image 0: a small-scale crop, mostly padding (255); image 1: a few boundary pixels."""
    torch.manual_seed(1)
    labels = torch.randint(0, num_classes, (2, SIZE, SIZE))
    labels[0, 9:, :] = 255
    labels[0, :, 12:] = 255
    labels[1][torch.rand(SIZE, SIZE) < 0.05] = 255
    return labels


def test_loss_divides_the_batch_sum_by_the_non_ignored_pixels():
    head = fresh_model(PAPER).decode_head
    labels = _labels_with_padding()
    samples = random_samples(2, 21)
    for sample, label in zip(samples, labels):
        sample.gt_sem_seg.data = label[None]
    logits = torch.randn(2, 21, 5, 5)
    ours = head.loss_by_feat(logits, samples)['loss_ce']
    official = official_loss(logits, labels)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=0)
    # the batch is normalised as a whole, not image by image
    per_image = torch.stack([official_loss(logits[i:i + 1], labels[i:i + 1]) for i in (0, 1)])
    assert not torch.allclose(ours, per_image.mean(), rtol=1e-3)


def test_interop_config_keeps_mmsegs_normalisation_over_every_pixel():
    loss_cfg = load(INTEROP_CONFIG).model.decode_head.loss_decode
    assert not loss_cfg.get('avg_non_ignore', False)
    loss = MODELS.build(loss_cfg)
    labels = _labels_with_padding()
    logits = torch.randn(2, 21, SIZE, SIZE)
    valid = (labels != 255).float().mean()
    torch.testing.assert_close(loss(logits, labels, ignore_index=255),
                               official_loss(logits, labels) * valid, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------- the optimiser
def _groups_by_name(model, optim_wrapper):
    by_id = {id(p): group for group in optim_wrapper.optimizer.param_groups
             for p in group['params']}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def test_optimiser_doubles_bias_lr_and_decays_conv_weights_only():
    """get_model_gradient_multipliers doubles every 'biases' variable (the classifier's: slim's
    BN offset is 'beta'); slim.l2_regularizer is the conv weights' regulariser only."""
    cfg = load(PAPER)
    model = fresh_model(PAPER)
    groups = _groups_by_name(model, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper)))
    norms = {f'{name}.{p}' for name, m in model.named_modules() if isinstance(m, _BatchNorm)
             for p in ('weight', 'bias')}
    lr, wd = 0.007, 1e-4
    doubled = sorted(n for n, g in groups.items() if g['lr'] == pytest.approx(2 * lr))
    assert doubled == ['decode_head.conv_seg.bias']
    for name, group in groups.items():
        if name in norms or name.endswith('.bias'):
            assert group['weight_decay'] == 0, name
        else:
            assert group['weight_decay'] == pytest.approx(wd), name
            assert group['lr'] == pytest.approx(lr), name
        if name in norms:
            assert group['lr'] == pytest.approx(lr), name
        assert group['momentum'] == 0.9


# ---------------------------------------------------------------------------- frozen BN
@pytest.mark.parametrize('path', FROZEN_BN, ids=osp.basename)
def test_frozen_bn_keeps_statistics_and_trains_gamma_and_beta(path):
    """fine_tune_batch_norm=False: BN in inference mode (moving statistics used, not updated),
    its scale and offset still trainable variables. A few real optimiser steps through
    ``train_step`` with the config's optimiser."""
    cfg = load(path)
    model = fresh_model(path)
    bns = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    for bn in bns.values():  # pretrained-like statistics, so "used" is visible
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    before = {name: [t.detach().clone() for t in (bn.running_mean, bn.running_var, bn.weight,
                                                  bn.bias, bn.num_batches_tracked)]
              for name, bn in bns.items()}
    optim = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    model.train()
    assert all(not bn.training for bn in bns.values())
    assert all(bn.weight.requires_grad and bn.bias.requires_grad for bn in bns.values())
    torch.manual_seed(0)
    for _ in range(3):
        data = dict(inputs=[torch.randint(0, 256, (3, SIZE, SIZE), dtype=torch.uint8)
                            for _ in range(2)], data_samples=random_samples(2, 21))
        model.train_step(data, optim)
    moved = 0
    for name, bn in bns.items():
        mean, var, weight, bias, tracked = before[name]
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var), name
        assert torch.equal(bn.num_batches_tracked, tracked), name
        moved += not torch.equal(bn.weight, weight) and not torch.equal(bn.bias, bias)
    assert moved == len(bns), f'gamma and beta trained in {moved} of {len(bns)} BN layers'


# ------------------------------------------------------------------------ the input pipeline
def _write_sample(tmp_path, height=120, width=400):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), dtype=np.uint8)
    label[20:80, 50:300] = 5
    label[0, :] = 255
    cv2.imwrite(str(tmp_path / 'img.png'), image)
    cv2.imwrite(str(tmp_path / 'label.png'), label)
    return dict(img_path=str(tmp_path / 'img.png'), seg_map_path=str(tmp_path / 'label.png'),
                reduce_zero_label=False, seg_fields=[])


def test_random_scale_is_drawn_from_the_discrete_set():
    """get_random_scale: one of linspace(0.5, 2.0, 7), uniformly; randomly_scale_image_and_label:
    bilinear for the image, nearest for the label."""
    cfg = load(PAPER)
    scale = TRANSFORMS.build(copy.deepcopy(cfg.random_scale))
    resizes = [compose.transforms[0] for compose in scale.transforms]
    assert [r.scale_factor for r in resizes] == [(s, s) for s in SCALES]
    assert all(r.interpolation == 'bilinear' and r.keep_ratio for r in resizes)
    np.random.seed(0)
    label = np.zeros((120, 400), dtype=np.uint8)
    label[30:90, :200] = 7
    label[0] = 255
    shapes = Counter()
    for _ in range(700):
        out = scale(dict(img=np.zeros((120, 400, 3), np.float32), gt_seg_map=label.copy(),
                         seg_fields=['gt_seg_map']))
        assert out['img'].dtype == np.float32, 'the image stays float, no rounding'
        assert set(np.unique(out['gt_seg_map'])) <= {0, 7, 255}, 'nearest for the label'
        shapes[out['img'].shape[:2]] += 1
    assert set(shapes) == {(int(120 * s + 0.5), int(400 * s + 0.5)) for s in SCALES}
    assert min(shapes.values()) > 700 / 7 * 0.6


def test_training_pipeline_pads_with_mean_and_ignore_then_crops_then_flips(tmp_path):
    """preprocess_image_and_label: scale, pad bottom/right to >= 513 (mean pixel, ignore label),
    random 513 crop, flip with probability 0.5 (after padding, so padding can end up left)."""
    cfg = load(PAPER)
    (dataset, *_) = cfg.train_dataloader.dataset.datasets
    pipeline = Compose(copy.deepcopy(dataset.pipeline))
    preprocessor = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    sample = _write_sample(tmp_path)
    np.random.seed(0)
    flips = 0
    for _ in range(40):
        packed = pipeline(copy.deepcopy(sample))
        image = packed['inputs'].permute(1, 2, 0).numpy()  # BGR, float
        label = packed['data_samples'].gt_sem_seg.data[0].numpy()
        flip = bool(packed['data_samples'].metainfo['flip'])
        flips += flip
        assert image.shape == (513, 513, 3) and label.shape == (513, 513)
        padding = (image == np.array(MEAN_BGR, np.float32)).all(axis=2)
        assert (label[padding] == 255).all(), 'the label is padded with the ignore label'
        padded_rows, padded_cols = padding.all(axis=1), padding.all(axis=0)
        assert padded_rows[-1] and not padded_rows[0], 'the 120-px side: padded at the bottom'
        if padded_cols.any():  # scaled width below 513: right, or left once flipped
            assert (padded_cols[0], padded_cols[-1]) == (flip, not flip)
        normalised = preprocessor(dict(inputs=[packed['inputs']],
                                       data_samples=[packed['data_samples']]), True)['inputs'][0]
        pad_values = normalised.permute(1, 2, 0)[torch.from_numpy(padding)]
        assert pad_values.abs().max() < 1e-4, 'the padding is 0 after mean subtraction'
    assert 8 <= flips <= 32, f'flip probability 0.5: {flips} of 40'
