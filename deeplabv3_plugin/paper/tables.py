"""The paper's result tables (``tables.yaml``): each row's mIoU, trained model and how it
was evaluated (Chen et al. 2017, arXiv:1706.05587v3)."""
import os.path as osp
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import yaml

__all__ = ['Inference', 'PaperRow', 'PaperTable', 'PAPER_TABLES', 'find_row']


@dataclass(frozen=True)
class Inference:
    """How a trained model is evaluated: test-time output stride, averaged input scales, flip."""

    output_stride: int
    scales: Tuple[float, ...] = (1.0, )
    flip: bool = False

    def key(self) -> Tuple[int, Tuple[float, ...], bool]:
        """A comparable form (scales rounded, sorted)."""
        return self.output_stride, tuple(sorted(round(s, 3) for s in self.scales)), self.flip

    def describe(self) -> str:
        """E.g. ``'OS=8 + MS(0.5..1.75) + Flip'``."""
        text = f'OS={self.output_stride}'
        if self.scales != (1.0, ):
            text += f' + MS({min(self.scales):g}..{max(self.scales):g})'
        return text + (' + Flip' if self.flip else '')


@dataclass(frozen=True)
class PaperRow:
    """One number of the paper; ``model`` and ``inference`` are None where it cannot be
    reproduced here, ``split='test'`` rows are scored by the evaluation server only. ``batch``:
    the training batch (all GPUs together), None where the paper does not state it."""

    table: str
    row: str
    miou: float
    model: Optional[str]
    inference: Optional[Inference]
    split: str = 'val'
    note: str = ''
    batch: Optional[int] = None


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    rows: Tuple[PaperRow, ...]


def _load() -> Tuple[PaperTable, ...]:
    with open(osp.join(osp.dirname(__file__), 'tables.yaml'), encoding='utf-8') as f:
        data = yaml.safe_load(f)
    scales = {name: tuple(values) for name, values in data['scales'].items()}

    def row(table: str, r: dict, batch: Optional[int]) -> PaperRow:
        inference = None if 'os' not in r else Inference(
            r['os'], scales[r['scales']] if 'scales' in r else (1.0, ), r.get('flip', False))
        return PaperRow(table, str(r['row']), r['miou'], r.get('model'), inference,
                        r.get('split', 'val'), r.get('note', ''), r.get('batch', batch))

    return tuple(
        PaperTable(name, t['title'], tuple(row(name, r, t.get('batch')) for r in t['rows']))
        for name, t in data['tables'].items())


PAPER_TABLES = _load()
_ROWS: Dict[Tuple[str, str], PaperRow] = {(r.table, r.row): r for t in PAPER_TABLES for r in t.rows}


def find_row(table: str, row: str) -> Optional[PaperRow]:
    """The row a ``paper_ref`` names, or None if the paper has no such row."""
    return _ROWS.get((str(table), str(row)))
