"""Convert torchvision's ``deeplabv3_resnet50/101`` weights into a checkpoint of the
``configs/torchvision/`` models. The paper's best VOC rows start from COCO pretraining (Table 6);
torchvision's COCO-subset model (21 VOC classes) is the closest public start."""
import functools
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from deeplabv3_plugin.checkpoint.compatibility import checkpoint_state_dict, compare_state_dicts
from deeplabv3_plugin.errors import UserInputError, listing
from deeplabv3_plugin.checkpoint.loader import CheckpointError, load_local_checkpoint

__all__ = [
    'TorchvisionConversionError', 'torchvision_to_plugin_key', 'plugin_to_torchvision_key',
    'detect_resnet_depth', 'load_torchvision_state_dict', 'convert_state_dict',
    'check_torchvision_geometry', 'convert_torchvision_checkpoint', 'default_config_for'
]

_BACKBONE_HINT = (" torchvision's backbone is MultiGridResNet(stem='torchvision', "
                  'contract_dilation=True, multi_grid=(1, 1, 1)) at output stride 8.')


class TorchvisionConversionError(UserInputError):
    """The source is not a torchvision DeepLabV3 state dict that fits the target config."""


def _prefix_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """torchvision prefix -> plugin prefix (torchvision's aux ``FCNHead`` is
    ``Sequential(conv, bn, relu, dropout, conv)``; avgpool/fc are not in its backbone)."""
    from deeplabv3_plugin.models.decode_heads import torchvision_key_map

    mapping = {'aux_classifier.0.': 'auxiliary_head.convs.0.conv.',
               'aux_classifier.1.': 'auxiliary_head.convs.0.bn.',
               'aux_classifier.4.': 'auxiliary_head.conv_seg.'}
    for name in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4'):
        mapping[f'backbone.{name}.'] = f'backbone.{name}.'
    for source, target in torchvision_key_map(num_atrous_rates).items():
        mapping[f'classifier.{source}.'] = f'decode_head.{target}.'
    return mapping


def _rename(key: str, mapping: Mapping[str, str]) -> Optional[str]:
    best = max((p for p in mapping if key.startswith(p)), key=len, default=None)
    return None if best is None else mapping[best] + key[len(best):]


def torchvision_to_plugin_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The plugin key of a torchvision key, or None if torchvision has no such key."""
    return _rename(key, _prefix_map(num_atrous_rates))


def plugin_to_torchvision_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The inverse of :func:`torchvision_to_plugin_key`."""
    return _rename(key, {v: k for k, v in _prefix_map(num_atrous_rates).items()})


def detect_resnet_depth(state_dict: Mapping[str, Tensor]) -> int:
    """ResNet depth of a torchvision DeepLabV3 state dict, from the number of layer3 units."""
    units = {int(m.group(1)) for k in state_dict
             for m in [re.match(r'backbone\.layer3\.(\d+)\.', k)] if m}
    if not units:
        raise TorchvisionConversionError(
            'the state dict has no backbone.layer3.* keys, so it is not a torchvision '
            f'DeepLabV3-ResNet (first keys: {listing(state_dict, 12)}).')
    depth = {6: 50, 23: 101}.get(max(units) + 1)
    if depth is None:
        raise TorchvisionConversionError(
            f'backbone.layer3 has {max(units) + 1} units; torchvision\'s DeepLabV3 uses '
            'ResNet-50 (6 units) or ResNet-101 (23 units).')
    return depth


def load_torchvision_state_dict(path: str) -> 'OrderedDict[str, Tensor]':
    """Read a torchvision state dict through the plugin's safe loader (also ``{'model': ...}``
    of torchvision's reference scripts, ``{'state_dict': ...}``, DDP's ``module.`` prefix)."""
    from deeplabv3_plugin.config_checks import check_file_exists

    check_file_exists(path, 'source checkpoint',
                      'Expected a torchvision DeepLabV3 state dict (.pth), e.g. '
                      'deeplabv3_resnet50_coco-cd0a2569.pth.')
    try:  # not torch.load: it fills a crafted legacy file's storages with uninitialised memory
        obj = load_local_checkpoint(path, map_location='cpu')
    except CheckpointError as error:  # names the file and what it holds that was refused
        raise TorchvisionConversionError(
            f'{error} Save the state dict alone, e.g. torch.save(checkpoint["model"], '
            '"weights.pth").') from error
    if isinstance(obj, Mapping):
        obj = checkpoint_state_dict(obj['model'] if isinstance(obj.get('model'), Mapping) else obj)
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise TorchvisionConversionError(
            f'{path!r} does not hold a state dict (a mapping of names to tensors), got '
            f'{type(obj).__name__}.')
    return OrderedDict(obj)


def convert_state_dict(source: Mapping[str, Tensor], target: Mapping[str, Tensor],
                       num_atrous_rates: int = 3) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """Rename a torchvision state dict into the layout of ``target``; returns it and notes.

    Every key must match one of the same shape, but for BN ``num_batches_tracked`` an old source
    lacks (zeros) and the ``auxiliary_head`` of a source without ``aux_classifier``.
    """
    mapping = _prefix_map(num_atrous_rates)
    new_keys = {key: _rename(key, mapping) for key in source}
    renamed = {new: old for old, new in new_keys.items() if new is not None}  # plugin -> source
    has_aux = any(k.startswith('aux_classifier.') for k in source)
    required = [k for k in target if has_aux or not k.startswith('auxiliary_head.')]
    notes = [] if len(required) == len(target) else [
        'the source has no aux_classifier (torchvision aux_loss=False): the auxiliary_head is not '
        'in the converted checkpoint and keeps its initialisation when the checkpoint is loaded; '
        'it only adds a training loss (set model.auxiliary_head=None to train without it).']
    mismatch = compare_state_dicts({k: target[k] for k in required},
                                   {new: source[old] for new, old in renamed.items()})
    unknown = sorted(old for old, new in new_keys.items() if new is None)
    surplus = sorted(renamed[k] for k in mismatch.unexpected)
    missing = sorted(plugin_to_torchvision_key(k, num_atrous_rates) or k
                     for k in mismatch.missing)
    problems = [f'{len(keys)} key(s) {what}: {listing(keys, 12)}' for keys, what in (
        (unknown, 'that torchvision\'s DeepLabV3-ResNet does not have'),
        (surplus, 'with no place in the target model (another depth or head?)'),
        (missing, 'missing from the source')) if keys]
    for dst, found, expected in mismatch.shape:
        if dst.endswith('conv_seg.weight'):
            problems.append(f'the source predicts {found[0]} classes, the config\'s '
                            f'{dst.split(".")[0]} {expected[0]}: convert with --cfg-options '
                            f'model.decode_head.num_classes={found[0]} '
                            f'model.auxiliary_head.num_classes={found[0]}')
    if mismatch.shape:
        shapes = sorted(f'{renamed[k]} {found} -> {k} {expected}'
                        for k, found, expected in mismatch.shape)
        problems.append(f'{len(shapes)} shape mismatch(es): {listing(shapes, 12)}')
    if problems:
        raise TorchvisionConversionError(
            'not a torchvision DeepLabV3 state dict that fits the target config: ' +
            '; '.join(problems) + '.')
    # Keys not renamed are num_batches_tracked counters the source lacks.
    converted = OrderedDict((key, source[renamed[key]].detach().clone() if key in renamed
                             else torch.zeros_like(target[key], device='cpu'))
                            for key in required)
    return converted, notes


def _config_dir() -> str:
    """``configs/torchvision/``: in the package's ``.mim`` once installed, else in the checkout."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    installed = osp.join(package, '.mim', 'configs', 'torchvision')
    return installed if osp.isdir(installed) else osp.join(osp.dirname(package), 'configs',
                                                           'torchvision')


def _function(model: nn.Module) -> Dict[str, str]:
    """What the weights do not pin, by module name, in eval mode (where ``test_output_stride``
    applies): conv geometry, BN eps, the heads' upsampling and the input normalisation."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead

    was_training = model.training
    model.eval()
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            found[name] = ('(stride, dilation, padding)='
                           f'{(module.stride[0], module.dilation[0], module.padding[0])}')
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            found[name] = f'BN eps={module.eps}'
        elif isinstance(module, BaseDecodeHead):
            found[name] = f'align_corners={module.align_corners}'
    model.train(was_training)
    pre = model.data_preprocessor
    mean, std = ([round(v, 3) for v in getattr(pre, key).flatten().tolist()]
                 if getattr(pre, key, None) is not None else None for key in ('mean', 'std'))
    found['data_preprocessor'] = (f'mean={mean}, std={std}, '
                                  f'bgr_to_rgb={getattr(pre, "channel_conversion", False)}')
    return found


@functools.lru_cache()
def _torchvision_function(depth: int) -> Dict[str, str]:
    from deeplabv3_plugin.checkpoint.segmentor import build_segmentor

    return _function(build_segmentor(default_config_for(depth)))


def check_torchvision_geometry(model: nn.Module) -> None:
    """Refuse, naming every difference from the ``configs/torchvision/`` model of its depth, a
    model whose eval-mode function is not torchvision's: weights alone do not pin it (a deep
    stem, uncontracted rates, OS 16, ``align_corners=True`` load the same tensors)."""
    ours = _function(model)
    theirs = _torchvision_function(101 if getattr(model.backbone, 'depth', 50) == 101 else 50)
    if getattr(model, 'auxiliary_head', None) is None:  # optional: it only adds a training loss
        theirs = {k: v for k, v in theirs.items() if not k.startswith('auxiliary_head')}
    problems = [f'{name}: {ours.get(name, "absent")}, torchvision: {theirs.get(name, "absent")}'
                for name in dict.fromkeys([*ours, *theirs]) if ours.get(name) != theirs.get(name)]
    if problems:
        hint = _BACKBONE_HINT if any(p.startswith('backbone.') for p in problems) else ''
        raise TorchvisionConversionError(
            'the target config does not reproduce torchvision\'s DeepLabV3 (use '
            'configs/torchvision/): ' + listing(problems, 12, sep='; ') + '.' + hint)


def convert_torchvision_checkpoint(src: str, dst: str, config,
                                   cfg_options: Optional[dict] = None) -> dict:
    """Write ``src`` as an mmengine checkpoint ``dst`` of ``config`` (only when the whole
    conversion succeeds); returns its ``meta``."""
    from mmseg.datasets import PascalVOCDataset

    from deeplabv3_plugin.checkpoint.segmentor import build_segmentor

    source = load_torchvision_state_dict(src)
    depth = detect_resnet_depth(source)
    model = build_segmentor(config, cfg_options=cfg_options)
    cfg = model.cfg
    target_depth = getattr(model.backbone, 'depth', None)
    if target_depth != depth:
        raise TorchvisionConversionError(
            f'the source is a ResNet-{depth} DeepLabV3, the config {cfg.filename!r} builds '
            f'ResNet-{target_depth}: use the r{depth} config of configs/torchvision/.')
    check_torchvision_geometry(model)
    converted, notes = convert_state_dict(source, model.state_dict(),
                                          len(model.decode_head.effective_rates))
    meta = dict(converted_from=osp.abspath(src), converter=__name__,
                source_layout=f'torchvision.models.segmentation.deeplabv3_resnet{depth}',
                config=osp.abspath(cfg.filename) if cfg.filename else None,
                cfg=cfg.pretty_text, depth=depth, num_tensors=len(converted), notes=notes)
    if model.decode_head.out_channels == 21:  # torchvision's VOC classes: name them
        voc = PascalVOCDataset.METAINFO
        meta['dataset_meta'] = dict(classes=list(voc['classes']),
                                    palette=[list(c) for c in voc['palette']])
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(dict(state_dict=converted, meta=meta), dst)
    return meta


def default_config_for(depth: int) -> str:
    """The ``configs/torchvision/`` config of ``depth``."""
    return osp.join(_config_dir(), f'deeplabv3_r{depth}-tv_os8_voc12aug-513x513.py')
