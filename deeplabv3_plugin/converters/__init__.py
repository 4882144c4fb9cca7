"""Weights of other implementations in the plugin's layout: torchvision's DeepLabV3
(:mod:`.torchvision`)."""
