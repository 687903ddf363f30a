"""embedcam: Grad-CAM for metric-learning (embedding) models.

Explain why an image landed near its class in embedding space, and measure whether the evidence was
on the object or on the background.

The public API is re-exported here; see the API reference for each module.
"""

from __future__ import annotations

from embedcam import errors

# isort: split
# --- explain engine (centroids, targets, CAM) ---
from embedcam import cam, targets
from embedcam.cam import CamResult, EmbeddingCAM, available_methods
from embedcam.centroids import ClassCentroids
from embedcam.recipe import Recipe
from embedcam.targets import CentroidTarget, ContrastiveTarget, EmbeddingTarget, ReferenceTarget

# isort: split
# --- boxes, masks, scoring, judge, stats ---
from embedcam import boxes, masks, scoring, stats
from embedcam.boxes import boxes_to_masks
from embedcam.masks import darken
from embedcam.scoring import judge_features

# isort: split
# --- datasets and interventions ---
from embedcam import datasets, interventions

# isort: split
# --- report ---
from embedcam import report

# isort: split
# --- whole datasets ---
from embedcam.audit import AuditResult, Comparison, audit, compare
from embedcam.embedding import embed_loader, embedding_health
from embedcam.pipeline import DatasetRecords, Judge, explain_dataset

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
    "masks",
    "scoring",
    "stats",
    "boxes_to_masks",
    "darken",
    "judge_features",
    # datasets and interventions
    "datasets",
    "interventions",
    # report
    "report",
    # whole datasets
    "Recipe",
    "Judge",
    "DatasetRecords",
    "explain_dataset",
    "audit",
    "compare",
    "AuditResult",
    "Comparison",
    "embed_loader",
    "embedding_health",
]
