"""Contract test over every config in ``configs/``: each experiment is the paper row it claims.

Every config is loaded with ``Config.fromfile`` (as ``tools/train.py`` does), its model is built
with ``MODELS.build`` (pretrained weights removed, SyncBN -> BN, widths shrunk so that a forward
pass is cheap: nothing structural depends on the widths), run once in train mode (loss) and once
in eval mode (predict) on a 33 x 33 input, and its *effective* settings are compared with what
the paper defines for the row named by its ``paper_ref``:

* the stride and atrous rate of every 3x3 conv of block3..block7, in train mode (training output
  stride) and in eval mode (evaluation output stride), against rates derived here from the
  paper's definitions (Sec. 3.1-3.2: strides removed beyond the output stride, block rates
  doubling, multi-grid unit rate x block rate);
* ASPP branches and effective rates (6, 12, 18 at OS 16, scaled with the OS), image pooling, or
  the cascade model's plain 1x1 classifier; frozen BN; label downsampling;
* batch size, crop, padding, sampler, dataset split, schedule, pretraining, test-time scales.

The expected values come from the table below, written from the paper (PAPER.md), not from the
configs. Models are cached per structure, so the many test-time variants cost no extra build.
"""
import copy
import glob
import os.path as osp
from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import deeplabv3_plugin  # noqa: F401  (registers the plugin's components)
from deeplabv3_plugin.cli import enable_tta
from deeplabv3_plugin.paper.tables import PAPER_TABLES, find_row
from deeplabv3_plugin.converters.torchvision import convert_state_dict
from deeplabv3_plugin.models.output_stride import OutputStrideSwitchable
from helpers.configs import fast_and_scoped  # noqa: F401  (autouse)
from helpers.configs import (BASE_CHANNELS, INTEROP_CONFIG, REPO, SIZE, load, random_samples,
                             shrunk_model_cfg, to_bn)
from helpers.torchvision_reference import DeepLabV3 as TorchvisionDeepLabV3

PAPER_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'deeplabv3', '*.py')))
ALL_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))

VOC_MS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CITY_MS = (0.75, 1.0, 1.25)
CITY_TEST_MS = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
HARD_CLASSES = ('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa')


# ----------------------------------------------------------------------------- the paper's rows
def cascade(depth, block, mg=(1, 1, 1), os_=16, **kw):
    """A cascade-model row (Sec. 3.2): classifier on the last of block4..block7, no ASPP."""
    return dict(head='cascade', depth=depth, cascade=block - 4, mg=mg, train_os=os_, **kw)


def aspp(mg=(1, 2, 4), rates=(6, 12, 18), pool=True, os_=16, **kw):
    """An ASPP-model row (Sec. 3.3) on ResNet-101 block4."""
    return dict(head='aspp', depth=101, cascade=0, mg=mg, rates=rates, pool=pool, train_os=os_,
                **kw)


def row_spec(spec):
    """Fill the protocol defaults of Sec. 4.1 (stage 1 on VOC trainaug). ``contract``: the
    unit whose stride is removed keeps its rate (the official rule; docs/protocol.md)."""
    out = dict(eval_os=spec['train_os'], tta=None, batch=16, crop=513, test_pad=(513, 513),
               frozen_bn=False, labels_down=False, data='voc12aug', num_classes=21, lr=0.007,
               iters=30000, sampler='InfiniteSampler', stem='deep', start='imagenet',
               extra_convs=0, rates=None, pool=None, contract=True)
    out.update(spec)
    return out


CITY = dict(data='cityscapes', crop=769, test_pad=(1025, 2049), num_classes=19, iters=90000)
EXPECTED: Dict[Tuple[str, str], Tuple[dict, float]] = {}
for _os, _miou in ((8, 75.18), (16, 73.88), (32, 70.06), (64, 59.99), (128, 42.34), (256, 20.29)):
    EXPECTED[('Table 1', f'OS={_os}')] = (cascade(50, 7, os_=_os), _miou)
for _depth, _numbers in ((50, (64.81, 72.14, 74.29)), (101, (68.39, 73.21, 75.34, 75.76))):
    for _block, _miou in zip((4, 5, 6, 7), _numbers):
        EXPECTED[('Table 2', f'ResNet-{_depth}, block{_block}')] = (cascade(_depth, _block), _miou)
for _mg, _numbers in (((1, 2, 1), (70.23, 75.67, 76.09, 76.66)),
                      ((1, 2, 3), (73.14, 75.78, 75.96, 76.11)),
                      ((1, 2, 4), (73.45, 75.74, 75.85, 76.02)),
                      ((2, 2, 2), (71.45, 74.30, 74.70, 74.62))):
    for _block, _miou in zip((4, 5, 6, 7), _numbers):
        _row = f'MG({",".join(map(str, _mg))}), block{_block}'
        EXPECTED[('Table 3', _row)] = (cascade(101, _block, _mg), _miou)
for _name, _tta, _miou in (('OS=8', None, 78.05), ('OS=8 + MS', (VOC_MS, False), 78.93),
                           ('OS=8 + MS + Flip', (VOC_MS, True), 79.35)):
    EXPECTED[('Table 4', _name)] = (cascade(101, 7, (1, 2, 1), eval_os=8, tta=_tta), _miou)
EXPECTED.update({
    ('Table 5', 'MG(1,1,1), ASPP(6,12,18)'): (aspp((1, 1, 1), pool=False), 75.36),
    ('Table 5', 'MG(1,2,1), ASPP(6,12,18)'): (aspp((1, 2, 1), pool=False), 75.93),
    ('Table 5', 'MG(1,2,4), ASPP(6,12,18)'): (aspp(pool=False), 76.58),
    ('Table 5', 'MG(1,2,4), ASPP(6,12,18,24)'): (aspp(rates=(6, 12, 18, 24), pool=False), 76.46),
    ('Table 5', 'MG(1,2,4), ASPP(6,12,18), image pooling'): (aspp(), 77.21),
    ('Table 6', 'OS=8'): (aspp(eval_os=8), 78.51),
    ('Table 6', 'OS=8 + MS'): (aspp(eval_os=8, tta=(VOC_MS, False)), 79.45),
    ('Table 6', 'OS=8 + MS + Flip'): (aspp(eval_os=8, tta=(VOC_MS, True)), 79.77),
    # COCO start: torchvision's COCO model converted (7x7 stem, extra 3x3 conv), lr 1e-4, in
    # the geometry those weights were trained with: no multi-grid (contracted rates, as all rows).
    ('Table 6', 'OS=8 + MS + Flip + COCO'): (aspp((1, 1, 1), eval_os=8, tta=(VOC_MS, True),
                                                  lr=1e-4, stem='torchvision', extra_convs=1,
                                                  start='coco'), 82.70),
    # Stage 2: trainval, OS 8, frozen BN, lr 0.001, bootstrapping, from the COCO stage 1.
    ('Table 7', 'DeepLabv3'): (aspp((1, 1, 1), os_=8, tta=(VOC_MS, True), frozen_bn=True,
                                    lr=0.001, data='voc12trainval',
                                    sampler='InfiniteBootstrapSampler', stem='torchvision',
                                    extra_convs=1, start='stage1', test_split=True), 85.7),
    ('Table 8', 'crop 513, upsample logits, frozen BN'): (aspp(frozen_bn=True), 75.95),
    ('Table 8', 'crop 513, downsample labels, fine-tune BN'): (aspp(labels_down=True), 76.01),
    ('Table 8', 'crop 321, upsample logits, fine-tune BN'): (aspp(crop=321), 67.22),
    ('Table 9', 'batch 4'): (aspp(batch=4), 64.43),
    ('Table 9', 'batch 8'): (aspp(batch=8), 75.76),
    ('Table 9', 'batch 12'): (aspp(batch=12), 76.49),
    ('Table 10', 'train OS=8, eval OS=8'): (aspp(os_=8, batch=6), 75.62),
    ('Table 10', 'train OS=8, eval OS=16'): (aspp(os_=8, eval_os=16, batch=6), 74.45),
    ('Table 10', 'train OS=32, eval OS=16'): (aspp(os_=32, eval_os=16, batch=24), 75.90),
    ('Table 10', 'train OS=32, eval OS=8'): (aspp(os_=32, eval_os=8, batch=24), 75.75),
    ('Table 12', 'OS=16'): (aspp(**CITY), 77.23),
    ('Table 12', 'OS=8'): (aspp(eval_os=8, **CITY), 77.82),
    ('Table 12', 'OS=8 + MS'): (aspp(eval_os=8, tta=(CITY_MS, False), **CITY), 79.06),
    ('Table 12', 'OS=8 + MS + Flip'): (aspp(eval_os=8, tta=(CITY_MS, True), **CITY), 79.30),
    ('Table 13', 'DeepLabv3'): (aspp(eval_os=4, tta=(CITY_TEST_MS, True),
                                     **dict(CITY, data='cityscapes-coarse'), test_split=True),
                                81.3),
})


def expected_geometry(output_stride, depth, mg, num_cascade, contract=False):
    """(stride, rate) of every 3x3 conv of block3.. from the paper's definitions (Sec. 3.1-3.2).

    Walking block1..4 (nominal strides 1, 2, 2, 2 after the stem's 4) and the cascaded blocks
    (stride 2 each): a block whose stride would take the running stride beyond the output stride
    keeps stride 1 and multiplies the block rate by its stride instead. Units of block4 and of
    the cascaded blocks use multi-grid unit rate x block rate; other blocks use the block rate.
    ``contract``: the first unit, whose conv carried the removed stride, keeps the rate of the
    block before (TF-slim's stack_blocks_dense, torchvision's replace_stride_with_dilation).
    """
    units = UNITS[depth] + (UNITS[depth][3], ) * num_cascade
    running, rate, geometry = 4, 1, []
    for index, num_units in enumerate(units):
        nominal, previous = (1 if index == 0 else 2), rate
        if running * nominal > output_stride:
            stride, rate = 1, rate * nominal
        else:
            stride, running = nominal, running * nominal
        grid = mg if index >= 3 else (1, ) * num_units
        rates = [previous if (j == 0 and contract) else rate for j in range(num_units)]
        geometry.append([(stride if j == 0 else 1, g * r)
                         for j, (g, r) in enumerate(zip(grid, rates))])
    assert running == output_stride, 'the expected output stride is not reachable'
    return geometry[2:]


def test_expected_geometry_matches_the_papers_examples():
    """Anchor the derivation on statements of the paper itself."""
    # Sec. 3.2: "output stride = 16 and Multi Grid = (1,2,4) ... rates = 2 * (1,2,4) = (2,4,8)".
    assert expected_geometry(16, 101, (1, 2, 4), 0)[1] == [(1, 2), (1, 4), (1, 8)]
    # Sec. 4: "when output stride = 8, ... block3 and block4 ... rate = 2 and rate = 4".
    block3, block4 = expected_geometry(8, 50, (1, 1, 1), 0)
    assert {r for _, r in block3} == {2} and {r for _, r in block4} == {4}
    # PAPER.md: at OS 16 block4..7 use rates 2, 4, 8, 16.
    assert [b[0][1] for b in expected_geometry(16, 50, (1, 1, 1), 3)[1:]] == [2, 4, 8, 16]
    # Tab. 1: OS 256 means no atrous convolution, every block keeps its stride.
    geometry = expected_geometry(256, 50, (1, 1, 1), 3)
    assert all(block[0] == (2, 1) for block in geometry)
    assert all(rate == 1 for block in geometry for _, rate in block)


# ----------------------------------------------------------------------------- helpers
_MODELS: Dict[str, nn.Module] = {}


def build_model(model_cfg) -> nn.Module:
    """Build (cached per structure; the test output stride is set on the built model)."""
    cfg = shrunk_model_cfg(model_cfg)
    test_os = cfg.pop('test_output_stride', None)
    key = repr(sorted(cfg.items(), key=lambda kv: kv[0]))
    if key not in _MODELS:
        _MODELS[key] = MODELS.build(ConfigDict(cfg))
    model = _MODELS[key]
    if isinstance(model, OutputStrideSwitchable):
        model.test_output_stride = test_os
    return model


def run_forward(model: nn.Module, num_classes: int) -> None:
    """One training loss and one prediction on tiny random data."""
    torch.manual_seed(0)
    inputs = torch.rand(2, 3, SIZE, SIZE)
    model.train()
    losses = model.loss(inputs, random_samples(2, num_classes))
    assert losses and all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)
    model.eval()
    with torch.no_grad():
        preds = model.predict(inputs, random_samples(2, num_classes))
    assert preds[0].pred_sem_seg.shape == (SIZE, SIZE)
    assert preds[0].seg_logits.data.shape[0] == num_classes


def conv_geometry(backbone) -> list:
    """(stride, rate) of every 3x3 conv, per block from block3 on, in module order."""
    blocks = []
    for name in backbone.res_layers[2:]:
        blocks.append([(m.stride[0], m.dilation[0]) for m in getattr(backbone, name).modules()
                       if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)])
    return blocks


def _train_pipeline(cfg):
    dataset = cfg.train_dataloader.dataset
    if dataset.type == 'ConcatDataset':
        pipelines = [d.pipeline for d in dataset.datasets]
        assert all(p == pipelines[0] for p in pipelines)
        return pipelines[0]
    return dataset.pipeline


def _tta_views(pipeline) -> Tuple[tuple, bool]:
    (tta, ) = [t for t in pipeline if t['type'] == 'TestTimeAug']
    scales = tuple(t['scale_factor'] for t in tta['transforms'][0])
    flips = [t for t in tta['transforms'][1] if t['type'] == 'RandomFlip']
    return scales, any(t['prob'] > 0 for t in flips)


def _bns(module):
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


# ----------------------------------------------------------------------------- the contract
def test_every_config_names_a_paper_row_once():
    """One config per row: every row of the table above is claimed by exactly one config."""
    claimed = {}
    for path in PAPER_CONFIGS:
        ref = load(path).get('paper_ref')
        assert isinstance(ref, dict) and set(ref) == {'table', 'row', 'miou'}, (
            f'{osp.basename(path)}: expected paper_ref = dict(table=..., row=..., miou=...), '
            f'got {ref!r}')
        key = (ref['table'], ref['row'])
        assert key not in claimed, f'{key} claimed by {claimed.get(key)} and {path}'
        claimed[key] = osp.basename(path)
    assert set(claimed) == set(EXPECTED), (
        f'rows without a config: {sorted(set(EXPECTED) - set(claimed))}; configs naming rows '
        f'the contract does not know: {sorted(set(claimed) - set(EXPECTED))}')


def test_every_reproducible_paper_row_is_measured_by_some_config():
    """Rows that share a measurement (e.g. Tab. 6 OS=16 is Tab. 5's last row) have a config
    whose row evaluates the same trained model in the same way (deeplabv3_plugin.utils
    .paper_tables), so `tools/paper_report.py` can fill every table."""
    measured = set()
    for key in EXPECTED:
        row = find_row(*key)
        assert row is not None, f'{key} is not a row of deeplabv3_plugin.paper.tables'
        measured.add((row.model, row.inference))
    for table in PAPER_TABLES:
        for row in table.rows:
            if row.model is not None:
                assert (row.model, row.inference) in measured, f'{row.table} {row.row!r}'


@pytest.mark.parametrize('path', PAPER_CONFIGS, ids=osp.basename)
def test_config_is_its_paper_row(path):
    cfg = load(path)
    key = (cfg.paper_ref['table'], cfg.paper_ref['row'])
    assert key in EXPECTED, f'{osp.basename(path)}: unknown paper row {key}'
    spec, miou = EXPECTED[key]
    spec = row_spec(spec)
    name = osp.basename(path)
    assert cfg.paper_ref['miou'] == pytest.approx(miou), name
    assert find_row(*key).miou == pytest.approx(miou), 'paper_tables disagrees with the paper'

    # --- the plugin is loaded by the config itself
    assert cfg.custom_imports == dict(imports=['deeplabv3_plugin', 'deeplabv3_plugin.runtime'],
                                      allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'

    # --- model structure
    model = build_model(cfg.model)
    run_forward(model, spec['num_classes'])
    backbone, head = model.backbone, model.decode_head
    assert type(model).__name__ == 'DeepLabV3' and type(backbone).__name__ == 'MultiGridResNet'
    assert backbone.depth == spec['depth'] and backbone.stem_type == spec['stem']
    assert len(backbone.res_layers) == 4 + spec['cascade'], 'cascade depth (block4..block7)'
    for mode, output_stride in ((True, spec['train_os']), (False, spec['eval_os'])):
        model.train(mode)
        assert conv_geometry(backbone) == expected_geometry(
            output_stride, spec['depth'], spec['mg'], spec['cascade'], spec['contract']), (
                f'{name}: 3x3 conv (stride, rate) of block3.. in '
                f'{"train" if mode else "eval"} mode, output stride {output_stride}')
        if spec['head'] == 'aspp':
            assert head.effective_rates == tuple(r * 16 // output_stride for r in spec['rates'])
    if spec['head'] == 'aspp':
        assert type(head).__name__ == 'DeepLabV3Head'
        assert len(head.aspp.convs) == 1 + len(spec['rates']), '1x1 + one branch per rate'
        assert (head.aspp.image_pool is not None) == spec['pool'], 'image pooling'
        assert head.downsample_label == spec['labels_down']
        extra = head.extra_convs
        assert (0 if extra is None else len(extra)) == spec['extra_convs']
    else:
        assert type(head).__name__ == 'FCNHead' and isinstance(head.convs, nn.Identity), (
            'the cascade model classifies the last block with a 1x1 conv, no ASPP')
    assert head.num_classes == spec['num_classes']
    bns = _bns(backbone) + _bns(head)
    model.train()
    if spec['frozen_bn']:  # official fine_tune_batch_norm=False (test_protocol.py trains it)
        assert all(not bn.training for bn in bns), 'frozen BN: statistics not updated'
        assert all(p.requires_grad for bn in bns for p in bn.parameters()), 'gamma/beta train'
    else:
        assert all(bn.training and bn.weight.requires_grad for bn in bns)
        assert all(bn.momentum == pytest.approx(0.0003) for bn in bns), 'BN decay 0.9997'

    check_official_protocol(cfg, head, spec)

    # --- data, schedule, start
    loader = cfg.train_dataloader
    assert loader.batch_size == spec['batch']
    # The batch is the run's total (tools/train.py splits it over the processes), and the hook
    # that warns mmseg's tools' runs compares it with the paper's (paper_tables.yaml).
    assert cfg.batch_size_per_process is False
    assert dict(type='TrainingBatchHook') in cfg.custom_hooks
    assert find_row(*key).batch in (None, spec['batch'])
    (crop, ) = [t['crop_size'] for t in _train_pipeline(cfg) if t['type'] == 'RandomCrop']
    assert tuple(crop) == (spec['crop'], spec['crop'])
    assert tuple(cfg.model.data_preprocessor['size']) == (spec['crop'], spec['crop'])
    assert tuple(cfg.model.data_preprocessor['test_cfg']['size']) == spec['test_pad']
    assert loader.sampler['type'] == spec['sampler']
    if spec['sampler'] == 'InfiniteBootstrapSampler':
        assert tuple(loader.sampler['hard_classes']) == HARD_CLASSES
    dataset = loader.dataset
    if spec['data'] == 'voc12aug':
        assert [d.ann_file for d in dataset.datasets] == [
            'ImageSets/Segmentation/train.txt', 'ImageSets/Segmentation/aug.txt']
    elif spec['data'] == 'voc12trainval':
        assert dataset.ann_file == 'ImageSets/Segmentation/trainval.txt'
    elif spec['data'] == 'cityscapes':
        assert dataset.data_prefix['img_path'] == 'leftImg8bit/train'
    else:
        assert [d.data_prefix['seg_map_path'] for d in dataset.datasets] == [
            'gtFine/train', 'gtFine/val', 'gtCoarse/train_extra']
    assert cfg.optim_wrapper.optimizer['lr'] == pytest.approx(spec['lr'])
    assert cfg.optim_wrapper.optimizer['momentum'] == 0.9
    assert cfg.optim_wrapper.optimizer['weight_decay'] == pytest.approx(1e-4)
    (poly, ) = cfg.param_scheduler
    assert (poly['type'], poly['power'], poly['eta_min'], poly['end']) == (
        'PolyLR', 0.9, 0.0, spec['iters'])
    assert cfg.train_cfg.max_iters == spec['iters']
    init = cfg.model.backbone.get('init_cfg')
    if spec['start'] == 'imagenet':
        assert init['checkpoint'] == f'open-mmlab://resnet{spec["depth"]}_v1c'
        assert cfg.load_from is None
    else:
        assert init is None and cfg.load_from, 'the whole model starts from a checkpoint'
        if spec['start'] == 'coco':  # torchvision's COCO model, by tools/convert_torchvision.py
            assert cfg.load_from == 'checkpoints/deeplabv3_r101-tv_coco.pth'
        else:  # stage 2 starts from the last checkpoint of the COCO stage-1 experiment
            work_dir, checkpoint = osp.split(cfg.load_from)
            assert checkpoint == f'iter_{spec["iters"]}.pth'
            stage1 = osp.join(REPO, 'configs', 'deeplabv3', osp.basename(work_dir) + '.py')
            assert load(stage1).paper_ref['row'] == 'OS=8 + MS + Flip + COCO'
    if spec.get('test_split'):
        assert cfg.val_cfg is None and cfg.val_dataloader is None, 'val is training data here'
    # --- test-time augmentation (tools/test.py --tta), and the flag's transformation builds
    if spec['tta'] is not None:
        assert _tta_views(cfg.tta_pipeline) == (tuple(spec['tta'][0]), spec['tta'][1])


OFFICIAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
OFFICIAL_STEPS = ['LoadImageFromFile', 'LoadAnnotations', 'CheckSegSample',
                  'RandomChoice', 'RandomCrop', 'Pad', 'RandomFlip', 'PackSegInputs']


def check_official_protocol(cfg, head, spec) -> None:
    """The official code's training settings (docs/protocol.md; test_protocol.py runs them)."""
    assert isinstance(cfg.randomness['seed'], int), 'a fixed seed, for --resume'
    loss = head.loss_decode
    assert loss.avg_non_ignore and loss.class_weight is None and loss.loss_weight == 1.0
    assert head.sampler is None and head.ignore_index == 255, 'every pixel, no hard mining'
    assert all(bn.eps == 1e-5 for bn in _bns(head)), 'BN epsilon 1e-5'
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, bias_lr_mult=2.0)
    if spec['head'] == 'aspp':  # slim.dropout(keep_prob=0.9) after concat_projection
        assert head.dropout is None and head.aspp.dropout.p == (
            0.5 if spec['extra_convs'] else 0.1)
    else:  # no ASPP, no concat_projection: the official code has no dropout to apply
        assert head.dropout is None
    steps = _train_pipeline(cfg)
    assert [t['type'] for t in steps] == OFFICIAL_STEPS
    load_image, _, _, scale, crop, pad, flip, _ = steps
    assert load_image['to_float32']
    assert tuple(t[0]['scale_factor'] for t in scale['transforms']) == OFFICIAL_SCALES
    assert all(t[0]['type'] == 'Resize' and t[0]['keep_ratio'] for t in scale['transforms'])
    assert crop.get('cat_max_ratio', 1.0) == 1.0, 'one uniform crop, no re-drawing'
    assert tuple(pad['size']) == (spec['crop'], spec['crop'])
    assert pad['pad_val'] == dict(img=(103.53, 116.28, 123.675), seg=255)
    assert (flip['prob'], flip['direction']) == (0.5, 'horizontal')


def test_tta_variant_builds_as_tools_test_wraps_it():
    """`tools/test.py CFG CKPT --tta` wraps the model in SegTTAModel: that must build."""
    path = [p for p in PAPER_CONFIGS if p.endswith('voc12aug-513x513_eval-os8-ms-flip.py')][0]
    cfg = copy.deepcopy(load(path))
    cfg.model = ConfigDict(shrunk_model_cfg(cfg.model))
    enable_tta(cfg)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'SegTTAModel' and model.module.test_output_stride == 8
    assert cfg.test_dataloader.dataset.pipeline == cfg.tta_pipeline


OTHER_CONFIGS = sorted(
    p for p in ALL_CONFIGS
    if '_base_' not in p.split(osp.sep) and p not in PAPER_CONFIGS and p != INTEROP_CONFIG)


@pytest.mark.parametrize('path', OTHER_CONFIGS, ids=osp.basename)
def test_other_configs_load_build_and_forward(path):
    """Every other runnable config in configs/ (e.g. the demo) loads, builds and runs."""
    cfg = load(path)
    assert cfg.custom_imports['imports'] == ['deeplabv3_plugin', 'deeplabv3_plugin.runtime']
    model_cfg = cfg.model
    if model_cfg.backbone.type == 'MultiGridResNet':
        model = build_model(model_cfg)
    else:
        model = MODELS.build(ConfigDict(to_bn(model_cfg.to_dict())))
    run_forward(model, model.decode_head.num_classes)
    assert isinstance(cfg.randomness['seed'], int), 'a fixed seed, for --resume'
    for head in (model.decode_head, getattr(model, 'auxiliary_head', None)):
        if head is not None:
            assert head.loss_decode.avg_non_ignore, 'loss / number of non-ignored pixels'


def test_coco_row_takes_every_tensor_of_the_converted_torchvision_model():
    """Tab. 6 "+ COCO" starts from tools/convert_torchvision.py's output. The row's model (no
    auxiliary head) must hold every tensor of torchvision's deeplabv3_resnet101 under the
    converter's key map, with the same shape."""
    path = [p for p in PAPER_CONFIGS if '-coco-pre_' in p and 'voc12aug' in p][0]
    model = build_model(load(path).model)
    source = TorchvisionDeepLabV3(101, aux_loss=False, base_channels=BASE_CHANNELS,
                                  head_channels=16).state_dict()
    converted, _ = convert_state_dict(source, model.state_dict())
    model.load_state_dict(converted, strict=True)


@pytest.mark.parametrize('path', [p for p in PAPER_CONFIGS if '-coco-pre_' in p],
                         ids=osp.basename)
def test_coco_rows_keep_the_geometry_of_torchvisions_weights(path):
    """The COCO-pretrained rows run torchvision's deeplabv3_resnet101 geometry (what
    configs/torchvision/ builds: OS 8, contracted rates, no multi-grid, ASPP (12, 24, 36)) at
    their evaluation output stride, and at OS 16 the same rates in pixels (docs/protocol.md)."""
    torchvision = build_model(load(osp.join(REPO, 'configs', 'torchvision',
                                            'deeplabv3_r101-tv_os8_voc12aug-513x513.py')).model)
    torchvision.eval()
    reference = (conv_geometry(torchvision.backbone), torchvision.decode_head.effective_rates)
    assert reference[1] == (12, 24, 36)
    model = build_model(load(path).model)
    model.eval()
    assert model.backbone.current_output_stride == 8
    assert (conv_geometry(model.backbone), model.decode_head.effective_rates) == reference
    model.train()
    if model.backbone.current_output_stride == 8:  # stage 2 trains at OS 8
        assert (conv_geometry(model.backbone), model.decode_head.effective_rates) == reference
    else:  # stage 1 at OS 16: block4 and ASPP rates in pixels are torchvision's at OS 8
        assert model.backbone.current_output_stride == 16
        block4 = conv_geometry(model.backbone)[1]
        assert [16 * rate for _, rate in block4] == [8 * rate for _, rate in reference[0][1]]
        assert [16 * rate for rate in model.decode_head.effective_rates] == [
            8 * rate for rate in reference[1]]


def test_plugin_inside_mmseg_config_builds_and_forwards():
    """mmseg's own DeepLabV3 config, with the plugin's backbone and head swapped in."""
    cfg = load(INTEROP_CONFIG)
    assert cfg.custom_imports['imports'] == ['deeplabv3_plugin', 'deeplabv3_plugin.runtime']
    assert cfg.model.type == 'EncoderDecoder' and cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.batch_size_per_process is True, "mmseg's 4xb4: 4 images on each process"
    model = build_model(cfg.model)
    assert type(model.backbone).__name__ == 'MultiGridResNet'
    assert type(model.decode_head).__name__ == 'DeepLabV3Head'
    # mmseg's R-50-D8: output stride 8, ASPP (12, 24, 36), stated here as (6, 12, 18) at OS 16.
    assert conv_geometry(model.backbone) == expected_geometry(8, 50, (1, 1, 1), 0)
    assert model.decode_head.effective_rates == (12, 24, 36)
    run_forward(model, 21)
    losses = model.loss(torch.rand(2, 3, SIZE, SIZE), random_samples(2, 21))
    assert 'aux.loss_ce' in losses, 'mmseg\'s auxiliary head still trains'


def test_runtime_registers_the_plugin_and_the_papers_tta():
    cfg = load(osp.join(REPO, 'configs', '_base_', 'default_runtime.py'))
    assert cfg.custom_imports == dict(imports=['deeplabv3_plugin', 'deeplabv3_plugin.runtime'],
                                      allow_failed_imports=False)
    assert cfg.tta_model['type'] == 'SegTTAModel'
    assert _tta_views(cfg.tta_pipeline) == (VOC_MS, True)
