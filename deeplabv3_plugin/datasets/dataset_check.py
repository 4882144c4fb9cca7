"""Check a prepared VOC 2012 / Cityscapes tree before a 30K-iteration training run.

A missing file fails late in a dataloader worker, a colour-coded label trains a wrong model
silently, and a trainaug list holding val images makes the val mIoU meaningless: each is reported
per split, with counts against the paper's. Count mismatches and absent optional splits warn.
"""
import glob
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np
from mmengine.utils import track_progress
from PIL import Image

from .transforms.check_sample import label_problems

#: How many problems of one kind a split lists before summarising the rest.
MAX_LISTED = 10
_AUG_HINT = 'run tools/prepare_voc_aug.py for the paper\'s trainaug'
# name, split file (None: scan img_dir), img_dir, label_dir, suffixes, paper count, required, hint
_VOC = ('ImageSets/Segmentation/{}.txt', 'JPEGImages', '.jpg', '.png')
LAYOUTS = {
    'voc': ('PASCAL VOC 2012', 'JPEGImages', 21, [
        (name, _VOC[0].format(name), _VOC[1], label_dir, _VOC[2], _VOC[3], count, required, hint)
        for name, label_dir, count, required, hint in (
            ('train', 'SegmentationClass', 1464, True, ''),
            ('val', 'SegmentationClass', 1449, True, ''),
            ('trainval', 'SegmentationClass', 2913, False,
             'part of VOC 2012; used by the stage-2 (test-set) model'),
            ('aug', 'SegmentationClassAug', 9118, False, _AUG_HINT),
            ('trainaug', 'SegmentationClassAug', 10582, False, _AUG_HINT))]),
    'cityscapes': ('Cityscapes', 'leftImg8bit', 19, [
        (split, None, f'leftImg8bit/{split}', f'{gt}/{split}', '_leftImg8bit.png',
         f'_{gt}_labelTrainIds.png', count, required, hint)
        for split, gt, count, required, hint in (
            ('train', 'gtFine', 2975, True, ''), ('val', 'gtFine', 500, True, ''),
            ('train_extra', 'gtCoarse', 19998, False,
             'coarse labels, only for the test-set model (Tab. 13)'))]),
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

    def ok(self, strict: bool = False) -> bool:
        """No errors (and, with ``strict``, no warnings either)."""
        errors, warnings = self._problems()
        return not errors and (not strict or not warnings)

    def _problems(self) -> Tuple[List[str], List[str]]:
        return (self.errors + [f'{s.name}: {e}' for s in self.splits for e in s.errors],
                [f'{s.name}: {w}' for s in self.splits for w in s.warnings])

    def format(self, strict: bool = False) -> str:
        lines = [f'Checking the {LAYOUTS[self.layout][0]} tree at {self.root}']
        for s in self.splits:
            status = ('absent' if s.count is None else
                      f'{len(s.errors)} problem(s)' if s.errors else 'OK')
            count = '-' if s.count is None else str(s.count)
            expected = '' if s.expected is None else f' (paper: {s.expected})'
            lines.append(f'  {s.name:<12} {count:>6} images{expected:<16} {status}')
        errors, warnings = self._problems()
        for title, items in (('Errors:', errors), ('Warnings:', warnings)):
            if items:
                lines += ['', title] + [f'  - {item}' for item in items]
        lines += ['', f'Result: {len(errors)} error(s), {len(warnings)} warning(s) -> '
                  f'{"OK" if self.ok(strict) else "FAILED"}' +
                  (' (--strict: warnings count as errors)' if strict else '')]
        return '\n'.join(lines)


def check_label_file(img_path: str, label_path: str, num_classes: int,
                     ignore_index: int = 255) -> List[Tuple[str, str]]:
    """``(kind, message)`` per problem of an (image, label) pair, naming the file: ``'unreadable'``
    or a kind of :func:`~deeplabv3_plugin.datasets.transforms.label_problems`. Only the image
    header is read."""
    try:
        with Image.open(img_path) as image:
            width, height = image.size
        with Image.open(label_path) as image:
            label = np.array(image)
    except Exception as error:  # noqa: BLE001  (PIL raises several types for bad files)
        return [('unreadable', f'{img_path} or its label {label_path} cannot be read ({error})')]
    return [(kind, f'label {label_path} {what}')
            for kind, what in label_problems(label, (height, width), num_classes, ignore_index)]


def _list_split(root: str, list_file: Optional[str], img_dir: str,
                img_suffix: str) -> Optional[List[str]]:
    """Names of a split, or None if the split is absent."""
    if list_file is not None:
        path = osp.join(root, list_file)
        if not osp.isfile(path):
            return None
        with open(path, encoding='utf-8') as f:  # one name a line, blank lines ignored
            return [line.strip() for line in f if line.strip()]
    img_root = osp.join(root, img_dir)
    if not osp.isdir(img_root):
        return None
    return sorted(osp.relpath(p, img_root)[:-len(img_suffix)]
                  for p in glob.glob(osp.join(img_root, '**', '*' + img_suffix), recursive=True))


def check_tree(root: str, layout: str = 'auto', splits: Optional[Sequence[str]] = None,
               check_labels: bool = True, stream: Optional[TextIO] = None) -> CheckReport:
    """Check a VOC 2012 (``VOCdevkit/VOC2012``) or Cityscapes tree, split by split.

    ``layout='auto'`` detects it from the directories; ``check_labels=False`` only checks that
    files exist. FileNotFoundError if ``root`` is no dataset root; ValueError for an unknown
    ``layout`` or split.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'dataset root {root!r} does not exist or is not a directory.')
    if layout == 'auto':
        layout = next((k for k, v in LAYOUTS.items() if osp.isdir(osp.join(root, v[1]))), None)
        if layout is None:
            raise FileNotFoundError(
                f'{root!r} is neither a VOC 2012 root (JPEGImages/, SegmentationClass/, '
                'ImageSets/) nor a Cityscapes root (leftImg8bit/, gtFine/); pass the directory '
                'that contains them.')
    if layout not in LAYOUTS:
        raise ValueError(f'layout={layout!r} is not allowed: expected one of '
                         f'{("auto", ) + tuple(LAYOUTS)}.')
    _, _, num_classes, specs = LAYOUTS[layout]
    known = [spec[0] for spec in specs]
    unknown = [s for s in (splits or ()) if s not in known]
    if unknown:
        raise ValueError(f'splits={list(splits)} has unknown split(s) {unknown} for the '
                         f'{layout} layout: expected some of {known}.')
    report = CheckReport(root=root, layout=layout)
    stream = stream or sys.stderr
    checked: Dict[Tuple[str, str], List[Tuple[str, str]]] = {}
    listed: Dict[str, List[str]] = {}
    for name, list_file, img_dir, label_dir, img_suffix, label_suffix, expected, required, \
            hint in specs:
        if splits and name not in splits:
            continue
        result = SplitResult(name, expected=expected)
        report.splits.append(result)
        names = _list_split(root, list_file, img_dir, img_suffix)
        source = list_file or img_dir
        if names is None:
            message = f'{source} does not exist' + (f' ({hint})' if hint else '')
            (result.errors if required else result.warnings).append(message)
            continue
        result.count, listed[name] = len(names), names
        if len(names) != len(set(names)):
            result.warnings.append(f'{source} lists {len(names) - len(set(names))} name(s) twice')
        if len(names) != expected:
            result.warnings.append(f'{len(names)} images, the paper\'s dataset has {expected} '
                                   '(incomplete download or a subset?)')

        def check(stem: str) -> List[Tuple[str, str]]:
            img = osp.join(root, img_dir, stem + img_suffix)
            label = osp.join(root, label_dir, stem + label_suffix)
            if not osp.isfile(img):
                return [('missing image', f'image {img} (listed in {source}) does not exist')]
            if not osp.isfile(label):
                return [('missing label', f'label {label} of image {img} does not exist')]
            if check_labels and (img, label) not in checked:
                checked[img, label] = check_label_file(img, label, num_classes)
            return checked.get((img, label), [])

        kinds: Dict[str, List[str]] = {}
        stream.write(f'checking {name}: {len(names)} file(s)\n')
        for problems in track_progress(check, names, file=stream) if names else []:
            for kind, problem in problems:
                kinds.setdefault(kind, []).append(problem)
        for problems in kinds.values():
            result.errors += problems[:MAX_LISTED]
            if len(problems) > MAX_LISTED:
                result.errors.append(f'... and {len(problems) - MAX_LISTED} more like the one '
                                     'above')
    val = set(listed.get('val', ()))
    for name in ('train', 'aug', 'trainaug'):
        leak = sorted(val.intersection(listed.get(name, ())))
        if leak:
            report.errors.append(
                f'{len(leak)} image(s) of {name} are also in val (e.g. {", ".join(leak[:3])}): '
                'the val mIoU would be measured on training images')
    return report
