"""CPU capability detection: native bf16 and VNNI come from the CPU's flags.

The regression this guards: oneDNN's ``_is_mkldnn_bf16_supported()`` is true on every AVX-512
CPU (it can *emulate* bf16), so an Ice Lake Xeon without AVX512-BF16 was reported as native and
ran ``--bf16`` at a third of its float32 speed.
"""
import pytest
import torch

from deeplabv3_plugin import cpu_features as features_module
from deeplabv3_plugin.cpu_features import CPUFeatures, cpu_features, resolve_bf16

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


def test_this_cpu_is_read_from_proc_cpuinfo():
    features = cpu_features()
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            flags = set(next(line for line in cpuinfo if line.startswith('flags')).split())
    except (OSError, StopIteration):
        pytest.skip('no /proc/cpuinfo flags on this system')
    assert features.native_bf16 == bool({'avx512_bf16', 'amx_bf16'} & flags)
    assert features.vnni == bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & flags)
    assert features.torch_capability == torch.backends.cpu.get_cpu_capability()
    assert features.name and features.name in features.describe()


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
