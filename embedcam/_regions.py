"""Checks and connected-component labelling shared by `embedcam.masks` and `embedcam.scoring`.

Private to the package: the names here carry no underscore so that the modules that share them do
not reach into each other's privates. scipy is imported by the functions that need it, so that
importing `embedcam` does not load it.
"""

from __future__ import annotations

import numpy as np
import torch

from embedcam.errors import EmbedcamValueError, ShapeError

__all__ = ["LABEL_CHUNK_PIXELS", "check_regions", "label_batch"]

#: Pixels per ``ndimage.label`` call: bounds the int32 label image and keeps it cache-friendly.
LABEL_CHUNK_PIXELS = 1 << 22


def check_regions(regions: torch.Tensor, name: str = "regions") -> torch.Tensor:
    """Check that ``regions`` is a ``(B, H, W)`` bool tensor and return it unchanged.

    Args:
        regions: Object or evidence regions ``(B, H, W)`` bool.
        name: What to call the argument in error messages.

    Returns:
        ``regions``, unchanged.

    Raises:
        ShapeError: If ``regions`` is not a 3-D tensor.
        EmbedcamValueError: If ``regions`` is not bool.
    """
    if not isinstance(regions, torch.Tensor) or regions.dim() != 3:
        shape = tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions)
        raise ShapeError(f"{name} must be a (B, H, W) bool tensor, got {shape}")
    if regions.dtype != torch.bool:
        raise EmbedcamValueError(
            f"{name} must be a bool tensor, got {regions.dtype}; use regions > 0 or "
            "boxes_to_masks(...)"
        )
    return regions


def label_batch(arr: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Label the connected components of every image of a ``(B, H, W)`` bool array in one call.

    The 3-D structuring element only connects pixels within an image, so this equals labelling
    each image alone; labels run in raster order over the whole batch, so image ``i`` owns a
    contiguous range of labels.

    Args:
        arr: Regions ``(B, H, W)`` bool.
        connectivity: 1 (4-connectivity) or 2 (8-connectivity).

    Returns:
        The int32 label image ``(B, H, W)`` (0 = background) and the number of components.
    """
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, connectivity)
    lab, n = ndimage.label(arr, structure=structure)
    return lab, int(n)
