"""The arithmetic of bootstrapping on hard images, apart from any dataset or process group.

DeepLabV3 (Sec. 4.1) duplicates the training images that contain a hard class. As in detectron2's
``RepeatFactorTrainingSampler``, pure functions turn per-image factors into one epoch's indices,
so a test can pin the maths with a list of class sets.
"""
import math
from typing import Iterable, List, Sequence

import torch

#: Fractions are counted in integer units of 1/FRACTION_RESOLUTION so sums are exact.
FRACTION_RESOLUTION = 1_000_000


def repeat_factors(image_class_sets: Sequence[Iterable[int]], hard_classes: Iterable[int],
                   factor: float) -> List[float]:
    """Per-image repeat factors: ``factor`` (>= 1; the paper's "duplicate" is 2) for an image
    holding a hard class, else 1.

    Example:
        >>> repeat_factors([{0, 9}, {0, 15}, {11}], hard_classes=(9, 11), factor=2.0)
        [2.0, 1.0, 2.0]
    """
    if not math.isfinite(factor) or factor < 1.0:
        raise ValueError('repeat_factor must be a finite number >= 1 (1 keeps every image once, 2 '
                         f'duplicates hard images), got {factor!r}')
    hard = frozenset(hard_classes)
    return [float(factor) if hard.intersection(classes) else 1.0 for classes in image_class_sets]


def _split(factors: Sequence[float]) -> tuple:
    """Integer parts and fractional parts (in units of 1/FRACTION_RESOLUTION) of ``factors``."""
    units = [round(f * FRACTION_RESOLUTION) for f in factors]
    return ([u // FRACTION_RESOLUTION for u in units], [u % FRACTION_RESOLUTION for u in units])


def max_epoch_length(factors: Sequence[float]) -> int:
    """``sum(floor(f_i)) + ceil(sum(frac(f_i)))``: an epoch is that long or one shorter."""
    whole, fraction = _split(factors)
    return sum(whole) + -(-sum(fraction) // FRACTION_RESOLUTION)


def expand_indices(factors: Sequence[float], generator: torch.Generator) -> List[int]:
    """One epoch's ascending indices: image ``i`` appears ``floor(f_i)`` or ``floor(f_i) + 1``
    times, the extra copy with probability ``frac(f_i)``.

    Systematic sampling keeps the epoch length within one of :func:`max_epoch_length`, so a
    distributed sampler can declare ``len()`` up front: the fractions, in random order, are laid
    end to end, and a comb of points one unit apart from a random offset picks the images whose
    segment a point falls in. The same ``generator`` state gives the same list on every rank.

    Example:
        >>> expand_indices([1.0, 2.0, 3.0], torch.Generator().manual_seed(0))
        [0, 1, 1, 2, 2, 2]
    """
    counts, fraction = _split(factors)
    candidates = [i for i, q in enumerate(fraction) if q]
    if candidates:
        order = torch.randperm(len(candidates), generator=generator).tolist()
        point = int(torch.randint(FRACTION_RESOLUTION, (1,), generator=generator))
        end = 0
        for position in order:
            image = candidates[position]
            end += fraction[image]
            if end > point:  # the next comb point lies in this image's segment
                counts[image] += 1
                point += FRACTION_RESOLUTION
    return [i for i, count in enumerate(counts) for _ in range(count)]
