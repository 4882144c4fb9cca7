"""Print the paper's tables with this project's mIoU beside them (markdown).

    python tools/paper_report.py work_dirs                 # every work dir under work_dirs/
    python tools/paper_report.py work_dirs/deeplabv3-aspp_* --tables 5 6 -o report.md

Reads each run's config dump (its ``paper_ref`` and how it evaluated) and its mIoU (test json,
validation scalars or log), and fills every row of the paper that the run measures; see
:mod:`deeplabv3_plugin.paper.report`. With no work dir, prints the paper's tables alone.
With ``-o report.md`` it also draws each table beside the markdown (``report_table-<N>.png``:
the paper's mIoU and yours per row; Table 1 as mIoU against output stride). Exit status 2 if a
work dir does not exist or a table is unknown.
"""
import argparse
import os.path as osp
import sys

from deeplabv3_plugin.paper.figures import plot_tables
from deeplabv3_plugin.paper.report import (best_runs, find_runs, format_report, read_run,
                                                 select_tables)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Put this project's mIoU beside the paper's, table by table.")
    parser.add_argument('work_dirs', nargs='*', metavar='WORK_DIR',
                        help='work dirs of finished runs, or a directory holding work dirs')
    parser.add_argument('--tables', nargs='+', metavar='N',
                        help='only these tables, e.g. 1 6 12 (default: all)')
    parser.add_argument('-o', '--output', help='also write the markdown to this file, and one '
                        'figure per table beside it (<output stem>_table-<N>.png)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        tables = select_tables(args.tables)
        runs = [read_run(run_dir) for run_dir in find_runs(args.work_dirs)]
    except (FileNotFoundError, ValueError) as error:
        sys.stderr.write(f'paper_report: error: {error}\n')
        return 2
    report = format_report(tables, runs)
    sys.stdout.write(report)
    if args.output:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(report)
        figures = plot_tables(tables, best_runs(runs), args.output)
        sys.stderr.write(f'paper_report: wrote {args.output} and {len(figures)} figures '
                         f'({osp.basename(figures[0])} ...)\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
