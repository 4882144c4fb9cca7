"""The arithmetic of bootstrapping on hard images, apart from any dataset or process group.

DeepLabV3 (Chen et al. 2017, Sec. 4.1, "bootstrapping" for the VOC test-set model) duplicates, in
the training set, every image that contains one of the hard classes (bicycle, chair, dining table,
potted plant, sofa). That is image-level oversampling: a hard image is seen ``repeat_factor`` times
per epoch instead of once. The paper does not state the factor, so it is a parameter here.

Three pure functions turn that idea into indices, in the spirit of detectron2's
``RepeatFactorTrainingSampler`` (per-image factors, integer part always, fractional part drawn at
random each epoch), so that a test can pin the maths with a list of class sets:

* :func:`repeat_factors` gives every image its factor (``repeat_factor`` or 1).
* :func:`expand_indices` turns factors into one epoch's index list from a seeded generator.
* :func:`max_epoch_length` bounds that list's length, which a finite sampler needs for ``__len__``.

Fractional parts are drawn by *systematic sampling* rather than one coin per image: image ``i``
still gets its extra copy with probability exactly ``frac(f_i)``, but the number of extra copies
in an epoch is ``floor(S)`` or ``ceil(S)`` (``S`` the sum of the fractional parts) instead of a
binomial count. A bounded epoch length is what lets a finite, distributed sampler declare ``len()`` up front
and pad every epoch to the same size on every rank.
"""
import math
from typing import Iterable, List, Sequence

import torch

#: Fractional parts are handled in integer units of 1/FRACTION_RESOLUTION so that sums and
#: comparisons are exact (a float sum could make ``ceil`` disagree between two code paths). A
#: factor written with up to six decimals, e.g. ``1.25`` or ``1.3``, is represented exactly.
FRACTION_RESOLUTION = 1_000_000


def check_repeat_factor(repeat_factor: float) -> float:
    """Validate the bootstrapping factor and return it as a float.

    Args:
        repeat_factor (float): How many times a hard image appears per epoch. ``1.0`` disables
            bootstrapping; ``2.0`` is the paper's "duplicate"; fractional values such as ``1.5``
            add the extra copy to a random half of the hard images each epoch.

    Returns:
        float: ``repeat_factor`` as a float.

    Raises:
        TypeError: If it is not a real number (``bool`` is refused: ``True`` is not a factor).
        ValueError: If it is below 1, infinite or NaN.
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

    Args:
        image_class_sets (Sequence[Iterable[int]]): For every dataset index, the class indices
            present in its label map (after the dataset's label mapping, ignore index removed).
        hard_classes (Iterable[int]): Class indices that make an image "hard".
        factor (float): Repeat factor of hard images, >= 1 (see :func:`check_repeat_factor`).

    Returns:
        list[float]: One factor per image, in dataset order.

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
    """The longest index list :func:`expand_indices` can return for ``factors``.

    It is ``sum(floor(f_i)) + ceil(sum(frac(f_i)))``; an epoch is that long or one shorter.

    Args:
        factors (Sequence[float]): Per-image repeat factors, each >= 1.

    Returns:
        int: Upper bound of the epoch length (exact when all factors are integers).
    """
    whole, fraction = _split(factors)
    return sum(whole) + -(-sum(fraction) // FRACTION_RESOLUTION)


def expand_indices(factors: Sequence[float], generator: torch.Generator) -> List[int]:
    """One epoch's dataset indices: image ``i`` appears ``floor(f_i)`` or ``floor(f_i) + 1`` times.

    The extra copy is given with probability ``frac(f_i)`` by systematic sampling: the images with
    a fractional part are put in random order and their fractions laid end to end on a line; a
    comb of points spaced one unit apart, starting at a random offset in [0, 1), picks every image
    whose segment a point falls in. Each fraction is below one, so a segment holds at most one
    point, and the offset is uniform, so the probability is exactly the segment length.

    Args:
        factors (Sequence[float]): Per-image repeat factors, each >= 1 (see
            :func:`repeat_factors`).
        generator (torch.Generator): Source of randomness. The same generator state gives the
            same list, which is how every rank of a distributed job agrees on an epoch.

    Returns:
        list[int]: Indices in ascending order, repeated; shuffle them afterwards if wanted.

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
