"""Training loss and validation mIoU over iterations from mmengine's own scalar log
(``<work_dir>/<timestamp>/vis_data/scalars.json``), drawn into one PNG by ``make demo``. For live
curves use mmengine's visualisation backends (TensorBoard, W&B ...)."""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Tuple

from matplotlib.figure import Figure

__all__ = ['find_scalars', 'read_scalars', 'plot_training_curves']


def find_scalars(work_dir: str) -> Optional[str]:
    """The newest ``<work_dir>/<timestamp>/vis_data/scalars.json``, or None."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    return found[-1] if found else None


def read_scalars(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """``{'loss': [(iter, value), ...], 'mIoU': [(iter, value), ...]}`` from a scalars.json."""
    curves: Dict[str, List[Tuple[int, float]]] = {'loss': [], 'mIoU': []}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            try:
                entry = json.loads(line) if line.strip() else {}
            except json.JSONDecodeError as error:
                raise ValueError(f'{path}, line {number}: not a JSON object ({error}); expected '
                                 "mmengine's scalars.json, one object per line") from error
            for key, points in curves.items():
                if key in entry and 'step' in entry:
                    points.append((int(entry['step']), float(entry[key])))
    return curves


def plot_training_curves(scalars_path: str, out_path: str, title: str = '') -> str:
    """Draw training loss (top) and validation mIoU (bottom) against iterations into a PNG;
    ValueError if the file holds no training loss. Returns ``out_path``."""
    curves = read_scalars(scalars_path)
    if not curves['loss']:
        raise ValueError(f'{scalars_path} holds no training loss (no line with "loss" and '
                         '"step"); expected the scalars.json of a training run.')
    fig = Figure(figsize=(7.0, 5.2), layout='constrained')
    loss_ax, miou_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    loss_ax.plot(*zip(*curves['loss']), color='tab:blue', linewidth=1.2)
    loss_ax.set_ylabel('training loss')
    loss_ax.grid(alpha=0.3)
    if curves['mIoU']:
        iters, values = zip(*curves['mIoU'])
        miou_ax.plot(iters, values, color='tab:orange', marker='o')
        for x, y in curves['mIoU']:
            miou_ax.annotate(f'{y:.1f}', (x, y), textcoords='offset points', xytext=(0, 7),
                             ha='center', fontsize=9)
        miou_ax.set_ylim(0, min(100, max(values) + 15))
    else:
        miou_ax.text(0.5, 0.5, 'no validation yet', transform=miou_ax.transAxes, ha='center')
    miou_ax.set(ylabel='val mIoU (%)', xlabel='iteration')
    miou_ax.grid(alpha=0.3)
    miou_ax.set_xlim(0, max(x for x, _ in curves['loss'] + curves['mIoU']) * 1.03)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(out_path, dpi=110)
    return out_path
