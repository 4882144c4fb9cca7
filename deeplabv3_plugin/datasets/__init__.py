from .samplers import *  # noqa: F401,F403
from .transforms import *  # noqa: F401,F403
from .checked_voc import CheckedPascalVOCDataset, MissingDataError  # noqa: F401
from .synthetic_shapes import SyntheticShapesDataset, generate_synthetic_shapes  # noqa: F401
