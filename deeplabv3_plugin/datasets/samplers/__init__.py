"""Data samplers: bootstrapping on hard images (DeepLabV3, Sec. 4.1)."""
from .bootstrap_sampler import BootstrapSampler, InfiniteBootstrapSampler
from .repeat_factors import expand_indices, max_epoch_length, repeat_factors

__all__ = [
    'BootstrapSampler', 'InfiniteBootstrapSampler', 'repeat_factors', 'expand_indices',
    'max_epoch_length'
]
