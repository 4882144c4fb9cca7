"""SyntheticShapes: the demo dataset, generated in PASCAL VOC layout, so that the demo trains a
DeepLabV3 in minutes on a CPU with nothing downloaded. Image ``i`` of a split draws from
``numpy.random.default_rng([seed, split, i])``: a dataset is a pure function of its parameters
(recorded in ``synthetic_shapes.json``), reused, never overwritten.
"""
import json
import os
import os.path as osp
from typing import Dict, Sequence, Union

import cv2
import numpy as np
from mmengine.utils import ProgressBar
from mmseg.registry import DATASETS
from PIL import Image

from .checked_voc import CheckedPascalVOCDataset
from .shapes_drawing import CLASSES, as_hw, render_sample

__all__ = ['CLASSES', 'PALETTE', 'SyntheticShapesDataset', 'generate_synthetic_shapes',
           'render_sample']

#: Display colours (RGB) of the classes: VOC's first six, so overlays look familiar.
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
#: Colour of the ignore value 255 in the saved palette PNGs (VOC's cream void colour).
IGNORE_COLOUR = (224, 224, 192)
#: Name of the file that records how a dataset directory was generated.
META_FILE = 'synthetic_shapes.json'
#: Bumped whenever the drawing changes, so a stale dataset on disk is not silently reused.
GENERATOR_VERSION = 2

_SPLITS = ('train', 'val')


def generate_synthetic_shapes(out_dir: str, num_train: int = 400, num_val: int = 80,
                              image_size: Union[int, Sequence[int]] = 192, seed: int = 0,
                              max_objects: int = 4, ignore_radius: int = 1,
                              jpeg_quality: int = 90, progress: bool = True) -> Dict:
    """Write a SyntheticShapes dataset in VOC layout; returns its parameters.

    An identical dataset already in ``out_dir`` is reused (``reused=True``); anything else there
    raises ``FileExistsError``. ``ignore_radius``: half-width of the ignore-255 band along label
    edges, like VOC's void border (0: none).
    """
    h, w = as_hw(image_size)
    meta = dict(generator='deeplabv3_plugin.datasets.synthetic_shapes',
                version=GENERATOR_VERSION, classes=list(CLASSES), num_train=num_train,
                num_val=num_val, image_size=[h, w], seed=seed, max_objects=max_objects,
                ignore_radius=ignore_radius, jpeg_quality=jpeg_quality)
    meta_path = osp.join(out_dir, META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            found = json.load(f)
        if found == meta:
            return dict(meta, reused=True)
        raise FileExistsError(
            f'{out_dir!r} already holds a SyntheticShapes dataset generated with other '
            f'parameters ({meta_path}: {found}); refusing to overwrite it. Choose another '
            f'output directory or delete this one.')
    if osp.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(
            f'{out_dir!r} exists and is not empty, but has no {META_FILE}, so it is not a '
            f'SyntheticShapes dataset; refusing to write into it. Choose an empty or new '
            f'directory.')
    dirs = {key: osp.join(out_dir, sub) for key, sub in (
        ('img', 'JPEGImages'), ('seg', 'SegmentationClass'), ('split', 'ImageSets/Segmentation'))}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(PALETTE)], palette[255] = PALETTE, IGNORE_COLOUR
    bar = ProgressBar(num_train + num_val) if progress else None
    for split_id, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        names = [f'shapes_{split}_{i:05d}' for i in range(count)]
        for i, name in enumerate(names):
            rng = np.random.default_rng([seed, split_id, i])
            image, label = render_sample(rng, (h, w), max_objects, ignore_radius)
            cv2.imwrite(osp.join(dirs['img'], name + '.jpg'), image[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            png = Image.fromarray(label, mode='P')  # a VOC-style palette PNG of class indices
            png.putpalette(palette.flatten().tolist())
            png.save(osp.join(dirs['seg'], name + '.png'))
            if bar is not None:
                bar.update()
        with open(osp.join(dirs['split'], f'{split}.txt'), 'w') as f:
            f.write('\n'.join(names) + '\n')
    if bar is not None:
        print()
    with open(meta_path, 'w') as f:  # written last: its presence means "complete"
        json.dump(meta, f, indent=2)
    return dict(meta, reused=False)


@DATASETS.register_module()
class SyntheticShapesDataset(CheckedPascalVOCDataset):
    """The SyntheticShapes demo dataset: a :class:`CheckedPascalVOCDataset` with its classes."""
    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    HOW_TO_GET = ('Generate it with `python tools/generate_shapes.py <data_root>` (tools/demo.py '
                  'does this by itself).')
