from .multigrid_resnet import CascadedBlock, MultiGridResNet, Subsample

__all__ = ['CascadedBlock', 'MultiGridResNet', 'Subsample']
