"""``CPUSafeDDP``: mmengine's DDP wrapper that also works when the model lives on the CPU.

mmengine 0.10.7's ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to every model wrapper
that subclasses ``DistributedDataParallel``. PyTorch only accepts ``device_ids`` for modules on an
accelerator, so a CPU run under ``torchrun`` stops with ``ValueError: DistributedDataParallel
device_ids and output_device arguments only work with single-device/multiple-device GPU modules
or CPU modules``. :class:`CPUSafeDDP` drops ``device_ids``/``output_device`` when the module's
parameters are on the CPU and is otherwise exactly ``MMDistributedDataParallel``, so a config can
name it unconditionally. ``tools/train.py`` and ``tools/test.py`` select it on CPU through
:func:`deeplabv3_plugin.engine.distributed.prepare_cpu_distributed_cfg`.
"""
from typing import Any, List

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS

__all__ = ['CPUSafeDDP']


def _sync_bn_layer_names(module: nn.Module) -> List[str]:
    """Names of the SyncBatchNorm layers (torch's or mmcv's) in ``module``."""
    return [name for name, layer in module.named_modules()
            if 'SyncBatchNorm' in type(layer).__name__]


class CPUSafeDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that accepts the CPU modules of a gloo run.

    On an accelerator the arguments pass through unchanged. On the CPU the device arguments are
    dropped (``None`` is what PyTorch expects there: every process owns the whole CPU module), and
    SyncBatchNorm layers are refused up front with their names, because PyTorch's SyncBatchNorm
    only runs on GPUs and would otherwise fail at the first forward pass, deep inside DDP.

    Use it with ``model_wrapper_cfg = dict(type='CPUSafeDDP')``.

    Args:
        module: The model to wrap.
        detect_anomalous_params: Passed to ``MMDistributedDataParallel``: report parameters that
            take no part in the loss (slow, for debugging).
        **kwargs: Passed to ``torch.nn.parallel.DistributedDataParallel`` (``device_ids``,
            ``output_device``, ``broadcast_buffers``, ``find_unused_parameters``...).
    """

    def __init__(self, module: nn.Module, detect_anomalous_params: bool = False,
                 **kwargs: Any) -> None:
        devices = {param.device.type for param in module.parameters()}
        if devices == {'cpu'}:
            sync_bn = _sync_bn_layer_names(module)
            if sync_bn:
                raise ValueError(
                    f'CPUSafeDDP: the model has SyncBatchNorm layers ({", ".join(sync_bn[:5])}'
                    f'{", ..." if len(sync_bn) > 5 else ""}), which PyTorch only runs on GPUs. '
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
