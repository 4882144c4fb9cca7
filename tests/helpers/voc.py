"""A tiny Pascal-VOC-format dataset on disk, for tests that need real label maps.

Writes the VOC 2012 layout that mmseg's ``PascalVOCDataset`` reads::

    root/JPEGImages/000000.jpg
    root/SegmentationClass/000000.png      palette PNG of class ids (VOC's format), 255 border
    root/ImageSets/Segmentation/train.txt  one image id per line
"""
import os.path as osp
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

#: VOC's colour map for the first 21 ids; id 255 (the "void" border) is drawn in cream.
_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128,
            128, 128, 128, 64, 0, 0, 192, 0, 0, 64, 128, 0, 192, 128, 0, 64, 0, 128, 192, 0, 128,
            64, 128, 128, 192, 128, 128, 0, 64, 0, 128, 64, 0, 0, 192, 0, 128, 192, 0, 0, 64, 128]
_PALETTE = _PALETTE + [0, 0, 0] * (255 - len(_PALETTE) // 3) + [224, 224, 192]


def label_map(classes: Sequence[int], size: int = 8) -> np.ndarray:
    """A ``size`` x ``size`` uint8 label map holding exactly ``classes``, with a 255 border.

    Each class fills a horizontal band of the interior; the one-pixel border is the ignore index,
    as on VOC object outlines.
    """
    label = np.full((size, size), 255, dtype=np.uint8)
    inner = size - 2
    if classes:
        bands = np.array_split(np.arange(1, size - 1), len(classes))
        for band, cls in zip(bands, classes):
            label[band[0]:band[-1] + 1, 1:1 + inner] = cls
    return label


def write_label(path: str, classes: Sequence[int], size: int = 8) -> None:
    """Write a palette PNG label map holding ``classes`` at ``path``."""
    label = label_map(classes, size)
    image = Image.frombytes('P', (size, size), label.tobytes())
    image.putpalette(_PALETTE)
    image.save(path)


def write_voc(root, labels: Sequence[Sequence[int]], split: str = 'train',
              size: int = 8, start: int = 0, name_format: str = '{:06d}') -> str:
    """Write a VOC-layout split whose image ``i`` (noise) has a label holding ``labels[i]``.

    ``start`` is the first image id (two calls write disjoint images); ``name_format`` turns an
    id into a file name. Returns ``root``.
    """
    root = Path(root)
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, classes in enumerate(labels, start=start):
        name = name_format.format(i)
        names.append(name)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / 'JPEGImages' / f'{name}.jpg')
        write_label(str(root / 'SegmentationClass' / f'{name}.png'), classes, size)
    (root / 'ImageSets/Segmentation' / f'{split}.txt').write_text('\n'.join(names) + '\n')
    return str(root)


def voc_dataset_cfg(root: str, split: str = 'train', **kwargs) -> dict:
    """mmseg config of ``PascalVOCDataset`` over a :func:`write_voc` directory."""
    return dict(
        type='PascalVOCDataset',
        data_root=root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file=osp.join('ImageSets/Segmentation', f'{split}.txt'),
        pipeline=[],
        **kwargs)
