from .output_stride import (DilationPlan, allowed_output_strides, check_multi_grid,
                            check_num_cascade_blocks, check_output_stride, make_dilation_plan,
                            max_output_stride, set_output_stride)

__all__ = [
    'DilationPlan', 'allowed_output_strides', 'check_multi_grid', 'check_num_cascade_blocks',
    'check_output_stride', 'make_dilation_plan', 'max_output_stride', 'set_output_stride'
]
