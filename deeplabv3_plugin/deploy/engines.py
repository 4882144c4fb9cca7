"""Which engine runs inference: the one place that turns ``--backend``/``--precision`` (or
``auto``) into an :class:`Engine`, from a table of what ``benchmarks/run.py`` measured per CPU kind.

Two goals: ``'exact'`` (float32 maths, the predictions of the float32 model: what a paper
reproduction is scored with, ``tools/test.py``'s default) and ``'fast'`` (the fastest engine that
holds accuracy: int8 within 0.5 mIoU of float32, bf16 within 0.2; ``tools/infer.py``, the
inferencer, ``tools/test.py --fast``, the demo).
"""
from dataclasses import dataclass
from typing import Dict, Tuple

from ..errors import UserInputError
from ..cpu_features import CPUFeatures, cpu_features

__all__ = ['BACKEND_CHOICES', 'PRECISION_CHOICES', 'Engine', 'ENGINE_TABLE', 'choose_engine',
           'cpu_kind']

BACKEND_CHOICES = ('auto', 'pytorch', 'onnxruntime', 'openvino')
PRECISION_CHOICES = ('auto', 'fp32', 'bf16', 'int8')
GOALS = ('exact', 'fast')


@dataclass(frozen=True)
class Engine:
    """``backend`` runs the model in ``precision``; ``compile``: ``torch.compile`` with frozen
    weights (PyTorch only)."""

    backend: str
    precision: str = 'fp32'
    compile: bool = False

    @property
    def exported(self) -> bool:
        return self.backend != 'pytorch'

    def __str__(self) -> str:
        compiled = ' + torch.compile' if self.compile else ''
        return f'{self.backend} {self.precision}{compiled}'


@dataclass(frozen=True)
class KindChoice:
    """Per precision the engine measured fastest on a CPU kind, the precision of the ``fast``
    goal, and where the figures come from (same-run ratios against the PyTorch fp32 fast path:
    channels_last, BN folded)."""

    fp32: Engine
    int8: Engine
    bf16: Engine
    fast: str
    evidence: str


#: The choice per CPU kind (see :func:`cpu_kind`): DeepLabV3 at 513 x 513, batch 1, 2 threads,
#: against the PyTorch fp32 fast path in the same run; ``benchmarks/run.py`` prints the same rows
#: and checks this table against them on any machine ("Engine choice").
ENGINE_TABLE: Dict[str, KindChoice] = {
    'native-bf16': KindChoice(
        fp32=Engine('pytorch', 'fp32', compile=True), int8=Engine('openvino', 'int8'),
        bf16=Engine('openvino', 'bf16'), fast='int8',
        evidence='measured 2026-12-06 on an Intel Xeon family 6 model 167 (AMX, AVX512-BF16, '
        'VNNI): OpenVINO int8 3.6x, torch.compile fp32 1.3x (ONNX Runtime and OpenVINO fp32 '
        '0.6x), OpenVINO with the bf16 hint 1.2x, eager bf16 1.0x'),
    'vnni': KindChoice(
        fp32=Engine('pytorch', 'fp32'), int8=Engine('openvino', 'int8'),
        bf16=Engine('pytorch', 'bf16'), fast='int8',
        evidence='not measured on this kind: int8 runs on VNNI, with the engine fastest in '
        'int8 where VNNI was measured (OpenVINO); fp32 stays on the PyTorch fast path, which no '
        'fp32 engine beat there'),
    'avx2': KindChoice(
        fp32=Engine('onnxruntime', 'fp32'), int8=Engine('onnxruntime', 'int8'),
        bf16=Engine('pytorch', 'bf16'), fast='int8',
        evidence='measured 2026-12-06 on an AMD EPYC family 25 model 1 (Zen 3, AVX2 only), '
        'R-50 and R-101 at OS 16 and 8: ONNX Runtime int8 1.7-2.1x, OpenVINO int8 1.5-1.9x; '
        'fp32 runs at the matmul limit on every engine: ONNX Runtime 0.98-1.16x (mean 1.08x), '
        'torch.compile 0.93-1.17x, OpenVINO 0.95-1.04x; bf16 is emulated, several times '
        'slower'),
}


def cpu_kind(features: CPUFeatures) -> str:
    """``'native-bf16'`` (AVX512-BF16 or AMX), ``'vnni'`` (int8 dot products, no native bf16)
    or ``'avx2'`` (neither)."""
    if features.native_bf16:
        return 'native-bf16'
    return 'vnni' if features.vnni else 'avx2'


def _check(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(f'--{name} {value!r}: expected one of {", ".join(choices)}.')


def choose_engine(backend: str = 'auto', precision: str = 'auto', goal: str = 'exact',
                  device: str = 'cpu', distributed: bool = False) -> Tuple[Engine, str]:
    """The engine for ``backend`` and ``precision`` (either ``'auto'``) with ``goal``, and one
    sentence saying why; unknown names and impossible pairs raise ``UserInputError``."""
    _check('backend', backend, BACKEND_CHOICES)
    _check('precision', precision, PRECISION_CHOICES)
    if goal not in GOALS:
        raise ValueError(f'goal {goal!r}: expected one of {GOALS}')
    on_gpu = not str(device).startswith('cpu')
    if (on_gpu or distributed) and backend == 'auto':
        where = f'device {device}' if on_gpu else 'a distributed run'
        engine = Engine('pytorch', 'fp32' if precision == 'auto' else precision)
        _check_pair(engine, device)
        return engine, f'{engine}: on {where} the model runs in PyTorch.'
    if on_gpu and backend != 'pytorch':
        raise UserInputError(f'--backend {backend} runs on the CPU; with --device {device} use '
                             '--backend pytorch (or auto).')
    features = cpu_features()
    kind = cpu_kind(features)
    row = ENGINE_TABLE[kind]
    wanted = precision if precision != 'auto' else ('fp32' if goal == 'exact' else row.fast)
    if precision == 'auto' and backend == 'pytorch' and wanted == 'int8':
        wanted = 'fp32'  # int8 runs only on an exported graph
    measured = getattr(row, wanted)
    if backend == 'auto':
        engine, why = measured, 'measured fastest'
    elif backend == measured.backend:
        engine, why = measured, 'as asked; also measured fastest'
    else:
        engine = Engine(backend, wanted)
        why = f'as asked (measured fastest in {wanted} here: {measured})'
    _check_pair(engine, device)
    return engine, (f'{engine} ({why} for {wanted} on CPU kind {kind!r}, {features.name}; '
                    f'{row.evidence}).')


def _check_pair(engine: Engine, device: str) -> None:
    if engine.backend == 'pytorch' and engine.precision == 'int8':
        raise UserInputError('--backend pytorch --precision int8: int8 runs on the exported '
                             'graph; use --backend onnxruntime or openvino (or auto).')
    if engine.backend == 'onnxruntime' and engine.precision == 'bf16':
        raise UserInputError('--backend onnxruntime --precision bf16: ONNX Runtime has no bf16 '
                             'mode for this graph; use --backend openvino or pytorch (or auto).')
