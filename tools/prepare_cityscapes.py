"""Write Cityscapes train-id labels: ``*_gtFine_labelIds.png`` -> ``*_gtFine_labelTrainIds.png``.

    python tools/prepare_cityscapes.py data/cityscapes                        # gtFine
    python tools/prepare_cityscapes.py data/cityscapes --gt-dir gtFine gtCoarse  # + Tab. 13

maps the 34 raw label ids to the 19 evaluated classes (255 elsewhere) with the table written out
in :mod:`deeplabv3_plugin.utils.dataset_prep` (no cityscapesscripts needed). Exit status 1 if a
label tree is missing or some file could not be converted (each named).
"""
import argparse
import sys

from deeplabv3_plugin.utils.dataset_prep import DatasetPrepError, prepare_cityscapes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert Cityscapes label ids to the 19 train ids mmseg reads.')
    parser.add_argument('cityscapes_root', help='directory holding leftImg8bit/ and gtFine/')
    parser.add_argument('--gt-dir', nargs='+', default=['gtFine'], metavar='DIR',
                        help='label trees to convert (default: gtFine; add gtCoarse for the '
                        'trainval-coarse model)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        converted, problems = prepare_cityscapes(args.cityscapes_root, args.gt_dir)
    except DatasetPrepError as error:
        sys.stderr.write(f'prepare_cityscapes: error: {error}\n')
        return 1
    print(f'wrote {converted} *_labelTrainIds.png file(s)')
    for problem in problems:
        sys.stderr.write(f'prepare_cityscapes: error: {problem}\n')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
