"""Preparing the paper's datasets: VOC 2012 "trainaug" from SBD, and Cityscapes train ids.

DeepLabV3 (Sec. 4) trains on PASCAL VOC 2012 *trainaug*: the 1,464 VOC ``train`` images plus the
extra annotations of the Semantic Boundaries Dataset (SBD, Hariharan et al. 2011), 10,582
images in all, none of them in VOC ``val``. SBD stores its class labels as MATLAB files
(``dataset/cls/<name>.mat``, a struct ``GTcls`` whose ``Segmentation`` field is the HxW class
map); mmseg reads PNGs. :func:`prepare_voc_aug` converts them and writes the split files mmseg's
VOC-aug layout uses:

* ``SegmentationClassAug/<name>.png``: every SBD label, then VOC's own label for each VOC
  ``train`` image (VOC's annotation is finer than SBD's, and the paper's trainaug uses it), so
  ``trainaug.txt`` can be read from this one directory.
* ``ImageSets/Segmentation/aug.txt``: SBD (train + val) minus VOC train and VOC val, the images
  that ``ConcatDataset(train.txt from SegmentationClass, aug.txt from SegmentationClassAug)``
  adds to VOC train (9,118 for the full datasets).
* ``ImageSets/Segmentation/trainaug.txt``: VOC train + SBD (train + val) minus VOC val (10,582).

Cityscapes (App. C) is evaluated on 19 classes. Its ``*_gtFine_labelIds.png`` hold the 34 raw
label ids; :func:`prepare_cityscapes` maps them to the 19 *train ids* (everything else to the
ignore index 255) and writes ``*_gtFine_labelTrainIds.png`` next to them, what mmseg's
``CityscapesDataset`` reads. The mapping is written out in :data:`CITYSCAPES_ID_TO_TRAIN_ID`
(the table of ``cityscapesscripts.helpers.labels``, which is not a dependency here).

The command-line tools are ``tools/prepare_voc_aug.py`` and ``tools/prepare_cityscapes.py``;
``tools/check_dataset.py`` (:mod:`deeplabv3_plugin.utils.dataset_check`) checks the result.
"""
import os
import os.path as osp
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from PIL import Image

__all__ = [
    'CITYSCAPES_ID_TO_TRAIN_ID', 'VOC_TRAINAUG_SIZE', 'DatasetPrepError', 'Progress',
    'VocAugSummary', 'cityscapes_train_id_lut', 'convert_cityscapes_label', 'convert_sbd_mat',
    'find_cityscapes_label_ids', 'make_aug_lists', 'prepare_cityscapes', 'prepare_voc_aug',
    'read_sbd_segmentation', 'read_split', 'write_split'
]

#: Images in the paper's trainaug set (VOC 2012 train + SBD train/val - VOC 2012 val), Sec. 4.
VOC_TRAINAUG_SIZE = 10582
#: SBD class maps hold the 20 VOC classes and background (no void border, unlike VOC's PNGs).
SBD_NUM_CLASSES = 21

#: Cityscapes label id -> train id (19 evaluated classes). Every id not listed (unlabeled, ego
#: vehicle, rectification border, out of roi, static, dynamic, ground, parking, rail track,
#: guard rail, bridge, tunnel, polegroup, caravan, trailer, license plate) -> 255 (ignored).
CITYSCAPES_ID_TO_TRAIN_ID: Dict[int, int] = {
    7: 0,  # road
    8: 1,  # sidewalk
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    17: 5,  # pole
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}
#: Raw Cityscapes label ids run 0..33 (license plate, id -1, is not stored in the id images).
CITYSCAPES_NUM_LABEL_IDS = 34
IGNORE_INDEX = 255


class DatasetPrepError(RuntimeError):
    """A dataset file or directory is missing or not what the paper's layout expects."""


class Progress:
    """Minimal progress display on a text stream (stderr by default) for long scans.

    On a terminal it rewrites one line; otherwise (logs, CI) it prints a line about every 10%
    so that the log stays short.

    Args:
        total (int): Number of items.
        desc (str): What is being done, e.g. ``'converting SBD labels'``.
        stream (TextIO | None): Where to write. Default: ``sys.stderr``.
    """

    def __init__(self, total: int, desc: str, stream: Optional[TextIO] = None) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.monotonic()
        self._tty = bool(getattr(self.stream, 'isatty', lambda: False)())
        self._next_report = 0

    def update(self, count: int = 1) -> None:
        """Record ``count`` more finished items and show the progress when due."""
        self.done += count
        if self._tty:
            self._write('\r', end='')
        elif self.done >= self._next_report or self.done == self.total:
            self._write('', end='\n')
            self._next_report = self.done + max(self.total // 10, 1)

    def close(self) -> None:
        """Finish the line (terminal) and print the elapsed time."""
        if self._tty:
            self._write('\r', end='\n')
        elif self.total == 0:
            self._write('', end='\n')

    def _write(self, prefix: str, end: str) -> None:
        elapsed = time.monotonic() - self.start
        self.stream.write(f'{prefix}{self.desc}: {self.done}/{self.total} ({elapsed:.1f}s){end}')
        self.stream.flush()


def _track(items: Sequence, desc: str, func: Callable, stream: Optional[TextIO]) -> list:
    """Apply ``func`` to every item with a progress display; return the results in order."""
    progress = Progress(len(items), desc, stream)
    results = []
    for item in items:
        results.append(func(item))
        progress.update()
    progress.close()
    return results


def read_split(path: str, what: str = 'split file') -> List[str]:
    """Read a split file: one image name per line, blank lines and surrounding spaces ignored.

    Args:
        path (str): The ``.txt`` file.
        what (str): How to call it in an error message. Default: ``'split file'``.

    Returns:
        list[str]: The names in file order.

    Raises:
        DatasetPrepError: If the file does not exist.
    """
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
    """The trainaug and aug name lists from VOC's and SBD's splits (pure function).

    Both are disjoint from VOC val, so evaluating on val stays clean. Sorted for reproducible
    files.

    Args:
        voc_train (Sequence[str]): VOC 2012 ``train.txt`` names (1,464).
        voc_val (Sequence[str]): VOC 2012 ``val.txt`` names (1,449).
        sbd_train (Sequence[str]): SBD ``train.txt`` names (8,498).
        sbd_val (Sequence[str]): SBD ``val.txt`` names (2,857).

    Returns:
        tuple[list[str], list[str]]: ``trainaug`` = VOC train | SBD - VOC val (10,582) and
        ``aug`` = SBD - VOC train - VOC val (9,118), the part added to VOC train.
    """
    sbd = set(sbd_train) | set(sbd_val)
    val = set(voc_val)
    trainaug = sorted((set(voc_train) | sbd) - val)
    aug = sorted(sbd - set(voc_train) - val)
    return trainaug, aug


def read_sbd_segmentation(mat_path: str) -> np.ndarray:
    """Read the class map of one SBD ``cls/<name>.mat`` file.

    SBD saves a MATLAB struct ``GTcls`` with fields ``Boundaries``, ``Segmentation`` and
    ``CategoriesPresent``; ``scipy.io.loadmat`` returns it as a 1x1 structured array.

    Args:
        mat_path (str): Path of the ``.mat`` file.

    Returns:
        np.ndarray: ``(H, W)`` uint8 class indices in ``0..20``.

    Raises:
        DatasetPrepError: If the file cannot be read, has no ``GTcls.Segmentation``, the map is
            not 2-D, or it holds values outside ``0..20``.
    """
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
    """What :func:`prepare_voc_aug` wrote.

    Attributes:
        converted (int): SBD ``.mat`` files converted to PNG.
        voc_labels_copied (int): VOC train labels copied into ``SegmentationClassAug``.
        trainaug (list[str]): Names written to ``trainaug.txt``.
        aug (list[str]): Names written to ``aug.txt``.
        warnings (list[str]): Things a user should look at (e.g. unexpected counts).
    """

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
        voc_root (str): The ``VOC2012`` directory (holding ``JPEGImages``,
            ``SegmentationClass`` and ``ImageSets/Segmentation/{train,val}.txt``).
        sbd_root (str): SBD's root, holding ``dataset/cls/*.mat`` and
            ``dataset/{train,val}.txt`` (the ``benchmark_RELEASE`` directory).
        out_dir (str | None): Where the PNGs go. Default: ``<voc_root>/SegmentationClassAug``.
        stream (TextIO | None): Progress output. Default: stderr.

    Returns:
        VocAugSummary: Counts, the two lists and any warnings.

    Raises:
        DatasetPrepError: On a missing directory or split file, an SBD name without its
            ``.mat``, or an unreadable label; the message names the file.
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
            f'file in {cls_dir}, e.g. {", ".join(f"{n}.mat" for n in missing[:5])}.')
    voc_label_dir = osp.join(voc_root, 'SegmentationClass')
    missing = [n for n in voc_train if not osp.isfile(osp.join(voc_label_dir, f'{n}.png'))]
    if missing:
        raise DatasetPrepError(
            f'{len(missing)} image(s) of VOC train.txt have no label in {voc_label_dir}, e.g. '
            f'{", ".join(f"{n}.png" for n in missing[:5])}.')

    out_dir = out_dir or osp.join(voc_root, 'SegmentationClassAug')
    os.makedirs(out_dir, exist_ok=True)
    summary = VocAugSummary()

    def convert(name: str) -> None:
        convert_sbd_mat(osp.join(cls_dir, f'{name}.mat'), osp.join(out_dir, f'{name}.png'))

    _track(sbd_names, 'converting SBD labels', convert, stream)
    summary.converted = len(sbd_names)

    def copy_voc(name: str) -> None:
        shutil.copyfile(osp.join(voc_label_dir, f'{name}.png'), osp.join(out_dir, f'{name}.png'))

    _track(voc_train, 'copying VOC train labels', copy_voc, stream)
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
    """Map one ``*_labelIds.png`` (34 raw ids) to a ``*_labelTrainIds.png`` (19 classes + 255).

    Args:
        label_ids_path (str): Input PNG of raw label ids.
        train_ids_path (str): Output PNG of train ids.
        lut (np.ndarray | None): Lookup table from :func:`cityscapes_train_id_lut`.

    Raises:
        DatasetPrepError: If the file cannot be read, is not single-channel (e.g. a
            ``*_color.png``), or holds values that are not raw label ids (0..33).
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
    """Write ``*_labelTrainIds.png`` next to every ``*_labelIds.png`` of the given label trees.

    Args:
        cityscapes_root (str): The Cityscapes root (holding ``leftImg8bit`` and ``gtFine``).
        gt_dirs (Sequence[str]): Label trees to convert: ``gtFine`` (App. C, val table) and, for
            the test-set model, ``gtCoarse``. Default: ``('gtFine',)``.
        stream (TextIO | None): Progress output. Default: stderr.

    Returns:
        tuple[int, list[str]]: Number of files converted, and one message per file that could
        not be converted (the conversion goes on past bad files).

    Raises:
        DatasetPrepError: If a label tree is missing or holds no ``*_labelIds.png``.
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

        results = _track(files, f'converting {gt_dir} label ids to train ids', convert, stream)
        problems += [r for r in results if r is not None]
        converted += sum(r is None for r in results)
    return converted, problems
