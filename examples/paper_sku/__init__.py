"""The paper's reference model, losses, miners, training and kNN, as a worked example.

Volnova & Suschinskiy, *Analysis of the influence of triplet loss function modifications on the
class features detection*, International Research Journal, 2026, DOI 10.60797/IRJ.2026.167.89.

This package is an example, not part of the installed ``embedcam`` wheel: put ``examples/`` on
``sys.path`` to import it. It uses only the public API of ``embedcam``.

The training function is ``paper_sku.train.train`` (not re-exported, so that ``paper_sku.train``
stays the module).
"""

from __future__ import annotations

from paper_sku.distances import (
    BaseDistance,
    DistanceTransform,
    EuclideanDistance,
    FocalTransform,
    IdentityTransform,
)
from paper_sku.knn import KnnEvaluation, embed, evaluate, knn_predict
from paper_sku.losses import (
    FlexibleMarginTripletLoss,
    FocalTripletLoss,
    LossOutput,
    TripletLoss,
    TripletLossBase,
    difference_degree,
    pairwise_distance,
)
from paper_sku.margins import FixedMargin, FlexibleMargin, MarginRule
from paper_sku.mining import BatchHardMiner, SemiHardMiner, TripletMiner, Triplets
from paper_sku.model import PaperCNN
from paper_sku.reducers import MeanActiveReducer, MeanReducer, SumReducer, TripletReducer
from paper_sku.sampler import PKSampler
from paper_sku.train import EpochStats, TrainConfig, TrainResult, load_checkpoint, load_model

__all__ = [
    "PaperCNN",
    "TripletLossBase",
    "TripletLoss",
    "FocalTripletLoss",
    "FlexibleMarginTripletLoss",
    "LossOutput",
    "difference_degree",
    "pairwise_distance",
    "BaseDistance",
    "EuclideanDistance",
    "DistanceTransform",
    "IdentityTransform",
    "FocalTransform",
    "MarginRule",
    "FixedMargin",
    "FlexibleMargin",
    "TripletReducer",
    "MeanReducer",
    "MeanActiveReducer",
    "SumReducer",
    "TripletMiner",
    "SemiHardMiner",
    "BatchHardMiner",
    "Triplets",
    "PKSampler",
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "load_checkpoint",
    "load_model",
    "knn_predict",
    "evaluate",
    "KnnEvaluation",
    "embed",
]
