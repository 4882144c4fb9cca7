"""tools/paper_report.py on fabricated work dirs laid out as mmengine writes them.

Each fabricated run is ``<work_dir>/<timestamp>/`` with the config dump the run would have
(``vis_data/config.py``: the real experiment config, changed the way ``tools/test.py
--output-stride/--tta`` changes it) and its metrics in mmengine's formats: validation lines in
``vis_data/scalars.json``, a test run's ``<timestamp>.json``, or only the ``.log``.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as plt_image
from mmengine.config import Config

from helpers import REPO_ROOT as REPO
from helpers.configs import cached_scoped_bases
from deeplabv3_plugin.cli import enable_tta, set_test_output_stride
from deeplabv3_plugin.paper.figures import plot_table
from deeplabv3_plugin.paper.report import best_runs, build_report, find_runs, read_run
from deeplabv3_plugin.paper.tables import PAPER_TABLES
from helpers.tools import load_tool

CONFIGS = osp.join(REPO, 'configs', 'deeplabv3')
BEST = 'deeplabv3-aspp_r101-d16-mg124_1xb16-30k_voc12aug-513x513'
BLOCK7_R50_OS8 = 'deeplabv3-block7_r50-d8_1xb16-30k_voc12aug-513x513'
COCO = 'deeplabv3-aspp_r101-d16-coco-pre_1xb16-30k_voc12aug-513x513'


def _config(name, output_stride=None, tta=False) -> Config:
    with cached_scoped_bases():
        cfg = Config.fromfile(osp.join(CONFIGS, f'{name}.py'))
    set_test_output_stride(cfg, output_stride)
    if tta:
        enable_tta(cfg)
    return cfg


def fabricate_run(work_dir, timestamp, cfg=None, val=None, test=None, log=None):
    """One run directory: config dump and metrics, as mmengine's Runner writes them."""
    run = osp.join(work_dir, timestamp)
    os.makedirs(osp.join(run, 'vis_data'))
    if cfg is not None:
        cfg.dump(osp.join(run, 'vis_data', 'config.py'))
    if val is not None:  # LoggerHook -> LocalVisBackend.add_scalars, one JSON object per line
        with open(osp.join(run, 'vis_data', 'scalars.json'), 'w') as f:
            for step, miou in val:
                f.write(json.dumps({'lr': 0.001, 'loss': 0.3, 'step': step - 1}) + '\n')
                f.write(json.dumps({'aAcc': 93.0, 'mIoU': miou, 'mAcc': 85.0,
                                    'data_time': 0.01, 'time': 0.2, 'step': step}) + '\n')
    if test is not None:  # LoggerHook.after_test_epoch dumps the tag dict
        with open(osp.join(run, f'{timestamp}.json'), 'w') as f:
            json.dump({'aAcc': 94.0, 'mIoU': test, 'mAcc': 86.0, 'data_time': 0.01,
                       'time': 0.3}, f)
    with open(osp.join(run, f'{timestamp}.log'), 'w') as f:
        f.write(f'{timestamp[4:6]}/{timestamp[6:8]} 10:00:00 - mmengine - INFO - Config:\n')
        if log is not None:
            f.write('11/25 10:05:00 - mmengine - INFO - Iter(val) [1449/1449]    aAcc: 92.0000  '
                    f'mIoU: {log:.4f}  mAcc: 84.0000  data_time: 0.0100  time: 0.2000\n')
    return run


@pytest.fixture(scope='module')
def work_dirs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('work_dirs'))
    best = osp.join(root, BEST)
    # training run of the best ASPP model: validation at OS 16 every 3K iterations
    fabricate_run(best, '20260101_100000', _config(BEST), val=[(3000, 60.0), (30000, 76.50)])
    # tools/test.py <best config> <ckpt> --output-stride 8 --tta
    fabricate_run(best, '20260102_100000', _config(BEST, 8, tta=True), test=79.10)
    # the "OS=8 + MS" config run without --tta: single scale at OS 8, i.e. Tab. 6 "OS=8"
    ms = osp.join(root, f'{BEST}_eval-os8-ms')
    fabricate_run(ms, '20260103_100000', _config(f'{BEST}_eval-os8-ms'), test=78.00)
    # an older and a newer run of Tab. 1 OS=8; the newer only wrote its log
    cascade = osp.join(root, BLOCK7_R50_OS8)
    fabricate_run(cascade, '20260104_100000', _config(BLOCK7_R50_OS8), val=[(30000, 70.00)])
    fabricate_run(cascade, '20260105_100000', _config(BLOCK7_R50_OS8), log=74.25)
    # COCO fine-tuning validated at OS 8 single scale: no paper row measures that
    fabricate_run(osp.join(root, COCO), '20260106_100000', _config(COCO), val=[(30000, 80.0)])
    # a run still going (no metric yet) and one of a config without paper_ref
    fabricate_run(osp.join(root, 'deeplabv3-block4_r50-d16_1xb16-30k_voc12aug-513x513'),
                  '20260107_100000', _config('deeplabv3-block4_r50-d16_1xb16-30k_voc12aug-513x513'))
    demo = Config(dict(model=dict(type='DeepLabV3', output_stride=16)))
    fabricate_run(osp.join(root, 'demo'), '20260108_100000', demo, val=[(100, 50.0)])
    return root


def _row(report: str, table: str, row: str) -> list:
    section = report.split(f'## {table}. ')[1].split('\n## ')[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if cells[0] == row:
            return cells
    raise AssertionError(f'{table} has no row {row!r}:\n{section}')


def test_report_fills_every_row_a_run_measures(work_dirs):
    report = build_report([work_dirs])
    for table, row in (('Table 5', 'MG(1,2,4), ASPP(6,12,18), image pooling'),
                       ('Table 6', 'OS=16'), ('Table 8', 'crop 513, upsample logits, fine-tune BN'),
                       ('Table 9', 'batch 16'), ('Table 10', 'train OS=16, eval OS=16')):
        cells = _row(report, table, row)
        assert cells[1:4] == ['77.21', '76.50', '-0.71'], (table, row, cells)
        assert 'val @ iter 30000' in cells[4] and '20260101_100000' in cells[4]
    # --output-stride 8 --tta on the trained model is Tab. 6 "OS=8 + MS + Flip" (and no other)
    assert _row(report, 'Table 6', 'OS=8 + MS + Flip')[1:4] == ['79.77', '79.10', '-0.67']
    assert _row(report, 'Table 6', 'OS=8 + MS + Flip')[4].endswith('(test, 20260102_100000)')
    # the MS config run without --tta measured OS 8 single-scale: it goes to "OS=8", not "MS"
    assert _row(report, 'Table 6', 'OS=8')[1:4] == ['78.51', '78.00', '-0.51']
    assert _row(report, 'Table 10', 'train OS=16, eval OS=8')[2] == '78.00'
    assert _row(report, 'Table 6', 'OS=8 + MS')[2:4] == ['–', '']
    # newest run wins; a log-only run is read from its log
    assert _row(report, 'Table 1', 'OS=8')[2:5] == [
        '74.25', '-0.93', f'`{osp.join(work_dirs, BLOCK7_R50_OS8)}` (val (log), 20260105_100000)']


def test_report_prints_every_table_with_the_papers_column(work_dirs):
    report = build_report([work_dirs])
    for table in PAPER_TABLES:
        assert f'## {table.name}. {table.title}' in report
        for row in table.rows:
            assert _row(report, table.name, row.row)[1] == f'{row.miou:.2f}'
    assert _row(report, 'Table 7', 'DeepLabv3')[4] == 'test server'
    assert _row(report, 'Table 7', 'DeepLabv3-JFT')[4] == 'not reproducible'
    assert 'JFT-300M, which is not public' in report
    assert 'Table 11 (asynchronous training' in report


def test_runs_that_measure_no_row_are_listed_with_the_reason(work_dirs):
    report = build_report([work_dirs]).split('## Runs not placed in a table')[1]
    lines = {line.split('|')[1].strip(' `').rsplit(os.sep, 2)[-2]: line
             for line in report.splitlines() if line.startswith('| `')}
    assert 'OS=8 |' in lines[COCO]
    assert 'the paper has no row for the model of Table 6' in lines[COCO]
    assert 'no mIoU yet' in lines['deeplabv3-block4_r50-d16_1xb16-30k_voc12aug-513x513']
    assert 'no paper_ref' in lines['demo']
    assert BEST not in lines, 'placed runs are not listed again'


def test_read_run_evaluation_settings_come_from_the_dump(work_dirs):
    run = read_run(osp.join(work_dirs, BEST, '20260102_100000'))
    assert run.inference.key() == (8, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True)
    assert run.paper_ref['row'] == 'MG(1,2,4), ASPP(6,12,18), image pooling'
    assert (run.miou, run.source, run.problem) == (79.10, 'test', '')


@pytest.mark.slow
def test_cli_writes_markdown_and_rejects_bad_arguments(work_dirs, tmp_path, capsys):
    out = str(tmp_path / 'report.md')
    done = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'paper_report.py'),
                           osp.join(work_dirs, BEST), '--tables', '6', '-o', out],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == open(out).read()
    assert re.findall(r'^## (Table \d+)', done.stdout, re.M) == ['Table 6']
    assert '| OS=8 + MS + Flip | 79.77 | 79.10 | -0.67 |' in done.stdout
    assert sorted(os.listdir(tmp_path)) == ['report.md', 'report_table-6.png']
    tool = load_tool('paper_report')
    assert tool.main([str(tmp_path / 'nowhere')]) == 2
    assert 'nowhere' in capsys.readouterr().err
    assert tool.main([work_dirs, '--tables', '11']) == 2
    assert "unknown table(s) ['Table 11']" in capsys.readouterr().err
    assert tool.main([]) == 0  # the paper's tables alone
    assert capsys.readouterr().out.count('\n## Table') == len(PAPER_TABLES)


def test_cli_draws_every_table_beside_the_markdown(work_dirs, tmp_path, capsys):
    out = str(tmp_path / 'report.md')
    assert load_tool('paper_report').main([work_dirs, '-o', out]) == 0
    assert f'and {len(PAPER_TABLES)} figures' in capsys.readouterr().err
    for table in PAPER_TABLES:
        picture = plt_image.imread(str(tmp_path / f'report_table-{table.name.split()[-1]}.png'))
        height, width = picture.shape[:2]
        assert width >= 600 and height >= 150, (table.name, picture.shape)
    # one line per row: a table with more rows gets a taller figure (labels never overlap)
    heights = {n: plt_image.imread(str(tmp_path / f'report_table-{n}.png')).shape[0]
               for n in ('3', '7')}
    assert heights['3'] > 2 * heights['7']


def test_figures_show_the_runs_of_each_row(work_dirs, tmp_path):
    runs = [read_run(r) for r in find_runs([work_dirs])]
    best = best_runs(runs)
    assert best[('Table 1', 'OS=8')].miou == 74.25
    assert best[('Table 6', 'OS=8 + MS + Flip')].miou == 79.10
    table1 = next(t for t in PAPER_TABLES if t.name == 'Table 1')
    empty, filled = str(tmp_path / 'empty.png'), str(tmp_path / 'filled.png')
    plot_table(table1, {}, empty)
    plot_table(table1, best, filled)
    # the run's point is drawn in blue on top of the paper's grey line
    blue = lambda path: (np.abs(plt_image.imread(path)[..., :3] - (0.12, 0.47, 0.71))  # noqa
                         .sum(-1) < 0.1).sum()
    assert blue(filled) > blue(empty) + 20
