"""Nearest-neighbour label downsampling for the appendix's "ground truth downsampled" ablation."""
from typing import Sequence

import torch
from torch import Tensor


def downsample_labels(labels: Tensor, size: Sequence[int], align_corners: bool) -> Tensor:
    """Pick (never interpolate) ``(N, 1, H, W)`` labels onto ``size`` on the logits' grid.

    With ``align_corners`` output pixel ``i`` takes input ``round(i * (H - 1) / (h - 1))``, TF's
    ``resize_nearest_neighbor(align_corners=True)`` of the official code; without, the pixel
    under the output pixel's centre (``nearest-exact``).
    """
    rows = _nearest_indices(labels.shape[-2], int(size[0]), align_corners, labels.device)
    cols = _nearest_indices(labels.shape[-1], int(size[1]), align_corners, labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def _nearest_indices(src: int, dst: int, align_corners: bool,
                     device: torch.device) -> Tensor:
    """Source index of each of ``dst`` output positions, in exact integer arithmetic."""
    out = torch.arange(dst, device=device)
    if align_corners:
        if dst == 1:
            return torch.zeros_like(out)
        # round(i * (src - 1) / (dst - 1)), half up
        index = (2 * out * (src - 1) + (dst - 1)) // (2 * (dst - 1))
    else:
        index = ((2 * out + 1) * src) // (2 * dst)
    return index.clamp_(max=src - 1)
