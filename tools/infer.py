"""Segment images, folders and videos: ``python tools/infer.py CONFIG CKPT INPUT... [options]``.

For each image ``<name>.<ext>`` it writes, under ``--out`` (default ``infer_out``):

* ``<name>_label.png``: the label map, one class index per pixel, saved as a palette PNG in the
  dataset's colours (the checkpoint's ``dataset_meta``), as VOC's own label files;
* ``<name>_overlay.jpg``: the image with the class colours blended in (``--opacity``).

A video (anything mmcv's ``VideoReader`` opens: .mp4, .avi, ...) becomes ``<name>_overlay.mp4``
(written with OpenCV's ``VideoWriter``; mmcv 2.x has no writer).
A folder contributes its images and videos (not recursively). A file that cannot be read is
named on stderr and skipped; the others are still written, and the exit status is 1. The model
is the plugin's :class:`~deeplabv3_plugin.apis.DeepLabV3Inferencer` (mmseg's inferencer) on the
engine ``--backend auto`` picks: the fastest measured on this kind of CPU that holds accuracy
(int8 where it pays, from a graph exported once per checkpoint and cached); the log says which
and why. ``--output-stride``, ``--tta``, ``--precision``, ``--calib-dir`` and ``--bf16`` mean what
they mean in ``tools/test.py``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import List, Tuple

import cv2
import mmcv
import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image

from deeplabv3_plugin.apis import DeepLabV3Inferencer
from deeplabv3_plugin.deploy.engines import BACKEND_CHOICES, PRECISION_CHOICES
from deeplabv3_plugin.deploy.int8 import CALIBRATION_IMAGES
from deeplabv3_plugin.config_checks import load_config
from deeplabv3_plugin.errors import run_tool
from deeplabv3_plugin.cli import check_checkpoint_arg, enable_tta, set_test_output_stride

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Segment images, folders and videos.')
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', metavar='INPUT', help='images, videos or folders')
    parser.add_argument('--out', default='infer_out', help='output directory (%(default)s)')
    parser.add_argument('--output-stride', type=int, metavar='N',
                        help='predict at output stride N (e.g. 8 for a model trained at 16)')
    parser.add_argument('--tta', action='store_true',
                        help="multi-scale + flip (the config's tta_pipeline)")
    parser.add_argument('--backend', default='auto', help=', '.join(BACKEND_CHOICES) +
                        ' (default: auto, the fastest measured on this kind of CPU that holds '
                        'accuracy)')
    parser.add_argument('--precision', default='auto', help=', '.join(PRECISION_CHOICES) +
                        ' (default: auto)')
    parser.add_argument('--calib-dir', metavar='DIR', help='int8: calibration images (default: '
                        "the config's training split)")
    parser.add_argument('--calib-num', type=int, default=CALIBRATION_IMAGES, metavar='N',
                        help='int8: calibration images (default: %(default)s)')
    parser.add_argument('--bf16', action='store_true', help='--precision bf16 (PyTorch: bf16 '
                        'autocast on the fast path)')
    parser.add_argument('--no-fast', action='store_true', help='run the model as trained')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]' (%(default)s)")
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='weight of the class colours in the overlays (%(default)s)')
    return parser.parse_args(argv)


def expand_inputs(inputs: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files to segment (folders expanded) and ``(path, reason)`` of inputs that are not."""
    files, problems = [], []
    for path in inputs:
        if osp.isdir(path):
            names = sorted(n for n in os.listdir(path)
                           if n.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
            if not names:
                problems.append((path, 'folder holds no image or video files'))
            files += [osp.join(path, n) for n in names]
        elif osp.isfile(path):
            files.append(path)
        else:
            problems.append((path, 'no such file or folder'))
    return files, problems


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray,
            opacity: float) -> np.ndarray:
    """The BGR image with each pixel's class colour (``palette`` is RGB) blended in."""
    colours = palette[label][..., ::-1].astype(np.float32)
    return (image * (1 - opacity) + colours * opacity).round().astype(np.uint8)


def save_label(label: np.ndarray, palette: np.ndarray, path: str) -> None:
    """A palette PNG: pixel values are class indices, shown in the dataset's colours."""
    picture = Image.fromarray(label.astype(np.uint8), mode='P')
    picture.putpalette(palette.astype(np.uint8).flatten().tolist())
    picture.save(path)


def open_video(path: str) -> mmcv.VideoReader:
    """mmcv's reader of ``path``; ValueError if it is not a video with frames."""
    try:
        reader = mmcv.VideoReader(path)
    except Exception as error:  # mmcv/OpenCV raise several types for what they cannot open
        raise ValueError(f'cannot be read as a video ({error})') from error
    if reader.frame_cnt <= 0:
        raise ValueError('cannot be read as a video (no frames)')
    return reader


def read_image(path: str) -> np.ndarray:
    """The BGR image of ``path``; ValueError if it cannot be decoded."""
    try:
        image = mmcv.imread(path)
    except Exception as error:  # OpenCV asserts on empty files, Pillow raises its own types
        raise ValueError(f'cannot be read as an image ({error})') from error
    if image is None:
        raise ValueError('cannot be read as an image (not a decodable image file)')
    return image


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config)
    check_checkpoint_arg(args.checkpoint)
    set_test_output_stride(cfg, args.output_stride)
    if args.tta:
        enable_tta(cfg)
    inferencer = DeepLabV3Inferencer(cfg, weights=args.checkpoint, device=args.device,
                                     fast=not args.no_fast, bf16=args.bf16,
                                     backend=args.backend, precision=args.precision,
                                     calib_dir=args.calib_dir, calib_num=args.calib_num)
    inferencer.show_progress = False
    palette = np.array(inferencer.model.dataset_meta['palette'], dtype=np.uint8)

    def segment(bgr: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        label = inferencer(bgr, return_datasamples=True).pred_sem_seg.data[0].cpu().numpy()
        return label, overlay(bgr, label, palette, args.opacity)

    files, skipped = expand_inputs(args.inputs)
    videos = {}
    for path in [f for f in files if f.lower().endswith(VIDEO_EXTENSIONS)]:
        try:
            videos[path] = open_video(path)
        except ValueError as error:
            skipped.append((path, str(error)))
    os.makedirs(args.out, exist_ok=True)
    progress = ProgressBar(sum(videos[f].frame_cnt if f in videos else 1 for f in files))
    written = 0
    for path in files:
        stem = osp.join(args.out, osp.splitext(osp.basename(path))[0])
        if path in videos:
            reader = videos[path]
            writer = cv2.VideoWriter(f'{stem}_overlay.mp4', cv2.VideoWriter_fourcc(*'mp4v'),
                                     reader.fps, reader.resolution)
            for frame in reader:
                writer.write(segment(frame)[1])
                progress.update()
            writer.release()
        elif path.lower().endswith(VIDEO_EXTENSIONS):
            continue  # could not be opened: already listed
        else:
            try:
                image = read_image(path)
            except ValueError as error:
                skipped.append((path, str(error)))
                progress.update()
                continue
            label, picture = segment(image)
            save_label(label, palette, f'{stem}_label.png')
            mmcv.imwrite(picture, f'{stem}_overlay.jpg')
            progress.update()
        written += 1
    sys.stdout.write('\n')
    for path, reason in skipped:
        sys.stderr.write(f'infer.py: skipped {path!r}: {reason}\n')
    print(f'{written} input(s) written to {args.out}'
          + (f'; {len(skipped)} skipped (listed above)' if skipped else ''))
    return 1 if skipped else 0


if __name__ == '__main__':
    run_tool(main)
