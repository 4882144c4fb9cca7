"""One SyntheticShapes sample: five classes told apart by shape; colour and fill are cues only by
chance; occlusion and a 3.5x scale range are the nuisances ASPP and image pooling address (Sec.
3.3). Draws come from ``rng`` in a fixed order: a change there needs a new ``GENERATOR_VERSION``."""
import math
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ['CLASSES', 'as_hw', 'render_sample']

#: Class names, index = label value. Background first, as in VOC.
CLASSES = ('background', 'circle', 'square', 'triangle', 'star', 'ring')

# Per-class cues (index = class - 1), taken with probability 0.8 (hue) and 0.7 (fill).
_CLASS_HUES = (0.0, 120.0, 220.0, 55.0, 300.0)  # degrees: red, green, blue, yellow, magenta
_FILLS = ('solid', 'stripes', 'dots', 'checker', 'gradient')


def as_hw(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``image_size`` (an int or ``(height, width)``) as ``(h, w)``."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f'image_size must be an int or a (height, width) pair of ints >= 32, '
                         f'got {image_size!r}: smaller images leave no room for the shapes.')
    return size


def _colour(rng: np.random.Generator, hue: Optional[float] = None, dull: bool = False
            ) -> np.ndarray:
    """Float RGB in [0, 1]; hue in degrees (+-20), else random. Objects are saturated, the
    background dull: without this figure/ground cue a small net learns little but background."""
    hue = rng.uniform(0, 360) if hue is None else hue + rng.uniform(-20, 20)
    sat, val = ((0.0, 0.4), (0.2, 0.9)) if dull else ((0.55, 1.0), (0.55, 1.0))
    hsv = [[[hue / 2.0 % 180.0, rng.uniform(*sat) * 255.0, rng.uniform(*val) * 255.0]]]
    rgb = cv2.cvtColor(np.array(hsv, np.float32).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return rgb[0, 0].astype(np.float32) / 255


def _pattern(rng: np.random.Generator, kind: str, h: int, w: int, scale: float) -> np.ndarray:
    """A (h, w) weight map in [0, 1] mixing two colours; ``scale`` (px) sets the period."""
    period = max(3.0, scale * rng.uniform(0.25, 0.6))
    angle = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'gradient':
        angle = rng.uniform(0, 2 * math.pi)
    u, v = (xs * math.cos(a) + ys * math.sin(a) for a in (angle, angle + math.pi / 2))
    if kind == 'stripes':
        return (np.sin(u * (2 * math.pi / period)) > 0).astype(np.float32)
    if kind == 'dots':
        dots = np.cos(u * (2 * math.pi / period)) + np.cos(v * (2 * math.pi / period))
        return (dots > 1.0).astype(np.float32)
    if kind == 'checker':
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'gradient':
        return (u - u.min()) / max(float(np.ptp(u)), 1e-6)
    if kind == 'clouds':
        grid = rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    return np.zeros((h, w), np.float32)  # solid


def _paint(rng: np.random.Generator, kind: str, colour: np.ndarray, h: int, w: int,
           scale: float) -> np.ndarray:
    """``colour`` and a darker or lighter shade of it in pattern ``kind``, (h, w, 3)."""
    shade = colour * rng.uniform(0.35, 0.65) if rng.random() < 0.5 else \
        colour + (1 - colour) * rng.uniform(0.35, 0.65)
    weight = _pattern(rng, kind, h, w, scale)[..., None]
    return colour * (1 - weight) + shade * weight


def _polygon(cx: float, cy: float, radii: Sequence[float], angles: Sequence[float]) -> np.ndarray:
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]
    return np.round(np.array(pts)).astype(np.int32)


def _shape_mask(rng: np.random.Generator, label: int, h: int, w: int, radius: float,
                cx: float, cy: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    rot = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label]
    if name in ('circle', 'ring'):
        axes = (int(round(radius)), int(round(radius * rng.uniform(0.85, 1.0))))
        centre, degrees = (int(round(cx)), int(round(cy))), math.degrees(rot)
        cv2.ellipse(mask, centre, axes, degrees, 0, 360, 1, -1)
        if name == 'ring':  # the hole shows whatever lies below (background or occluded object)
            ratio = rng.uniform(0.45, 0.65)
            inner = (max(1, int(axes[0] * ratio)), max(1, int(axes[1] * ratio)))
            cv2.ellipse(mask, centre, inner, degrees, 0, 360, 0, -1)
        return mask
    if name == 'square':  # a rectangle of aspect 0.8..1, so corners and edges define it
        half_w, half_h = radius, radius * rng.uniform(0.8, 1.0)
        corner = math.atan2(half_h, half_w)
        angles = [rot + corner, rot + math.pi - corner, rot + math.pi + corner, rot - corner]
        radii = [math.hypot(half_w, half_h)] * 4
    elif name == 'triangle':
        angles = [rot + k * 2 * math.pi / 3 + rng.uniform(-0.17, 0.17) for k in range(3)]
        radii = radius * rng.uniform(0.9, 1.1, 3)
    else:  # star
        inner = rng.uniform(0.38, 0.5)
        angles = [rot + k * math.pi / 5 for k in range(10)]
        radii = [radius * (1.0 if k % 2 == 0 else inner) for k in range(10)]
    return cv2.fillPoly(mask, [_polygon(cx, cy, radii, angles)], 1)


def render_sample(rng: np.random.Generator, image_size: Union[int, Sequence[int]] = 192,
                  max_objects: int = 4, ignore_radius: int = 1
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """One image (uint8 RGB) and its label (uint8, 0..5 and 255 within ``ignore_radius`` px of an
    edge, like VOC's void band) from ``rng``: 1..max_objects objects of radius 0.1..0.35 of the
    shorter side (log-uniform)."""
    h, w = as_hw(image_size)
    short = min(h, w)
    first, second = _colour(rng, dull=True), _colour(rng, dull=True)
    weight = _pattern(rng, str(rng.choice(('gradient', 'stripes', 'checker', 'clouds'))), h, w,
                      scale=short / 3)[..., None]
    canvas = first * (1 - weight) + second * weight
    canvas = canvas + rng.normal(0, rng.uniform(0.0, 0.08), (h, w, 1)).astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):  # clutter, under the objects: a line or a blob
        mask = np.zeros((h, w), np.uint8)
        if rng.random() < 0.5:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(mask, p0, p1, 1, int(rng.integers(2, max(3, short // 20))))
        else:
            n = int(rng.integers(7, 13))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = short * rng.uniform(0.04, 0.16, n)
            cv2.fillPoly(mask, [_polygon(rng.uniform(0, w), rng.uniform(0, h), radii, angles)], 1)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)[..., None]
        paint = _paint(rng, str(rng.choice(_FILLS)), _colour(rng, dull=True), h, w, short / 6)
        canvas = canvas * (1 - alpha) + paint * alpha
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = short * math.exp(rng.uniform(math.log(0.1), math.log(0.35)))
        mask = _shape_mask(rng, cls, h, w, radius, rng.uniform(0.1, 0.9) * w,
                           rng.uniform(0.1, 0.9) * h)
        hue = _CLASS_HUES[cls - 1] if rng.random() < 0.8 else None
        fill = _FILLS[cls - 1] if rng.random() < 0.7 else str(rng.choice(_FILLS))
        paint = _paint(rng, fill, _colour(rng, hue), h, w, radius)
        # soft edge for the picture only; the label keeps the hard mask (later objects occlude)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.6)[..., None]
        canvas = canvas * (1 - alpha) + paint * alpha
        label[mask > 0] = cls
    canvas = canvas * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)  # global exposure
    canvas = canvas + rng.normal(0, rng.uniform(0.01, 0.04), canvas.shape)
    if ignore_radius > 0:
        kernel = np.ones((2 * ignore_radius + 1, 2 * ignore_radius + 1), np.uint8)
        label[cv2.dilate(label, kernel) != cv2.erode(label, kernel)] = 255
    return (canvas.clip(0, 1) * 255).round().astype(np.uint8), label
