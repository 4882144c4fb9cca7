"""Bootstrapping on hard images as mmengine data samplers (DeepLabV3, Sec. 4.1).

For its VOC test-set model the paper duplicates the training images that contain a hard class:
image-level oversampling, not pixel mining. Each epoch is shuffled with ``seed + epoch``, the
same on every rank; each rank takes a disjoint shard.
"""
import itertools
import math
import warnings
from typing import Iterator, List, Optional, Sequence, Sized, Union

import torch
from mmengine.dist import broadcast_object_list, get_dist_info, get_rank, is_distributed
from mmengine.dist import sync_random_seed
from mmengine.logging import print_log
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .hard_image_index import dataset_class_sets, resolve_class_indices
from .repeat_factors import expand_indices, max_epoch_length, repeat_factors


def _shared_class_sets(dataset: Sized, cache_dir: Optional[str]) -> list:
    """Class sets scanned on rank 0 only (no N-fold decoding, no race on the cache file) and
    broadcast, an error included, so that no rank hangs."""
    if not is_distributed():
        return dataset_class_sets(dataset, cache_dir)
    payload: list = [None]
    if get_rank() == 0:
        try:
            payload[0] = dataset_class_sets(dataset, cache_dir)
        except Exception as error:  # noqa: BLE001  (re-raised below on every rank)
            payload[0] = error
    broadcast_object_list(payload, src=0)
    if isinstance(payload[0], Exception):
        raise payload[0]
    return payload[0]


@DATA_SAMPLERS.register_module()
class BootstrapSampler(Sampler):
    """Finite bootstrapping sampler for ``EpochBasedTrainLoop`` (DeepLabV3, Sec. 4.1).

    Like ``DefaultSampler(round_up=True)``, the epoch is padded by wrapping around to a multiple
    of the world size, and rank ``r`` takes ``indices[r::world_size]``.

    Args:
        dataset: The training dataset; label maps come from ``get_data_info(i)``.
        hard_classes: Classes whose images are repeated, by name or index. Paper (VOC):
            ``('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa')``.
        repeat_factor: Times a hard image appears per epoch, >= 1. The paper "duplicates" (2)
            without saying more; a fractional part is drawn per epoch (1.5: half of them).
        seed: Shared by all ranks; None draws one on rank 0 (mmengine's ``sync_random_seed``).
        cache_dir: Where the label index is cached; default ``~/.cache/deeplabv3_plugin``.
    """

    def __init__(self,
                 dataset: Sized,
                 hard_classes: Union[str, int, Sequence[Union[str, int]]],
                 repeat_factor: float = 2.0,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 cache_dir: Optional[str] = None) -> None:
        super().__init__()
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.epoch = 0
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.repeat_factor = float(repeat_factor)
        names = getattr(dataset, 'metainfo', {}).get('classes')
        self.hard_classes = resolve_class_indices(hard_classes, names)
        class_sets = _shared_class_sets(dataset, cache_dir)
        self.factors = repeat_factors(class_sets, self.hard_classes, self.repeat_factor)
        self.hard_image_indices = [
            i for i, s in enumerate(class_sets) if s.intersection(self.hard_classes)]
        self.epoch_length = max_epoch_length(self.factors)
        self._log_summary(class_sets, names)

    def _log_summary(self, class_sets: list, names: Optional[Sequence[str]]) -> None:
        names = list(names or ())
        hard = [(str(names[c]) if c < len(names) else str(c), c) for c in self.hard_classes]
        per_class = ', '.join(f'{n}: {sum(c in s for s in class_sets)}' for n, c in hard)
        bound = '' if self.repeat_factor.is_integer() else 'at most '
        print_log(
            f'{type(self).__name__}: {len(self.hard_image_indices)} of {len(self.dataset)} images '
            f'contain a hard class ({per_class}); repeat_factor={self.repeat_factor:g}; epoch '
            f'length {len(self.dataset)} -> {bound}{self.epoch_length}{self._padding_note()}',
            logger='current')
        if not self.hard_image_indices:
            warnings.warn(f'{type(self).__name__}: no training image contains any of the hard '
                          f'classes {[n for n, _ in hard]}; bootstrapping has no effect and '
                          'every image is sampled once per epoch', UserWarning)

    def _padding_note(self) -> str:
        if self.world_size == 1 and self.repeat_factor.is_integer():
            return ''
        return f', padded to {self.total_size} ({len(self)} per rank, world size {self.world_size})'

    def _epoch_indices(self, epoch: int) -> List[int]:
        """The whole epoch's list (all ranks), from a generator seeded by ``seed + epoch``."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        indices = expand_indices(self.factors, generator)
        if self.shuffle:
            order = torch.randperm(len(indices), generator=generator).tolist()
            indices = [indices[i] for i in order]
        return indices

    @property
    def total_size(self) -> int:
        """The padded epoch length, a multiple of the world size."""
        return math.ceil(self.epoch_length / self.world_size) * self.world_size

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices(self.epoch)
        if len(indices) < self.total_size:  # wrap around, like DefaultSampler's round_up
            indices = (indices * math.ceil(self.total_size / len(indices)))[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.total_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


@DATA_SAMPLERS.register_module()
class InfiniteBootstrapSampler(BootstrapSampler):
    """Endless bootstrapping sampler for ``IterBasedTrainLoop`` (the paper counts iterations).

    Chains epochs 0, 1, 2, ... and rank ``r`` takes every ``world_size``-th index, like
    mmengine's ``InfiniteSampler``; no padding. Arguments as :class:`BootstrapSampler`.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # One stream per sampler: a new DataLoader iterator continues where the last one stopped.
        epochs = itertools.chain.from_iterable(map(self._epoch_indices, itertools.count()))
        self._indices = itertools.islice(epochs, self.rank, None, self.world_size)

    def _padding_note(self) -> str:
        return ''

    def __iter__(self) -> Iterator[int]:
        # The stream itself: a generator wrapping it would close it when garbage-collected.
        return self._indices

    def __len__(self) -> int:
        """One bootstrapped epoch (all ranks), as ``InfiniteSampler`` reports."""
        return self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        """Not used: the stream moves through epochs by itself."""
