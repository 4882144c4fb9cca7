"""Distributed training and testing on CPUs (gloo), which mmengine 0.10.7 cannot start by itself.

Stock mmengine fails three ways without an accelerator: ``init_dist`` calls
``torch.cuda.set_device`` (so :func:`init_cpu_process_group` starts gloo itself and the
``Runner`` skips ``init_dist``); ``Runner.wrap_model`` passes ``device_ids``, which DDP refuses
for CPU modules (so the config selects :class:`~.model_wrappers.CPUSafeDDP`); and ``SyncBN``
only runs on GPUs (so it becomes ``BN`` in the config, logged and dumped with the run).
:func:`setup_distributed` applies all three before ``Runner.from_cfg``; accelerator runs are left
to mmengine.
"""
import datetime
import os
import subprocess
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch.distributed as dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log

from .errors import UserInputError

__all__ = [
    'SYNC_BN_TYPES', 'convert_sync_bn_cfg', 'init_cpu_process_group',
    'prepare_cpu_distributed_cfg', 'setup_distributed', 'torch_dist_env'
]

#: Norm-layer types (mmcv's ``MODELS`` names) that need a GPU: torch's and mmcv's SyncBatchNorm.
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')

_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
_DEFAULT_MASTER_PORT = '29500'  # torch.distributed's default


def _first_slurm_host(nodelist: str) -> str:
    """First host name of a Slurm node list such as ``node[01-04]``, via ``scontrol``."""
    out = subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[0]


def _require(environ: Mapping[str, str], names: tuple, launcher: str, how: str) -> None:
    missing = [name for name in names if name not in environ]
    if missing:
        raise UserInputError(
            f'--launcher {launcher}: the environment variables {", ".join(missing)} are not set; '
            f'{how}')


def torch_dist_env(launcher: str, environ: Mapping[str, str],
                   resolve_host: Callable[[str], str] = _first_slurm_host) -> Dict[str, str]:
    """The ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` variables of a launcher's process.

    torchrun (``'pytorch'``) sets them; Slurm (``srun``) and Open MPI (``mpirun``) say the same
    with their own names, translated as mmengine's ``init_dist`` does for GPUs. ``resolve_host``
    turns ``SLURM_NODELIST`` into the rendezvous host when ``MASTER_ADDR`` is unset.

    Raises:
        UserInputError: A variable the launcher must provide is missing, or an unknown launcher.
    """
    if launcher == 'pytorch':
        _require(environ, _TORCHRUN_VARS, launcher,
                 'start the processes with torchrun (tools/dist_train.sh, tools/dist_test.sh), '
                 'which sets them.')
        return {name: environ[name] for name in _TORCHRUN_VARS}
    if launcher == 'slurm':
        _require(environ, ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST'),
                 launcher, 'start the processes with srun inside a Slurm allocation.')
        master_addr = environ.get('MASTER_ADDR') or resolve_host(environ['SLURM_NODELIST'])
        return dict(RANK=environ['SLURM_PROCID'], WORLD_SIZE=environ['SLURM_NTASKS'],
                    LOCAL_RANK=environ['SLURM_LOCALID'], MASTER_ADDR=master_addr,
                    MASTER_PORT=environ.get('MASTER_PORT', _DEFAULT_MASTER_PORT))
    if launcher == 'mpi':
        _require(environ, ('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
                           'OMPI_COMM_WORLD_LOCAL_RANK', 'MASTER_ADDR'), launcher,
                 'start the processes with Open MPI\'s mpirun and export MASTER_ADDR '
                 '(the host of rank 0), e.g. mpirun -x MASTER_ADDR=host0 ...')
        return dict(RANK=environ['OMPI_COMM_WORLD_RANK'],
                    WORLD_SIZE=environ['OMPI_COMM_WORLD_SIZE'],
                    LOCAL_RANK=environ['OMPI_COMM_WORLD_LOCAL_RANK'],
                    MASTER_ADDR=environ['MASTER_ADDR'],
                    MASTER_PORT=environ.get('MASTER_PORT', _DEFAULT_MASTER_PORT))
    raise UserInputError(f"--launcher {launcher!r} is not a distributed launcher; expected "
                         "'pytorch', 'slurm' or 'mpi'.")


def init_cpu_process_group(launcher: str, timeout_s: Optional[float] = None) -> bool:
    """Initialise the gloo process group of a CPU run, as ``init_dist`` would on a GPU.

    Returns whether it did: nothing happens for ``launcher='none'``, with an accelerator, or when
    a group exists. ``timeout_s`` is ``env_cfg.dist_cfg.timeout`` (None: PyTorch's default).
    """
    if launcher == 'none' or get_device() != 'cpu' or dist.is_initialized():
        return False
    os.environ.update(torch_dist_env(launcher, os.environ))
    kwargs: Dict[str, Any] = {}
    if timeout_s is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend='gloo', **kwargs)
    return True


def convert_sync_bn_cfg(node: Any, path: str = '') -> List[str]:
    """Turn every ``SyncBN``/``MMSyncBN`` norm config under ``node`` into ``BN``, in place;
    returns the dotted paths converted, e.g. ``['model.backbone.norm_cfg']``."""
    converted = []
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            converted.append(path)
        for key, value in node.items():
            converted += convert_sync_bn_cfg(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            converted += convert_sync_bn_cfg(value, f'{path}.{index}')
    return converted


def prepare_cpu_distributed_cfg(cfg: Config) -> List[str]:
    """Edit ``cfg`` so its distributed run works on CPUs; returns one log line per change.

    ``model_wrapper_cfg`` becomes ``CPUSafeDDP`` (keeping mmengine's default arguments or the
    config's), every ``SyncBN`` becomes ``BN`` and ``sync_bn`` is dropped, and
    ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` so the dumped config says what ran.
    """
    changes = []
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUSafeDDP', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        changes.append("model_wrapper_cfg = dict(type='CPUSafeDDP'): DDP without device_ids for "
                       'CPU modules')
    elif wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUSafeDDP'
        changes.append("model_wrapper_cfg.type: 'MMDistributedDataParallel' -> 'CPUSafeDDP'")
    elif wrapper.get('type') != 'CPUSafeDDP':
        changes.append(f"model_wrapper_cfg.type {wrapper.get('type')!r} kept as configured; it "
                       'must not pass device_ids to DDP for CPU modules')
    converted = [path for key in list(cfg.keys()) for path in convert_sync_bn_cfg(cfg[key], key)]
    for path in converted:
        changes.append(f"{path}.type: SyncBN -> 'BN' (SyncBatchNorm needs GPUs)")
    if cfg.get('sync_bn') is not None:
        changes.append(f'sync_bn={cfg.sync_bn!r} removed (SyncBatchNorm needs GPUs)')
        cfg.pop('sync_bn')
    env_cfg = cfg.setdefault('env_cfg', dict())
    dist_cfg = env_cfg.setdefault('dist_cfg', dict())
    if dist_cfg.get('backend') != 'gloo':
        changes.append(f"env_cfg.dist_cfg.backend: {dist_cfg.get('backend')!r} -> 'gloo'")
        dist_cfg['backend'] = 'gloo'
    return changes


def setup_distributed(cfg: Config) -> None:
    """Prepare ``cfg.launcher``'s distributed run on CPUs (edit, log on rank 0, start gloo);
    a no-op otherwise. Call it on the final config, before ``Runner.from_cfg``."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or get_device() != 'cpu':
        return
    changes = prepare_cpu_distributed_cfg(cfg)
    init_cpu_process_group(launcher, cfg.env_cfg.dist_cfg.get('timeout'))
    if dist.get_rank() == 0:
        for change in changes:
            print_log(f'CPU distributed run ({launcher}, world size {dist.get_world_size()}): '
                      f'{change}', logger='current')
