"""Write Cityscapes train-id labels: ``*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png``.

    python tools/prepare_cityscapes.py data/cityscapes                        # gtFine
    python tools/prepare_cityscapes.py data/cityscapes --gt-dir gtFine gtCoarse  # + Tab. 13

DeepLabV3 is scored on Cityscapes' 19 classes (App. C): this maps the 34 raw label ids to them
(255 elsewhere) with the table below, so no cityscapesscripts is needed (mmseg's
``tools/dataset_converters/cityscapes.py`` needs it to draw the polygons). Exit status 1 if a
label tree is missing or some file could not be converted (each named). Each file is written
atomically and never through a symbolic link inside the Cityscapes root
(:func:`deeplabv3_plugin.datasets.open_within`): a link in a file's place is replaced, a linked
directory refused.
"""
import argparse
import functools
import glob
import os.path as osp
import sys
from typing import Optional

import numpy as np
from mmengine.utils import track_progress
from PIL import Image

from deeplabv3_plugin.datasets import UnsafeWriteError, open_within

#: Cityscapes label id -> train id of the 19 evaluated classes; every other id -> 255.
CITYSCAPES_ID_TO_TRAIN_ID = {label_id: train_id for train_id, label_id in enumerate(
    (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33))}
NUM_LABEL_IDS = 34  # raw ids 0..33 (license plate, id -1, is not stored in the id images)
TRAIN_ID_LUT = np.full(256, 255, dtype=np.uint8)
TRAIN_ID_LUT[list(CITYSCAPES_ID_TO_TRAIN_ID)] = list(CITYSCAPES_ID_TO_TRAIN_ID.values())


def convert_label(path: str, root: str) -> Optional[str]:
    """Write the ``*_labelTrainIds.png`` of one ``*_labelIds.png`` below ``root``; the problem
    if it cannot."""
    try:
        with Image.open(path) as image:
            ids = np.array(image)
    except Exception as error:  # noqa: BLE001  (PIL raises several types for bad files)
        return f'{path}: not a readable PNG ({error}).'
    if ids.ndim != 2:
        return (f'{path}: has shape {ids.shape}, expected a single-channel map of raw label ids '
                '(*_labelIds.png, not *_color.png).')
    bad = np.unique(ids[ids >= NUM_LABEL_IDS])
    if bad.size:
        return (f'{path}: holds values {bad[:8].tolist()}, expected raw Cityscapes label ids '
                f'0..{NUM_LABEL_IDS - 1} (is it already a *_labelTrainIds.png?).')
    train_ids_path = path[:-len('_labelIds.png')] + '_labelTrainIds.png'
    try:
        with open_within(root, osp.relpath(train_ids_path, root)) as f:
            Image.fromarray(TRAIN_ID_LUT[ids]).save(f, format='PNG')
    except UnsafeWriteError as error:
        return str(error)
    return None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert Cityscapes label ids to the 19 train ids mmseg reads.')
    parser.add_argument('cityscapes_root', help='directory holding leftImg8bit/ and gtFine/')
    parser.add_argument('--gt-dir', nargs='+', default=['gtFine'], metavar='DIR',
                        help='label trees to convert (default: gtFine; add gtCoarse for the '
                        'trainval-coarse model)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    converted, problems = 0, []
    for gt_dir in args.gt_dir:
        gt_root = osp.join(args.cityscapes_root, gt_dir)
        files = sorted(glob.glob(osp.join(gt_root, '**', '*_labelIds.png'), recursive=True))
        error = None
        if not osp.isdir(gt_root):
            error = (f'Cityscapes label tree {gt_dir!r} {gt_root!r} does not exist; pass the '
                     'Cityscapes root that contains it (download gtFine_trainvaltest).')
        elif not files:
            error = (f'no *_labelIds.png under {gt_root!r}: expected '
                     f'{gt_dir}/<split>/<city>/<name>_{gt_dir}_labelIds.png.')
        if error:
            sys.stderr.write(f'prepare_cityscapes: error: {error}\n')
            return 1
        sys.stderr.write(f'converting {gt_dir} label ids to train ids: {len(files)} file(s)\n')
        results = track_progress(functools.partial(convert_label, root=args.cityscapes_root),
                                 files, file=sys.stderr)
        problems += [r for r in results if r is not None]
        converted += results.count(None)
    print(f'wrote {converted} *_labelTrainIds.png file(s)')
    for problem in problems:
        sys.stderr.write(f'prepare_cityscapes: error: {problem}\n')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
