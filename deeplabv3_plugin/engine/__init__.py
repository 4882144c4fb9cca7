"""Running the plugin: hooks, the bf16 optimiser wrapper, the paper's batch, CPU distributed
runs and the runner."""
from .batch_size import (BATCH_SIZE_PER_PROCESS, BatchSplit, TrainingBatchHook, keep_total_batch,
                         split_total_batch)
from .bf16_optim_wrapper import BF16AutocastOptimWrapper
from .distributed import (convert_sync_bn_cfg, launcher_world_size, prepare_cpu_distributed_cfg,
                          setup_distributed, torch_dist_env)
from .hooks import CheckpointCompatibilityHook, FastInferenceHook
from .model_wrappers import CPUSafeDDP
from .runner import RunDirRunner, build_runner

__all__ = [
    'BATCH_SIZE_PER_PROCESS', 'BF16AutocastOptimWrapper', 'BatchSplit', 'CPUSafeDDP',
    'CheckpointCompatibilityHook', 'FastInferenceHook', 'RunDirRunner', 'TrainingBatchHook',
    'build_runner', 'convert_sync_bn_cfg', 'keep_total_batch', 'launcher_world_size',
    'prepare_cpu_distributed_cfg', 'setup_distributed', 'split_total_batch', 'torch_dist_env'
]
