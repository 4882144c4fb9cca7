"""Peak memory of one training step, measured in a fresh process (one per configuration).

RSS peaks of several models in one process would mix (the allocator keeps freed memory, the
high-water mark only grows), so ``run.py`` starts this module once per configuration::

    python benchmarks/train_memory.py --impl plugin --depth 50 --output-stride 8 --crop 321 \
        --batch-size 2 --with-cp

and reads the JSON it prints on its last line:

* ``peak_mb``: peak RSS of the whole process (libraries, model, gradients, SGD momentum and
  the activations of the step), or peak allocated CUDA memory;
* ``step_mb``: peak during the second training step minus the memory held before it
  (activations, gradients and temporaries of one step);
* ``model_mb``: memory held after building the model and the optimizer, before any step.
"""
import argparse
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from benchmarks.measure import PeakMemory  # noqa: E402
from benchmarks.models import build_model, training_batch  # noqa: E402


def build_optim_wrapper(model: torch.nn.Module, amp: bool = False):
    """SGD with the paper's momentum and weight decay, wrapped as mmengine's runner wraps it;
    ``amp``: as ``tools/train.py --amp`` wraps it on a CPU (bf16 autocast, channels_last)."""
    from mmengine.optim import OptimWrapper

    from deeplabv3_plugin.engine.bf16_optim_wrapper import BF16AutocastOptimWrapper
    optimizer = torch.optim.SGD(model.parameters(), lr=0.007, momentum=0.9, weight_decay=1e-4)
    if amp:
        return BF16AutocastOptimWrapper(optimizer, channels_last=True)
    return OptimWrapper(optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--impl', required=True, choices=('plugin', 'mmseg'))
    parser.add_argument('--depth', type=int, required=True)
    parser.add_argument('--output-stride', type=int, required=True)
    parser.add_argument('--crop', type=int, required=True)
    parser.add_argument('--batch-size', type=int, required=True)
    parser.add_argument('--with-cp', action='store_true')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast + channels_last')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    model = build_model(args.impl, args.depth, args.output_stride, device,
                        with_cp=args.with_cp, crop=args.crop).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optim_wrapper = build_optim_wrapper(model, amp=args.amp)
    batch = training_batch(args.crop, args.batch_size, device)
    with PeakMemory(device) as first:  # the first step also creates the momentum buffers
        model.train_step(batch, optim_wrapper)
    with PeakMemory(device) as second:
        model.train_step(batch, optim_wrapper)
    # Memory only grows from the built model to a training step, so the process peak is the
    # larger of the two steps' peaks (the high-water mark was reset before the first one).
    peak_mb = max(first.peak_mb, second.peak_mb)
    print(json.dumps(dict(peak_mb=peak_mb, step_mb=second.delta_mb, model_mb=first.start_mb)))


if __name__ == '__main__':
    main()
