from .checked_voc import CheckedPascalVOCDataset, MissingDataError
from .samplers import *  # noqa: F401,F403
from .samplers import __all__ as _samplers
from .synthetic_shapes import SyntheticShapesDataset, generate_synthetic_shapes
from .transforms import *  # noqa: F401,F403
from .transforms import __all__ as _transforms

__all__ = [
    'CheckedPascalVOCDataset', 'MissingDataError', 'SyntheticShapesDataset',
    'generate_synthetic_shapes', *_samplers, *_transforms
]
