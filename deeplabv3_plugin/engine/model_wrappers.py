"""``CPUSafeDDP``: mmengine's DDP wrapper that also works when the model lives on the CPU.

mmengine 0.10.7's ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]``, which PyTorch only
accepts for modules on an accelerator, so a CPU run under torchrun stops in DDP's constructor.
"""
from typing import Any, List

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS

from .errors import listing

__all__ = ['CPUSafeDDP']


def _sync_bn_layer_names(module: nn.Module) -> List[str]:
    """Names of the SyncBatchNorm layers (torch's or mmcv's) in ``module``."""
    return [name for name, layer in module.named_modules()
            if 'SyncBatchNorm' in type(layer).__name__]


class CPUSafeDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that accepts the CPU modules of a gloo run.

    On the CPU the device arguments are dropped (every process owns the whole module) and
    SyncBatchNorm layers are refused by name up front (PyTorch runs them only on GPUs, and would
    fail at the first forward pass, deep inside DDP); on an accelerator nothing changes. Use it
    with ``model_wrapper_cfg = dict(type='CPUSafeDDP')``.
    """

    def __init__(self, module: nn.Module, detect_anomalous_params: bool = False,
                 **kwargs: Any) -> None:
        devices = {param.device.type for param in module.parameters()}
        if devices == {'cpu'}:
            sync_bn = _sync_bn_layer_names(module)
            if sync_bn:
                raise ValueError(
                    f'CPUSafeDDP: the model has SyncBatchNorm layers ({listing(sync_bn)}), which '
                    'PyTorch only runs on GPUs. '
                    "Build the model with norm_cfg=dict(type='BN') for CPU distributed runs "
                    '(tools/train.py and tools/test.py convert SyncBN in the config on CPU).')
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params,
                         **kwargs)


# mmseg's registry is the convention for components (the config's default_scope is 'mmseg').
# Runner.wrap_model looks the type up in mmengine's *root* registry, which does not search child
# registries: the opt-in deeplabv3_plugin.runtime registers it there too.
MODEL_WRAPPERS.register_module(module=CPUSafeDDP)
