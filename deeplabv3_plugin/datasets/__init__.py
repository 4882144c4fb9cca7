from .checked_voc import CheckedPascalVOCDataset, MissingDataError
from .safe_write import UnsafeWriteError, open_within
from .samplers import *  # noqa: F401,F403
from .samplers import __all__ as _samplers
from .synthetic_shapes import SyntheticShapesDataset, generate_synthetic_shapes
from .transforms import *  # noqa: F401,F403
from .transforms import __all__ as _transforms

__all__ = [
    'CheckedPascalVOCDataset', 'MissingDataError', 'SyntheticShapesDataset', 'UnsafeWriteError',
    'generate_synthetic_shapes', 'open_within', *_samplers, *_transforms
]
