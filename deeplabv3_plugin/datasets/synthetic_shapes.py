"""SyntheticShapes, the demo dataset in VOC layout: a DeepLabV3 trains on it in minutes on a CPU.
Image ``i`` of a split draws from ``default_rng([seed, split, i])``, so a dataset is a pure function
of its parameters (recorded in ``synthetic_shapes.json``): reused, never overwritten. Files are
written with :func:`.safe_write.open_within`, never through a link below ``out_dir``."""
import json
import os
import os.path as osp
from typing import Dict, Sequence, Union

import cv2
import mmengine
import numpy as np
from mmengine.utils import track_iter_progress
from mmseg.registry import DATASETS
from PIL import Image

from .checked_voc import CheckedPascalVOCDataset
from .safe_write import open_within
from .shapes_drawing import CLASSES, as_hw, render_sample

__all__ = ['CLASSES', 'PALETTE', 'SyntheticShapesDataset', 'generate_synthetic_shapes']

#: Display colours (RGB) of the classes: VOC's first six, so overlays look familiar.
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
META_FILE = 'synthetic_shapes.json'
#: Bumped whenever the drawing changes, so a stale dataset on disk is not silently reused.
GENERATOR_VERSION = 2


def generate_synthetic_shapes(out_dir: str, num_train: int = 400, num_val: int = 80,
                              image_size: Union[int, Sequence[int]] = 192, seed: int = 0,
                              max_objects: int = 4, ignore_radius: int = 1,
                              jpeg_quality: int = 90, progress: bool = True) -> Dict:
    """Write a SyntheticShapes dataset in VOC layout, or reuse an identical one in ``out_dir``
    (``reused=True``); returns its parameters. ``ignore_radius``: half-width (px) of the
    ignore-255 band along label edges, like VOC's void border (0: none)."""
    h, w = as_hw(image_size)
    meta = dict(generator='deeplabv3_plugin.datasets.synthetic_shapes',
                version=GENERATOR_VERSION, classes=list(CLASSES), num_train=num_train,
                num_val=num_val, image_size=[h, w], seed=seed, max_objects=max_objects,
                ignore_radius=ignore_radius, jpeg_quality=jpeg_quality)
    meta_path = osp.join(out_dir, META_FILE)
    if osp.isfile(meta_path):
        found = mmengine.load(meta_path)
        if found == meta:
            return dict(meta, reused=True)
        raise FileExistsError(f'{out_dir!r} holds a SyntheticShapes dataset made with other '
                              f'parameters ({meta_path}: {found}); refusing to overwrite it.')
    if osp.isdir(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f'{out_dir!r} is not empty and has no {META_FILE} (not a '
                              f'SyntheticShapes dataset); choose an empty or new directory.')
    os.makedirs(out_dir, exist_ok=True)
    palette = sum(PALETTE, []) + [0, 0, 0] * (255 - len(PALETTE)) + [224, 224, 192]  # VOC's void
    splits = {split: [f'shapes_{split}_{i:05d}' for i in range(count)]
              for split, count in (('train', num_train), ('val', num_val))}
    jobs = [(s, i, name) for s, names in enumerate(splits.values()) for i, name in enumerate(names)]
    for s, i, name in track_iter_progress(jobs) if progress else jobs:
        image, label = render_sample(np.random.default_rng([seed, s, i]), (h, w),
                                     max_objects, ignore_radius)
        _, jpeg = cv2.imencode('.jpg', image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        with open_within(out_dir, f'JPEGImages/{name}.jpg') as f:
            f.write(jpeg.tobytes())
        png = Image.fromarray(label, mode='P')  # a VOC-style palette PNG of class indices
        png.putpalette(palette)
        with open_within(out_dir, f'SegmentationClass/{name}.png') as f:
            png.save(f, format='PNG')
    for split, names in splits.items():
        with open_within(out_dir, f'ImageSets/Segmentation/{split}.txt', 'w') as f:
            f.write('\n'.join(names) + '\n')
    with open_within(out_dir, META_FILE, 'w') as f:  # written last: its presence means "complete"
        json.dump(meta, f, indent=2)
    return dict(meta, reused=False)


@DATASETS.register_module()
class SyntheticShapesDataset(CheckedPascalVOCDataset):
    """The SyntheticShapes demo dataset: a :class:`CheckedPascalVOCDataset` with its classes."""
    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    HOW_TO_GET = ('Generate it with `python tools/generate_shapes.py <data_root>` (tools/demo.py '
                  'does this by itself).')
