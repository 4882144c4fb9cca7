"""bf16 mixed-precision training on the CPU (``tools/train.py --amp`` without a GPU).

mmengine's ``AmpOptimWrapper`` (float16 autocast + loss scaling) asserts a CUDA/NPU/MLU/MUSA
device. On a CPU the mixed-precision type is bfloat16: it has float32's exponent range, so no
loss scaler is needed, and autocast runs convolutions and matmuls in bf16 with float32
accumulation while the weights, their gradients and the optimizer state stay float32 (master
weights). The checkpoint is therefore the same as a float32 run's: a run can be resumed with or
without ``--amp``, and from a GPU ``AmpOptimWrapper`` checkpoint (its loss-scaler entry is
dropped).

It pays only on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere bf16 is emulated and
several times slower, so ``--amp`` refuses to run there unless forced
(:func:`deeplabv3_plugin.engine.tool_options.enable_amp`).
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS
from torch import nn

__all__ = ['BF16AutocastOptimWrapper']


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward and loss run under CPU bf16 autocast.

    Use it in a config as ``optim_wrapper = dict(type='BF16AutocastOptimWrapper', optimizer=...)``;
    every other argument is ``OptimWrapper``'s.
    """

    @contextmanager
    def optim_context(self, model: nn.Module):
        """mmengine's context (gradient accumulation) plus bf16 autocast on the CPU."""
        with super().optim_context(model), autocast(device_type='cpu', dtype=torch.bfloat16):
            yield

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the optimizer state, ignoring an ``AmpOptimWrapper`` checkpoint's loss scaler."""
        state_dict = {k: v for k, v in state_dict.items() if k != 'loss_scaler'}
        super().load_state_dict(state_dict)
