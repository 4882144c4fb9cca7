"""Build PASCAL VOC 2012 "trainaug" (the paper's 10,582 training images) from VOC 2012 + SBD.

    python tools/prepare_voc_aug.py data/VOCdevkit/VOC2012 data/benchmark_RELEASE

DeepLabV3 (Sec. 4) trains on VOC train plus SBD's extra annotations, none in VOC val. This
converts SBD's ``dataset/cls/*.mat`` class maps to ``VOC2012/SegmentationClassAug/*.png``, copies
VOC's own (finer) train labels over theirs, and writes ``ImageSets/Segmentation/trainaug.txt``
and ``aug.txt``, as mmseg's ``tools/dataset_converters/voc_aug.py`` does. Then check the tree
with ``python tools/check_dataset.py data/VOCdevkit/VOC2012``. Exit status 1 on an error, with a
message naming the file. Every file is written atomically and never through a symbolic link
inside the VOC root (:func:`deeplabv3_plugin.datasets.open_within`): a link there is replaced, a
linked directory refused.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional

import numpy as np
from mmengine.utils import track_progress
from PIL import Image

from deeplabv3_plugin.datasets import UnsafeWriteError, open_within

VOC_TRAINAUG_SIZE = 10582  # the paper's trainaug (Sec. 4)
SBD_NUM_CLASSES = 21  # background and the 20 VOC classes; SBD has no void border, unlike VOC


class DatasetPrepError(RuntimeError):
    """A file or directory is missing or not what the VOC / SBD layout expects."""


def read_split(path: str, what: str) -> list:
    """The names of a split file, one per line (blank lines and spaces ignored)."""
    if not osp.isfile(path):
        raise DatasetPrepError(f'{what} {path!r} does not exist.')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def make_aug_lists(voc_train, voc_val, sbd_train, sbd_val):
    """``trainaug`` = VOC train | SBD - VOC val (10,582) and ``aug`` = SBD - VOC train - VOC val
    (9,118, what mmseg's ``ConcatDataset`` adds to VOC train), both sorted."""
    sbd, val = set(sbd_train) | set(sbd_val), set(voc_val)
    return sorted((set(voc_train) | sbd) - val), sorted(sbd - set(voc_train) - val)


def read_sbd_segmentation(mat_path: str) -> np.ndarray:
    """The ``(H, W)`` uint8 class map (0..20) of an SBD ``cls/<name>.mat`` (struct ``GTcls``)."""
    from scipy.io import loadmat  # scipy is an mmseg dependency
    try:
        data = loadmat(mat_path)
    except Exception as error:  # noqa: BLE001  (scipy raises several types for bad files)
        raise DatasetPrepError(f'{mat_path}: not a readable MATLAB file ({error}).') from error
    struct = data.get('GTcls')
    names = getattr(getattr(struct, 'dtype', None), 'names', None) or ()
    if 'Segmentation' not in names:
        keys = sorted(k for k in data if not k.startswith('__'))
        raise DatasetPrepError(
            f'{mat_path}: expected an SBD class file with a struct GTcls holding a Segmentation '
            f'field (SBD dataset/cls/*.mat), found variables {keys} with fields {list(names)}. '
            f'Instance files (dataset/inst/*.mat, GTinst) are not class maps.')
    seg = np.asarray(struct['Segmentation'].flat[0])
    bad = np.unique(seg[(seg < 0) | (seg >= SBD_NUM_CLASSES)])
    if seg.ndim != 2 or bad.size:
        raise DatasetPrepError(f'{mat_path}: GTcls.Segmentation has shape {seg.shape} and values '
                               f'{bad[:8].tolist()} outside the classes; expected a 2-D class '
                               f'map of indices 0..{SBD_NUM_CLASSES - 1}.')
    return seg.astype(np.uint8)


def track(func, items: list, desc: str) -> None:
    sys.stderr.write(f'{desc}: {len(items)} file(s)\n')
    if items:  # mmengine prints a stray 'completed: 0' for none
        track_progress(func, items, file=sys.stderr)


def prepare_voc_aug(voc_root: str, sbd_root: str, out_dir: Optional[str] = None) -> None:
    """Write the label PNGs to ``out_dir`` (default ``<voc_root>/SegmentationClassAug``) and
    the two split files, then print what was written."""
    split_dir = osp.join(voc_root, 'ImageSets', 'Segmentation')
    cls_dir = osp.join(sbd_root, 'dataset', 'cls')
    for path, what, hint in (
            (voc_root, 'VOC root', 'pass the VOC2012 directory of VOCdevkit.'),
            (split_dir, 'VOC split directory', 'is this the VOC2012 directory?'),
            (cls_dir, 'SBD class-label directory',
             'pass the SBD root that contains dataset/cls/*.mat (benchmark_RELEASE).')):
        if not osp.isdir(path):
            raise DatasetPrepError(f'{what} {path!r} does not exist; {hint}')
    voc_train, voc_val = (read_split(osp.join(split_dir, f'{s}.txt'), 'VOC split file')
                          for s in ('train', 'val'))
    sbd_train, sbd_val = (read_split(osp.join(sbd_root, 'dataset', f'{s}.txt'), 'SBD split file')
                          for s in ('train', 'val'))
    sbd_names = sorted(set(sbd_train) | set(sbd_val))
    voc_label_dir = osp.join(voc_root, 'SegmentationClass')
    for names, folder, suffix, where in (
            (sbd_names, cls_dir, '.mat', 'SBD dataset/train.txt or val.txt'),
            (voc_train, voc_label_dir, '.png', 'VOC train.txt')):
        missing = [f'{n}{suffix}' for n in names if not osp.isfile(osp.join(folder, n + suffix))]
        if missing:
            more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
            raise DatasetPrepError(f'{len(missing)} image(s) listed in {where} have no label '
                                   f'file in {folder}: {", ".join(missing[:5])}{more}.')
    # The default label directory is below the VOC root, whose links are not followed; an
    # --out-dir is the user's own choice of root.
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    label_root, label_prefix = (out_dir, '') if out_dir else (voc_root, 'SegmentationClassAug/')

    def convert(name: str) -> None:
        label = read_sbd_segmentation(osp.join(cls_dir, f'{name}.mat'))
        with open_within(label_root, f'{label_prefix}{name}.png') as f:
            Image.fromarray(label).save(f, format='PNG')

    def copy_voc(name: str) -> None:
        with open(osp.join(voc_label_dir, f'{name}.png'), 'rb') as src:
            data = src.read()
        with open_within(label_root, f'{label_prefix}{name}.png') as f:
            f.write(data)

    track(convert, sbd_names, 'converting SBD labels')
    track(copy_voc, voc_train, 'copying VOC train labels')
    trainaug, aug = make_aug_lists(voc_train, voc_val, sbd_train, sbd_val)
    for split, names in (('trainaug', trainaug), ('aug', aug)):
        with open_within(voc_root, f'ImageSets/Segmentation/{split}.txt', 'w', 'utf-8') as f:
            f.writelines(f'{name}\n' for name in names)
    print(f'converted {len(sbd_names)} SBD labels, copied {len(voc_train)} VOC train labels; '
          f'trainaug.txt: {len(trainaug)} images, aug.txt: {len(aug)} images')
    if len(trainaug) != VOC_TRAINAUG_SIZE:
        print(f'warning: trainaug has {len(trainaug)} images, the paper\'s has '
              f'{VOC_TRAINAUG_SIZE} (VOC 2012 train 1,464 + SBD train/val 11,355 - VOC val): '
              f'fine for a subset, but with the full datasets this means a split file is '
              f'incomplete.')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert SBD labels and write the VOC 2012 trainaug split files.')
    parser.add_argument('voc_root', help='the VOC2012 directory (VOCdevkit/VOC2012)')
    parser.add_argument('sbd_root', help='the SBD root holding dataset/cls/*.mat '
                        '(benchmark_RELEASE)')
    parser.add_argument('-o', '--out-dir', help='where the label PNGs go (default: '
                        'VOC_ROOT/SegmentationClassAug)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        prepare_voc_aug(args.voc_root, args.sbd_root, args.out_dir)
    except (DatasetPrepError, UnsafeWriteError) as error:
        sys.stderr.write(f'prepare_voc_aug: error: {error}\n')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
