"""Export to ONNX and check it: ``python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx``.

The graph takes a raw image batch ``image`` (N, 3, H, W), float, 0..255, in the channel order the
mmseg pipeline loads (BGR) and returns ``logits`` (N, num_classes, H, W): normalisation, backbone,
ASPP with image pooling, and bilinear upsampling to the input size are all inside, and N, H and W
are dynamic. After writing OUT.onnx the tool runs it with ONNX Runtime on random images of the
``--check-shapes`` sizes, prints the largest difference to PyTorch for each, and exits with
status 1 if one exceeds ``--tolerance`` (relative to the largest logit). Bad input (paths, a
checkpoint for another model, shapes) prints one paragraph and exits with status 2. The logic
lives in :mod:`deeplabv3_plugin.utils.onnx_export`.
"""
import argparse

from mmengine.config import DictAction

from deeplabv3_plugin.engine.errors import run_tool
from deeplabv3_plugin.utils.onnx_export import (build_export_model, compare_with_pytorch,
                                                export_onnx, parse_shape)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a DeepLabV3 (or any mmseg EncoderDecoder) to ONNX with dynamic '
        'batch/height/width and check it against PyTorch with ONNX Runtime.')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file (tools/train.py or '
                        'tools/convert_torchvision.py output)')
    parser.add_argument('out', help='ONNX file to write')
    parser.add_argument('--output-stride', type=int, metavar='N',
                        help='export at output stride N (e.g. 8 for a model trained at 16)')
    parser.add_argument('--shape', default='1,3,97,129', metavar='N,3,H,W',
                        help='example input traced by the exporter (sizes are dynamic anyway); '
                        'HxW also works. Default: 1,3,97,129')
    parser.add_argument('--check-shapes', nargs='+', default=['1,3,513,513', '2,3,257,385'],
                        metavar='SHAPE', help='input shapes to compare ONNX Runtime with PyTorch '
                        'on, e.g. 513x513 2,3,257,385. Default: 1,3,513,513 2,3,257,385')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest allowed |ONNX - PyTorch| relative to the largest |logit| '
                        '(default: 1e-4)')
    parser.add_argument('--no-normalize', action='store_true',
                        help='leave the mean/std normalisation and channel flip out of the graph '
                        '(the input is then the normalised tensor)')
    parser.add_argument('--opset', type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. model.decode_head.num_classes=5')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    example = parse_shape(args.shape)
    check_shapes = [parse_shape(text) for text in args.check_shapes]
    model = build_export_model(args.config, args.checkpoint, args.cfg_options,
                               args.output_stride)
    wrapper = export_onnx(model, args.out, example, normalize=not args.no_normalize,
                          opset_version=args.opset)
    print(f'Exported {args.out} (input "image" N x 3 x H x W, output "logits" N x C x H x W; '
          'N, H, W dynamic).')
    failed = False
    for shape, difference, scale in compare_with_pytorch(wrapper, args.out, check_shapes):
        ok = difference <= args.tolerance * max(scale, 1.0)
        failed |= not ok
        print(f'input {"x".join(map(str, shape))}: max |onnxruntime - pytorch| = '
              f'{difference:.3e} (max |logit| {scale:.3e}) {"OK" if ok else "TOO LARGE"}')
    return 1 if failed else 0


if __name__ == '__main__':
    run_tool(main)
