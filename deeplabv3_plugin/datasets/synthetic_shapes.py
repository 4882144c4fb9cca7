"""SyntheticShapes: the built-in demo dataset, generated on the fly in PASCAL VOC layout.

No real dataset or pretrained weight can be downloaded everywhere this project runs, yet the
demo must train and evaluate a DeepLabV3 end to end in minutes on a CPU. This module draws a
small segmentation dataset that is cheap to learn but not trivial:

* five object classes whose **shape** is the defining cue (circle, square, triangle, star,
  ring) plus background (class 0, as in VOC);
* **colour and texture** are informative but not decisive: each class has a preferred hue and
  fill pattern that an object gets only with some probability, so the network has to combine
  colour, texture and shape (a red square exists, and so does a striped circle);
* **varied backgrounds** (gradients, stripes, checkerboards, cloudy noise) plus background
  clutter (lines and irregular blobs labelled background), so "anything textured" is not a
  shortcut; background and clutter are weakly saturated, objects strongly, the figure/ground
  cue of real photos that makes the task learnable in minutes;
* **occlusion** (objects are painted in order and may overlap) and **scale change** (object
  radii spread log-uniformly over a 3.5x range), the two nuisances the paper's multi-scale
  context (ASPP, image pooling; Sec. 3.3) is designed for;
* optional **ignore-255 borders** along every label boundary, like the hand-drawn void band of
  VOC annotations, so the metric does not punish sub-pixel disagreements at edges.

Everything is deterministic from one seed: image ``i`` of a split draws from its own
``numpy.random.SeedSequence([seed, split, i])``, so a dataset can be regenerated bit for bit (or
extended) and the demo can reuse a dataset that is already on disk.

Layout written (the one :class:`~mmseg.datasets.PascalVOCDataset` reads)::

    out_dir/
        JPEGImages/shapes_train_00000.jpg ...
        SegmentationClass/shapes_train_00000.png ...   (palette PNG, pixel = class index)
        ImageSets/Segmentation/train.txt, val.txt
        synthetic_shapes.json                          (generation parameters)

:class:`SyntheticShapesDataset` reads it with the checks of
:class:`~deeplabv3_plugin.datasets.checked_voc.CheckedPascalVOCDataset`.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.utils import ProgressBar
from mmseg.registry import DATASETS
from PIL import Image

from .checked_voc import CheckedPascalVOCDataset

__all__ = [
    'CLASSES', 'PALETTE', 'META_FILE', 'SyntheticShapesDataset', 'generate_synthetic_shapes',
    'render_sample'
]

#: Class names, index = label value. Background first, as in VOC.
CLASSES = ('background', 'circle', 'square', 'triangle', 'star', 'ring')
#: Display colours (RGB) of the classes: VOC's first six, so overlays look familiar.
PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128]]
#: Colour of the ignore value 255 in the saved palette PNGs (VOC's cream void colour).
IGNORE_COLOUR = (224, 224, 192)
#: Name of the file that records how a dataset directory was generated.
META_FILE = 'synthetic_shapes.json'
#: Bumped whenever the drawing changes, so a stale dataset on disk is not silently reused.
GENERATOR_VERSION = 2

# Per-class cues (index = class - 1). An object takes its class's hue with probability
# ``_CLASS_HUE_PROB`` (else a random hue) and its class's fill with ``_CLASS_FILL_PROB``.
_CLASS_HUES = (0.0, 120.0, 220.0, 55.0, 300.0)  # degrees: red, green, blue, yellow, magenta
_CLASS_FILLS = ('solid', 'stripes', 'dots', 'checker', 'gradient')
_CLASS_HUE_PROB = 0.8
_CLASS_FILL_PROB = 0.7
# Objects are saturated, background and clutter are not (but both are textured): the
# figure/ground cue of natural photos, without which a small network trained from scratch for
# a few minutes learns little more than "background".
_OBJECT_SATURATION = (0.55, 1.0)
_BACKGROUND_SATURATION = (0.0, 0.4)
_FILLS = ('solid', 'stripes', 'dots', 'checker', 'gradient')
_BACKGROUNDS = ('gradient', 'stripes', 'checker', 'clouds')
_SPLITS = ('train', 'val')


def _as_hw(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """Turn the ``image_size`` knob (an int or ``(height, width)``) into ``(h, w)``."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) for s in size) or min(size) < 32:
        raise ValueError(f'image_size must be an int or a (height, width) pair of ints >= 32, '
                         f'got {image_size!r}: smaller images leave no room for the shapes.')
    return size


# --------------------------------------------------------------------------------- colours
def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """One HSV colour (hue in degrees, sat/val in [0, 1]) as float RGB in [0, 1]."""
    hsv = np.array([[[hue / 2.0 % 180.0, sat * 255.0, val * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def _random_colour(rng: np.random.Generator, hue: Optional[float] = None,
                   saturation: Tuple[float, float] = _OBJECT_SATURATION,
                   value: Tuple[float, float] = (0.55, 1.0)) -> np.ndarray:
    """A colour of random (or given, jittered by +-20 degrees) hue in the given ranges."""
    hue = rng.uniform(0, 360) if hue is None else hue + rng.uniform(-20, 20)
    return _hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    """A background or clutter colour: any hue, weakly saturated, any brightness."""
    return _random_colour(rng, saturation=_BACKGROUND_SATURATION, value=(0.2, 0.9))


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    """Pixel coordinate projected on direction ``angle`` (radians), shape (h, w)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs * math.cos(angle) + ys * math.sin(angle)


# --------------------------------------------------------------------------------- patterns
def _pattern(rng: np.random.Generator, kind: str, h: int, w: int, scale: float) -> np.ndarray:
    """A (h, w) weight map in [0, 1] mixing a pattern's two colours.

    Args:
        rng: Random generator of the current image.
        kind: ``'solid'``, ``'stripes'``, ``'dots'``, ``'checker'``, ``'gradient'`` or
            ``'clouds'``.
        h, w: Map size.
        scale: Typical size in pixels of the thing patterned (sets the period).
    """
    period = max(3.0, scale * rng.uniform(0.25, 0.6))
    angle = rng.uniform(0, math.pi)
    if kind == 'solid':
        return np.zeros((h, w), np.float32)
    if kind == 'stripes':
        return (np.sin(_coords(h, w, angle) * (2 * math.pi / period)) > 0).astype(np.float32)
    if kind == 'dots':
        u = _coords(h, w, angle) * (2 * math.pi / period)
        v = _coords(h, w, angle + math.pi / 2) * (2 * math.pi / period)
        return ((np.cos(u) + np.cos(v)) > 1.0).astype(np.float32)
    if kind == 'checker':
        u = np.floor(_coords(h, w, angle) / period)
        v = np.floor(_coords(h, w, angle + math.pi / 2) / period)
        return ((u + v) % 2).astype(np.float32)
    if kind == 'gradient':
        t = _coords(h, w, rng.uniform(0, 2 * math.pi))
        return (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    if kind == 'clouds':
        grid = rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    raise ValueError(f'unknown pattern kind {kind!r}; expected one of '
                     f'{_FILLS + _BACKGROUNDS}')


def _paint(rng: np.random.Generator, kind: str, colour: np.ndarray, h: int, w: int,
           scale: float) -> np.ndarray:
    """A (h, w, 3) float canvas filled with ``colour`` in pattern ``kind``.

    The pattern's second colour is a darker or lighter shade of the first, so the fill stays
    recognisably one hue (the colour cue) while its texture carries the fill cue.
    """
    shade = colour * rng.uniform(0.35, 0.65) if rng.random() < 0.5 else \
        colour + (1 - colour) * rng.uniform(0.35, 0.65)
    weight = _pattern(rng, kind, h, w, scale)[..., None]
    return colour * (1 - weight) + shade * weight


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random background of two unrelated dull colours in one of :data:`_BACKGROUNDS`."""
    first, second = _dull_colour(rng), _dull_colour(rng)
    weight = _pattern(rng, str(rng.choice(_BACKGROUNDS)), h, w, scale=min(h, w) / 3)[..., None]
    canvas = first * (1 - weight) + second * weight
    return canvas + rng.normal(0, rng.uniform(0.0, 0.08), (h, w, 1)).astype(np.float32)


# --------------------------------------------------------------------------------- shapes
def _polygon(cx: float, cy: float, radii: Sequence[float], angles: Sequence[float]) -> np.ndarray:
    """Vertices (int32, for ``cv2.fillPoly``) at ``radii`` and ``angles`` around a centre."""
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]
    return np.round(np.array(pts)).astype(np.int32)


def _shape_mask(rng: np.random.Generator, label: int, h: int, w: int, radius: float,
                centre: Tuple[float, float]) -> np.ndarray:
    """The (h, w) uint8 mask (0/1) of one object of class ``label`` (1..5)."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy = centre
    rot = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label]
    if name in ('circle', 'ring'):
        axes = (int(round(radius)), int(round(radius * rng.uniform(0.85, 1.0))))
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), axes, math.degrees(rot), 0, 360, 1,
                    -1)
        if name == 'ring':  # the hole shows whatever lies below (background or occluded object)
            ratio = rng.uniform(0.45, 0.65)
            inner = (max(1, int(axes[0] * ratio)), max(1, int(axes[1] * ratio)))
            cv2.ellipse(mask, (int(round(cx)), int(round(cy))), inner, math.degrees(rot), 0, 360,
                        0, -1)
    elif name == 'square':  # a rectangle of aspect 0.8..1, so corners and edges define it
        half_diag = [radius, radius * rng.uniform(0.8, 1.0)]
        corner = math.atan2(half_diag[1], half_diag[0])
        angles = [rot + corner, rot + math.pi - corner, rot + math.pi + corner, rot - corner]
        cv2.fillPoly(mask, [_polygon(cx, cy, [math.hypot(*half_diag)] * 4, angles)], 1)
    elif name == 'triangle':
        angles = [rot + k * 2 * math.pi / 3 + rng.uniform(-0.17, 0.17) for k in range(3)]
        radii = radius * rng.uniform(0.9, 1.1, 3)
        cv2.fillPoly(mask, [_polygon(cx, cy, radii, angles)], 1)
    elif name == 'star':
        inner = rng.uniform(0.38, 0.5)
        angles = [rot + k * math.pi / 5 for k in range(10)]
        radii = [radius * (1.0 if k % 2 == 0 else inner) for k in range(10)]
        cv2.fillPoly(mask, [_polygon(cx, cy, radii, angles)], 1)
    else:
        raise ValueError(f'label {label} is not an object class; expected 1..{len(CLASSES) - 1}')
    return mask


def _clutter_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background distractor: a thick line or an irregular blob (labelled background)."""
    mask = np.zeros((h, w), np.uint8)
    size = min(h, w)
    if rng.random() < 0.5:
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(mask, p0, p1, 1, int(rng.integers(2, max(3, size // 20))))
    else:
        n = int(rng.integers(7, 13))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = size * rng.uniform(0.04, 0.16, n)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        cv2.fillPoly(mask, [_polygon(cx, cy, radii, angles)], 1)
    return mask


def _ignore_band(label_map: np.ndarray, radius: int) -> np.ndarray:
    """Set to 255 every pixel within ``radius`` px of a boundary between two labels.

    A pixel is on a band when the max and min label in its ``(2r+1)^2`` neighbourhood differ,
    which marks ``radius`` pixels on each side of every edge (VOC's void band is about 5 px wide
    at 500 px; ``radius=1`` at 192 px is comparable).
    """
    if radius <= 0:
        return label_map
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    band = cv2.dilate(label_map, kernel) != cv2.erode(label_map, kernel)
    out = label_map.copy()
    out[band] = 255
    return out


# --------------------------------------------------------------------------------- samples
def render_sample(rng: np.random.Generator, image_size: Union[int, Sequence[int]] = 192,
                  max_objects: int = 4, ignore_radius: int = 1,
                  min_radius: float = 0.1, max_radius: float = 0.35
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Args:
        rng: Random generator; the sample is a pure function of its state.
        image_size: ``int`` or ``(height, width)``. Defaults to 192.
        max_objects: Objects per image are drawn uniformly from ``1..max_objects``.
            Defaults to 4.
        ignore_radius: Width in pixels of the ignore-255 band on each side of label boundaries;
            0 disables it. Defaults to 1.
        min_radius, max_radius: Object radius range as a fraction of the shorter image side,
            sampled log-uniformly (scale change). Defaults to 0.1 and 0.35.

    Returns:
        ``(image, label)``: uint8 RGB ``(h, w, 3)`` and uint8 ``(h, w)`` with values in
        ``0..5`` and 255.
    """
    h, w = _as_hw(image_size)
    canvas = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # clutter goes under the objects, as background
        alpha = cv2.GaussianBlur(_clutter_mask(rng, h, w).astype(np.float32), (0, 0), 0.7)
        paint = _paint(rng, str(rng.choice(_FILLS)), _dull_colour(rng), h, w, min(h, w) / 6)
        canvas = canvas * (1 - alpha[..., None]) + paint * alpha[..., None]
    short = min(h, w)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = short * math.exp(rng.uniform(math.log(min_radius), math.log(max_radius)))
        centre = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h)
        mask = _shape_mask(rng, cls, h, w, radius, centre)
        hue = _CLASS_HUES[cls - 1] if rng.random() < _CLASS_HUE_PROB else None
        fill = _CLASS_FILLS[cls - 1] if rng.random() < _CLASS_FILL_PROB else str(
            rng.choice(_FILLS))
        paint = _paint(rng, fill, _random_colour(rng, hue), h, w, radius)
        # soft edge for the picture only; the label keeps the hard mask (later objects occlude)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6)[..., None]
        canvas = canvas * (1 - alpha) + paint * alpha
        label[mask > 0] = cls
    canvas = canvas * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)  # global exposure
    canvas = canvas + rng.normal(0, rng.uniform(0.01, 0.04), canvas.shape)
    image = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
    return image, _ignore_band(label, ignore_radius)


def _palette_png(label: np.ndarray, path: str) -> None:
    """Save a label map as a VOC-style palette PNG (pixel value = class index)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(PALETTE)] = PALETTE
    palette[255] = IGNORE_COLOUR
    png = Image.fromarray(label, mode='P')
    png.putpalette(palette.flatten().tolist())
    png.save(path)


def generate_synthetic_shapes(out_dir: str, num_train: int = 400, num_val: int = 80,
                              image_size: Union[int, Sequence[int]] = 192, seed: int = 0,
                              max_objects: int = 4, ignore_radius: int = 1,
                              jpeg_quality: int = 90, progress: bool = True) -> Dict:
    """Write a SyntheticShapes dataset in VOC layout (see the module docstring).

    If ``out_dir`` already holds a dataset generated with the same parameters it is reused
    as is; a directory holding anything else is refused rather than overwritten.

    Args:
        out_dir: Dataset root to create.
        num_train: Number of training images. Defaults to 400.
        num_val: Number of held-out validation images (drawn from other seeds). Defaults to 80.
        image_size: ``int`` or ``(height, width)``. Defaults to 192.
        seed: Master seed; the dataset is a pure function of the parameters. Defaults to 0.
        max_objects: Maximum objects per image. Defaults to 4.
        ignore_radius: Ignore-255 band half-width at label boundaries (0 = none). Defaults to 1.
        jpeg_quality: JPEG quality of the images (mild compression artefacts). Defaults to 90.
        progress: Show a progress bar while drawing. Defaults to True.

    Returns:
        The generation parameters, as also written to ``out_dir/synthetic_shapes.json``, plus
        ``'reused': True`` when an existing identical dataset was found.

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: ``out_dir`` exists and is not an identical SyntheticShapes dataset.
    """
    h, w = _as_hw(image_size)
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1),
                             ('max_objects', max_objects, 1), ('ignore_radius', ignore_radius,
                                                               0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}.')
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
    bar = ProgressBar(num_train + num_val) if progress else None
    for split_id, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val))):
        names = [f'shapes_{split}_{i:05d}' for i in range(count)]
        for i, name in enumerate(names):
            rng = np.random.default_rng([seed, split_id, i])
            image, label = render_sample(rng, (h, w), max_objects, ignore_radius)
            cv2.imwrite(osp.join(dirs['img'], name + '.jpg'), image[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            _palette_png(label, osp.join(dirs['seg'], name + '.png'))
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
    """The SyntheticShapes demo dataset (VOC layout, 6 classes including background).

    A :class:`CheckedPascalVOCDataset` with this dataset's classes and palette: a missing root,
    split file or listed image fails with an error that names it. Generate the data with
    ``python tools/generate_shapes.py data/synthetic_shapes`` or
    :func:`generate_synthetic_shapes`.

    Args:
        ann_file: Split file, e.g. ``'ImageSets/Segmentation/train.txt'``.
        img_suffix: Image suffix. Defaults to ``'.jpg'``.
        seg_map_suffix: Label suffix. Defaults to ``'.png'``.
        **kwargs: :class:`CheckedPascalVOCDataset` / ``BaseSegDataset`` arguments.
    """
    METAINFO = dict(classes=CLASSES, palette=PALETTE)
    HOW_TO_GET = ('Generate it with `python tools/generate_shapes.py <data_root>` (tools/demo.py '
                  'does this by itself).')

    def __init__(self, ann_file: str, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 **kwargs) -> None:
        super().__init__(ann_file=ann_file, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, **kwargs)
