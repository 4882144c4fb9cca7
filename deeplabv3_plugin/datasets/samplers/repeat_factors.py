"""The arithmetic of bootstrapping on hard images, apart from any dataset or process group.

DeepLabV3 (Chen et al. 2017, Sec. 4.1) duplicates, in the training set, every image containing a
hard class (bicycle, chair, dining table, potted plant, sofa): image-level oversampling by a
``repeat_factor`` the paper does not state. As in detectron2's ``RepeatFactorTrainingSampler``,
pure functions turn per-image factors into one epoch's indices (integer part always, fractional
part drawn each epoch), so a test pins the maths with a list of class sets. Fractional parts are
drawn by *systematic sampling*: image ``i`` still gets its extra copy with probability
``frac(f_i)``, but an epoch's length varies by at most one, so a distributed sampler can declare
``len()`` up front and pad every rank to the same size.
"""
import math
from typing import Iterable, List, Sequence

import torch

#: Fractions are counted in integer units of 1/FRACTION_RESOLUTION so sums and comparisons are
#: exact (factors with up to six decimals, e.g. ``1.3``, are represented exactly).
FRACTION_RESOLUTION = 1_000_000


def check_repeat_factor(repeat_factor: float) -> float:
    """``repeat_factor`` as a float, refused unless a finite real number >= 1.

    1 disables bootstrapping, 2 is the paper's "duplicate", 1.5 adds the extra copy to a random
    half of the hard images each epoch. ``bool`` is refused: ``True`` is not a factor.
    """
    if isinstance(repeat_factor, bool) or not isinstance(repeat_factor, (int, float)):
        raise TypeError('repeat_factor must be a real number >= 1 (how many times a hard image '
                        f'appears per epoch), got {repeat_factor!r} '
                        f'of type {type(repeat_factor).__name__}')
    factor = float(repeat_factor)
    if not math.isfinite(factor) or factor < 1.0:
        raise ValueError('repeat_factor must be a finite number >= 1 (1 keeps every image once, 2 '
                         f'duplicates hard images), got {repeat_factor!r}')
    return factor


def repeat_factors(image_class_sets: Sequence[Iterable[int]], hard_classes: Iterable[int],
                   factor: float) -> List[float]:
    """Per-image repeat factors: ``factor`` for an image holding a hard class, else 1.

    ``image_class_sets`` holds, per dataset index, the class indices of its label map (after
    label mapping, ignore removed).

    Example:
        >>> repeat_factors([{0, 9}, {0, 15}, {11}], hard_classes=(9, 11), factor=2.0)
        [2.0, 1.0, 2.0]
    """
    factor = check_repeat_factor(factor)
    hard = frozenset(int(c) for c in hard_classes)
    return [factor if hard.intersection(classes) else 1.0 for classes in image_class_sets]


def _split(factors: Sequence[float]) -> tuple:
    """Integer parts and fractional parts (in units of 1/FRACTION_RESOLUTION) of ``factors``."""
    whole, fraction = [], []
    for i, f in enumerate(factors):
        if not math.isfinite(f) or f < 1.0:
            raise ValueError(f'factors[{i}] must be a finite number >= 1, got {f!r}')
        units = round(f * FRACTION_RESOLUTION)
        whole.append(units // FRACTION_RESOLUTION)
        fraction.append(units % FRACTION_RESOLUTION)
    return whole, fraction


def max_epoch_length(factors: Sequence[float]) -> int:
    """The longest list :func:`expand_indices` can return: ``sum(floor(f_i)) +
    ceil(sum(frac(f_i)))``; an epoch is that long or one shorter."""
    whole, fraction = _split(factors)
    return sum(whole) + -(-sum(fraction) // FRACTION_RESOLUTION)


def expand_indices(factors: Sequence[float], generator: torch.Generator) -> List[int]:
    """One epoch's dataset indices: image ``i`` appears ``floor(f_i)`` or ``floor(f_i) + 1`` times.

    The extra copy is given with probability ``frac(f_i)`` by systematic sampling: the images with
    a fractional part are put in random order and their fractions laid end to end on a line; a
    comb of points spaced one unit apart, starting at a random offset in [0, 1), picks every image
    whose segment a point falls in. Each fraction is below one, so a segment holds at most one
    point, and the offset is uniform, so the probability is exactly the segment length.

    The same ``generator`` state gives the same list, which is how every rank of a distributed
    job agrees on an epoch. Indices are ascending; shuffle them afterwards.

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
