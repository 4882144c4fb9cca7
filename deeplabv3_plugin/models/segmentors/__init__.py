from .deeplabv3 import DeepLabV3

__all__ = ['DeepLabV3']
