"""embedcam: Grad-CAM for metric-learning (embedding) models.

Explain why an image landed near its class in embedding space, and measure whether the evidence was
on the object or on the background.

The public API is re-exported here; see the API reference for each module. The sub-modules are
loaded on first use (PEP 562), so ``import embedcam`` costs a few milliseconds and does not import
torch, scipy, scikit-image, pyarrow, Captum or pytorch-grad-cam until a name that needs them is
touched. ``from embedcam import X`` works for every name in ``__all__``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from embedcam import errors

__version__ = "0.1.0"

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs
    from embedcam import (
        atomic,
        boxes,
        cam,
        datasets,
        interventions,
        masks,
        pairs,
        report,
        scoring,
        stats,
        targets,
        trust,
    )
    from embedcam.audit import AuditResult, Comparison, audit, compare
    from embedcam.boxes import boxes_to_masks
    from embedcam.cam import (
        CamResult,
        EmbeddingCAM,
        available_methods,
        register_method,
        unregister_method,
    )
    from embedcam.centroids import ClassCentroids
    from embedcam.embedding import embed_loader, embedding_health
    from embedcam.masks import darken
    from embedcam.pairs import (
        PairResult,
        PointToPoint,
        RankList,
        explain_pair,
        point_to_point,
        rank_list,
    )
    from embedcam.pipeline import DatasetRecords, Judge, explain_dataset
    from embedcam.recipe import Recipe
    from embedcam.scoring import judge_features
    from embedcam.targets import (
        CentroidTarget,
        ContrastivePairTarget,
        ContrastiveTarget,
        EmbeddingTarget,
        ReferenceTarget,
    )

__all__ = [
    "errors",
    "__version__",
    # explain engine
    "cam",
    "targets",
    "CamResult",
    "EmbeddingCAM",
    "available_methods",
    "register_method",
    "unregister_method",
    "ClassCentroids",
    "CentroidTarget",
    "ContrastiveTarget",
    "ContrastivePairTarget",
    "EmbeddingTarget",
    "ReferenceTarget",
    # retrieval: pairs, rank lists, point-to-point
    "pairs",
    "explain_pair",
    "PairResult",
    "rank_list",
    "RankList",
    "point_to_point",
    "PointToPoint",
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
    # can a map be trusted?
    "trust",
    # report
    "report",
    "atomic",
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

# public sub-modules, loaded on first attribute access
_SUBMODULES = frozenset(
    {
        "cam",
        "targets",
        "boxes",
        "masks",
        "pairs",
        "scoring",
        "stats",
        "datasets",
        "interventions",
        "report",
        "atomic",
        "trust",
    }
)
# public name -> the module that defines it
_ATTRIBUTES = {
    "CamResult": "embedcam.cam",
    "EmbeddingCAM": "embedcam.cam",
    "available_methods": "embedcam.cam",
    "register_method": "embedcam.cam",
    "unregister_method": "embedcam.cam",
    "ClassCentroids": "embedcam.centroids",
    "CentroidTarget": "embedcam.targets",
    "ContrastiveTarget": "embedcam.targets",
    "ContrastivePairTarget": "embedcam.targets",
    "explain_pair": "embedcam.pairs",
    "PairResult": "embedcam.pairs",
    "rank_list": "embedcam.pairs",
    "RankList": "embedcam.pairs",
    "point_to_point": "embedcam.pairs",
    "PointToPoint": "embedcam.pairs",
    "EmbeddingTarget": "embedcam.targets",
    "ReferenceTarget": "embedcam.targets",
    "boxes_to_masks": "embedcam.boxes",
    "darken": "embedcam.masks",
    "judge_features": "embedcam.scoring",
    "Recipe": "embedcam.recipe",
    "Judge": "embedcam.pipeline",
    "DatasetRecords": "embedcam.pipeline",
    "explain_dataset": "embedcam.pipeline",
    "audit": "embedcam.audit",
    "compare": "embedcam.audit",
    "AuditResult": "embedcam.audit",
    "Comparison": "embedcam.audit",
    "embed_loader": "embedcam.embedding",
    "embedding_health": "embedcam.embedding",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here (PEP 562)."""
    if name in _SUBMODULES:
        value: Any = importlib.import_module(f"embedcam.{name}")
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'embedcam' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the lazily loaded public ones included."""
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The ``embedcam`` module: a public function keeps its name over a same-named sub-module.

    Importing the sub-module ``embedcam.audit`` binds it as the package attribute ``audit``, which
    would hide the public function [`audit`][embedcam.audit.audit] (the eager package rebound the
    name to the function right after the import).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "audit" and isinstance(value, types.ModuleType) and hasattr(value, "audit"):
            value = value.audit
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
