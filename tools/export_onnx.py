"""Export to ONNX and check it: ``python tools/export_onnx.py CONFIG CHECKPOINT OUT.onnx``.

The graph takes a raw image batch ``image`` (N, 3, H, W), float, 0..255, in the channel order the
mmseg pipeline loads (BGR) and returns ``logits`` (N, num_classes, H, W): normalisation, backbone,
ASPP with image pooling, and bilinear upsampling to the input size are all inside, and N, H and W
are dynamic. After writing OUT.onnx the tool runs it with ONNX Runtime on random images of the
``--check-shapes`` sizes, prints the largest difference to PyTorch for each, and exits with
status 1 if one exceeds ``--tolerance`` (relative to the largest logit). Bad input (paths, a
checkpoint for another model, shapes) prints one paragraph and exits with status 2. The logic
lives in :mod:`deeplabv3_plugin.deploy.export`.

``--int8 --calib-dir DIR [--calib-num N]`` writes an int8 model instead (ONNX Runtime's static
QDQ quantization, per-channel weights, calibrated on N images of DIR; see
:mod:`deeplabv3_plugin.deploy.int8`): the float32 graph is checked as above, then the tool
lists which operators run in int8 and which stay float, and how many argmax pixels of the int8
model equal PyTorch's. Its mIoU: ``python tools/test.py CONFIG OUT.onnx`` (same dataset and metric
as the checkpoint).
"""
import argparse
import os.path as osp
import tempfile

from mmengine.config import DictAction

from deeplabv3_plugin.deploy.fast_inference import fuse_conv_bn
from deeplabv3_plugin.apis.inference import build_segmentor
from deeplabv3_plugin.errors import UserInputError, run_tool
from deeplabv3_plugin.deploy.export import compare_with_pytorch, export_onnx, parse_shape
from deeplabv3_plugin.deploy.int8 import (CALIBRATION_IMAGES, calibration_images, int8_summary,
                                          quantize_int8)


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
    parser.add_argument('--int8', action='store_true',
                        help='write an int8 model instead: static QDQ quantization (per-channel '
                        'weights) with ONNX Runtime, calibrated on --calib-dir images')
    parser.add_argument('--calib-dir', metavar='DIR',
                        help='--int8: folder of calibration images (e.g. training JPEGImages)')
    parser.add_argument('--calib-num', type=int, default=CALIBRATION_IMAGES, metavar='N',
                        help='--int8: calibration images, the first N by name (default: '
                        '%(default)s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config entries, e.g. model.decode_head.num_classes=5')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    example = parse_shape(args.shape)
    check_shapes = [parse_shape(text) for text in args.check_shapes]
    if args.int8 and args.no_normalize:
        raise UserInputError('--int8 --no-normalize: calibration images are raw images, so the '
                             'int8 model keeps the normalisation in the graph; drop one of them.')
    if args.int8 != bool(args.calib_dir):
        raise UserInputError('--int8 and --calib-dir DIR go together: int8 quantization is '
                             'calibrated on the images of DIR.')
    images = calibration_images(args.calib_dir, args.calib_num) if args.int8 else None
    model = build_segmentor(args.config, args.checkpoint, args.cfg_options, args.output_stride)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_file = osp.join(tmp, 'fp32.onnx') if args.int8 else args.out
        if args.int8:  # the quantizer needs BN folded into the convolutions it quantizes
            fuse_conv_bn(model)
        wrapper = export_onnx(model, fp32_file, example, normalize=not args.no_normalize,
                              opset_version=args.opset)
        failed = report_check(wrapper, fp32_file, check_shapes, args.tolerance, 'float32')
        if args.int8:
            quantize_int8(fp32_file, args.out, images)
    print(f'Exported {args.out} (input "image" N x 3 x H x W, output "logits" N x C x H x W; '
          'N, H, W dynamic).')
    if args.int8:
        summary = int8_summary(args.out)
        print(f'int8 model: calibrated on {len(images)} image(s) of {args.calib_dir}; ' +
              '; '.join(f'{kind}: ' + ', '.join(f'{op} x{n}' for op, n in sorted(ops.items()))
                        for kind, ops in summary.items()))
        for shape, _, _, agreement in compare_with_pytorch(wrapper, args.out, check_shapes):
            print(f'input {"x".join(map(str, shape))}: int8 argmax equals pytorch on '
                  f'{100 * agreement:.2f}% of the pixels')
    return 1 if failed else 0


def report_check(wrapper, onnx_file: str, shapes, tolerance: float, what: str) -> bool:
    """Print ONNX Runtime vs PyTorch per shape; True when one differs too much."""
    failed = False
    for shape, difference, scale, _ in compare_with_pytorch(wrapper, onnx_file, shapes):
        ok = difference <= tolerance * max(scale, 1.0)
        failed |= not ok
        print(f'input {"x".join(map(str, shape))}: {what} max |onnxruntime - pytorch| = '
              f'{difference:.3e} (max |logit| {scale:.3e}) {"OK" if ok else "TOO LARGE"}')
    return failed


if __name__ == '__main__':
    run_tool(main)
