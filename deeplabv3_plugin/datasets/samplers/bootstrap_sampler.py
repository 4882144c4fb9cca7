"""Bootstrapping on hard images as mmengine data samplers (DeepLabV3, Sec. 4.1).

For its VOC test-set model the paper duplicates, in the training set, the images that contain a
hard class (bicycle, chair, dining table, potted plant, sofa): image-level oversampling, not pixel
mining. These samplers do that without touching the dataset: each epoch lists hard images
``repeat_factor`` times (see :mod:`.repeat_factors`), shuffles the list with a generator seeded by
``seed + epoch`` (identical on every rank), and gives each rank a disjoint shard.

* :class:`BootstrapSampler` is finite, for ``EpochBasedTrainLoop``: like mmengine's
  ``DefaultSampler(round_up=True)``, the epoch is padded by wrapping around so that its length is
  the same every epoch and divisible by the world size; ``set_epoch`` changes the permutation and
  the fractional draws.
* :class:`InfiniteBootstrapSampler` is infinite, for ``IterBasedTrainLoop`` (a finite sampler there
  is exhausted, warned about and restarted): it chains epochs 0, 1, 2, ... and each rank takes every
  ``world_size``-th index, like mmengine's ``InfiniteSampler``.

Usage (the Runner passes ``dataset`` and ``seed``)::

    train_dataloader = dict(
        sampler=dict(type='InfiniteBootstrapSampler', shuffle=True,
                     hard_classes=('bicycle', 'chair', 'diningtable', 'pottedplant', 'sofa'),
                     repeat_factor=2.0))
"""
import itertools
import math
import warnings
from typing import Iterator, List, Optional, Sequence, Sized, Union

import torch
from mmengine.dist import broadcast_object_list, get_dist_info, get_rank, is_distributed
from mmengine.dist import sync_random_seed
from mmengine.logging import print_log
from torch.utils.data import Sampler

from mmseg.registry import DATA_SAMPLERS
from .hard_image_index import dataset_class_sets, resolve_class_indices
from .repeat_factors import check_repeat_factor, expand_indices, max_epoch_length, repeat_factors

HardClasses = Union[str, int, Sequence[Union[str, int]]]


def _shared_class_sets(dataset: Sized, cache_dir: Optional[str]) -> list:
    """Class sets of every image, computed once on rank 0 and broadcast to the other ranks.

    Scanning on one rank avoids N processes decoding the same files and racing on the cache file;
    broadcasting (rather than every rank reading the cache) also works when ``cache_dir`` is not
    shared between nodes. An error on rank 0 is broadcast too, so no rank hangs waiting.
    """
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


class _BootstrapBase(Sampler):
    """What both samplers share: hard-image discovery, factors, seeded epoch lists, the log line.

    The arguments are documented on :class:`BootstrapSampler`.
    """

    def __init__(self,
                 dataset: Sized,
                 hard_classes: HardClasses,
                 repeat_factor: float = 2.0,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 cache_dir: Optional[str] = None) -> None:
        super().__init__()
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.repeat_factor = check_repeat_factor(repeat_factor)
        class_names = getattr(dataset, 'metainfo', {}).get('classes')
        self.hard_classes = resolve_class_indices(hard_classes, class_names)
        self.shuffle = bool(shuffle)
        self.seed = sync_random_seed() if seed is None else int(seed)

        class_sets = _shared_class_sets(dataset, cache_dir)
        self.factors = repeat_factors(class_sets, self.hard_classes, self.repeat_factor)
        self.hard_image_indices = [
            i for i, s in enumerate(class_sets) if s.intersection(self.hard_classes)]
        self.images_per_class = {
            c: sum(c in s for s in class_sets) for c in self.hard_classes}
        self.epoch_length = max_epoch_length(self.factors)
        self._log_summary(class_names)

    def _class_name(self, index: int, class_names: Optional[Sequence[str]]) -> str:
        if class_names is not None and index < len(class_names):
            return str(class_names[index])
        return str(index)

    def _log_summary(self, class_names: Optional[Sequence[str]]) -> None:
        # a fractional factor makes an epoch max_epoch_length or one index shorter
        bound = '' if self.repeat_factor.is_integer() else 'at most '
        per_class = ', '.join(f'{self._class_name(c, class_names)}: {n}'
                              for c, n in self.images_per_class.items())
        print_log(
            f'{type(self).__name__}: {len(self.hard_image_indices)} of {len(self.dataset)} images '
            f'contain a hard class ({per_class}); repeat_factor={self.repeat_factor:g}; epoch '
            f'length {len(self.dataset)} -> {bound}{self.epoch_length}{self._padding_note()}',
            logger='current')
        if not self.hard_image_indices:
            names = [self._class_name(c, class_names) for c in self.hard_classes]
            warnings.warn(f'{type(self).__name__}: no training image contains any of the hard '
                          f'classes {names}; bootstrapping has no effect and every image is '
                          'sampled once per epoch', UserWarning)

    def _padding_note(self) -> str:
        return ''

    def _epoch_indices(self, epoch: int) -> List[int]:
        """The whole epoch's list (all ranks), from a generator seeded by ``seed + epoch``."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        indices = expand_indices(self.factors, generator)
        if self.shuffle:
            order = torch.randperm(len(indices), generator=generator).tolist()
            indices = [indices[i] for i in order]
        return indices


@DATA_SAMPLERS.register_module()
class BootstrapSampler(_BootstrapBase):
    """Finite bootstrapping sampler for epoch-based training (DeepLabV3, Sec. 4.1).

    Every epoch lists each image once and each hard image ``repeat_factor`` times, shuffled with
    ``seed + epoch`` (call :meth:`set_epoch`, as mmengine's loops do). The list is padded by
    wrapping around to ``total_size = ceil(max_epoch_length / world_size) * world_size``, as
    ``DefaultSampler(round_up=True)`` does, and rank ``r`` takes ``indices[r::world_size]``: the
    shards are disjoint and cover the epoch. With a fractional factor an epoch may be one index
    shorter than ``max_epoch_length`` before padding; the length seen by the loader is fixed.

    Args:
        dataset (Sized): The training dataset (built and ``full_init``-ed by the Runner). Label
            maps are found through ``get_data_info(i)['seg_map_path']``, which also works through
            ``ConcatDataset``; each sample's ``reduce_zero_label`` and ``label_map`` are honoured.
        hard_classes (str | int | Sequence[str | int]): Classes whose images are repeated, by name
            in ``dataset.metainfo['classes']`` or by index. Paper (VOC): ``('bicycle', 'chair',
            'diningtable', 'pottedplant', 'sofa')``.
        repeat_factor (float): How many times a hard image appears per epoch, >= 1. The paper
            "duplicates" hard images (2.0) without saying more. A fractional part is drawn per
            epoch from the seed: 1.5 repeats half of the hard images, a different half each epoch.
            Defaults to 2.0.
        shuffle (bool): Shuffle the epoch list. Defaults to True.
        seed (int, optional): Seed shared by all ranks; None draws one on rank 0 and broadcasts it
            (mmengine's ``sync_random_seed``). The Runner passes its ``randomness.seed``.
            Defaults to None.
        cache_dir (str, optional): Where the JSON index of label values is cached. Defaults to
            ``$XDG_CACHE_HOME/deeplabv3_plugin``, else ``~/.cache/deeplabv3_plugin``.

    Example:
        >>> sampler = BootstrapSampler(voc_train, hard_classes=('chair', 'sofa'),
        ...                            repeat_factor=2.0, seed=0)
        >>> sampler.set_epoch(1)
        >>> indices = list(sampler)   # this rank's share of epoch 1
    """

    def __init__(self,
                 dataset: Sized,
                 hard_classes: HardClasses,
                 repeat_factor: float = 2.0,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 cache_dir: Optional[str] = None) -> None:
        self.epoch = 0
        super().__init__(dataset, hard_classes, repeat_factor, shuffle, seed, cache_dir)

    @property
    def num_samples(self) -> int:
        """Indices per rank and epoch."""
        return math.ceil(self.epoch_length / self.world_size)

    @property
    def total_size(self) -> int:
        """Indices per epoch over all ranks (the padded epoch length)."""
        return self.num_samples * self.world_size

    def _padding_note(self) -> str:
        if self.world_size == 1 and self.repeat_factor.is_integer():
            return ''
        return (f', padded to {self.total_size} ({self.num_samples} per rank, '
                f'world size {self.world_size})')

    def __iter__(self) -> Iterator[int]:
        indices = self._epoch_indices(self.epoch)
        if len(indices) < self.total_size:  # wrap around, like DefaultSampler's round_up
            indices = (indices * math.ceil(self.total_size / len(indices)))[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.world_size])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and fractional draws are used next."""
        self.epoch = epoch


@DATA_SAMPLERS.register_module()
class InfiniteBootstrapSampler(_BootstrapBase):
    """Infinite bootstrapping sampler for iteration-based training (DeepLabV3, Sec. 4.1).

    The paper trains for a number of iterations (30K on VOC), which mmengine runs with
    ``IterBasedTrainLoop``; that loop wants an endless sampler (mmengine's ``InfiniteSampler``).
    This one yields epoch 0, then 1, 2, ... of the bootstrapped list, each shuffled with
    ``seed + epoch`` so every rank computes the same stream, and rank ``r`` takes every
    ``world_size``-th index starting at ``r``. No padding is needed: the stream never ends.

    Args:
        dataset, hard_classes, repeat_factor, shuffle, seed, cache_dir: As for
            :class:`BootstrapSampler`.
    """

    def __init__(self,
                 dataset: Sized,
                 hard_classes: HardClasses,
                 repeat_factor: float = 2.0,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 cache_dir: Optional[str] = None) -> None:
        super().__init__(dataset, hard_classes, repeat_factor, shuffle, seed, cache_dir)
        # One stream per sampler: a new DataLoader iterator continues where the previous one
        # stopped instead of replaying epoch 0 (what mmengine's InfiniteSampler intends).
        self._indices = self._indices_of_rank()

    def _infinite_indices(self) -> Iterator[int]:
        for epoch in itertools.count():
            yield from self._epoch_indices(epoch)

    def _indices_of_rank(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self.rank, None, self.world_size)

    def __iter__(self) -> Iterator[int]:
        """The shared stream itself, not a generator wrapping it: closing a wrapper (which
        Python does when a discarded iterator is garbage-collected) would close the stream it
        delegates to, and every later ``iter(sampler)`` would be empty."""
        return self._indices

    def __len__(self) -> int:
        """Length of one bootstrapped epoch (all ranks), as ``InfiniteSampler`` reports."""
        return self.epoch_length

    def set_epoch(self, epoch: int) -> None:
        """Not used: the stream already moves through epochs by itself."""
