"""Distributed runs on CPUs (gloo), which mmengine 0.10.7 cannot start by itself.

Without an accelerator mmengine fails three ways: ``init_dist`` calls ``torch.cuda.set_device``
(gloo is started here instead), ``Runner.wrap_model`` passes ``device_ids`` (the config gets
:class:`~.model_wrappers.CPUSafeDDP`) and SyncBN needs GPUs (it becomes BN). Accelerator runs
are left to mmengine.
"""
import datetime
import os
import subprocess
from typing import Any, Callable, Dict, List, Mapping

import torch.distributed as dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.logging import print_log

from ..errors import UserInputError

__all__ = ['convert_sync_bn_cfg', 'launcher_world_size', 'prepare_cpu_distributed_cfg',
           'setup_distributed', 'torch_dist_env']

#: Per launcher: its names of rank, world size, local rank and master host, and how to start it.
_LAUNCHERS = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'),
                'start the processes with torchrun (tools/dist_train.sh, tools/dist_test.sh), '
                'which sets them.'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_LOCALID', 'SLURM_NODELIST'),
              'start the processes with srun inside a Slurm allocation.'),
    'mpi': (('OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK',
             'MASTER_ADDR'), "start the processes with Open MPI's mpirun and export MASTER_ADDR "
            '(the host of rank 0), e.g. mpirun -x MASTER_ADDR=host0 ...'),
}


def _first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list such as ``node[01-04]``."""
    return subprocess.run(['scontrol', 'show', 'hostnames', nodelist], capture_output=True,
                          text=True, check=True).stdout.split()[0]


def _launcher_variables(launcher: str, environ: Mapping[str, str]) -> List[str]:
    """The launcher's rank, world size, local rank and master host, as ``environ`` has them."""
    if launcher not in _LAUNCHERS:
        raise UserInputError(f"--launcher {launcher!r} is not a distributed launcher; expected "
                             "'pytorch', 'slurm' or 'mpi'.")
    names, how = _LAUNCHERS[launcher]
    missing = [name for name in names if name not in environ]
    if missing:
        raise UserInputError(f'--launcher {launcher}: the environment variables '
                             f'{", ".join(missing)} are not set; {how}')
    return [environ[name] for name in names[:4]]


def launcher_world_size(launcher: str, environ: Mapping[str, str]) -> int:
    """The number of processes ``launcher`` started (1 for ``'none'``), from ``environ``,
    before any process group exists."""
    if launcher == 'none':
        return 1
    return int(_launcher_variables(launcher, environ)[1])


def torch_dist_env(launcher: str, environ: Mapping[str, str],
                   resolve_host: Callable[[str], str] = _first_slurm_host) -> Dict[str, str]:
    """torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*`` from a launcher's variables,
    translated as mmengine's ``init_dist`` does for GPUs."""
    rank, world_size, local_rank, host = _launcher_variables(launcher, environ)
    return dict(RANK=rank, WORLD_SIZE=world_size, LOCAL_RANK=local_rank,
                MASTER_ADDR=environ.get('MASTER_ADDR') or resolve_host(host),
                MASTER_PORT=environ.get('MASTER_PORT', '29500'))


def convert_sync_bn_cfg(node: Any, path: str = '') -> List[str]:
    """Turn every ``SyncBN``/``MMSyncBN`` norm config under ``node`` into ``BN``, in place;
    returns the dotted paths converted, e.g. ``['model.backbone.norm_cfg']``."""
    converted = []
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
            converted.append(path)
        for key, value in node.items():
            converted += convert_sync_bn_cfg(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            converted += convert_sync_bn_cfg(value, f'{path}.{index}')
    return converted


def prepare_cpu_distributed_cfg(cfg: Config) -> List[str]:
    """Edit ``cfg`` for a CPU distributed run (``CPUSafeDDP``, ``BN``, gloo, so the dumped config
    says what ran); returns one log line per change."""
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
    for key in list(cfg.keys()):
        for path in convert_sync_bn_cfg(cfg[key], key):  # converts in place, returns the paths
            changes.append(f"{path}.type: SyncBN -> 'BN' (SyncBatchNorm needs GPUs)")
    if cfg.get('sync_bn') is not None:
        changes.append(f'sync_bn={cfg.pop("sync_bn")!r} removed (SyncBatchNorm needs GPUs)')
    dist_cfg = cfg.setdefault('env_cfg', dict()).setdefault('dist_cfg', dict())
    if dist_cfg.get('backend') != 'gloo':
        changes.append(f"env_cfg.dist_cfg.backend: {dist_cfg.get('backend')!r} -> 'gloo'")
        dist_cfg['backend'] = 'gloo'
    return changes


def setup_distributed(cfg: Config) -> None:
    """On a CPU, prepare ``cfg.launcher``'s run (config edits logged on rank 0) and start gloo;
    call it on the final config, before the runner is built. A no-op otherwise."""
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or get_device() != 'cpu':
        return
    changes = prepare_cpu_distributed_cfg(cfg)
    if not dist.is_initialized():
        os.environ.update(torch_dist_env(launcher, os.environ))
        timeout = cfg.env_cfg.dist_cfg.get('timeout')  # None: PyTorch's default
        kwargs = {} if timeout is None else dict(timeout=datetime.timedelta(seconds=timeout))
        dist.init_process_group(backend='gloo', **kwargs)
    if dist.get_rank() == 0:
        for change in changes:
            print_log(f'CPU distributed run ({launcher}, world size {dist.get_world_size()}): '
                      f'{change}', logger='current')
