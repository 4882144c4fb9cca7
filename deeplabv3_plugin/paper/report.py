"""This project's mIoU beside the paper's: read finished work dirs, print the paper's tables.

Each run ``<work_dir>/<timestamp>/`` gives its config dump (``paper_ref`` names the row; the model
and test pipeline say how it evaluated: output stride, ``--tta`` scales and flip) and its mIoU
(test json, else the last validation scalar, else the log). A run fills every row that evaluates
the same trained model the same way (a training run of the best ASPP model fills Tab. 5, 6, 8, 9
and 10); the newest run wins a row, and a run that matches no row is listed apart.
"""
import glob
import json
import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .tables import PAPER_TABLES, Inference, PaperRow, PaperTable, find_row

__all__ = [
    'Run', 'find_runs', 'read_run', 'match_rows', 'best_runs', 'format_report', 'select_tables',
    'build_report'
]

RUN_DIR_PATTERN = re.compile(r'^\d{8}_\d{6}$')  # mmengine names a run by its start time
_LOG_MIOU = re.compile(r'Iter\((test|val)\).*?\bmIoU:\s*([0-9.]+)')


@dataclass
class Run:
    """One run of a work dir; ``source`` says where ``miou`` came from (e.g. ``'val @ iter
    30000'``), ``problem`` why the run cannot be placed in a table."""

    work_dir: str
    run_dir: str
    timestamp: str
    config_path: Optional[str] = None
    paper_ref: Optional[dict] = None
    inference: Optional[Inference] = None
    miou: Optional[float] = None
    source: str = ''
    problem: str = ''


def find_runs(paths: Iterable[str]) -> List[str]:
    """Sorted run directories under work dirs or directories of work dirs; FileNotFoundError
    for a path that is not a directory."""
    runs = []
    for path in paths:
        if not osp.isdir(path):
            raise FileNotFoundError(f'work dir {path!r} does not exist or is not a directory.')
        for candidate in (path, *sorted(glob.glob(osp.join(path, '*', '')))):
            runs += [osp.join(candidate, d) for d in sorted(os.listdir(candidate))
                     if RUN_DIR_PATTERN.match(d) and osp.isdir(osp.join(candidate, d))]
    return sorted(set(osp.normpath(r) for r in runs))


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else default


def _type(obj: Any) -> str:
    return str(_get(obj, 'type', '')).split('.')[-1]


def _tta_views(pipeline: Any) -> Tuple[Tuple[float, ...], bool]:
    """Scales and flip of a ``TestTimeAug`` pipeline ((1.0,), False if there is none)."""
    for step in (s for s in pipeline or () if _type(s) == 'TestTimeAug'):
        options = [t for choices in _get(step, 'transforms', ()) for t in choices]
        scales = [float(t['scale_factor']) for t in options if _get(t, 'scale_factor') is not None]
        flip = any(_type(t) == 'RandomFlip' and float(_get(t, 'prob', 0.0)) > 0 for t in options)
        return tuple(scales) or (1.0, ), flip
    return (1.0, ), False


def inference_of(cfg: Dict[str, Any]) -> Optional[Inference]:
    """How a run evaluated, from its config as a dict; None if the output stride is unknown."""
    model = _get(cfg, 'model', {})
    scales, flip = (1.0, ), False
    if str(_get(model, 'type', '')) in ('SegTTAModel', 'mmseg.SegTTAModel'):
        pipeline = _get(_get(_get(cfg, 'test_dataloader', {}), 'dataset', {}), 'pipeline')
        scales, flip = _tta_views(pipeline or _get(cfg, 'tta_pipeline'))
        model = _get(model, 'module', {})
    output_stride = (_get(model, 'test_output_stride') or _get(model, 'output_stride')
                     or _get(_get(model, 'backbone', {}), 'output_stride'))
    return None if output_stride is None else Inference(int(output_stride), scales, flip)


def _miou_from_run(run_dir: str, timestamp: str) -> Tuple[Optional[float], str]:
    """The run's mIoU and its source: test json, else the last val scalar, else the log."""
    test_json = osp.join(run_dir, f'{timestamp}.json')
    if osp.isfile(test_json):
        with open(test_json, encoding='utf-8') as f:
            miou = _get(json.load(f), 'mIoU')
        if miou is not None:
            return float(miou), 'test'
    scalars = osp.join(run_dir, 'vis_data', 'scalars.json')
    if osp.isfile(scalars):
        with open(scalars, encoding='utf-8') as f:
            entries = [json.loads(line) for line in f if line.strip().startswith('{')]
        last = next((e for e in reversed(entries) if 'mIoU' in e), None)
        if last is not None:
            return float(last['mIoU']), f'val @ iter {last.get("step", "?")}'
    for log in sorted(glob.glob(osp.join(run_dir, '*.log'))):
        with open(log, encoding='utf-8', errors='replace') as f:
            found = _LOG_MIOU.findall(f.read())
        if found:
            return float(found[-1][1]), f'{found[-1][0]} (log)'
    return None, ''


def read_run(run_dir: str) -> Run:
    """Read one ``<work_dir>/<timestamp>`` run; never raises on bad files (sets ``problem``)."""
    from mmengine.config import Config  # here: the paper tables alone need no mmengine
    timestamp = osp.basename(osp.normpath(run_dir))
    run = Run(work_dir=osp.dirname(osp.normpath(run_dir)), run_dir=run_dir, timestamp=timestamp)
    run.miou, run.source = _miou_from_run(run_dir, timestamp)
    # the config dump: vis_data/config.py, one in the run dir, else the work dir's newest
    candidates = [osp.join(run_dir, 'vis_data', 'config.py'),
                  *sorted(glob.glob(osp.join(run_dir, '*.py'))),
                  *sorted(glob.glob(osp.join(run.work_dir, '*.py')), key=osp.getmtime,
                          reverse=True)]
    run.config_path = next((c for c in candidates if osp.isfile(c)), None)
    if run.config_path is None:
        run.problem = 'no config dump found'
        return run
    try:
        cfg = Config.fromfile(run.config_path, import_custom_modules=False).to_dict()
    except Exception as error:  # noqa: BLE001  (a broken dump must not stop the report)
        run.problem = f'config {run.config_path} cannot be read ({type(error).__name__}: {error})'
        return run
    run.paper_ref, run.inference = _get(cfg, 'paper_ref'), inference_of(cfg)
    if not isinstance(run.paper_ref, dict):
        run.problem = 'its config has no paper_ref (not a paper experiment)'
    elif run.inference is None:
        run.problem = 'its config gives no output stride'
    elif run.miou is None:
        run.problem = 'no mIoU yet (no validation or test result)'
    return run


def match_rows(run: Run) -> List[PaperRow]:
    """Every paper row this run measures: same trained model, same evaluation, a val split."""
    if run.problem or run.paper_ref is None or run.inference is None:
        return []
    row = find_row(run.paper_ref.get('table'), run.paper_ref.get('row'))
    if row is None or row.model is None:
        return []
    return [r for t in PAPER_TABLES for r in t.rows if r.model == row.model and r.split == 'val'
            and r.inference is not None and r.inference.key() == run.inference.key()]


def best_runs(runs: Sequence[Run]) -> Dict[Tuple[str, str], Run]:
    """``(table, row) -> run`` for every row some run measures; the newest run wins."""
    return {(row.table, row.row): run for run in sorted(runs, key=lambda r: r.timestamp)
            for row in match_rows(run)}


def _fmt(value: Optional[float]) -> str:
    return '–' if value is None else f'{value:.2f}'


def _markdown_table(header: str, align: str, rows: Iterable[Sequence[str]]) -> List[str]:
    return [f'| {header} |', align] + ['| ' + ' | '.join(cells) + ' |' for cells in rows]


def _where(row: PaperRow, run: Optional[Run]) -> str:
    if run is not None:
        return f'`{run.work_dir}` ({run.source}, {run.timestamp})'
    return 'not reproducible' if row.model is None else 'test server' if row.split == 'test' else ''


def _mismatch(run: Run) -> str:
    ref = run.paper_ref or {}
    row = find_row(ref.get('table'), ref.get('row'))
    if row is None:
        return f'paper_ref {ref} names no row of the paper'
    if row.model is None:
        return f'{row.table} "{row.row}" cannot be reproduced here'
    return (f'the paper has no row for the model of {row.table} "{row.row}" evaluated at '
            f'{run.inference.describe()} on val')


def format_report(tables: Sequence[PaperTable], runs: Sequence[Run]) -> str:
    """The markdown report: each table with the paper's column and this project's runs."""
    best = best_runs(runs)
    lines = ['# DeepLabV3: this project beside the paper', '',
             'Paper: Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image '
             'Segmentation" (arXiv:1706.05587). mIoU (%) on PASCAL VOC 2012 val unless noted; '
             '"this project" is the newest run that trained the same model and evaluated it the '
             'same way; delta = this project - paper.', '']
    for table in tables:
        cells = []
        for row in table.rows:
            run = best.get((row.table, row.row))
            ours = run.miou if run else None
            delta = '' if ours is None else f'{ours - row.miou:+.2f}'
            cells.append((row.row, _fmt(row.miou), _fmt(ours), delta, _where(row, run)))
        notes = [f'* {row.row}: {row.note}' for row in table.rows if row.note]
        lines += [f'## {table.name}. {table.title}', '', *_markdown_table(
            'row | paper | this project | delta | run', '|---|---:|---:|---:|---|', cells), '',
                  *notes, *([''] if notes else [])]
    others = [run for run in runs if not match_rows(run)]
    if others:
        lines += ['## Runs not placed in a table', '', *_markdown_table(
            'run | mIoU | evaluation | why', '|---|---:|---|---|',
            ((f'`{run.run_dir}`', _fmt(run.miou), run.inference.describe() if run.inference
              else '', run.problem or _mismatch(run)) for run in others)), '']
    lines.append('Table 11 (asynchronous training with 1..32 replicas) has no counterpart here: '
                 'training is synchronous.')
    return '\n'.join(lines) + '\n'


def select_tables(tables: Optional[Sequence[str]] = None) -> List[PaperTable]:
    """The tables named (``'Table 6'`` or ``'6'``; None: all); ValueError for an unknown one."""
    if not tables:
        return list(PAPER_TABLES)
    wanted = {t if str(t).startswith('Table') else f'Table {t}' for t in tables}
    unknown = wanted - {t.name for t in PAPER_TABLES}
    if unknown:
        raise ValueError(f'unknown table(s) {sorted(unknown)}: expected some of '
                         f'{[t.name for t in PAPER_TABLES]}.')
    return [t for t in PAPER_TABLES if t.name in wanted]


def build_report(paths: Sequence[str], tables: Optional[Sequence[str]] = None) -> str:
    """The report of ``tables`` (None: all) for every run under ``paths``."""
    selected = select_tables(tables)
    return format_report(selected, [read_run(run_dir) for run_dir in find_runs(paths)])
