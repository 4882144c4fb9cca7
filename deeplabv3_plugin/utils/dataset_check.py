"""Check a prepared VOC 2012 / Cityscapes tree before a 30K-iteration training run.

A wrong dataset shows up late and vaguely: a missing file fails inside a dataloader worker, a
colour-coded label trains a wrong model silently, and a trainaug list holding val images makes
the val mIoU meaningless. :func:`check_tree` reads the tree once and reports, per split, the count
against the paper's, missing images/labels, unreadable or multi-channel labels, size mismatches,
label values outside the classes, and training splits that share images with ``val``. Errors fail
``tools/check_dataset.py``; count mismatches and absent optional splits are warnings.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from PIL import Image

from .dataset_prep import IGNORE_INDEX, read_split, track

__all__ = ['CheckReport', 'SplitResult', 'check_label_file', 'check_tree', 'detect_layout']

#: How many problems of one kind a split lists before summarising the rest.
MAX_LISTED = 10


@dataclass(frozen=True)
class SplitSpec:
    """Where one split's images and labels are, and what the paper's dataset has."""

    name: str
    list_file: Optional[str]  # relative to the root; None: scan img_dir
    img_dir: str
    label_dir: str
    img_suffix: str
    label_suffix: str
    expected: Optional[int]
    required: bool
    hint: str = ''


VOC_SPLITS = (
    SplitSpec('train', 'ImageSets/Segmentation/train.txt', 'JPEGImages', 'SegmentationClass',
              '.jpg', '.png', 1464, True),
    SplitSpec('val', 'ImageSets/Segmentation/val.txt', 'JPEGImages', 'SegmentationClass', '.jpg',
              '.png', 1449, True),
    SplitSpec('trainval', 'ImageSets/Segmentation/trainval.txt', 'JPEGImages',
              'SegmentationClass', '.jpg', '.png', 2913, False,
              'part of VOC 2012; used by the stage-2 (test-set) model'),
    SplitSpec('aug', 'ImageSets/Segmentation/aug.txt', 'JPEGImages', 'SegmentationClassAug', '.jpg',
              '.png', 9118, False, 'run tools/prepare_voc_aug.py for the paper\'s trainaug'),
    SplitSpec('trainaug', 'ImageSets/Segmentation/trainaug.txt', 'JPEGImages',
              'SegmentationClassAug', '.jpg', '.png', 10582, False,
              'run tools/prepare_voc_aug.py for the paper\'s trainaug'),
)
CITYSCAPES_SPLITS = tuple(
    SplitSpec(split, None, f'leftImg8bit/{split}', f'{gt}/{split}', '_leftImg8bit.png',
              f'_{gt}_labelTrainIds.png', count, required, hint)
    for split, gt, count, required, hint in (
        ('train', 'gtFine', 2975, True, ''),
        ('val', 'gtFine', 500, True, ''),
        ('train_extra', 'gtCoarse', 19998, False,
         'coarse labels, only for the test-set model (Tab. 13)'),
    ))
LAYOUTS = {
    'voc': (VOC_SPLITS, 21, 'PASCAL VOC 2012', 'JPEGImages'),
    'cityscapes': (CITYSCAPES_SPLITS, 19, 'Cityscapes', 'leftImg8bit'),
}


@dataclass
class SplitResult:
    """One split: images listed (None when absent), the paper's count, errors and warnings."""

    name: str
    count: Optional[int] = None
    expected: Optional[int] = None
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """All splits of one ``'voc'`` or ``'cityscapes'`` tree; :meth:`format` is the report."""

    root: str
    layout: str
    errors: List[str] = field(default_factory=list)
    splits: List[SplitResult] = field(default_factory=list)

    @property
    def num_errors(self) -> int:
        return len(self.errors) + sum(len(s.errors) for s in self.splits)

    @property
    def num_warnings(self) -> int:
        return sum(len(s.warnings) for s in self.splits)

    def ok(self, strict: bool = False) -> bool:
        """No errors (and, with ``strict``, no warnings either)."""
        return self.num_errors == 0 and (not strict or self.num_warnings == 0)

    def format(self, strict: bool = False) -> str:
        """The human-readable report."""
        lines = [f'Checking the {LAYOUTS[self.layout][2]} tree at {self.root}']
        for split in self.splits:
            if split.count is None:
                status = 'absent'
            elif split.errors:
                status = f'{len(split.errors)} problem(s)'
            else:
                status = 'OK'
            count = '-' if split.count is None else str(split.count)
            expected = '' if split.expected is None else f' (paper: {split.expected})'
            lines.append(f'  {split.name:<12} {count:>6} images{expected:<16} {status}')
        errors = self.errors + [f'{s.name}: {e}' for s in self.splits for e in s.errors]
        warnings = [f'{s.name}: {w}' for s in self.splits for w in s.warnings]
        if errors:
            lines += ['', 'Errors:'] + [f'  - {e}' for e in errors]
        if warnings:
            lines += ['', 'Warnings:'] + [f'  - {w}' for w in warnings]
        verdict = 'OK' if self.ok(strict) else 'FAILED'
        lines += ['', f'Result: {self.num_errors} error(s), {self.num_warnings} warning(s) -> '
                  f'{verdict}' + (' (--strict: warnings count as errors)' if strict else '')]
        return '\n'.join(lines)


def detect_layout(root: str) -> str:
    """``'voc'`` (``JPEGImages/``) or ``'cityscapes'`` (``leftImg8bit/``); FileNotFoundError else."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'dataset root {root!r} does not exist or is not a directory.')
    for layout, (_, _, _, marker) in LAYOUTS.items():
        if osp.isdir(osp.join(root, marker)):
            return layout
    raise FileNotFoundError(
        f'{root!r} is neither a VOC 2012 root (JPEGImages/, SegmentationClass/, ImageSets/) nor '
        'a Cityscapes root (leftImg8bit/, gtFine/); pass the directory that contains them.')


def check_label_file(img_path: str, label_path: str, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> List[Tuple[str, str]]:
    """``(kind, message)`` per problem of an (image, label) pair, each message naming the file.

    Kinds: ``'unreadable'``, ``'not single-channel'``, ``'size mismatch'``, ``'label values'``
    (neither a class ``0..num_classes-1`` nor ``ignore_index``). Only the image header is read.
    """
    try:
        with Image.open(img_path) as image:
            img_size = image.size  # (W, H), from the header
    except Exception as error:  # noqa: BLE001  (PIL raises several types for bad files)
        return [('unreadable', f'image {img_path} cannot be read ({error})')]
    try:
        with Image.open(label_path) as image:
            mode = image.mode
            label = np.array(image)
    except Exception as error:  # noqa: BLE001
        return [('unreadable', f'label {label_path} cannot be read ({error})')]
    if label.ndim != 2:
        return [('not single-channel',
                 f'label {label_path} has shape {label.shape} (mode {mode}), expected a '
                 'single-channel map of class indices (a colour-coded label must be converted)')]
    problems = []
    if (label.shape[1], label.shape[0]) != img_size:
        problems.append(('size mismatch',
                         f'label {label_path} is {label.shape[1]}x{label.shape[0]} but its image '
                         f'{img_path} is {img_size[0]}x{img_size[1]} (W x H)'))
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        problems.append(('label values',
                         f'label {label_path} holds values {bad[:8].tolist()} outside the '
                         f'{num_classes} classes 0..{num_classes - 1} (and ignore '
                         f'{ignore_index})'))
    return problems


def _list_split(root: str, spec: SplitSpec) -> Tuple[Optional[List[str]], List[str]]:
    """Names of a split (None if the split is absent) and duplicate-name warnings."""
    if spec.list_file is not None:
        path = osp.join(root, spec.list_file)
        if not osp.isfile(path):
            return None, []
        names = read_split(path)
        dups = len(names) - len(set(names))
        warnings = [f'{spec.list_file} lists {dups} name(s) twice'] if dups else []
        return names, warnings
    img_root = osp.join(root, spec.img_dir)
    if not osp.isdir(img_root):
        return None, []
    names = []
    for directory, _, files in os.walk(img_root):
        rel = osp.relpath(directory, img_root)
        names += [osp.normpath(osp.join(rel, f[:-len(spec.img_suffix)])) for f in files
                  if f.endswith(spec.img_suffix)]
    return sorted(names), []


def _check_split(root: str, spec: SplitSpec, names: List[str], num_classes: int,
                 check_labels: bool, cache: Dict[Tuple[str, str], List[Tuple[str, str]]],
                 stream: Optional[TextIO]) -> List[str]:
    """Every problem of one split's files, grouped by kind, each kind capped at MAX_LISTED."""
    source = spec.list_file or spec.img_dir

    def check(name: str) -> List[Tuple[str, str]]:
        img = osp.join(root, spec.img_dir, name + spec.img_suffix)
        label = osp.join(root, spec.label_dir, name + spec.label_suffix)
        if not osp.isfile(img):
            return [('missing image', f'image {img} (listed in {source}) does not exist')]
        if not osp.isfile(label):
            return [('missing label', f'label {label} of image {img} does not exist')]
        if not check_labels:
            return []
        if (img, label) not in cache:
            cache[img, label] = check_label_file(img, label, num_classes)
        return cache[img, label]

    kinds: Dict[str, List[str]] = {}
    for problems in track(names, f'checking {spec.name}', check, stream):
        for kind, problem in problems:
            kinds.setdefault(kind, []).append(problem)
    errors = []
    for problems in kinds.values():
        errors += problems[:MAX_LISTED]
        if len(problems) > MAX_LISTED:
            errors.append(f'... and {len(problems) - MAX_LISTED} more like the one above')
    return errors


def check_tree(root: str,
               layout: str = 'auto',
               splits: Optional[Sequence[str]] = None,
               check_labels: bool = True,
               stream: Optional[TextIO] = None) -> CheckReport:
    """Check a prepared VOC 2012 or Cityscapes tree (see the module docstring).

    Args:
        root: ``VOCdevkit/VOC2012`` or the Cityscapes root.
        layout: ``'voc'``, ``'cityscapes'`` or ``'auto'`` (from the directories).
        splits: Only these splits; None checks all of the layout's.
        check_labels: Decode every label (values, sizes); False only checks that files exist.
        stream: Progress output. Default: stderr.

    Raises:
        FileNotFoundError: ``root`` is not a dataset root.
        ValueError: An unknown ``layout`` or split name.
    """
    if layout == 'auto':
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f'layout={layout!r} is not allowed: expected one of '
                         f'{("auto", ) + tuple(LAYOUTS)}.')
    specs, num_classes, _, _ = LAYOUTS[layout]
    known = [s.name for s in specs]
    unknown = [s for s in (splits or ()) if s not in known]
    if unknown:
        raise ValueError(f'splits={list(splits)} has unknown split(s) {unknown} for the '
                         f'{layout} layout: expected some of {known}.')
    report = CheckReport(root=root, layout=layout)
    cache: Dict[Tuple[str, str], List[Tuple[str, str]]] = {}
    listed: Dict[str, List[str]] = {}
    for spec in specs:
        if splits and spec.name not in splits:
            continue
        result = SplitResult(spec.name, expected=spec.expected)
        names, result.warnings = _list_split(root, spec)
        report.splits.append(result)
        if names is None:
            where = spec.list_file or spec.img_dir
            message = f'{where} does not exist' + (f' ({spec.hint})' if spec.hint else '')
            (result.errors if spec.required else result.warnings).append(message)
            continue
        result.count = len(names)
        listed[spec.name] = names
        if spec.expected is not None and len(names) != spec.expected:
            result.warnings.append(f'{len(names)} images, the paper\'s dataset has '
                                   f'{spec.expected} (incomplete download or a subset?)')
        result.errors += _check_split(root, spec, names, num_classes, check_labels, cache, stream)
    val = set(listed.get('val', ()))
    for name in ('train', 'aug', 'trainaug'):
        leak = sorted(val.intersection(listed.get(name, ())))
        if leak:
            report.errors.append(
                f'{len(leak)} image(s) of {name} are also in val (e.g. {", ".join(leak[:3])}): '
                'the val mIoU would be measured on training images')
    return report
