"""This project's mIoU beside the paper's: read finished work dirs, print the paper's tables.

A work dir (``work_dirs/<config name>/``) holds one timestamped directory per run of
``tools/train.py`` / ``tools/test.py``. For each run this module reads

* the config the run used: ``<run>/vis_data/config.py``, else a ``*.py`` dump in the run or
  work dir. Its ``paper_ref`` names the experiment's row; its model and test pipeline say how
  the run evaluated: output stride (``test_output_stride``, else ``output_stride``), and with
  ``tools/test.py --tta`` (a ``SegTTAModel``) the scales and flip of ``TestTimeAug``;
* its mIoU: ``<run>/<timestamp>.json`` of a test run, else the last validation entry of
  ``<run>/vis_data/scalars.json`` (training), else the last ``Iter(test)`` / ``Iter(val)`` line
  of ``<run>/<timestamp>.log``.

The run then fills every row of :data:`~deeplabv3_plugin.utils.paper_tables.PAPER_TABLES` that
evaluates the same trained model the same way (so a training run of the best ASPP model fills
Tab. 5, 6, 8, 9 and 10 at once, and ``tools/test.py <that config> <ckpt> --output-stride 8
--tta`` fills Tab. 6 "OS=8 + MS + Flip"). A run whose evaluation matches no row of its model is
listed apart, never put in a row it does not measure. The newest run wins a row.
``tools/paper_report.py`` is the command-line front end (figures: :mod:`.paper_figures`).
"""
import glob
import json
import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .paper_tables import PAPER_TABLES, Inference, PaperRow, PaperTable, find_row

__all__ = [
    'Run', 'find_runs', 'read_run', 'match_rows', 'best_runs', 'format_report', 'select_tables',
    'build_report'
]

#: mmengine names a run directory by its start time.
RUN_DIR_PATTERN = re.compile(r'^\d{8}_\d{6}$')
_LOG_MIOU = re.compile(r'Iter\((test|val)\).*?\bmIoU:\s*([0-9.]+)')
_TTA_TYPES = ('SegTTAModel', 'mmseg.SegTTAModel')


@dataclass
class Run:
    """One run of a work dir, as far as the report needs it.

    Attributes:
        work_dir (str): The work dir it belongs to.
        run_dir (str): Its timestamped directory.
        timestamp (str): ``YYYYmmdd_HHMMSS``.
        config_path (str | None): The config dump that was read.
        paper_ref (dict | None): The config's ``paper_ref``.
        inference (Inference | None): How it evaluated (None if the config could not be read).
        miou (float | None): Its mIoU (%), None if the run wrote none.
        source (str): Where the mIoU came from, e.g. ``'val @ iter 30000'``.
        problem (str): Why the run could not be used, if it could not.
    """

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
    """Timestamped run directories under the given work dirs (or a directory of work dirs).

    Args:
        paths (Iterable[str]): Work dirs, or directories holding work dirs (``work_dirs``).

    Returns:
        list[str]: Run directories, sorted.

    Raises:
        FileNotFoundError: If a path is not a directory.
    """
    runs = []
    for path in paths:
        if not osp.isdir(path):
            raise FileNotFoundError(f'work dir {path!r} does not exist or is not a directory.')
        for candidate in (path, *sorted(glob.glob(osp.join(path, '*', '')))):
            runs += [osp.join(candidate, d) for d in sorted(os.listdir(candidate))
                     if RUN_DIR_PATTERN.match(d) and osp.isdir(osp.join(candidate, d))]
    return sorted(set(osp.normpath(r) for r in runs))


def _config_path(run_dir: str) -> Optional[str]:
    """The config dump of a run: vis_data/config.py, a dump in the run dir, or the work dir's."""
    candidates = [osp.join(run_dir, 'vis_data', 'config.py')]
    candidates += sorted(glob.glob(osp.join(run_dir, '*.py')))
    candidates += sorted(glob.glob(osp.join(osp.dirname(run_dir), '*.py')),
                         key=osp.getmtime, reverse=True)
    return next((c for c in candidates if osp.isfile(c)), None)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, dict) else default


def _tta_views(pipeline: Any) -> Tuple[Tuple[float, ...], bool]:
    """Scales and flip of a ``TestTimeAug`` pipeline ((1.0,), False if there is none)."""
    for step in pipeline or ():
        if str(_get(step, 'type', '')).split('.')[-1] != 'TestTimeAug':
            continue
        scales, flip = [], False
        for options in _get(step, 'transforms', ()):
            for transform in options:
                if _get(transform, 'scale_factor') is not None:
                    scales.append(float(transform['scale_factor']))
                kind = str(_get(transform, 'type', '')).split('.')[-1]
                if kind == 'RandomFlip' and float(_get(transform, 'prob', 0.0)) > 0:
                    flip = True
        return tuple(scales) or (1.0, ), flip
    return (1.0, ), False


def inference_of(cfg: Dict[str, Any]) -> Optional[Inference]:
    """How a run evaluated, from its (plain-dict) config; None if the output stride is unknown.

    Args:
        cfg (dict): The run's config as a dict (``Config.to_dict()``).

    Returns:
        Inference | None: Output stride, scales and flip.
    """
    model = _get(cfg, 'model', {})
    scales, flip = (1.0, ), False
    if str(_get(model, 'type', '')) in _TTA_TYPES:
        pipeline = _get(_get(_get(cfg, 'test_dataloader', {}), 'dataset', {}), 'pipeline')
        scales, flip = _tta_views(pipeline or _get(cfg, 'tta_pipeline'))
        model = _get(model, 'module', {})
    output_stride = (_get(model, 'test_output_stride') or _get(model, 'output_stride')
                     or _get(_get(model, 'backbone', {}), 'output_stride'))
    return None if output_stride is None else Inference(int(output_stride), scales, flip)


def _miou_from_run(run_dir: str, timestamp: str) -> Tuple[Optional[float], str]:
    """The run's mIoU and its source: test json, last val scalar, else the log."""
    test_json = osp.join(run_dir, f'{timestamp}.json')
    if osp.isfile(test_json):
        with open(test_json, encoding='utf-8') as f:
            miou = _get(json.load(f), 'mIoU')
        if miou is not None:
            return float(miou), 'test'
    scalars = osp.join(run_dir, 'vis_data', 'scalars.json')
    if osp.isfile(scalars):
        last = None
        with open(scalars, encoding='utf-8') as f:
            for line in f:
                line = line.strip()
                entry = json.loads(line) if line.startswith('{') else {}
                if 'mIoU' in entry:
                    last = entry
        if last is not None:
            return float(last['mIoU']), f'val @ iter {last.get("step", "?")}'
    for log in sorted(glob.glob(osp.join(run_dir, '*.log'))):
        with open(log, encoding='utf-8', errors='replace') as f:
            found = _LOG_MIOU.findall(f.read())
        if found:
            mode, value = found[-1]
            return float(value), f'{mode} (log)'
    return None, ''


def _load_config(path: str) -> Dict[str, Any]:
    from mmengine.config import Config  # imported here: the paper tables need no mmengine
    return Config.fromfile(path, import_custom_modules=False).to_dict()


def read_run(run_dir: str) -> Run:
    """Read one run directory (config, evaluation settings, mIoU); never raises on bad files.

    Args:
        run_dir (str): A ``<work_dir>/<timestamp>`` directory.

    Returns:
        Run: With ``problem`` set when the run cannot be placed in a table.
    """
    timestamp = osp.basename(osp.normpath(run_dir))
    run = Run(work_dir=osp.dirname(osp.normpath(run_dir)), run_dir=run_dir, timestamp=timestamp)
    run.miou, run.source = _miou_from_run(run_dir, timestamp)
    run.config_path = _config_path(run_dir)
    if run.config_path is None:
        run.problem = 'no config dump found'
        return run
    try:
        cfg = _load_config(run.config_path)
    except Exception as error:  # noqa: BLE001  (a broken dump must not stop the report)
        run.problem = f'config {run.config_path} cannot be read ({type(error).__name__}: {error})'
        return run
    run.paper_ref = _get(cfg, 'paper_ref')
    run.inference = inference_of(cfg)
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
    return [
        r for t in PAPER_TABLES for r in t.rows if r.model == row.model and r.split == 'val'
        and r.inference is not None and r.inference.key() == run.inference.key()
    ]


def _fmt(value: Optional[float]) -> str:
    return '–' if value is None else f'{value:.2f}'


def best_runs(runs: Sequence[Run]) -> Dict[Tuple[str, str], Run]:
    """``(table, row) -> run`` for every row some run measures; the newest run wins."""
    return {(row.table, row.row): run for run in sorted(runs, key=lambda r: r.timestamp)
            for row in match_rows(run)}


def format_report(tables: Sequence[PaperTable], runs: Sequence[Run]) -> str:
    """The markdown report: each table with the paper's column and this project's runs."""
    best = best_runs(runs)
    placed = {run.run_dir for run in runs if match_rows(run)}
    lines = ['# DeepLabV3: this project beside the paper', '',
             'Paper: Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image '
             'Segmentation" (arXiv:1706.05587). mIoU (%) on PASCAL VOC 2012 val unless noted; '
             '"this project" is the newest run that trained the same model and evaluated it the '
             'same way; delta = this project - paper.', '']
    for table in tables:
        lines += [f'## {table.name}. {table.title}', '',
                  '| row | paper | this project | delta | run |', '|---|---:|---:|---:|---|']
        for row in table.rows:
            run = best.get((row.table, row.row))
            ours = run.miou if run else None
            delta = '' if ours is None or row.miou is None else f'{ours - row.miou:+.2f}'
            where = f'`{run.work_dir}` ({run.source}, {run.timestamp})' if run else ''
            if run is None and row.model is None:
                where = 'not reproducible'
            elif run is None and row.split == 'test':
                where = 'test server'
            lines.append(f'| {row.row} | {_fmt(row.miou)} | {_fmt(ours)} | {delta} | {where} |')
        notes = [f'* {row.row}: {row.note}' for row in table.rows if row.note]
        lines += [''] + notes + ([''] if notes else [])
    others = [r for r in runs if r.run_dir not in placed]
    if others:
        lines += ['## Runs not placed in a table', '', '| run | mIoU | evaluation | why |',
                  '|---|---:|---|---|']
        for run in others:
            why = run.problem or _mismatch(run)
            how = run.inference.describe() if run.inference else ''
            lines.append(f'| `{run.run_dir}` | {_fmt(run.miou)} | {how} | {why} |')
        lines.append('')
    lines.append('Table 11 (asynchronous training with 1..32 replicas) has no counterpart here: '
                 'training is synchronous.')
    return '\n'.join(lines) + '\n'


def _mismatch(run: Run) -> str:
    ref = run.paper_ref or {}
    row = find_row(ref.get('table'), ref.get('row'))
    if row is None:
        return f'paper_ref {ref} names no row of the paper'
    if row.model is None:
        return f'{row.table} "{row.row}" cannot be reproduced here'
    return (f'the paper has no row for the model of {row.table} "{row.row}" evaluated at '
            f'{run.inference.describe()} on val')


def select_tables(tables: Optional[Sequence[str]] = None) -> List[PaperTable]:
    """The paper's tables named in ``tables`` (``'Table 6'`` or ``'6'``; None: all); ValueError
    for a table the paper does not have."""
    if not tables:
        return list(PAPER_TABLES)
    wanted = {t if str(t).startswith('Table') else f'Table {t}' for t in tables}
    unknown = wanted - {t.name for t in PAPER_TABLES}
    if unknown:
        raise ValueError(f'unknown table(s) {sorted(unknown)}: expected some of '
                         f'{[t.name for t in PAPER_TABLES]}.')
    return [t for t in PAPER_TABLES if t.name in wanted]


def build_report(paths: Sequence[str], tables: Optional[Sequence[str]] = None) -> str:
    """Find and read every run under ``paths`` and render the report of ``tables`` (None: all).

    Raises:
        FileNotFoundError: If a path is not a directory.
        ValueError: If a requested table does not exist.
    """
    selected = select_tables(tables)
    return format_report(selected, [read_run(run_dir) for run_dir in find_runs(paths)])
