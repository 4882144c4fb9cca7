from .check_sample import CheckSegSample
from .loading import CheckedLoadAnnotations, CheckedLoadImageFromFile

__all__ = ['CheckSegSample', 'CheckedLoadAnnotations', 'CheckedLoadImageFromFile']
