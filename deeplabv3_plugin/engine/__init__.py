"""Running the plugin: tool options, checks with clear errors, CPU distributed runs."""
from .checkpoint_checks import (CheckpointCompatibilityHook, CheckpointMismatchError,
                                check_state_dict_fits, compare_state_dicts)
from .config_checks import check_cfg_options, load_config
from .distributed import (convert_sync_bn_cfg, prepare_cpu_distributed_cfg, setup_distributed,
                          torch_dist_env)
from .errors import UserInputError, run_tool
from .model_wrappers import CPUSafeDDP
from .runner import RunDirRunner, build_runner

__all__ = [
    'CPUSafeDDP', 'CheckpointCompatibilityHook', 'CheckpointMismatchError', 'RunDirRunner',
    'UserInputError', 'build_runner', 'check_cfg_options', 'check_state_dict_fits',
    'compare_state_dicts', 'convert_sync_bn_cfg', 'load_config', 'prepare_cpu_distributed_cfg',
    'run_tool', 'setup_distributed', 'torch_dist_env'
]
