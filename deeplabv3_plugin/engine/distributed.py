"""Distributed training and testing on CPUs (gloo), which mmengine 0.10.7 cannot start by itself.

With ``--launcher pytorch`` (or ``slurm``/``mpi``) on a machine without an accelerator, stock
mmengine fails three ways:

1. ``init_dist`` calls ``torch.cuda.set_device(local_rank)`` before ``init_process_group``, which
   raises on a CPU-only PyTorch. :func:`init_cpu_process_group` initialises the gloo process group
   itself; the ``Runner`` then skips ``init_dist`` because the group already exists.
2. ``Runner.wrap_model`` gives DDP ``device_ids=[LOCAL_RANK]``, which PyTorch refuses for CPU
   modules. :func:`prepare_cpu_distributed_cfg` selects the
   :class:`~deeplabv3_plugin.engine.model_wrappers.CPUSafeDDP` wrapper.
3. ``SyncBN`` (the norm layer of mmseg's base configs) only runs on GPUs, and distributed runs do
   not revert it to BN the way single-process runs do. :func:`prepare_cpu_distributed_cfg`
   converts it to ``BN`` in the config, where the change is logged and dumped with the run.
   Batch statistics are then per process, as with BN on one device per process.

:func:`setup_distributed` applies both and is what the tools call, before ``Runner.from_cfg``.
Runs with an accelerator are left to mmengine unchanged.
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

    ``torch.distributed.init_process_group`` reads these (its ``env://`` method). ``torchrun``
    sets them already; Slurm and Open MPI describe the same facts with their own names, which are
    translated here the way mmengine's ``init_dist`` does for GPUs.

    Args:
        launcher: ``'pytorch'`` (torchrun, ``tools/dist_train.sh``), ``'slurm'`` (``srun``) or
            ``'mpi'`` (Open MPI's ``mpirun``).
        environ: The process environment, usually ``os.environ``.
        resolve_host: Turns ``SLURM_NODELIST`` into the first host name (the rendezvous host)
            when ``MASTER_ADDR`` is not set; defaults to ``scontrol show hostnames``.

    Returns:
        The five variables as strings.

    Raises:
        UserInputError: A variable the launcher must provide is missing, or ``launcher`` is not
            one of the three.
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

    Does nothing (and returns False) for ``launcher='none'``, when an accelerator is present
    (mmengine's own ``init_dist`` then works) or when a group already exists.

    Args:
        launcher: The tools' ``--launcher`` value.
        timeout_s: ``env_cfg.dist_cfg.timeout`` in seconds (mmengine's unit); None keeps
            PyTorch's default.

    Returns:
        Whether this call created the process group.
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
    """Turn every ``SyncBN``/``MMSyncBN`` norm config under ``node`` into ``BN``, in place.

    Args:
        node: A config (or any dict/list nesting of one).
        path: Dotted path of ``node``, used in the returned names.

    Returns:
        The dotted paths of the converted entries, e.g. ``['model.backbone.norm_cfg']``.
    """
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
    """Edit a config so its distributed run works on CPUs; returns what changed, for the log.

    * ``model_wrapper_cfg`` becomes ``CPUSafeDDP``, keeping its other arguments. With no
      ``model_wrapper_cfg`` mmengine would have used ``MMDistributedDataParallel`` with
      ``broadcast_buffers=False`` and the config's ``find_unused_parameters``; those are kept.
    * Every ``SyncBN``/``MMSyncBN`` becomes ``BN`` (see :func:`convert_sync_bn_cfg`), and a
      top-level ``sync_bn`` (mmengine's "convert BN to SyncBN after building") is removed.
    * ``env_cfg.dist_cfg.backend`` becomes ``'gloo'``, the CPU backend, so the dumped config says
      what ran.

    Args:
        cfg: The run's config, edited in place.

    Returns:
        One human-readable line per change.
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
    """Prepare ``cfg.launcher``'s distributed run on CPUs; a no-op otherwise.

    Call it after the config is final and before ``Runner.from_cfg``. On a CPU machine with a
    distributed launcher it edits the config (:func:`prepare_cpu_distributed_cfg`), logs each
    change once (rank 0), and initialises the gloo process group
    (:func:`init_cpu_process_group`).

    Args:
        cfg: The run's config with ``launcher`` set; edited in place.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or get_device() != 'cpu':
        return
    changes = prepare_cpu_distributed_cfg(cfg)
    init_cpu_process_group(launcher, cfg.env_cfg.dist_cfg.get('timeout'))
    if dist.get_rank() == 0:
        for change in changes:
            print_log(f'CPU distributed run ({launcher}, world size {dist.get_world_size()}): '
                      f'{change}', logger='current')
