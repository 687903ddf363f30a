"""embedcam: Grad-CAM for metric-learning (embedding) models.

Explain why an image landed near its class in embedding space, and measure whether the evidence was
on the object or on the background.

The public API is re-exported here; see the API reference for each module.
"""

from __future__ import annotations

from embedcam import errors

# --- explain engine (centroids, targets, CAM) ---
from embedcam import cam, targets
from embedcam.cam import CamResult, EmbeddingCAM, available_methods
from embedcam.centroids import ClassCentroids
from embedcam.targets import CentroidTarget, ContrastiveTarget, EmbeddingTarget, ReferenceTarget

# --- boxes, masks, scoring, judge, stats ---
from embedcam import boxes
from embedcam.boxes import boxes_to_masks

# --- datasets and interventions ---

__version__ = "0.1.0"

__all__ = [
    "errors",
    "__version__",
    # explain engine
    "cam",
    "targets",
    "CamResult",
    "EmbeddingCAM",
    "available_methods",
    "ClassCentroids",
    "CentroidTarget",
    "ContrastiveTarget",
    "EmbeddingTarget",
    "ReferenceTarget",
    # boxes, masks, scoring, judge, stats
    "boxes",
    "boxes_to_masks",
]
