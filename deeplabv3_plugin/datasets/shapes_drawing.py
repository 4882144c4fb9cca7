"""Drawing one SyntheticShapes sample: five classes defined by shape on background.

Colour and fill are class cues only with some probability; objects are saturated on dull textured
backgrounds (the figure/ground cue of photos); occlusion and a 3.5x scale range are the nuisances
ASPP and image pooling address (Sec. 3.3). Every random draw comes from ``rng`` in a fixed order:
changing it changes every dataset (then bump ``GENERATOR_VERSION``).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ['CLASSES', 'as_hw', 'render_sample']

#: Class names, index = label value. Background first, as in VOC.
CLASSES = ('background', 'circle', 'square', 'triangle', 'star', 'ring')

# Per-class cues (index = class - 1), taken with the probabilities below (else random).
_CLASS_HUES = (0.0, 120.0, 220.0, 55.0, 300.0)  # degrees: red, green, blue, yellow, magenta
_CLASS_FILLS = _FILLS = ('solid', 'stripes', 'dots', 'checker', 'gradient')
_CLASS_HUE_PROB = 0.8
_CLASS_FILL_PROB = 0.7
# Saturated objects on dull (but textured) backgrounds: without this figure/ground cue a small
# network trained from scratch for minutes learns little more than "background".
_OBJECT_SATURATION = (0.55, 1.0)
_BACKGROUND_SATURATION = (0.0, 0.4)
_BACKGROUNDS = ('gradient', 'stripes', 'checker', 'clouds')


def as_hw(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``image_size`` (an int or ``(height, width)``) as ``(h, w)``."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 32:
        raise ValueError(f'image_size must be an int or a (height, width) pair of ints >= 32, '
                         f'got {image_size!r}: smaller images leave no room for the shapes.')
    return size


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """Hue in degrees, sat/val in [0, 1] -> float RGB in [0, 1]."""
    hsv = np.array([[[hue / 2.0 % 180.0, sat * 255.0, val * 255.0]]], dtype=np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def _random_colour(rng: np.random.Generator, hue: Optional[float] = None,
                   saturation: Tuple[float, float] = _OBJECT_SATURATION,
                   value: Tuple[float, float] = (0.55, 1.0)) -> np.ndarray:
    hue = rng.uniform(0, 360) if hue is None else hue + rng.uniform(-20, 20)
    return _hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    return _random_colour(rng, saturation=_BACKGROUND_SATURATION, value=(0.2, 0.9))


def _coords(h: int, w: int, angle: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs * math.cos(angle) + ys * math.sin(angle)


def _pattern(rng: np.random.Generator, kind: str, h: int, w: int, scale: float) -> np.ndarray:
    """A (h, w) weight map in [0, 1] mixing two colours; ``scale`` (px) sets the period."""
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


def _paint(rng: np.random.Generator, kind: str, colour: np.ndarray, h: int, w: int,
           scale: float) -> np.ndarray:
    """``colour`` and a darker or lighter shade of it in pattern ``kind``, (h, w, 3)."""
    shade = colour * rng.uniform(0.35, 0.65) if rng.random() < 0.5 else \
        colour + (1 - colour) * rng.uniform(0.35, 0.65)
    weight = _pattern(rng, kind, h, w, scale)[..., None]
    return colour * (1 - weight) + shade * weight


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    first, second = _dull_colour(rng), _dull_colour(rng)
    weight = _pattern(rng, str(rng.choice(_BACKGROUNDS)), h, w, scale=min(h, w) / 3)[..., None]
    canvas = first * (1 - weight) + second * weight
    return canvas + rng.normal(0, rng.uniform(0.0, 0.08), (h, w, 1)).astype(np.float32)


def _polygon(cx: float, cy: float, radii: Sequence[float], angles: Sequence[float]) -> np.ndarray:
    pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]
    return np.round(np.array(pts)).astype(np.int32)


def _shape_mask(rng: np.random.Generator, label: int, h: int, w: int, radius: float,
                centre: Tuple[float, float]) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cx, cy = centre
    rot = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label]
    if name in ('circle', 'ring'):
        axes = (int(round(radius)), int(round(radius * rng.uniform(0.85, 1.0))))
        centre_px, degrees = (int(round(cx)), int(round(cy))), math.degrees(rot)
        cv2.ellipse(mask, centre_px, axes, degrees, 0, 360, 1, -1)
        if name == 'ring':  # the hole shows whatever lies below (background or occluded object)
            ratio = rng.uniform(0.45, 0.65)
            inner = (max(1, int(axes[0] * ratio)), max(1, int(axes[1] * ratio)))
            cv2.ellipse(mask, centre_px, inner, degrees, 0, 360, 0, -1)
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
    return mask


def _clutter_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A background distractor: a thick line or an irregular blob."""
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
    """255 within ``radius`` px of a label boundary (VOC's void band: ~5 px at 500 px)."""
    if radius <= 0:
        return label_map
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    band = cv2.dilate(label_map, kernel) != cv2.erode(label_map, kernel)
    out = label_map.copy()
    out[band] = 255
    return out


def render_sample(rng: np.random.Generator, image_size: Union[int, Sequence[int]] = 192,
                  max_objects: int = 4, ignore_radius: int = 1,
                  min_radius: float = 0.1, max_radius: float = 0.35
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """One image (uint8 RGB) and its label (uint8, 0..5 and 255) from ``rng``: 1..max_objects
    objects of radius ``min_radius..max_radius`` (of the shorter side, log-uniform)."""
    h, w = as_hw(image_size)
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
