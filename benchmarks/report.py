"""The machine's description, tables of ratios and the targets, from what ``run.py`` collects."""
import argparse
import os
import platform
from dataclasses import astuple
from typing import Dict, List, Optional

import torch

from benchmarks.bf16_accuracy import format_accuracy

from deeplabv3_plugin.deploy.engines import ENGINE_TABLE, cpu_kind
from deeplabv3_plugin.cpu_features import cpu_features

INFERENCE_ORDER = ('mmseg', 'mmseg-fast', 'plugin-plain', 'plugin', 'plugin-bf16',
                   'plugin-compile', 'plugin-bf16-compile', 'onnx-fp32', 'onnx-int8', 'ov-fp32',
                   'ov-bf16', 'ov-int8', 'matmul-fp32', 'matmul-bf16')
TRAINING_ORDER = ('mmseg', 'plugin', 'plugin-amp', 'plugin-cl', 'plugin-cp')
#: The row of each Engine (deeplabv3_plugin.deploy.engines) in the inference table.
ENGINE_ROW = {('pytorch', 'fp32', False): 'plugin', ('pytorch', 'fp32', True): 'plugin-compile',
              ('pytorch', 'bf16', False): 'plugin-bf16',
              ('onnxruntime', 'fp32', False): 'onnx-fp32',
              ('onnxruntime', 'int8', False): 'onnx-int8',
              ('openvino', 'fp32', False): 'ov-fp32', ('openvino', 'bf16', False): 'ov-bf16',
              ('openvino', 'int8', False): 'ov-int8'}
#: Issue #21's targets per CPU kind, against the PyTorch fp32 fast path ('plugin'):
#: fastest accurate path, the fp32-exact path tools/test.py runs, --amp training step.
KIND_TARGETS = {'native-bf16': (5.0, 1.5, 1.8), 'vnni': (3.0, 1.3, None),
                'avx2': (2.5, 1.2, None)}

VARIANT_HELP = {
    'mmseg': "mmseg's DeepLabV3, fp32 contiguous NCHW (as mmseg's tools run it)",
    'mmseg-fast': "mmseg's DeepLabV3 through this plugin's fast path (channels_last + BN folded)",
    'plugin-plain': 'plugin DeepLabV3, fp32 contiguous NCHW, BN not folded',
    'plugin': 'plugin DeepLabV3, default fast path: fp32 channels_last + BN folded',
    'plugin-bf16': 'plugin DeepLabV3, fast path + bf16 autocast (emulated where the CPU has no '
    'native bf16)',
    'onnx-fp32': 'plugin DeepLabV3 exported to ONNX (BN folded), float32, ONNX Runtime, through '
    'ExportedSegmentor.test_step (same work as the PyTorch rows)',
    'onnx-int8': 'the same graph statically quantized (QDQ, per-channel, 4 calibration images), '
    'ONNX Runtime',
    'ov-fp32': 'the float32 graph on OpenVINO (INFERENCE_PRECISION_HINT f32)',
    'ov-bf16': "the float32 graph on OpenVINO with the bf16 hint (its own bf16 where native)",
    'ov-int8': 'the int8 QDQ graph on OpenVINO',
    'plugin-amp': 'plugin DeepLabV3 training as tools/train.py --amp on a CPU: bf16 autocast, '
    'channels_last (emulated where the CPU has no native bf16)',
    'plugin-compile': 'plugin DeepLabV3, fast path + torch.compile (inductor, frozen weights)',
    'plugin-bf16-compile': 'plugin DeepLabV3, fast path + bf16 autocast + torch.compile',
    'plugin-cp': 'plugin DeepLabV3 training with gradient checkpointing (backbone with_cp=True)',
    'plugin-cl': 'plugin DeepLabV3 training in channels_last',
}


def machine_info(args: argparse.Namespace, device: torch.device) -> dict:
    """What the numbers were measured on: the CPU, its bf16/int8 features, the software."""
    import mmcv
    import mmengine
    import mmseg
    import onnxruntime
    features = cpu_features()
    info = dict(
        cpu=features.name, cpu_flags=sorted(features.flags), cpu_count=os.cpu_count(),
        cpu_summary=features.describe(), threads=args.threads,
        torch_cpu_capability=features.torch_capability, bf16_native=features.native_bf16,
        vnni=features.vnni, python=platform.python_version(), torch=torch.__version__,
        onnxruntime=onnxruntime.__version__, openvino=_version('openvino'), mmcv=mmcv.__version__,
        mmengine=mmengine.__version__, mmseg=mmseg.__version__, device=str(device))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def _version(package: str) -> str:
    try:
        return __import__(package).__version__
    except ImportError:
        return 'not installed'


def _fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def _table(header: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = [' | '.join(cell.ljust(width) for cell, width in zip(header, widths))]
    lines.append('-|-'.join('-' * width for width in widths))
    lines += [' | '.join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return '\n'.join(lines)


def _reference(variants: Dict[str, dict], name: str) -> Optional[float]:
    key = 'matmul-bf16' if 'bf16' in name else 'matmul-fp32'
    return variants[key]['gflops'] if key in variants else None


def _spread(v: dict) -> str:
    times = v.get('times_s') or []
    return f"{100 * (max(times) - min(times)) / v['median_s']:.0f}%" if len(times) > 1 else '-'


def inference_table(groups: List[dict]) -> str:
    header = ['model', 'OS', 'variant', 's/img', 'spread', 'img/s', 'x plugin', 'GFLOP',
              'GFLOP/s', '% matmul', 'x mmseg', 'peak +MB', 'compile s']
    rows = []
    for group in groups:
        variants = group['variants']
        base = variants.get('mmseg', {}).get('median_s')
        plugin = variants.get('plugin', {}).get('median_s')
        for name in INFERENCE_ORDER:
            if name not in variants:
                continue
            v = variants[name]
            is_model = not name.startswith('matmul')
            reference = _reference(variants, name)
            rows.append([
                f"R-{group['depth']}", str(group['output_stride']), name,
                _fmt(v['median_s'], '.3f'), _spread(v),
                _fmt(v['images_per_s'], '.2f') if is_model else '-',
                _fmt(plugin / v['median_s'], '.2f') if plugin and is_model else '-',
                _fmt(v['gflop'], '.1f'),
                _fmt(v['gflops'], '.0f'),
                _fmt(100 * v['gflops'] / reference, '.0f') if reference and is_model else '-',
                _fmt(base / v['median_s'], '.2f') if base and is_model else '-',
                _fmt(v.get('peak_delta_mb'), '.0f'),
                _fmt(v.get('first_call_s'), '.0f'),
            ])
    return _table(header, rows)


def training_table(groups: List[dict]) -> str:
    header = ['model', 'OS', 'crop x batch', 'variant', 's/step', 'spread', 'x mmseg speed',
              'x plugin', 'GFLOP',
              'GFLOP/s', 'x mmseg GFLOP/s', 'peak MB', 'step MB', 'peak vs mmseg']
    rows = []
    for group in groups:
        variants = group['variants']
        base = variants.get('mmseg', {})
        plugin = variants.get('plugin', {}).get('median_s')
        for name in TRAINING_ORDER:
            if name not in variants:
                continue
            v = variants[name]
            rows.append([
                f"R-{group['depth']}", str(group['output_stride']),
                f"{group['crop']} x {group['batch_size']}", name,
                _fmt(v['median_s'], '.2f'), _spread(v),
                _fmt(base['median_s'] / v['median_s'], '.2f') if base else '-',
                _fmt(plugin / v['median_s'], '.2f') if plugin else '-',
                _fmt(v['gflop'], '.0f'),
                _fmt(v['gflops'], '.0f'),
                _fmt(v['gflops'] / base['gflops'], '.2f') if base else '-',
                _fmt(v.get('peak_mb'), '.0f'),
                _fmt(v.get('step_mb'), '.0f'),
                _fmt(v['peak_mb'] / base['peak_mb'], '.2f')
                if v.get('peak_mb') and base.get('peak_mb') else '-',
            ])
    return _table(header, rows)


def targets(results: dict) -> List[dict]:
    """Each of the issue's same-run targets, where it was measured, the value and the verdict.

    ``op`` is ``'>='`` or ``'<='`` against ``goal``; ``None`` marks a reported cost without a goal.
    """
    checks = []

    def add(name: str, where: str, value: Optional[float], op: Optional[str] = None,
            goal: Optional[float] = None) -> None:
        met = None
        if op is not None and value is not None:
            met = value >= goal if op == '>=' else value <= goal
        checks.append(dict(target=name, where=where, value=value, op=op, goal=goal, met=met))

    for group in results['inference']:
        v = group['variants']
        where = f"R-{group['depth']} OS {group['output_stride']} {group['size']}px"
        for fp32, bf16 in (('plugin', 'plugin-bf16'), ('plugin-compile', 'plugin-bf16-compile')):
            if fp32 not in v:
                continue
            if 'matmul-fp32' in v:
                add(f'{fp32} fp32 GFLOP/s / matmul fp32 GFLOP/s', where,
                    v[fp32]['gflops'] / v['matmul-fp32']['gflops'], '>=', 0.9)
            if 'mmseg' in v:
                add(f'{fp32} fp32 images/s / mmseg (as its tools run it)', where,
                    v['mmseg']['median_s'] / v[fp32]['median_s'], '>=', 1.8)
        kind = cpu_kind(cpu_features())
        fast_goal, exact_goal, _ = KIND_TARGETS[kind]
        accurate = [n for n in ('onnx-int8', 'ov-int8', 'ov-bf16') if n in v]
        if results['machine']['bf16_native']:
            accurate += [n for n in ('plugin-bf16', 'plugin-bf16-compile') if n in v]
        if accurate and 'plugin' in v:
            best = min(accurate, key=lambda n: v[n]['median_s'])
            add(f'fastest path holding accuracy ({best}) / plugin fp32 [CPU kind {kind}]', where,
                v['plugin']['median_s'] / v[best]['median_s'], '>=', fast_goal)
        exact = ENGINE_ROW[astuple(ENGINE_TABLE[kind].fp32)]
        if exact in v and 'plugin' in v:
            add(f'fp32-exact path of tools/test.py ({exact}) / plugin fp32 [CPU kind {kind}]',
                where, v['plugin']['median_s'] / v[exact]['median_s'], '>=', exact_goal)
    for group in results['training']:
        v = group['variants']
        where = (f"R-{group['depth']} OS {group['output_stride']} "
                 f"{group['crop']}px x {group['batch_size']}")
        if 'plugin' in v and 'mmseg' in v:
            add('training GFLOP/s plugin / mmseg', where,
                v['plugin']['gflops'] / v['mmseg']['gflops'], '>=', 1.0)
            if v['plugin'].get('peak_mb') and v['mmseg'].get('peak_mb'):
                add('training peak RSS plugin / mmseg', where,
                    v['plugin']['peak_mb'] / v['mmseg']['peak_mb'], '<=', 1.0)
        if 'plugin-cp' in v and v['plugin-cp'].get('peak_mb') and v['plugin'].get('peak_mb'):
            add('checkpointing: peak RSS saving', where,
                1 - v['plugin-cp']['peak_mb'] / v['plugin']['peak_mb'], '>=', 0.4)
            add('checkpointing: step memory saving', where,
                1 - v['plugin-cp']['step_mb'] / v['plugin']['step_mb'], '>=', 0.4)
        if 'plugin-cp' in v and 'plugin' in v:
            add('checkpointing: step time / without', where,
                v['plugin-cp']['median_s'] / v['plugin']['median_s'])
        if 'plugin-amp' in v and 'plugin' in v:
            kind = cpu_kind(cpu_features())
            goal = KIND_TARGETS[kind][2]
            add(f'--amp step speed / fp32 step [CPU kind {kind}'
                + (']' if goal else ': --amp refused here, this is its cost]'), where,
                v['plugin']['median_s'] / v['plugin-amp']['median_s'], '>=' if goal else None,
                goal)
    accuracy = results.get('accuracy')
    if accuracy:
        add('|bf16 mIoU - fp32 mIoU|', '--accuracy model',
            abs(accuracy['fast bf16']['mIoU'] - accuracy['fast fp32']['mIoU']), '<=', 0.3)
    for where, scores in results.get('int8_accuracy', {}).items():
        add('|int8 mIoU - fp32 mIoU|', where,
            abs(scores['onnx int8']['mIoU'] - scores['fast fp32']['mIoU']), '<=', 1.0)
    return checks


def targets_table(checks: List[dict]) -> str:
    verdict = {True: 'yes', False: 'NO', None: '-'}
    rows = [[c['target'], c['where'], _fmt(c['value'], '.2f'),
             f"{c['op']} {c['goal']:.2f}" if c['op'] else '(cost)', verdict[c['met']]]
            for c in checks]
    return _table(['target', 'where', 'value', 'goal', 'met'], rows)


def choice_lines(groups: List[dict]) -> List[str]:
    """Per model, the fastest row of each precision against what ``auto`` picks on this CPU
    kind (:data:`deeplabv3_plugin.deploy.engines.ENGINE_TABLE`)."""
    kind = cpu_kind(cpu_features())
    row = ENGINE_TABLE[kind]
    lines = []
    for group in groups:
        v = group['variants']
        parts = []
        for precision, names in (('fp32', ('plugin', 'plugin-compile', 'onnx-fp32', 'ov-fp32')),
                                 ('int8', ('onnx-int8', 'ov-int8'))):
            present = [n for n in names if n in v]
            if not present:
                continue
            fastest = min(present, key=lambda n: v[n]['median_s'])
            table = ENGINE_ROW[astuple(getattr(row, precision))]
            parts.append(f'{precision}: fastest {fastest}, auto picks {table}'
                         + ('' if fastest == table else
                            f" ({v[fastest]['median_s'] / v[table]['median_s']:.2f}x its time)"
                            if table in v else ' (not timed)'))
        lines.append(f"R-{group['depth']} OS {group['output_stride']} [CPU kind {kind}]: "
                     + '; '.join(parts))
    return lines


def int8_lines(groups: List[dict]) -> List[str]:
    """What stays float in each int8 graph, and where its time goes (ONNX Runtime's profile)."""
    lines = []
    for group in groups:
        if 'int8_profile' not in group:
            continue
        left = ', '.join(f'{op} x{n}' for op, n in sorted(group['int8_ops']['float'].items()))
        quantized = ', '.join(f'{op} x{n}' for op, n in sorted(group['int8_ops']['int8'].items()))
        profile = ', '.join(f"{row['op']} {row['ms']:.0f} ms ({100 * row['share']:.0f}%)"
                            for row in group['int8_profile'])
        lines += [f"R-{group['depth']} OS {group['output_stride']}: int8 {quantized}; left in "
                  f'float: {left}', f'    time by operator (one run): {profile}']
    return lines


def format_report(results: dict) -> str:
    """The whole printed report: machine, tables, targets."""
    m = results['machine']
    s = results['settings']
    load = results['load_average_before']
    lines = [
        f"CPU: {m['cpu_summary']}; {m['threads']} threads of {m['cpu_count']} CPUs, device "
        f"{m['device']}" + (f" ({m['gpu']})" if 'gpu' in m else ''),
        f"software: python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
        f"openvino {m.get('openvino', '-')}, "
        f"mmcv {m['mmcv']}, mmengine {m['mmengine']}, mmseg {m['mmseg']}",
        f"timing: median of {s['repeats']} (inference) / {s['train_repeats']} (training) "
        f"alternated rounds after {s['warmup']} warm-up round(s); total {results['seconds']:.0f} s",
        f'1-minute load average before the run: {load:.2f}'
        + ('' if load <= 1.5 else ' -- LOADED: other processes were using the cores, the '
           'timings are noisy; rerun when the machine is quiet'),
        f"1-minute load average after the run: {results.get('load_average_after', 0):.2f}",
        '',
    ]
    if results['inference']:
        lines += [f"Inference, batch 1, {s['size']}x{s['size']} (test_step: preprocessing, "
                  'network, upsampling, argmax; the onnx and ov rows through '
                  'ExportedSegmentor.test_step, the same work; % matmul: of the same-run fp32 '
                  'matmul rate, bf16 rows of the bf16 one):',
                  inference_table(results['inference']), '']
        lines += ['Engine choice (deeplabv3_plugin/deploy/engines.py) against this run:']
        lines += choice_lines(results['inference']) + ['']
        int8 = int8_lines(results['inference'])
        if int8:
            lines += ['int8 graphs (ONNX Runtime):'] + int8 + ['']
    if results['training']:
        lines += ['Training step (train_step: forward, backward, SGD); memory of each row '
                  'measured in its own process:', training_table(results['training']), '']
    if results.get('accuracy'):
        lines += ['Accuracy of the inference paths (--accuracy):',
                  format_accuracy(results['accuracy']), '']
    for where, scores in results.get('int8_accuracy', {}).items():
        lines += [f'int8 accuracy, {where}:', format_accuracy(scores), '']
    checks = targets(results)
    results['targets'] = checks
    if checks:
        lines += ['Targets (same-run ratios):', targets_table(checks), '']
    lines += ['variants: ' + '; '.join(f'{k}: {v}' for k, v in results['variants'].items())]
    return '\n'.join(lines)
