"""Tables of ratios and the issue's targets, from the results ``run.py`` collects."""
from typing import Dict, List, Optional

from benchmarks.bf16_accuracy import format_accuracy

INFERENCE_ORDER = ('mmseg', 'mmseg-fast', 'plugin-plain', 'plugin', 'plugin-bf16',
                   'plugin-compile', 'plugin-bf16-compile', 'matmul-fp32', 'matmul-bf16')
TRAINING_ORDER = ('mmseg', 'plugin', 'plugin-cl', 'plugin-cp')


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


def inference_table(groups: List[dict]) -> str:
    header = ['model', 'OS', 'variant', 's/img', 'img/s', 'GFLOP', 'GFLOP/s', '% matmul',
              'x mmseg', 'peak +MB', 'compile s']
    rows = []
    for group in groups:
        variants = group['variants']
        base = variants.get('mmseg', {}).get('median_s')
        for name in INFERENCE_ORDER:
            if name not in variants:
                continue
            v = variants[name]
            is_model = not name.startswith('matmul')
            reference = _reference(variants, name)
            rows.append([
                f"R-{group['depth']}", str(group['output_stride']), name,
                _fmt(v['median_s'], '.3f'),
                _fmt(v['images_per_s'], '.2f') if is_model else '-',
                _fmt(v['gflop'], '.1f'),
                _fmt(v['gflops'], '.0f'),
                _fmt(100 * v['gflops'] / reference, '.0f') if reference and is_model else '-',
                _fmt(base / v['median_s'], '.2f') if base and is_model else '-',
                _fmt(v.get('peak_delta_mb'), '.0f'),
                _fmt(v.get('first_call_s'), '.0f'),
            ])
    return _table(header, rows)


def training_table(groups: List[dict]) -> str:
    header = ['model', 'OS', 'crop x batch', 'variant', 's/step', 'x mmseg speed', 'GFLOP',
              'GFLOP/s', 'x mmseg GFLOP/s', 'peak MB', 'step MB', 'peak vs mmseg']
    rows = []
    for group in groups:
        variants = group['variants']
        base = variants.get('mmseg', {})
        for name in TRAINING_ORDER:
            if name not in variants:
                continue
            v = variants[name]
            rows.append([
                f"R-{group['depth']}", str(group['output_stride']),
                f"{group['crop']} x {group['batch_size']}", name,
                _fmt(v['median_s'], '.2f'),
                _fmt(base['median_s'] / v['median_s'], '.2f') if base else '-',
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
            if bf16 in v:
                add(f'{bf16} images/s / {fp32} fp32 images/s', where,
                    v[fp32]['median_s'] / v[bf16]['median_s'], '>=', 1.8)
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
    accuracy = results.get('accuracy')
    if accuracy:
        add('|bf16 mIoU - fp32 mIoU|', '--accuracy model',
            abs(accuracy['fast bf16']['mIoU'] - accuracy['fast fp32']['mIoU']), '<=', 0.3)
    return checks


def targets_table(checks: List[dict]) -> str:
    verdict = {True: 'yes', False: 'NO', None: '-'}
    rows = [[c['target'], c['where'], _fmt(c['value'], '.2f'),
             f"{c['op']} {c['goal']:.2f}" if c['op'] else '(cost)', verdict[c['met']]]
            for c in checks]
    return _table(['target', 'where', 'value', 'goal', 'met'], rows)


def format_report(results: dict) -> str:
    """The whole printed report: machine, tables, targets."""
    m = results['machine']
    s = results['settings']
    load = results['load_average_before']
    lines = [
        f"machine: {m['cpu']} ({', '.join(m['cpu_flags'])}; native bf16: {m['bf16_native']}), "
        f"{m['threads']} threads of {m['cpu_count']} CPUs, device {m['device']}"
        + (f" ({m['gpu']})" if 'gpu' in m else ''),
        f"software: python {m['python']}, torch {m['torch']}, mmcv {m['mmcv']}, mmengine "
        f"{m['mmengine']}, mmseg {m['mmseg']}",
        f"timing: median of {s['repeats']} (inference) / {s['train_repeats']} (training) "
        f"alternated rounds after {s['warmup']} warm-up round(s); total {results['seconds']:.0f} s",
        f'1-minute load average before the run: {load:.2f}'
        + ('' if load < 0.5 else ' -- other processes were using the cores: the timings are '
           'noisy, rerun when the machine is quiet'),
        '',
    ]
    if results['inference']:
        lines += [f"Inference, batch 1, {s['size']}x{s['size']} (test_step: preprocessing, "
                  'network, upsampling, argmax):', inference_table(results['inference']), '']
    if results['training']:
        lines += ['Training step (train_step: forward, backward, SGD); memory of each row '
                  'measured in its own process:', training_table(results['training']), '']
    if results.get('accuracy'):
        lines += ['Accuracy of the inference paths (--accuracy):',
                  format_accuracy(results['accuracy']), '']
    checks = targets(results)
    results['targets'] = checks
    if checks:
        lines += ['Targets (same-run ratios):', targets_table(checks), '']
    lines += ['variants: ' + '; '.join(f'{k}: {v}' for k, v in results['variants'].items())]
    return '\n'.join(lines)
