from .output_stride import (DilationPlan, OutputStrideSwitchable, allowed_output_strides,
                            check_output_stride, make_dilation_plan, set_output_stride)

__all__ = [
    'DilationPlan', 'OutputStrideSwitchable', 'allowed_output_strides', 'check_output_stride',
    'make_dilation_plan', 'set_output_stride'
]
