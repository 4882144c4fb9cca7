"""Convert torchvision's ``deeplabv3_resnet50/101`` weights into a checkpoint of this plugin.

The paper's best VOC rows start from COCO pretraining (Table 6); torchvision's COCO-subset model
(21 VOC classes) is the closest public start. The conversion is a pure renaming into the
``configs/torchvision/`` model, whose function :func:`check_torchvision_geometry` pins.
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor

from deeplabv3_plugin.engine.checkpoint_checks import checkpoint_state_dict, compare_state_dicts
from deeplabv3_plugin.engine.errors import listing
from .torchvision_geometry import TorchvisionConversionError, check_torchvision_geometry

__all__ = [
    'TorchvisionConversionError', 'torchvision_prefix_map', 'torchvision_to_plugin_key',
    'plugin_to_torchvision_key', 'detect_resnet_depth', 'load_torchvision_state_dict',
    'convert_state_dict', 'check_torchvision_geometry', 'convert_torchvision_checkpoint',
    'default_config_for'
]

#: ResNet depth of torchvision's DeepLabV3 models, by the number of units in layer3.
DEPTH_BY_LAYER3_UNITS = {6: 50, 23: 101}
#: What torchvision's ``IntermediateLayerGetter`` keeps of the ResNet (avgpool/fc are dropped).
_BACKBONE_MODULES = ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')


def torchvision_prefix_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """torchvision prefix -> plugin prefix (the backbone keeps its names; the head owns its map;
    torchvision's aux ``FCNHead`` is ``Sequential(conv, bn, relu, dropout, conv)``)."""
    from deeplabv3_plugin.models.decode_heads import torchvision_key_map

    mapping = {f'backbone.{name}.': f'backbone.{name}.' for name in _BACKBONE_MODULES}
    for source, target in torchvision_key_map(num_atrous_rates).items():
        mapping[f'classifier.{source}.'] = f'decode_head.{target}.'
    mapping.update({
        'aux_classifier.0.': 'auxiliary_head.convs.0.conv.',
        'aux_classifier.1.': 'auxiliary_head.convs.0.bn.',
        'aux_classifier.4.': 'auxiliary_head.conv_seg.',
    })
    return mapping


def _rename(key: str, mapping: Mapping[str, str]) -> Optional[str]:
    best = max((p for p in mapping if key.startswith(p)), key=len, default=None)
    return None if best is None else mapping[best] + key[len(best):]


def torchvision_to_plugin_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The plugin key of a torchvision key, or None if torchvision has no such key."""
    return _rename(key, torchvision_prefix_map(num_atrous_rates))


def plugin_to_torchvision_key(key: str, num_atrous_rates: int = 3) -> Optional[str]:
    """The inverse of :func:`torchvision_to_plugin_key`."""
    inverse = {v: k for k, v in torchvision_prefix_map(num_atrous_rates).items()}
    return _rename(key, inverse)


def detect_resnet_depth(state_dict: Mapping[str, Tensor]) -> int:
    """ResNet depth of a torchvision DeepLabV3 state dict, from the number of layer3 units."""
    units = {int(m.group(1)) for k in state_dict
             for m in [re.match(r'backbone\.layer3\.(\d+)\.', k)] if m}
    if not units:
        raise TorchvisionConversionError(
            'the state dict has no backbone.layer3.* keys, so it is not a torchvision '
            f'DeepLabV3-ResNet (first keys: {listing(state_dict, 12)}).')
    count = max(units) + 1
    if count not in DEPTH_BY_LAYER3_UNITS:
        raise TorchvisionConversionError(
            f'backbone.layer3 has {count} units; torchvision\'s DeepLabV3 uses ResNet-50 '
            '(6 units) or ResNet-101 (23 units).')
    return DEPTH_BY_LAYER3_UNITS[count]


def load_torchvision_state_dict(path: str) -> 'OrderedDict[str, Tensor]':
    """Read a torchvision state dict with weights only (also ``{'model': ...}`` of torchvision's
    reference scripts, ``{'state_dict': ...}``, DDP's ``module.`` prefix)."""
    from deeplabv3_plugin.engine.config_checks import check_file_exists

    check_file_exists(path, 'source checkpoint',
                      'Expected a torchvision DeepLabV3 state dict (.pth), e.g. '
                      'deeplabv3_resnet50_coco-cd0a2569.pth.')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a torch file) ...
        raise TorchvisionConversionError(
            f'cannot read {path!r} as a weights-only torch file ({type(error).__name__}: '
            f'{str(error).splitlines()[0] if str(error) else ""}). Save the state dict alone, '
            'e.g. torch.save(checkpoint["model"], "weights.pth").') from error
    if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
        obj = obj['model']
    if isinstance(obj, Mapping):
        obj = checkpoint_state_dict(obj)
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise TorchvisionConversionError(
            f'{path!r} does not hold a state dict (a mapping of names to tensors), got '
            f'{type(obj).__name__}.')
    return OrderedDict(obj)


def convert_state_dict(source: Mapping[str, Tensor], target: Mapping[str, Tensor],
                       num_atrous_rates: int = 3) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """Rename a torchvision state dict into the layout of ``target``; returns it and notes.

    Every source key must fill a target key of the same shape and every target key be filled,
    except BN ``num_batches_tracked`` counters an old source lacks (zeros), and the target's
    ``auxiliary_head`` when the source has no ``aux_classifier`` (it only adds a training loss).
    """
    mapping = torchvision_prefix_map(num_atrous_rates)
    renamed: Dict[str, str] = {}  # plugin key -> torchvision key
    unknown = []
    for key in source:
        new_key = _rename(key, mapping)
        if new_key is None:
            unknown.append(key)
        else:
            renamed[new_key] = key
    has_aux = any(k.startswith('aux_classifier.') for k in source)
    required = [k for k in target if has_aux or not k.startswith('auxiliary_head.')]
    notes = [] if len(required) == len(target) else [
        'the source has no aux_classifier (torchvision aux_loss=False): the auxiliary_head is not '
        'in the converted checkpoint and keeps its initialisation when the checkpoint is loaded; '
        'it only adds a training loss (set model.auxiliary_head=None to train without it).']
    mismatch = compare_state_dicts({k: target[k] for k in required},
                                   {dst: source[src] for dst, src in renamed.items()})
    problems = []
    if unknown:
        problems.append(f'{len(unknown)} key(s) that torchvision\'s DeepLabV3-ResNet does not '
                        f'have: {listing(sorted(unknown), 12)}')
    if mismatch.unexpected:
        surplus = sorted(renamed[k] for k in mismatch.unexpected)
        problems.append(f'{len(surplus)} key(s) with no place in the target model (another '
                        f'depth or head?): {listing(surplus, 12)}')
    if mismatch.missing:
        names = sorted(plugin_to_torchvision_key(k, num_atrous_rates) or k
                       for k in mismatch.missing)
        problems.append(f'{len(names)} key(s) missing from the source: {listing(names, 12)}')
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


def convert_torchvision_checkpoint(src: str, dst: str, config,
                                   cfg_options: Optional[dict] = None) -> dict:
    """Convert torchvision file ``src`` into an mmengine checkpoint ``dst`` of ``config``.

    ``dst`` is written only when the whole conversion succeeds; returns its ``meta``.
    """
    from mmseg.datasets import PascalVOCDataset

    from deeplabv3_plugin.apis.inference import build_segmentor

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


def default_config_for(depth: int, config_dir: str) -> str:
    """The torchvision-variant config of ``depth`` in ``config_dir``."""
    return osp.join(config_dir, f'deeplabv3_r{depth}-tv_os8_voc12aug-513x513.py')
