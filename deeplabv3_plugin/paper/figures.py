"""The paper report's figures: per table row, the paper's mIoU (hollow grey) and this project's
(filled blue), without a bar chart's zero baseline flattening 75 against 77; Table 1 as mIoU
against output stride, as the paper discusses it. matplotlib's object API, no pyplot."""
import os.path as osp
import textwrap
from typing import Dict, List, Sequence, Tuple

from matplotlib.figure import Figure

from .report import Run
from .tables import PaperTable

__all__ = ['plot_table', 'plot_tables']

PAPER_STYLE = dict(color='0.45', marker='o', markerfacecolor='white', markersize=8)
OURS_STYLE = dict(color='tab:blue', marker='o', markersize=8)
Best = Dict[Tuple[str, str], Run]


def _output_stride_plot(table: PaperTable, best: Best) -> Figure:
    ax = Figure(figsize=(6.4, 4.2), layout='constrained').add_subplot()
    strides = [row.inference.output_stride for row in table.rows]
    ax.plot(strides, [row.miou for row in table.rows], label='paper', **PAPER_STYLE)
    ours = [(row.inference.output_stride, best[(row.table, row.row)].miou) for row in table.rows
            if (row.table, row.row) in best]
    if ours:
        ax.plot(*zip(*ours), label='this project', linestyle='none', **OURS_STYLE)
    for row in table.rows:
        ax.annotate(f'{row.miou:.1f}', (row.inference.output_stride, row.miou),
                    textcoords='offset points', xytext=(0, 8), ha='center', fontsize=9)
    ax.set_xscale('log', base=2)
    ax.set_xticks(strides, [str(s) for s in strides])
    ax.minorticks_off()
    ax.set(xlabel='output stride (train and test)', ylabel='mIoU (%)', ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(loc='lower left')
    ax.set_title(textwrap.fill(f'{table.name}. {table.title}', 64), fontsize=11)
    return ax.figure


def _dot_plot(table: PaperTable, best: Best) -> Figure:
    rows = list(reversed(table.rows))  # the paper's first row on top
    fig = Figure(figsize=(7.2, 1.3 + 0.42 * len(rows)), layout='constrained')
    ax = fig.add_subplot()
    values = []
    for y, row in enumerate(rows):
        run = best.get((row.table, row.row))
        for value, style, dy in ((row.miou, PAPER_STYLE, 0.12),
                                 (run and run.miou, OURS_STYLE, -0.12)):
            if value is not None:
                values.append(value)
                ax.plot([value], [y + dy], linestyle='none', **style)
                ax.annotate(f'{value:.2f}', (value, y + dy), textcoords='offset points',
                            xytext=(7, 0), va='center', fontsize=8)
    labels = [row.row + ('' if row.split == 'val' else f' ({row.split} set)') for row in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=9)
    low, high = min(values), max(values)
    ax.set_xlim(low - max(2.0, 0.1 * (high - low)), high + max(3.0, 0.2 * (high - low)))
    ax.set(ylim=(-0.6, len(rows) - 0.4), xlabel='mIoU (%)')
    ax.grid(axis='x', alpha=0.3)
    ax.plot([], [], linestyle='none', label='paper', **PAPER_STYLE)
    ax.plot([], [], linestyle='none', label='this project', **OURS_STYLE)
    ax.legend(loc='lower center', bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=9)
    fig.suptitle(textwrap.fill(f'{table.name}. {table.title}', 64), fontsize=11)
    return fig


def plot_table(table: PaperTable, best: Best, path: str) -> str:
    """Draw one table into the PNG ``path``; ``best``: :func:`.report.best_runs`."""
    draw = _output_stride_plot if table.name == 'Table 1' else _dot_plot
    draw(table, best).savefig(path, dpi=110)
    return path


def plot_tables(tables: Sequence[PaperTable], best: Best, markdown_path: str) -> List[str]:
    """One PNG per table next to the markdown, ``<report>_table-<N>.png``; their paths."""
    stem = osp.splitext(markdown_path)[0]
    return [plot_table(t, best, f'{stem}_table-{t.name.split()[-1]}.png') for t in tables]
