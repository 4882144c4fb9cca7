"""Convert torchvision's ``deeplabv3_resnet50/101`` weights into a checkpoint of this plugin.

The paper's best VOC rows start from COCO pretraining (Table 6); torchvision's COCO-subset model
(21 VOC classes) is the closest public start. The conversion renames tensors into the
``configs/torchvision/`` model, and :func:`check_torchvision_geometry` pins what names cannot.
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from deeplabv3_plugin.engine.checkpoint_checks import checkpoint_state_dict, compare_state_dicts
from deeplabv3_plugin.engine.errors import UserInputError, listing

__all__ = [
    'TorchvisionConversionError', 'torchvision_to_plugin_key', 'plugin_to_torchvision_key',
    'detect_resnet_depth', 'load_torchvision_state_dict', 'convert_state_dict',
    'check_torchvision_geometry', 'convert_torchvision_checkpoint', 'default_config_for'
]

#: torchvision's normalisation (ImageNet statistics, RGB, [0, 1] input) on mmseg's 0..255 scale.
TORCHVISION_MEAN = (123.675, 116.28, 103.53)
TORCHVISION_STD = (58.395, 57.12, 57.375)
_BACKBONE_HINT = (' torchvision\'s backbone is MultiGridResNet(stem=\'torchvision\', '
                  'contract_dilation=True, multi_grid=(1, 1, 1)) at output stride 8.')


class TorchvisionConversionError(UserInputError):
    """The source is not a torchvision DeepLabV3 state dict that fits the target config."""


def _prefix_map(num_atrous_rates: int = 3) -> Dict[str, str]:
    """torchvision prefix -> plugin prefix (torchvision's aux ``FCNHead`` is
    ``Sequential(conv, bn, relu, dropout, conv)``; avgpool/fc are not in its backbone)."""
    from deeplabv3_plugin.models.decode_heads import torchvision_key_map

    mapping = {f'backbone.{name}.': f'backbone.{name}.'
               for name in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4')}
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


def _torchvision_conv(name: str) -> Optional[Tuple[int, int, int]]:
    """(stride, dilation, padding) of torchvision's backbone conv ``name``, or None for a 1x1
    conv that geometry does not change (and for convs torchvision does not have)."""
    if name == 'conv1':
        return (2, 1, 3)
    match = re.fullmatch(r'layer(\d)\.(\d+)\.(conv2|downsample\.0)', name)
    if match is None:
        return None
    stage, unit = int(match.group(1)), int(match.group(2))
    stride = 2 if (stage, unit) == (2, 0) else 1
    if match.group(3) == 'downsample.0':
        return (stride, 1, 0)
    # replace_stride_with_dilation=[False, True, True]: a stage's first unit keeps the rate before.
    dilation = {3: 2, 4: 4}.get(stage, 1) // (2 if unit == 0 and stage > 2 else 1)
    return (stride, dilation, dilation)


def check_torchvision_geometry(model: nn.Module) -> None:
    """Refuse, naming every difference, a model whose eval-mode function is not torchvision's.

    Weights alone do not pin it (a deep stem, uncontracted rates, OS 16, other ASPP rates,
    ``align_corners=True`` or another normalisation load the same tensors).
    """
    from mmseg.models.decode_heads import FCNHead

    from deeplabv3_plugin.models.decode_heads import DeepLabV3Head

    was_training = model.training
    model.eval()  # test_output_stride applies in eval mode, where outputs are compared
    problems = []
    try:
        for name, conv in model.backbone.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            expected = _torchvision_conv(name)
            found = (conv.stride[0], conv.dilation[0], conv.padding[0])
            if expected is None and conv.kernel_size != (1, 1):
                problems.append(f'backbone.{name} is not in torchvision\'s ResNet '
                                f'(stem={getattr(model.backbone, "stem_type", "?")!r}?)')
            elif expected not in (None, found):
                problems.append(f'backbone.{name} has (stride, dilation, padding)={found}, '
                                f'torchvision {expected}')
        hint = _BACKBONE_HINT if problems else ''
        head = model.decode_head
        if not isinstance(head, DeepLabV3Head):
            problems.append(f'decode_head is a {type(head).__name__}, torchvision\'s head is '
                            'DeepLabV3Head(project_dropout=0.5, num_extra_convs=1, '
                            'dropout_ratio=0)')
        elif head.effective_rates != (12, 24, 36):
            problems.append(f'decode_head ASPP rates are {head.effective_rates} at the model\'s '
                            'eval output stride, torchvision (12, 24, 36) at output stride 8')
    finally:
        model.train(was_training)
    aux = getattr(model, 'auxiliary_head', None)  # EncoderDecoder sets it only when configured
    if aux is not None and not (isinstance(aux, FCNHead) and aux.num_convs == 1
                                and not aux.concat_input and aux.convs[0].conv.kernel_size
                                == (3, 3) and aux.convs[0].conv.dilation == (1, 1)):
        problems.append('auxiliary_head must be FCNHead(num_convs=1, kernel_size=3, dilation=1, '
                        'concat_input=False), torchvision\'s FCNHead')
    problems += [f'{name} has BN eps={bn.eps}, torchvision 1e-5' for name, bn in
                 model.named_modules() if isinstance(bn, nn.modules.batchnorm._BatchNorm)
                 and bn.eps != 1e-5]
    problems += [f'{name}.align_corners=True, torchvision upsamples with align_corners=False'
                 for name in ('decode_head', 'auxiliary_head')
                 if getattr(getattr(model, name, None), 'align_corners', False)]
    preprocessor = model.data_preprocessor
    mean, std = getattr(preprocessor, 'mean', None), getattr(preprocessor, 'std', None)
    if mean is None or std is None or not (
            torch.allclose(mean.flatten().cpu(), torch.tensor(TORCHVISION_MEAN))
            and torch.allclose(std.flatten().cpu(), torch.tensor(TORCHVISION_STD))
            and getattr(preprocessor, 'channel_conversion', False)):
        problems.append(f'data_preprocessor must normalise like torchvision: mean='
                        f'{list(TORCHVISION_MEAN)}, std={list(TORCHVISION_STD)}, bgr_to_rgb=True')
    if problems:
        raise TorchvisionConversionError(
            'the target config does not reproduce torchvision\'s DeepLabV3 (use '
            'configs/torchvision/): ' + listing(problems, 12, sep='; ') + '.' + hint)


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
