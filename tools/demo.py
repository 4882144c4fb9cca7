"""The demo: generate a dataset, train a DeepLabV3 on the CPU, evaluate it, draw its predictions.

``make demo`` runs ``python tools/demo.py``; in about ten minutes on two CPU cores it

1. generates SyntheticShapes (:mod:`deeplabv3_plugin.datasets.synthetic_shapes`, VOC layout:
   400 training and 80 held-out validation images of 192 x 192 px, 6 classes), or reuses the
   identical dataset from an earlier run;
2. trains ``configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-192x192.py`` from
   scratch with ``tools/train.py`` (the mmengine ``Runner``, as for every other config);
3. evaluates the last checkpoint on the validation split with ``tools/test.py``, at a single
   scale, drawing every prediction beside its ground truth (``--show-dir``), and with the
   paper's multi-scale + flip inference (``--tta``), which draws nothing: mmseg's visualizer
   takes about 0.5 s an image on two cores, ten times the inference itself;
4. prints both mIoUs and where the pictures are.

Each step is the command a user would type, printed before it runs, on a config written into the
run's directory, so any step can be repeated by hand. Every run gets its own directory
(``work_dirs/demo/<date>_<time>`` unless ``--work-dir`` names a new or empty one), so a
re-run never touches an earlier run's results.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
import warnings
from typing import Dict, List, Optional, Tuple

# mmengine imports pkg_resources, which setuptools 80/81 flags as deprecated; harmless here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
from mmengine.config import Config, DictAction  # noqa: E402

from deeplabv3_plugin.datasets.synthetic_shapes import (  # noqa: E402
    CLASSES, generate_synthetic_shapes)
from deeplabv3_plugin.config_checks import check_cfg_options  # noqa: E402
from deeplabv3_plugin.errors import UserInputError  # noqa: E402
from deeplabv3_plugin.paper.curves import find_scalars, plot_training_curves  # noqa
from deeplabv3_plugin.deploy.engines import choose_engine, cpu_kind  # noqa: E402
from deeplabv3_plugin.cpu_features import cpu_features  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = osp.join(
    REPO, 'configs/demo/deeplabv3_r18-d16-mg12_1xb8-1k_synthetic-shapes-192x192.py')


class DemoError(RuntimeError):
    """A problem the demo explains in one paragraph (printed without a traceback)."""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate SyntheticShapes, train a DeepLabV3 on the CPU, evaluate it '
        '(single scale and multi-scale + flip) and draw its predictions.')
    parser.add_argument('--work-dir', help='new or empty directory for this run (default: '
                        'work_dirs/demo/<date>_<time>)')
    parser.add_argument('--iters', type=int, help="training iterations (default: the config's, "
                        '1000)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the dataset and of the '
                        'training run (0)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='demo config (default: %(default)s)')
    parser.add_argument('--data-root', help='dataset directory (default: data/synthetic_shapes/'
                        '<parameters>, reused when it already holds the same dataset)')
    parser.add_argument('--num-train', type=int, default=400, help='training images (400)')
    parser.add_argument('--num-val', type=int, default=80, help='validation images (80)')
    parser.add_argument('--image-size', type=int, help="image side in px (default: the config's "
                        'crop size, 192)')
    parser.add_argument('--threads', type=int, help='CPU threads of the train and test '
                        'processes (default: $OMP_NUM_THREADS, else every usable core; reruns '
                        'with the same count give identical figures; on busy cores fewer '
                        'threads are faster)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override entries of the demo config for this run, as tools/train.py does, e.g. '
        'model.backbone.contract_dilation=True; they go into the run\'s config, so the test '
        'steps use them too')
    return parser.parse_args(argv)


def new_work_dir(requested: Optional[str]) -> str:
    """The run's directory: a new timestamped one, or ``requested`` if it is new or empty."""
    if requested is None:
        base = osp.join(REPO, 'work_dirs', 'demo', time.strftime('%Y%m%d_%H%M%S'))
        path, n = base, 1
        while osp.exists(path):  # two runs started within the same second
            path, n = f'{base}_{n}', n + 1
    else:
        path = osp.abspath(requested)
        if osp.exists(path) and (not osp.isdir(path) or os.listdir(path)):
            raise DemoError(
                f'--work-dir {requested!r} already exists and is not an empty directory; the '
                f'demo never writes into an earlier run. Pass a new directory, or leave '
                f'--work-dir out to get work_dirs/demo/<date>_<time>.')
    os.makedirs(path, exist_ok=True)
    return path


def write_run_config(cfg: Config, args: argparse.Namespace, data_root: str,
                     work_dir: str) -> str:
    """Write the config of this run (the demo config with ``--cfg-options``, its data root, seed
    and length).

    Returns:
        The path of the written config, which the train and test commands use.
    """
    if args.cfg_options:
        try:
            check_cfg_options(cfg, args.cfg_options, args.config)
        except UserInputError as error:
            raise DemoError(str(error)) from None
        cfg.merge_from_dict(args.cfg_options)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    cfg.randomness = dict(seed=args.seed)
    if args.iters is not None:
        if args.iters < 1:
            raise DemoError(f'--iters must be a positive number of iterations, got {args.iters}.')
        interval = max(1, args.iters // 2)
        cfg.train_cfg.max_iters = args.iters
        cfg.train_cfg.val_interval = interval
        cfg.default_hooks.checkpoint.interval = interval
        cfg.default_hooks.logger.interval = min(cfg.default_hooks.logger.interval, interval)
        for scheduler in cfg.param_scheduler:  # the poly decay ends with training
            scheduler.end = min(scheduler.get('end', args.iters), args.iters)
    path = osp.join(work_dir, osp.basename(args.config))
    cfg.dump(path)
    return path


def usable_cores() -> int:
    """CPU cores this process may use (at least 1), independent of the current load."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return max(1, cores or 1)


def tool_env(threads: Optional[int]) -> Dict[str, str]:
    """Environment of the tool processes, with a fixed number of compute threads.

    The seed fixes the data, the initial weights and the augmentations; what remains is the
    thread count, which changes the order in which PyTorch's CPU kernels add up partial sums,
    so figures differ in the last digits from one thread count to another. The default is
    therefore the same on every run on a machine, every usable core (not the cores idle at
    start, which varied with the load), and reruns are identical. On busy cores fewer threads
    can be faster (two were measured 2.5x slower than one); ``--threads 1`` trades that for
    other last digits.

    Returns:
        The environment for the subprocesses, with ``OMP_NUM_THREADS`` set.
    """
    env = dict(os.environ)
    if threads is not None:
        if threads < 1:
            raise DemoError(f'--threads must be >= 1, got {threads}.')
        env['OMP_NUM_THREADS'] = str(threads)
    else:
        env.setdefault('OMP_NUM_THREADS', str(usable_cores()))
    return env


def run_step(step: str, cmd: List[str], env: Dict[str, str]) -> float:
    """Print and run one tool; its output goes straight to the terminal. Returns seconds taken."""
    shown = ' '.join(osp.relpath(c, REPO) if osp.isabs(c) and c.startswith(REPO) else c
                     for c in cmd[1:])
    print(f'\n==> {step}\n    python {shown}', flush=True)
    start = time.time()
    done = subprocess.run(cmd, cwd=REPO, env=env)
    if done.returncode != 0:
        raise DemoError(f'{step} failed (exit status {done.returncode}); its messages are above. '
                        f'Command: {" ".join(cmd)}')
    return time.time() - start


def inference_path() -> Tuple[List[str], str]:
    """The ``tools/test.py`` flags of the fastest path that holds the demo's accuracy on this CPU.

    Where int8 runs on VNNI or AMX, ``--fast``: the engine ``auto`` picks
    (:mod:`deeplabv3_plugin.deploy.engines`; OpenVINO int8 ran 3.6x the PyTorch float32 path
    on an AMX Xeon). On an AVX2-only CPU the PyTorch float32 fast path (channels_last + folded
    BN): measured on an AMD EPYC Zen 3 with the demo's trained model, ONNX Runtime int8 holds
    the accuracy (67.49 / 71.42 mIoU against 67.46 / 71.37) and saves about 5 s over the two
    evaluations, but exporting and calibrating it once takes about 12 s.
    """
    cpu = cpu_features()
    kind = cpu_kind(cpu)
    if kind != 'avx2':
        engine = choose_engine(goal='fast')[0]
        return ['--fast'], f'{engine} (tools/test.py --fast: the fastest engine measured on ' \
            f'CPU kind {kind!r} that holds accuracy; {cpu.name})'
    return ['--backend', 'pytorch'], (
        f'PyTorch float32 fast path (channels_last + BN folded): on {cpu.name} (AVX2 only) '
        'the int8 graph saves less time on these 160 small images than its one-off export and '
        'calibration take; bf16 is emulated here')


def read_test_metrics(test_work_dir: str) -> Dict[str, float]:
    """The metrics ``tools/test.py`` dumped as ``<work_dir>/<timestamp>/<timestamp>.json``."""
    dumps = sorted(glob.glob(osp.join(test_work_dir, '*', '*.json')), key=osp.getmtime)
    for path in reversed(dumps):
        with open(path) as f:
            metrics = json.load(f)
        if 'mIoU' in metrics:
            return metrics
    raise DemoError(f'no metrics (a json with mIoU) found under {test_work_dir}; the test run '
                    f'above should have written one.')


def _overlays(show_dir: str) -> str:
    return osp.join(show_dir, 'vis_data', 'vis_image')


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    started = time.time()
    env = tool_env(args.threads)
    if not osp.isfile(args.config):
        raise DemoError(f'--config {args.config!r} is not a file; expected a demo config such as '
                        f'{osp.relpath(DEFAULT_CONFIG, REPO)}.')
    cfg = Config.fromfile(args.config)
    image_size = args.image_size or int(cfg.crop_size[0])
    work_dir = new_work_dir(args.work_dir)
    data_root = args.data_root or osp.join(
        REPO, 'data', 'synthetic_shapes',
        f'seed{args.seed}-{image_size}px-{args.num_train}+{args.num_val}')

    print(f"==> {env['OMP_NUM_THREADS']} CPU thread(s) per tool process (--threads to change)")
    print(f'==> 1/4 dataset: SyntheticShapes ({", ".join(CLASSES)}) in {data_root}', flush=True)
    try:
        meta = generate_synthetic_shapes(data_root, num_train=args.num_train,
                                         num_val=args.num_val, image_size=image_size,
                                         seed=args.seed)
    except (ValueError, FileExistsError) as err:
        raise DemoError(f'dataset: {err}') from err
    if meta['reused']:
        print('    found the identical dataset from an earlier run; reusing it')
    config = write_run_config(cfg, args, data_root, work_dir)
    train_dir = osp.join(work_dir, 'train')
    python, tools = sys.executable, osp.join(REPO, 'tools')
    timings = dict(train=run_step('2/4 train from scratch on the CPU', [
        python, osp.join(tools, 'train.py'), config, '--work-dir', train_dir], env))
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    curves = plot_training_curves(find_scalars(train_dir),
                                  osp.join(work_dir, 'training_curves.png'),
                                  title=osp.basename(args.config))

    results = {}
    flags, path = inference_path()
    print(f'\n==> inference: {path}', flush=True)
    show_dir = osp.join(work_dir, 'overlays')
    for step, name, extra in (
            ('3/4 evaluate, single scale', 'single_scale', ['--show-dir', show_dir]),
            ('4/4 evaluate, multi-scale + flip (--tta)', 'ms_flip', ['--tta'])):
        test_dir = osp.join(work_dir, f'test_{name}')
        timings[name] = run_step(step, [
            python, osp.join(tools, 'test.py'), config, checkpoint, '--work-dir', test_dir,
            *flags, *extra], env)
        results[name] = read_test_metrics(test_dir)
    results['single_scale']['overlays'] = _overlays(show_dir)

    summary = dict(work_dir=work_dir, data_root=data_root, config=config, checkpoint=checkpoint,
                   inference=path, results=results, curves=curves,
                   seconds=dict(timings, total=time.time() - started))
    with open(osp.join(work_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    _print_summary(summary, meta)
    return summary


def _print_summary(summary: Dict, meta: Dict) -> None:
    res, secs = summary['results'], summary['seconds']
    rel = lambda p: osp.relpath(p, os.getcwd())  # noqa: E731
    n_pictures = len(glob.glob(osp.join(res['single_scale']['overlays'], '*.png')))
    print(f"""
================ DeepLabV3 demo finished in {secs['total'] / 60:.1f} min ================
data         {rel(summary['data_root'])}: {meta['num_train']} train / {meta['num_val']} \
held-out val images, {len(CLASSES)} classes
training     {secs['train'] / 60:.1f} min, checkpoint {rel(summary['checkpoint'])}
val mIoU     single scale: {res['single_scale']['mIoU']:.2f}    \
multi-scale + flip: {res['ms_flip']['mIoU']:.2f}    (pixel accuracy \
{res['single_scale']['aAcc']:.2f} / {res['ms_flip']['aAcc']:.2f})
inference    {summary['inference']}
pictures     {rel(res['single_scale']['overlays'])}/  ({n_pictures} PNGs: ground truth left, \
prediction right, single scale)
curves       {rel(summary['curves'])}  (training loss, val mIoU)
again        python tools/test.py {rel(summary['config'])} {rel(summary['checkpoint'])} --tta
""")


if __name__ == '__main__':
    try:
        main()
    except DemoError as error:
        sys.stderr.write(f'demo.py: error: {error}\n')
        sys.exit(2)
