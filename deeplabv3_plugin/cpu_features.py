"""Native bf16 (AVX512-BF16, AMX; emulated bf16 is several times slower) and int8 (VNNI) on this
CPU, from its flags: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true on any AVX-512."""
import functools
import logging
import platform
import statistics
import timeit
from dataclasses import dataclass
from typing import FrozenSet

import torch

__all__ = ['CPUFeatures', 'cpu_features', 'bf16_slowdown', 'resolve_bf16']

#: The flags reported (``/proc/cpuinfo`` names); torch's checks where that file is missing.
REPORTED = ('avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_bf16',
            'amx_int8')
_TORCH_CHECKS = {'avx2': '_is_avx2_supported', 'avx512f': '_is_avx512_supported',
                 'avx512_vnni': '_is_vnni_supported', 'avx512_bf16': '_is_avx512_bf16_supported',
                 'amx_bf16': '_is_amx_tile_supported'}
_WARNED = set()  # (what, force) already warned about: once per process


@dataclass(frozen=True)
class CPUFeatures:
    """CPU name, its flags of :data:`REPORTED`, and torch's dispatch level (``'AVX2'`` ...)."""

    name: str
    flags: FrozenSet[str]
    torch_capability: str

    @property
    def native_bf16(self) -> bool:
        return bool({'avx512_bf16', 'amx_bf16'} & self.flags)

    @property
    def vnni(self) -> bool:
        return bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & self.flags)

    def describe(self) -> str:
        flags = ' '.join(f for f in REPORTED if f in self.flags) or 'none of ' + '/'.join(REPORTED)
        return (f'{self.name} [{flags}; torch {self.torch_capability}] native bf16: '
                f'{"yes" if self.native_bf16 else "no"}, int8 VNNI: '
                f'{"yes" if self.vnni else "no"}')


def features_from_cpuinfo(cpuinfo: str) -> CPUFeatures:
    """The features of the first processor in a ``/proc/cpuinfo`` text; family and model numbers
    name CPUs that virtual machines show only as a brand. Without flags (no such file), torch's
    own checks."""
    first = cpuinfo.strip().split('\n\n')[0]
    fields = {key.strip(): value.strip()
              for key, _, value in (line.partition(':') for line in first.splitlines())}
    name = fields.get('model name') or platform.processor() or platform.machine()
    if 'cpu family' in fields and 'model' in fields:
        name += f" (family {fields['cpu family']} model {fields['model']})"
    flags = set(fields['flags'].split()) if 'flags' in fields else {
        flag for flag, check in _TORCH_CHECKS.items() if getattr(torch.cpu, check, lambda: False)()}
    return CPUFeatures(name=name, flags=frozenset(flags) & frozenset(REPORTED),
                       torch_capability=torch.backends.cpu.get_cpu_capability())


@functools.lru_cache(maxsize=None)
def cpu_features() -> CPUFeatures:
    """This CPU's features, read once."""
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            return features_from_cpuinfo(cpuinfo.read())
    except OSError:
        return features_from_cpuinfo('')


def bf16_slowdown(training: bool = False) -> float:
    """bf16 autocast / float32 time of a channels_last 64-channel 3x3 conv (forward, and
    backward with ``training``), measured now: median of 5, about half a second."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    image = torch.randn(1, 64, 64, 64, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=torch.channels_last).requires_grad_(training)

    def run(bf16: bool) -> None:
        with torch.set_grad_enabled(training), \
                torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            out = conv(image)
        if training:
            out.float().sum().backward()

    def seconds(bf16: bool) -> float:  # the first call creates oneDNN's kernels: not counted
        return statistics.median(timeit.repeat(lambda: run(bf16), number=1, repeat=6)[1:])

    return seconds(True) / seconds(False)


def resolve_bf16(requested: bool, force: bool = False, device: str = 'cpu',
                 what: str = 'bf16') -> bool:
    """Whether to run bf16: requested and native here, or forced; GPUs are not second-guessed.
    Without native bf16 one warning, naming the request ``what``, gives the measured cost."""
    if not (requested or force):
        return False
    if torch.device(device).type != 'cpu' or cpu_features().native_bf16:
        return True
    if (what, force) in _WARNED:
        return force
    _WARNED.add((what, force))
    from mmengine.logging import print_log
    name, cost = cpu_features().name, bf16_slowdown()
    if force:
        message = (f'{what} forced on {name}, which has no native bf16 (no AVX512-BF16/AMX): '
                   f'bf16 is emulated, {cost:.1f}x the float32 time of a convolution measured '
                   'just now.')
    else:
        message = (f'{what} ignored: {name} has no native bf16 (no AVX512-BF16/AMX), so bf16 '
                   f'is emulated and a convolution measured just now took {cost:.1f}x its '
                   'float32 time. Running float32 (same predictions, faster); pass '
                   '--force-bf16 (API: force_bf16=True) to run bf16 anyway.')
    print_log(message, logger='current', level=logging.WARNING)
    return force
