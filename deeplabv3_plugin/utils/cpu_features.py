"""What this CPU computes natively: bf16 dot products (AVX512-BF16, AMX) and int8 ones (VNNI).

The fast paths depend on it. bf16 autocast is ~2x faster than float32 where the CPU has bf16 dot
products, and several times *slower* where oneDNN emulates them (AVX2, or AVX-512 without
AVX512-BF16); int8 convolutions are fast with VNNI (``vpdpbusd``) and saturate their u8 x s8
products without it (ONNX Runtime's AVX2 kernels), which is why int8 models are quantized with
a reduced weight range there.

The flags come from ``/proc/cpuinfo`` (Linux), else from the checks torch builds in
(``torch.cpu._is_*_supported``). ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is *not* a
test of native bf16: it is true on any AVX-512 CPU, where oneDNN can emulate bf16.
"""
import functools
import logging
import platform
import time
from dataclasses import dataclass
from typing import Callable, FrozenSet

import torch

__all__ = ['CPUFeatures', 'cpu_features', 'bf16_slowdown', 'resolve_bf16']

#: The flags reported (``/proc/cpuinfo`` names).
REPORTED = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
            'amx_int8')
BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')
# torch's own checks, for systems without /proc/cpuinfo.
_TORCH_CHECKS = {'avx2': '_is_avx2_supported', 'avx512f': '_is_avx512_supported',
                 'avx512_vnni': '_is_vnni_supported', 'avx512_bf16': '_is_avx512_bf16_supported',
                 'amx_bf16': '_is_amx_tile_supported'}


_WARNED = set()  # (what, force) already warned about: once per process


@dataclass(frozen=True)
class CPUFeatures:
    """The CPU's name, its relevant ISA flags and torch's dispatch level.

    Attributes:
        name: The CPU model name (``/proc/cpuinfo`` ``model name``).
        flags: The flags of :data:`REPORTED` the CPU has.
        torch_capability: ``torch.backends.cpu.get_cpu_capability()`` (``'AVX2'``,
            ``'AVX512'``, ...): the widest kernels torch's own operators use.
    """

    name: str
    flags: FrozenSet[str]
    torch_capability: str

    @property
    def native_bf16(self) -> bool:
        """bf16 dot products in hardware (AVX512-BF16 or AMX-BF16)."""
        return any(flag in self.flags for flag in BF16_FLAGS)

    @property
    def vnni(self) -> bool:
        """int8 dot products without saturation (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return any(flag in self.flags for flag in VNNI_FLAGS)

    def describe(self) -> str:
        """One line: name, flags, torch's level, and what that means for bf16 and int8."""
        flags = ' '.join(flag for flag in REPORTED if flag in self.flags) or 'none of ' + \
            '/'.join(REPORTED)
        return (f'{self.name} [{flags}; torch {self.torch_capability}] native bf16: '
                f'{"yes" if self.native_bf16 else "no"}, int8 VNNI: '
                f'{"yes" if self.vnni else "no"}')


def _read_cpuinfo() -> tuple:
    """``(name, flags)`` of the first processor in ``/proc/cpuinfo``; flags None if unreadable.

    The name gets the family and model numbers: virtual machines often show only a brand
    (``AMD EPYC``), and those numbers tell the generation (e.g. family 25 model 1: Zen 3).
    """
    fields = {}
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(':')
                if not key.strip() and fields:  # end of the first processor
                    break
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get('model name') or platform.processor() or platform.machine()
    if 'cpu family' in fields and 'model' in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    flags = set(fields['flags'].split()) if 'flags' in fields else None
    return name, flags


@functools.lru_cache(maxsize=None)
def cpu_features() -> CPUFeatures:
    """The features of the CPU this process runs on (read once)."""
    name, flags = _read_cpuinfo()
    if flags is None:
        flags = {flag for flag, check in _TORCH_CHECKS.items()
                 if getattr(torch.cpu, check, lambda: False)()}
    return CPUFeatures(name=name, flags=frozenset(flags) & frozenset(REPORTED),
                       torch_capability=torch.backends.cpu.get_cpu_capability())


def _median_seconds(call: Callable[[], object], repeats: int = 5) -> float:
    call()  # oneDNN creates its kernels on the first call
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@functools.lru_cache(maxsize=None)
def bf16_slowdown(training: bool = False) -> float:
    """Measure, now, bf16 autocast time / float32 time of a 64-channel 3x3 conv (64 x 64 px).

    A convolution like DeepLabV3's (channels_last, as the fast path runs it); with ``training``
    forward and backward. About half a second. > 1 means bf16 is slower on this CPU.
    """
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    image = torch.randn(1, 64, 64, 64, generator=generator).contiguous(
        memory_format=torch.channels_last).requires_grad_(training)

    def run(bf16: bool) -> Callable[[], object]:
        def step():
            with torch.set_grad_enabled(training), \
                    torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                out = conv(image)
            if training:
                out.float().sum().backward()
        return step

    return _median_seconds(run(True)) / _median_seconds(run(False))


def resolve_bf16(requested: bool, force: bool = False, device: str = 'cpu',
                 what: str = 'bf16') -> bool:
    """Whether to run bf16: asked for (or forced), and native on this CPU unless forced.

    On a CPU without native bf16 a request is turned down with one warning giving the cost
    measured now (:func:`bf16_slowdown`); ``force`` runs it anyway (emulated, for testing).
    GPUs are not second-guessed.

    Args:
        requested: bf16 was asked for (``--bf16``, ``bf16=True``).
        force: Run bf16 even where it is emulated.
        device: The device the model runs on.
        what: How the request is named in the warning (e.g. ``'--bf16'``).

    Returns:
        bool: Run bf16.
    """
    if not (requested or force):
        return False
    if torch.device(device).type != 'cpu' or cpu_features().native_bf16:
        return True
    from mmengine.logging import print_log
    cost = bf16_slowdown()
    features = cpu_features()
    if (what, force) in _WARNED:
        return force
    _WARNED.add((what, force))
    if force:
        print_log(f'{what} forced on {features.name}, which has no native bf16 (no AVX512-BF16/'
                  f'AMX): bf16 is emulated, {cost:.1f}x the float32 time of a convolution '
                  'measured just now.', logger='current', level=logging.WARNING)
        return True
    print_log(f'{what} ignored: {features.name} has no native bf16 (no AVX512-BF16/AMX), so '
              f'bf16 is emulated and a convolution measured just now took {cost:.1f}x its '
              'float32 time. Running float32 (same predictions, faster); pass --force-bf16 '
              '(API: force_bf16=True) to run bf16 anyway.', logger='current',
              level=logging.WARNING)
    return False
