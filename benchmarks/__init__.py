"""Speed and memory benchmarks of the plugin's DeepLabV3 (``python benchmarks/run.py``)."""
