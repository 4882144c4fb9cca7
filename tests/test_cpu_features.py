"""CPU capability detection: native bf16 and VNNI come from the CPU's flags.

The regression this guards: oneDNN's ``_is_mkldnn_bf16_supported()`` is true on every AVX-512
CPU (it can *emulate* bf16), so an Ice Lake Xeon without AVX512-BF16 was reported as native and
ran ``--bf16`` at a third of its float32 speed.
"""
import pytest
import torch

from deeplabv3_plugin import cpu_features as features_module
from deeplabv3_plugin.cpu_features import (CPUFeatures, cpu_features, features_from_cpuinfo,
                                           resolve_bf16)

ICE_LAKE = CPUFeatures('Intel Xeon (Ice Lake)', frozenset({'avx2', 'avx512f', 'avx512_vnni'}),
                       'AVX512')
ZEN4 = CPUFeatures('AMD EPYC (Zen 4)', frozenset({'avx2', 'avx512f', 'avx512_vnni',
                                                  'avx512_bf16'}), 'AVX512')
ZEN3 = CPUFeatures('AMD EPYC (Zen 3)', frozenset({'avx2', 'fma'}), 'AVX2')


def test_native_bf16_and_vnni_follow_the_flags():
    assert not ICE_LAKE.native_bf16 and ICE_LAKE.vnni
    assert ZEN4.native_bf16 and ZEN4.vnni
    assert not ZEN3.native_bf16 and not ZEN3.vnni
    assert ZEN3.describe() == ('AMD EPYC (Zen 3) [avx2 fma; torch AVX2] native bf16: no, '
                               'int8 VNNI: no')


SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8

processor	: 1
flags		: fpu
"""
ZEN3_VM = """processor	: 0
cpu family	: 25
model		: 1
model name	: AMD EPYC Processor
flags		: fpu sse2 avx2 fma
"""
ALDER_LAKE = """processor	: 0
model name	: 12th Gen Intel(R) Core(TM) i7-1260P
flags		: avx2 fma avx_vnni
"""


@pytest.mark.parametrize('cpuinfo, name, flags, native_bf16, vnni', [
    (SAPPHIRE_RAPIDS, 'Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143)',
     {'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_int8'}, True, True),
    (ZEN3_VM, 'AMD EPYC Processor (family 25 model 1)', {'avx2', 'fma'}, False, False),
    (ALDER_LAKE, '12th Gen Intel(R) Core(TM) i7-1260P', {'avx2', 'fma', 'avx_vnni'}, False, True),
])
def test_features_are_read_from_the_first_processor_of_cpuinfo(cpuinfo, name, flags,
                                                               native_bf16, vnni):
    features = features_from_cpuinfo(cpuinfo)
    assert (features.name, set(features.flags)) == (name, flags)
    assert (features.native_bf16, features.vnni) == (native_bf16, vnni)


def test_this_cpu_is_described():
    features = cpu_features()
    assert features.name and features.name in features.describe()
    assert features.torch_capability == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize('cpu, requested, force, device, expected', [
    (ZEN3, True, False, 'cpu', False),  # emulated: float32 is kept
    (ZEN3, True, True, 'cpu', True),  # unless forced
    (ZEN3, False, False, 'cpu', False),
    (ICE_LAKE, True, False, 'cpu', False),
    (ZEN4, True, False, 'cpu', True),
    (ZEN3, True, False, 'cuda', True),  # GPUs are not second-guessed
])
def test_resolve_bf16(monkeypatch, cpu, requested, force, device, expected):
    # mmengine's 'current' logger may write wherever an earlier test pointed it: collect here
    logged = []
    monkeypatch.setattr('mmengine.logging.print_log', lambda msg, **kw: logged.append(msg))
    monkeypatch.setattr(features_module, 'cpu_features', lambda: cpu)
    monkeypatch.setattr(features_module, 'bf16_slowdown', lambda training=False: 3.3)
    monkeypatch.setattr(features_module, '_WARNED', set())
    assert resolve_bf16(requested, force, device, what='--bf16') is expected
    resolve_bf16(requested, force, device, what='--bf16')  # warned once only
    warned = '\n'.join(logged)
    if requested and device == 'cpu' and not cpu.native_bf16:
        assert warned.count('3.3x') == 1 and cpu.name in warned
    else:
        assert 'bf16' not in warned
