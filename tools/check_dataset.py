"""Check a prepared dataset tree before training: counts, missing files, label values, sizes.

    python tools/check_dataset.py data/VOCdevkit/VOC2012
    python tools/check_dataset.py data/cityscapes --splits train val

prints one line per split and every problem (naming the file and what is wrong); exit status 1
if there is any error (with --strict also on warnings such as counts that differ from the
paper's), 2 if the root is not a dataset root. See :mod:`deeplabv3_plugin.datasets.dataset_check`.
"""
import argparse
import sys

from deeplabv3_plugin.datasets.dataset_check import check_tree


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Check a VOC 2012 or Cityscapes tree.')
    parser.add_argument('root', help='VOCdevkit/VOC2012 or the Cityscapes root')
    parser.add_argument('--layout', choices=['auto', 'voc', 'cityscapes'], default='auto',
                        help='dataset layout (default: detected from the directories)')
    parser.add_argument('--splits', nargs='+', metavar='SPLIT',
                        help='only these splits (VOC: train val trainval aug trainaug; '
                        'Cityscapes: train val train_extra)')
    parser.add_argument('--no-labels', action='store_true',
                        help='only check that files exist, do not decode the labels (fast)')
    parser.add_argument('--strict', action='store_true',
                        help='fail on warnings too (counts differing from the paper\'s, '
                        'absent optional splits)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = check_tree(args.root, args.layout, args.splits, not args.no_labels)
    except (FileNotFoundError, ValueError) as error:
        sys.stderr.write(f'check_dataset: error: {error}\n')
        return 2
    print(report.format(args.strict))
    return 0 if report.ok(args.strict) else 1


if __name__ == '__main__':
    sys.exit(main())
