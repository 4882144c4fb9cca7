"""``CPUSafeDDP``: mmengine's DDP wrapper that also accepts CPU modules (gloo runs).

mmengine 0.10.7's ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]``, which DDP refuses for
a CPU module. Use it with ``model_wrapper_cfg = dict(type='CPUSafeDDP')``.
"""
from typing import Any

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS

from ..errors import listing

__all__ = ['CPUSafeDDP']


class CPUSafeDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` without device arguments for CPU modules.

    SyncBatchNorm runs only on GPUs and would fail deep inside DDP at the first forward pass, so
    a CPU module with it is refused up front. On an accelerator nothing changes.
    """

    def __init__(self, module: nn.Module, detect_anomalous_params: bool = False,
                 **kwargs: Any) -> None:
        if {param.device.type for param in module.parameters()} == {'cpu'}:
            sync_bn = [name for name, layer in module.named_modules()
                       if 'SyncBatchNorm' in type(layer).__name__]
            if sync_bn:
                raise ValueError(
                    f'CPUSafeDDP: the model has SyncBatchNorm layers ({listing(sync_bn)}), which '
                    "PyTorch only runs on GPUs. Build it with norm_cfg=dict(type='BN') for CPU "
                    'distributed runs (tools/train.py and tools/test.py convert SyncBN on CPU).')
            kwargs.update(device_ids=None, output_device=None)
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params,
                         **kwargs)


# Runner.wrap_model looks in mmengine's root registry: deeplabv3_plugin.runtime registers it there.
MODEL_WRAPPERS.register_module(module=CPUSafeDDP)
