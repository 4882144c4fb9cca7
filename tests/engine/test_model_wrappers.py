"""deeplabv3_plugin.engine.model_wrappers: CPUSafeDDP, where mmengine's runner looks for it."""
import socket

import pytest
import torch.distributed as dist
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmseg.registry import MODEL_WRAPPERS

import deeplabv3_plugin.runtime  # noqa: F401  (registers CPUSafeDDP in mmengine's root registry)
from deeplabv3_plugin.engine import CPUSafeDDP


class _Net(nn.Module):

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def gloo_group():
    """A one-process gloo group, enough to construct DDP wrappers."""
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


def test_cpu_safe_ddp_registered_where_runner_looks():
    assert MODEL_WRAPPERS.get('CPUSafeDDP') is CPUSafeDDP
    # Runner.wrap_model calls get() on mmengine's root registry, which does not search children.
    assert MMENGINE_MODEL_WRAPPERS.get('CPUSafeDDP') is CPUSafeDDP
    assert issubclass(CPUSafeDDP, MMDistributedDataParallel)


def test_cpu_safe_ddp_drops_device_ids_on_cpu(gloo_group):
    # What Runner.wrap_model passes for any DDP subclass: device_ids=[LOCAL_RANK].
    wrapped = MODEL_WRAPPERS.build(dict(type='CPUSafeDDP', broadcast_buffers=False),
                                   default_args=dict(module=_Net(), device_ids=[0]))
    assert wrapped.device_ids is None
    assert isinstance(wrapped.module, _Net)
    with pytest.raises(ValueError, match='device_ids'):
        MMDistributedDataParallel(module=_Net(), device_ids=[0])  # what CPUSafeDDP avoids


def test_cpu_safe_ddp_refuses_sync_bn_on_cpu(gloo_group):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    with pytest.raises(ValueError, match=r"SyncBatchNorm layers \(1\).*type='BN'"):
        CPUSafeDDP(module=model, device_ids=[0])
