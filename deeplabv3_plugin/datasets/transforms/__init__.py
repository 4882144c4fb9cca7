from .check_sample import CheckSegSample, label_problems

__all__ = ['CheckSegSample', 'label_problems']
