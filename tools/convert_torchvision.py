"""Convert torchvision DeepLabV3 weights: ``python tools/convert_torchvision.py SRC.pth DST.pth``.

SRC is a state dict of torchvision's ``deeplabv3_resnet50/101`` (aux head optional), e.g.
``deeplabv3_resnet50_coco-cd0a2569.pth``; DST an mmengine checkpoint of the matching
``configs/torchvision/`` config (picked by depth unless ``--config``), computing the same logits.
Anything that does not fit names the offending keys and exits with status 2, writing nothing
(:mod:`deeplabv3_plugin.converters.torchvision`).
"""
import argparse

from mmengine.config import DictAction

from deeplabv3_plugin.errors import run_tool
from deeplabv3_plugin.converters.torchvision import (convert_torchvision_checkpoint,
                                                        default_config_for,
                                                        detect_resnet_depth,
                                                        load_torchvision_state_dict)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert torchvision's deeplabv3_resnet50/101 state dict into a checkpoint "
        'of the DeepLabV3 plugin (same outputs).')
    parser.add_argument('src', help='torchvision DeepLabV3 state dict (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth, mmengine format)')
    parser.add_argument(
        '--config', help='plugin config of the target model (default: '
        'configs/torchvision/deeplabv3_r<depth>-tv_os8_voc12aug-513x513.py for the depth of SRC)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. model.decode_head.num_classes=5 '
        'model.auxiliary_head.num_classes=5 for a torchvision model fine-tuned on 5 classes')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = args.config
    if config is None:
        config = default_config_for(detect_resnet_depth(load_torchvision_state_dict(args.src)))
    meta = convert_torchvision_checkpoint(args.src, args.dst, config, args.cfg_options)
    print(f'Converted {meta["num_tensors"]} tensors of a torchvision DeepLabV3-ResNet'
          f'{meta["depth"]} into {args.dst} for config {config}.')
    for note in meta['notes']:
        print(f'Note: {note}')


if __name__ == '__main__':
    run_tool(main)
