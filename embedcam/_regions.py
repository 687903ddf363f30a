"""Checks and connected-component labelling shared by `embedcam.masks` and `embedcam.scoring`.

Private to the package: the names here carry no underscore so that the modules that share them do
not reach into each other's privates. scipy is imported by the functions that need it, so that
importing `embedcam` does not load it.
"""

from __future__ import annotations

import numpy as np

from embedcam._checks import check_regions

__all__ = ["LABEL_CHUNK_PIXELS", "check_regions", "label_batch"]

#: Pixels per ``ndimage.label`` call: bounds the int32 label image and keeps it cache-friendly.
LABEL_CHUNK_PIXELS = 1 << 22


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
