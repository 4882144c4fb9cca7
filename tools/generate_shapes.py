"""Generate the SyntheticShapes demo dataset in PASCAL VOC layout.

    python tools/generate_shapes.py data/synthetic_shapes --num-train 400 --num-val 80

The dataset is a pure function of its parameters: the same command reuses an identical dataset,
and a directory holding anything else is never overwritten. Train on it with
``configs/_base_/datasets/synthetic_shapes.py``, or all in one go with ``tools/demo.py``.
"""
import argparse
import sys

from deeplabv3_plugin.datasets.synthetic_shapes import CLASSES, generate_synthetic_shapes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate the SyntheticShapes segmentation dataset (VOC layout).')
    parser.add_argument('out_dir', help='dataset root to create, e.g. data/synthetic_shapes')
    parser.add_argument('--num-train', type=int, default=400, help='training images (400)')
    parser.add_argument('--num-val', type=int, default=80, help='validation images (80)')
    parser.add_argument('--image-size', type=int, nargs='+', default=[192], metavar='PX',
                        help='side, or height and width, in pixels (192)')
    parser.add_argument('--seed', type=int, default=0, help='master seed (0)')
    parser.add_argument('--max-objects', type=int, default=4, help='objects per image, max (4)')
    parser.add_argument('--ignore-radius', type=int, default=1,
                        help='ignore-255 band on each side of label edges in px, 0 = none (1)')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    size = args.image_size[0] if len(args.image_size) == 1 else tuple(args.image_size)
    try:
        meta = generate_synthetic_shapes(
            args.out_dir, num_train=args.num_train, num_val=args.num_val, image_size=size,
            seed=args.seed, max_objects=args.max_objects, ignore_radius=args.ignore_radius,
            progress=not args.quiet)
    except (ValueError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    state = 'reused the identical dataset already in' if meta['reused'] else 'wrote'
    print(f"{state} {args.out_dir}: {meta['num_train']} train + {meta['num_val']} val images of "
          f"{meta['image_size'][0]}x{meta['image_size'][1]} px, classes {', '.join(CLASSES)}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
