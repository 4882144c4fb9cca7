from .aspp import ASPP, ImagePooling, pooled_batch_norm_uses_running_stats
from .deeplabv3_head import DeepLabV3Head, scale_atrous_rates, torchvision_key_map
from .label_downsample import downsample_labels

__all__ = [
    'ASPP', 'ImagePooling', 'pooled_batch_norm_uses_running_stats', 'DeepLabV3Head',
    'downsample_labels', 'scale_atrous_rates', 'torchvision_key_map'
]
