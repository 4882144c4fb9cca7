"""Build PASCAL VOC 2012 "trainaug" (the paper's 10,582 training images) from VOC 2012 + SBD.

    python tools/prepare_voc_aug.py data/VOCdevkit/VOC2012 data/benchmark_RELEASE

converts SBD's ``dataset/cls/*.mat`` class maps to ``VOC2012/SegmentationClassAug/*.png``, copies
VOC's own train labels over theirs, and writes ``ImageSets/Segmentation/aug.txt`` and
``trainaug.txt`` (see :mod:`deeplabv3_plugin.utils.dataset_prep`). Then check the tree with
``python tools/check_dataset.py data/VOCdevkit/VOC2012``. Exit status 1 on an error, with a
message naming the file.
"""
import argparse
import sys

from deeplabv3_plugin.utils.dataset_prep import DatasetPrepError, prepare_voc_aug


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert SBD labels and write the VOC 2012 trainaug split files.')
    parser.add_argument('voc_root', help='the VOC2012 directory (VOCdevkit/VOC2012)')
    parser.add_argument('sbd_root', help='the SBD root holding dataset/cls/*.mat '
                        '(benchmark_RELEASE)')
    parser.add_argument('-o', '--out-dir', help='where the label PNGs go (default: '
                        'VOC_ROOT/SegmentationClassAug)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = prepare_voc_aug(args.voc_root, args.sbd_root, args.out_dir)
    except DatasetPrepError as error:
        sys.stderr.write(f'prepare_voc_aug: error: {error}\n')
        return 1
    print(f'converted {summary.converted} SBD labels, copied {summary.voc_labels_copied} VOC '
          f'train labels; trainaug.txt: {len(summary.trainaug)} images, aug.txt: '
          f'{len(summary.aug)} images')
    for warning in summary.warnings:
        print(f'warning: {warning}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
