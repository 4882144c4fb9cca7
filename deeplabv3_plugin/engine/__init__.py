"""Running the plugin: tool options, checks with clear errors, CPU distributed runs."""
from .batch_size import (BATCH_SIZE_PER_PROCESS, BatchSplit, TrainingBatchHook, keep_total_batch,
                         split_total_batch)
from .checkpoint_checks import (CheckpointCompatibilityHook, CheckpointMismatchError,
                                check_state_dict_fits, compare_state_dicts)
from .config_checks import check_cfg_options, load_config
from .distributed import (convert_sync_bn_cfg, launcher_world_size, prepare_cpu_distributed_cfg,
                          setup_distributed, torch_dist_env)
from .errors import UserInputError, run_tool
from .model_wrappers import CPUSafeDDP
from .runner import RunDirRunner, build_runner

__all__ = [
    'BATCH_SIZE_PER_PROCESS', 'BatchSplit', 'CPUSafeDDP', 'CheckpointCompatibilityHook',
    'CheckpointMismatchError', 'RunDirRunner', 'TrainingBatchHook', 'UserInputError',
    'build_runner', 'check_cfg_options', 'check_state_dict_fits', 'compare_state_dicts',
    'convert_sync_bn_cfg', 'keep_total_batch', 'launcher_world_size', 'load_config',
    'prepare_cpu_distributed_cfg', 'run_tool', 'setup_distributed', 'split_total_batch',
    'torch_dist_env'
]
