"""Preparing the paper's datasets: VOC 2012 "trainaug" from SBD, and Cityscapes train ids.

DeepLabV3 (Sec. 4) trains on VOC 2012 *trainaug*: the 1,464 VOC ``train`` images plus the extra
annotations of SBD (Hariharan et al. 2011), 10,582 images, none in VOC ``val``. SBD stores class
maps as MATLAB files (``dataset/cls/<name>.mat``, struct ``GTcls.Segmentation``);
:func:`prepare_voc_aug` writes them as PNGs to ``SegmentationClassAug/`` (VOC's own, finer, label
for VOC ``train`` images) with mmseg's split files ``aug.txt`` (SBD - VOC train - VOC val, the
part ``ConcatDataset`` adds to VOC train) and ``trainaug.txt``.

Cityscapes (App. C) is evaluated on 19 classes: :func:`prepare_cityscapes` maps the 34 raw ids of
``*_gtFine_labelIds.png`` to ``*_gtFine_labelTrainIds.png``, what mmseg's ``CityscapesDataset``
reads, without needing ``cityscapesscripts``.
"""
import os
import os.path as osp
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from mmengine.utils import track_progress
from PIL import Image

from deeplabv3_plugin.engine.errors import listing

__all__ = [
    'CITYSCAPES_ID_TO_TRAIN_ID', 'VOC_TRAINAUG_SIZE', 'DatasetPrepError', 'VocAugSummary',
    'cityscapes_train_id_lut', 'convert_cityscapes_label', 'convert_sbd_mat',
    'find_cityscapes_label_ids', 'make_aug_lists', 'prepare_cityscapes', 'prepare_voc_aug',
    'read_sbd_segmentation', 'read_split', 'track', 'write_split'
]

#: Images in the paper's trainaug set (VOC 2012 train + SBD train/val - VOC 2012 val), Sec. 4.
VOC_TRAINAUG_SIZE = 10582
#: SBD class maps hold the 20 VOC classes and background (no void border, unlike VOC's PNGs).
SBD_NUM_CLASSES = 21

#: Cityscapes label id -> train id of the 19 evaluated classes (road, sidewalk, building, wall,
#: fence, pole, traffic light, traffic sign, vegetation, terrain, sky, person, rider, car, truck,
#: bus, train, motorcycle, bicycle); every other id -> 255, ignored.
CITYSCAPES_ID_TO_TRAIN_ID: Dict[int, int] = {label_id: train_id for train_id, label_id in enumerate(
    (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33))}
#: Raw Cityscapes label ids run 0..33 (license plate, id -1, is not stored in the id images).
CITYSCAPES_NUM_LABEL_IDS = 34
IGNORE_INDEX = 255


class DatasetPrepError(RuntimeError):
    """A dataset file or directory is missing or not what the paper's layout expects."""


def track(items: Sequence, desc: str, func: Callable, stream: Optional[TextIO]) -> list:
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


def write_split(path: str, names: Iterable[str]) -> None:
    """Write one name per line (the format of VOC's ``ImageSets/Segmentation/*.txt``)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{name}\n' for name in names)


def make_aug_lists(voc_train: Sequence[str], voc_val: Sequence[str], sbd_train: Sequence[str],
                   sbd_val: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``trainaug`` = VOC train | SBD - VOC val (10,582) and ``aug`` = SBD - VOC train - VOC val
    (9,118, what mmseg adds to VOC train), both sorted and disjoint from VOC val."""
    sbd = set(sbd_train) | set(sbd_val)
    val = set(voc_val)
    trainaug = sorted((set(voc_train) | sbd) - val)
    aug = sorted(sbd - set(voc_train) - val)
    return trainaug, aug


def read_sbd_segmentation(mat_path: str) -> np.ndarray:
    """The ``(H, W)`` uint8 class map (0..20) of an SBD ``cls/<name>.mat`` (struct ``GTcls``)."""
    from scipy.io import loadmat  # scipy is an mmseg dependency; imported only when converting
    try:
        data = loadmat(mat_path)
    except Exception as error:  # noqa: BLE001  (scipy raises several types for bad files)
        raise DatasetPrepError(f'{mat_path}: not a readable MATLAB file ({error}).') from error
    struct = data.get('GTcls')
    names = getattr(getattr(struct, 'dtype', None), 'names', None) or ()
    if struct is None or 'Segmentation' not in names:
        keys = sorted(k for k in data if not k.startswith('__'))
        raise DatasetPrepError(
            f'{mat_path}: expected an SBD class file with a struct GTcls holding a Segmentation '
            f'field (SBD dataset/cls/*.mat), found variables {keys} with fields {list(names)}. '
            f'Instance files (dataset/inst/*.mat, GTinst) are not class maps.')
    seg = np.asarray(struct['Segmentation'].flat[0])
    if seg.ndim != 2:
        raise DatasetPrepError(f'{mat_path}: GTcls.Segmentation has shape {seg.shape}, expected '
                               'a 2-D (H, W) class map.')
    if seg.size and (seg.min() < 0 or seg.max() >= SBD_NUM_CLASSES):
        bad = sorted(int(v) for v in np.unique(seg) if not 0 <= v < SBD_NUM_CLASSES)
        raise DatasetPrepError(f'{mat_path}: GTcls.Segmentation holds values {bad[:8]}, expected '
                               f'class indices 0..{SBD_NUM_CLASSES - 1}.')
    return seg.astype(np.uint8)


def convert_sbd_mat(mat_path: str, png_path: str) -> None:
    """Convert one SBD class ``.mat`` into a single-channel PNG of class indices."""
    Image.fromarray(read_sbd_segmentation(mat_path)).save(png_path, format='PNG')


@dataclass
class VocAugSummary:
    """What :func:`prepare_voc_aug` wrote, and counts a user should look at (``warnings``)."""

    converted: int = 0
    voc_labels_copied: int = 0
    trainaug: List[str] = field(default_factory=list)
    aug: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _require_dir(path: str, what: str, hint: str) -> None:
    if not osp.isdir(path):
        raise DatasetPrepError(f'{what} {path!r} does not exist; {hint}')


def prepare_voc_aug(voc_root: str,
                    sbd_root: str,
                    out_dir: Optional[str] = None,
                    stream: Optional[TextIO] = None) -> VocAugSummary:
    """Build VOC 2012 trainaug from VOC 2012 and SBD (see the module docstring).

    Args:
        voc_root: The ``VOC2012`` directory.
        sbd_root: SBD's ``benchmark_RELEASE`` directory (``dataset/cls/*.mat``,
            ``dataset/{train,val}.txt``).
        out_dir: Where the PNGs go. Default: ``<voc_root>/SegmentationClassAug``.
        stream: Progress output. Default: stderr.

    Raises:
        DatasetPrepError: Naming the missing directory, split file or label, or the bad file.
    """
    split_dir = osp.join(voc_root, 'ImageSets', 'Segmentation')
    cls_dir = osp.join(sbd_root, 'dataset', 'cls')
    _require_dir(voc_root, 'VOC root', 'pass the VOC2012 directory of VOCdevkit.')
    _require_dir(split_dir, 'VOC split directory', 'is this the VOC2012 directory?')
    _require_dir(cls_dir, 'SBD class-label directory',
                 'pass the SBD root that contains dataset/cls/*.mat (benchmark_RELEASE).')
    voc_train = read_split(osp.join(split_dir, 'train.txt'), 'VOC split file')
    voc_val = read_split(osp.join(split_dir, 'val.txt'), 'VOC split file')
    sbd_train = read_split(osp.join(sbd_root, 'dataset', 'train.txt'), 'SBD split file')
    sbd_val = read_split(osp.join(sbd_root, 'dataset', 'val.txt'), 'SBD split file')
    sbd_names = sorted(set(sbd_train) | set(sbd_val))
    missing = [n for n in sbd_names if not osp.isfile(osp.join(cls_dir, f'{n}.mat'))]
    if missing:
        raise DatasetPrepError(
            f'{len(missing)} image(s) listed in SBD dataset/train.txt or val.txt have no label '
            f'file in {cls_dir}: {listing(f"{n}.mat" for n in missing)}.')
    voc_label_dir = osp.join(voc_root, 'SegmentationClass')
    missing = [n for n in voc_train if not osp.isfile(osp.join(voc_label_dir, f'{n}.png'))]
    if missing:
        raise DatasetPrepError(
            f'{len(missing)} image(s) of VOC train.txt have no label in {voc_label_dir}: '
            f'{listing(f"{n}.png" for n in missing)}.')

    out_dir = out_dir or osp.join(voc_root, 'SegmentationClassAug')
    os.makedirs(out_dir, exist_ok=True)
    summary = VocAugSummary()

    def convert(name: str) -> None:
        convert_sbd_mat(osp.join(cls_dir, f'{name}.mat'), osp.join(out_dir, f'{name}.png'))

    track(sbd_names, 'converting SBD labels', convert, stream)
    summary.converted = len(sbd_names)

    def copy_voc(name: str) -> None:
        shutil.copyfile(osp.join(voc_label_dir, f'{name}.png'), osp.join(out_dir, f'{name}.png'))

    track(voc_train, 'copying VOC train labels', copy_voc, stream)
    summary.voc_labels_copied = len(voc_train)

    summary.trainaug, summary.aug = make_aug_lists(voc_train, voc_val, sbd_train, sbd_val)
    write_split(osp.join(split_dir, 'trainaug.txt'), summary.trainaug)
    write_split(osp.join(split_dir, 'aug.txt'), summary.aug)
    if len(summary.trainaug) != VOC_TRAINAUG_SIZE:
        summary.warnings.append(
            f'trainaug has {len(summary.trainaug)} images, the paper\'s has {VOC_TRAINAUG_SIZE} '
            f'(VOC 2012 train 1,464 + SBD train/val 11,355 - VOC val): fine for a subset, but '
            f'with the full datasets this means a split file is incomplete.')
    return summary


def cityscapes_train_id_lut() -> np.ndarray:
    """A 256-entry lookup table label id -> train id (255 for every id not evaluated)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def convert_cityscapes_label(label_ids_path: str, train_ids_path: str,
                             lut: Optional[np.ndarray] = None) -> None:
    """Map one ``*_labelIds.png`` (raw ids 0..33) to a ``*_labelTrainIds.png`` (19 classes + 255).

    Raises:
        DatasetPrepError: The file is unreadable, not single-channel (a ``*_color.png``) or
            holds values that are not raw label ids.
    """
    try:
        with Image.open(label_ids_path) as image:
            ids = np.array(image)
    except Exception as error:  # noqa: BLE001  (PIL raises several types for bad files)
        raise DatasetPrepError(f'{label_ids_path}: not a readable PNG ({error}).') from error
    if ids.ndim != 2:
        raise DatasetPrepError(
            f'{label_ids_path}: has shape {ids.shape}, expected a single-channel map of raw label '
            f'ids (*_labelIds.png, not *_color.png).')
    bad = np.unique(ids[ids >= CITYSCAPES_NUM_LABEL_IDS]) if ids.size else ids
    if bad.size:
        raise DatasetPrepError(
            f'{label_ids_path}: holds values {bad[:8].tolist()}, expected raw Cityscapes label '
            f'ids 0..{CITYSCAPES_NUM_LABEL_IDS - 1} (is it already a *_labelTrainIds.png?).')
    lut = cityscapes_train_id_lut() if lut is None else lut
    Image.fromarray(lut[ids.astype(np.intp)]).save(train_ids_path, format='PNG')


def find_cityscapes_label_ids(gt_root: str) -> List[str]:
    """Every ``*_labelIds.png`` under ``gt_root`` (e.g. ``cityscapes/gtFine``), sorted."""
    found = []
    for directory, _, files in os.walk(gt_root):
        found += [osp.join(directory, f) for f in files if f.endswith('_labelIds.png')]
    return sorted(found)


def prepare_cityscapes(cityscapes_root: str,
                       gt_dirs: Sequence[str] = ('gtFine', ),
                       stream: Optional[TextIO] = None) -> Tuple[int, List[str]]:
    """Write ``*_labelTrainIds.png`` next to every ``*_labelIds.png`` of the label trees.

    Args:
        cityscapes_root: The Cityscapes root (``leftImg8bit``, ``gtFine``).
        gt_dirs: Label trees: ``gtFine`` (App. C) and, for the test-set model, ``gtCoarse``.
        stream: Progress output. Default: stderr.

    Returns:
        Files converted, and one message per file that could not be (the rest go on).

    Raises:
        DatasetPrepError: A label tree is missing or holds no ``*_labelIds.png``.
    """
    lut = cityscapes_train_id_lut()
    converted, problems = 0, []
    for gt_dir in gt_dirs:
        gt_root = osp.join(cityscapes_root, gt_dir)
        _require_dir(gt_root, f'Cityscapes label tree {gt_dir!r}',
                     'pass the Cityscapes root that contains it (download gtFine_trainvaltest).')
        files = find_cityscapes_label_ids(gt_root)
        if not files:
            raise DatasetPrepError(f'no *_labelIds.png under {gt_root!r}: expected '
                                   f'{gt_dir}/<split>/<city>/<name>_{gt_dir}_labelIds.png.')

        def convert(path: str) -> Optional[str]:
            try:
                convert_cityscapes_label(path, path[:-len('_labelIds.png')] +
                                         '_labelTrainIds.png', lut)
            except DatasetPrepError as error:
                return str(error)
            return None

        results = track(files, f'converting {gt_dir} label ids to train ids', convert, stream)
        problems += [r for r in results if r is not None]
        converted += sum(r is None for r in results)
    return converted, problems
