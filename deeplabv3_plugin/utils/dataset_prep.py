"""Preparing the paper's datasets: VOC 2012 trainaug from SBD, and Cityscapes train ids.

DeepLabV3 (Sec. 4) trains on VOC 2012 *trainaug* (10,582 images: VOC train plus SBD's extra
annotations, none in VOC val); SBD stores class maps as MATLAB files. Cityscapes (App. C) is
scored on 19 classes: raw ``*_labelIds.png`` are mapped to the ``*_labelTrainIds.png`` mmseg
reads, without ``cityscapesscripts``.
"""
import glob
import os
import os.path as osp
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from mmengine.utils import track_progress
from PIL import Image

from deeplabv3_plugin.engine.errors import listing

#: Images in the paper's trainaug set (VOC 2012 train + SBD train/val - VOC 2012 val), Sec. 4.
VOC_TRAINAUG_SIZE = 10582
#: SBD class maps hold the 20 VOC classes and background (no void border, unlike VOC's PNGs).
SBD_NUM_CLASSES = 21
#: Cityscapes label id -> train id of the 19 evaluated classes; every other id -> 255.
CITYSCAPES_ID_TO_TRAIN_ID: Dict[int, int] = {label_id: train_id for train_id, label_id in enumerate(
    (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33))}
#: Raw Cityscapes label ids run 0..33 (license plate, id -1, is not stored in the id images).
CITYSCAPES_NUM_LABEL_IDS = 34
IGNORE_INDEX = 255


class DatasetPrepError(RuntimeError):
    """A dataset file or directory is missing or not what the paper's layout expects."""


def track(items: Sequence, desc: str, func: Callable, stream: Optional[TextIO] = None) -> list:
    """``func`` over ``items`` with mmengine's progress bar on ``stream`` (default stderr)."""
    stream = stream or sys.stderr
    stream.write(f'{desc}: {len(items)} file(s)\n')
    return track_progress(func, list(items), file=stream) if items else []


def read_split(path: str, what: str = 'split file') -> List[str]:
    """The names of a split file, one per line (blank lines and spaces ignored)."""
    if not osp.isfile(path):
        raise DatasetPrepError(f'{what} {path!r} does not exist.')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def _require_dir(path: str, what: str, hint: str) -> None:
    if not osp.isdir(path):
        raise DatasetPrepError(f'{what} {path!r} does not exist; {hint}')


def make_aug_lists(voc_train: Sequence[str], voc_val: Sequence[str], sbd_train: Sequence[str],
                   sbd_val: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``trainaug`` = VOC train | SBD - VOC val (10,582) and ``aug`` = SBD - VOC train - VOC val
    (9,118, what mmseg's ``ConcatDataset`` adds to VOC train), both sorted."""
    sbd, val = set(sbd_train) | set(sbd_val), set(voc_val)
    return sorted((set(voc_train) | sbd) - val), sorted(sbd - set(voc_train) - val)


def read_sbd_segmentation(mat_path: str) -> np.ndarray:
    """The ``(H, W)`` uint8 class map (0..20) of an SBD ``cls/<name>.mat`` (struct ``GTcls``)."""
    from scipy.io import loadmat  # scipy is an mmseg dependency; imported only when converting
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


@dataclass
class VocAugSummary:
    """What :func:`prepare_voc_aug` wrote, and counts a user should look at (``warnings``)."""

    converted: int = 0
    voc_labels_copied: int = 0
    trainaug: List[str] = field(default_factory=list)
    aug: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def prepare_voc_aug(voc_root: str, sbd_root: str, out_dir: Optional[str] = None,
                    stream: Optional[TextIO] = None) -> VocAugSummary:
    """Write SBD's class maps as PNGs to ``SegmentationClassAug/`` (VOC's own, finer, labels for
    VOC train images) and the split files ``trainaug.txt`` and ``aug.txt``.

    ``sbd_root`` is SBD's ``benchmark_RELEASE`` (``dataset/cls/*.mat``,
    ``dataset/{train,val}.txt``); ``out_dir`` defaults to ``<voc_root>/SegmentationClassAug``.
    """
    split_dir = osp.join(voc_root, 'ImageSets', 'Segmentation')
    cls_dir = osp.join(sbd_root, 'dataset', 'cls')
    _require_dir(voc_root, 'VOC root', 'pass the VOC2012 directory of VOCdevkit.')
    _require_dir(split_dir, 'VOC split directory', 'is this the VOC2012 directory?')
    _require_dir(cls_dir, 'SBD class-label directory',
                 'pass the SBD root that contains dataset/cls/*.mat (benchmark_RELEASE).')
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
            raise DatasetPrepError(f'{len(missing)} image(s) listed in {where} have no label '
                                   f'file in {folder}: {listing(missing)}.')
    out_dir = out_dir or osp.join(voc_root, 'SegmentationClassAug')
    os.makedirs(out_dir, exist_ok=True)

    def convert(name: str) -> None:
        label = read_sbd_segmentation(osp.join(cls_dir, f'{name}.mat'))
        Image.fromarray(label).save(osp.join(out_dir, f'{name}.png'), format='PNG')

    def copy_voc(name: str) -> None:
        shutil.copyfile(osp.join(voc_label_dir, f'{name}.png'), osp.join(out_dir, f'{name}.png'))

    track(sbd_names, 'converting SBD labels', convert, stream)
    track(voc_train, 'copying VOC train labels', copy_voc, stream)
    summary = VocAugSummary(len(sbd_names), len(voc_train))
    summary.trainaug, summary.aug = make_aug_lists(voc_train, voc_val, sbd_train, sbd_val)
    for split, names in (('trainaug', summary.trainaug), ('aug', summary.aug)):
        with open(osp.join(split_dir, f'{split}.txt'), 'w', encoding='utf-8') as f:
            f.writelines(f'{name}\n' for name in names)
    if len(summary.trainaug) != VOC_TRAINAUG_SIZE:
        summary.warnings.append(
            f'trainaug has {len(summary.trainaug)} images, the paper\'s has {VOC_TRAINAUG_SIZE} '
            f'(VOC 2012 train 1,464 + SBD train/val 11,355 - VOC val): fine for a subset, but '
            f'with the full datasets this means a split file is incomplete.')
    return summary


def cityscapes_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table label id -> train id (255 for every id not evaluated)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[list(CITYSCAPES_ID_TO_TRAIN_ID)] = list(CITYSCAPES_ID_TO_TRAIN_ID.values())
    return lut


def convert_cityscapes_label(label_ids_path: str, train_ids_path: str) -> None:
    """Map one ``*_labelIds.png`` (raw ids 0..33) to a ``*_labelTrainIds.png``."""
    try:
        with Image.open(label_ids_path) as image:
            ids = np.array(image)
    except Exception as error:  # noqa: BLE001  (PIL raises several types for bad files)
        raise DatasetPrepError(f'{label_ids_path}: not a readable PNG ({error}).') from error
    if ids.ndim != 2:
        raise DatasetPrepError(
            f'{label_ids_path}: has shape {ids.shape}, expected a single-channel map of raw label '
            f'ids (*_labelIds.png, not *_color.png).')
    bad = np.unique(ids[ids >= CITYSCAPES_NUM_LABEL_IDS])
    if bad.size:
        raise DatasetPrepError(
            f'{label_ids_path}: holds values {bad[:8].tolist()}, expected raw Cityscapes label '
            f'ids 0..{CITYSCAPES_NUM_LABEL_IDS - 1} (is it already a *_labelTrainIds.png?).')
    Image.fromarray(cityscapes_train_id_lut()[ids]).save(train_ids_path, format='PNG')


def prepare_cityscapes(cityscapes_root: str, gt_dirs: Sequence[str] = ('gtFine', ),
                       stream: Optional[TextIO] = None) -> Tuple[int, List[str]]:
    """Write ``*_labelTrainIds.png`` next to every ``*_labelIds.png`` of the label trees
    (``gtFine``; ``gtCoarse`` for the test-set model). Returns the count converted and one
    message per file that could not be (the rest go on)."""
    converted, problems = 0, []
    for gt_dir in gt_dirs:
        gt_root = osp.join(cityscapes_root, gt_dir)
        _require_dir(gt_root, f'Cityscapes label tree {gt_dir!r}',
                     'pass the Cityscapes root that contains it (download gtFine_trainvaltest).')
        files = sorted(glob.glob(osp.join(gt_root, '**', '*_labelIds.png'), recursive=True))
        if not files:
            raise DatasetPrepError(f'no *_labelIds.png under {gt_root!r}: expected '
                                   f'{gt_dir}/<split>/<city>/<name>_{gt_dir}_labelIds.png.')

        def convert(path: str) -> Optional[str]:
            try:
                convert_cityscapes_label(path, path[:-len('_labelIds.png')] + '_labelTrainIds.png')
            except DatasetPrepError as error:
                return str(error)
            return None

        results = track(files, f'converting {gt_dir} label ids to train ids', convert, stream)
        problems += [r for r in results if r is not None]
        converted += results.count(None)
    return converted, problems
