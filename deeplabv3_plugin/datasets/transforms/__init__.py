from .check_sample import CheckSegSample, label_problems  # noqa: F401
