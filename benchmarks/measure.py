"""Timing, FLOP counting and peak-memory primitives of the benchmark.

Everything here measures *ratios in one process* on a possibly shared machine:

* :func:`time_alternating` runs the candidates in turns (A, B, C, A, B, C, ...) after a warm-up,
  so a burst of load from another process slows every candidate of a round alike, and reports
  medians.
* :func:`count_flops` counts what a call computes with ``torch.utils.flop_counter``
  (convolutions, matmuls; one multiply-add = 2 FLOP), independent of how fast it ran.
* :class:`PeakMemory` reads the peak RSS of this process on Linux (``VmHWM``, reset through
  ``/proc/self/clear_refs``) or the peak allocated CUDA memory.
"""
import ctypes
import gc
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    'synchronize', 'time_alternating', 'count_flops', 'PeakMemory', 'matmul_reference',
    'median'
]


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so that wall time covers it (no-op on CPU)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def median(values: List[float]) -> float:
    return statistics.median(values)


def time_alternating(candidates: Dict[str, Callable[[], object]],
                     device: torch.device,
                     warmup: int = 1,
                     repeats: int = 5) -> Dict[str, List[float]]:
    """Wall time of each candidate, measured in alternating rounds after ``warmup`` rounds.

    Warm-up matters on CPU (oneDNN primitive creation, weight reorders, allocator growth): the
    first call of a convolution shape is several times slower than the next ones.

    Args:
        candidates (dict[str, Callable]): Name -> zero-argument call to time.
        device (torch.device): Device to synchronise before reading the clock.
        warmup (int): Untimed rounds. Default: 1.
        repeats (int): Timed rounds. Default: 5.

    Returns:
        dict[str, list[float]]: Seconds of every timed call, per candidate.
    """
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, call in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def count_flops(call: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of the convolutions and matmuls one ``call()`` runs."""
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


class PeakMemory:
    """Peak memory of one section of this process: RSS on CPU, allocated memory on CUDA.

    On CPU the kernel's high-water mark ``VmHWM`` is reset to the current RSS before the
    section (``echo 5 > /proc/self/clear_refs``) after returning freed heap memory to the
    system (glibc ``malloc_trim``), so the value is the peak of the section, not of the process'
    past. ``delta_mb`` is that peak minus the RSS at the start of the section.

    Args:
        device (torch.device): Where the section runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start_mb: Optional[float] = None
        self.peak_mb: Optional[float] = None

    @staticmethod
    def _status_mb(field: str) -> Optional[float]:
        try:
            with open('/proc/self/status') as status:
                for line in status:
                    if line.startswith(field + ':'):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _release_heap() -> None:
        gc.collect()
        try:
            ctypes.CDLL('libc.so.6').malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def __enter__(self) -> 'PeakMemory':
        self._release_heap()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:
            with open('/proc/self/clear_refs', 'w') as clear_refs:
                clear_refs.write('5')
            self.start_mb = self._status_mb('VmRSS')
        except OSError:  # not Linux, or not allowed: no resettable high-water mark
            self.start_mb = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.start_mb is not None:
            self.peak_mb = self._status_mb('VmHWM')

    @property
    def delta_mb(self) -> Optional[float]:
        if self.start_mb is None or self.peak_mb is None:
            return None
        return self.peak_mb - self.start_mb


def matmul_reference(device: torch.device, dtype: torch.dtype = torch.float32,
                     size: int = 2048) -> Callable[[], object]:
    """A square matmul, the machine's reference for achievable GFLOP/s (2 * size**3 FLOP).

    Returns:
        Callable: A zero-argument call computing one product.
    """
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    right = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    return lambda: torch.mm(left, right)
