"""Per-model measurements: kNN classification, interventions and CAM scores on every image.

Everything here is computed once per (model, seed) and stored as per-image arrays; the analysis
(Table 1, statistics, separation, calibration) only reads these arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from paper_sku.knn import embed, evaluate, knn_predict
from torch import Tensor
from torch.utils.data import TensorDataset

import embedcam as ec

from .config import Recipe, SkuConfig
from .data import Data, Split
from .models import CONTROL, Trained

#: Interventions of Xiao et al. (2021) measured on every evaluated split.
INTERVENTIONS = ("mixed_same", "mixed_rand", "only_bg", "only_fg")

#: Per-image CAM scores kept for the analysis.
CAM_FIELDS = (
    "energy_in_box",
    "pointing_game",
    "positive_share",
    "region_iou",
    "wsol_box_iou",
    "area_fraction",
)


@dataclass
class CamScores:
    """One recipe x method on one split for one model: per-image arrays."""

    recipe: str
    method: str
    grid: tuple[int, int]
    scores: dict[str, Tensor]
    empty: Tensor
    no_evidence: Tensor
    verdict: Tensor


@dataclass
class SplitEval:
    """One model on one split."""

    pred: Tensor
    cos_true: Tensor
    accuracy: float
    interventions: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    cams: dict[tuple[str, str], CamScores] = field(default_factory=dict)


@dataclass
class ModelEval:
    """One trained model: classification, interventions, CAM scores, training summary."""

    name: str
    seed: int
    macro_f1: float
    errors: int
    splits: dict[str, SplitEval]
    centroids: Tensor
    train_seconds: float
    final_loss: float
    active_fraction: float
    converged: bool
    model: torch.nn.Module


def intervention_images(data: Data, split: str, seed: int) -> dict[str, Tensor]:
    """The four intervened versions of a split's images (shared by every model: paired)."""
    s = data.splits[split]
    assert s.masks is not None
    gen = torch.Generator().manual_seed(seed)
    same, _ = ec.interventions.mixed_same(s.images, s.masks, s.labels, generator=gen)
    rand, _ = ec.interventions.mixed_rand(s.images, s.masks, s.labels, generator=gen)
    return {
        "mixed_same": same,
        "mixed_rand": rand,
        "only_bg": ec.interventions.only_bg(s.images, s.masks),
        "only_fg": ec.interventions.only_fg(s.images, s.masks),
    }


def _classify(
    model: torch.nn.Module,
    images: Tensor,
    labels: Tensor,
    gallery: Tensor,
    gallery_labels: Tensor,
    centroids: Tensor,
    k: int,
) -> tuple[Tensor, Tensor]:
    emb, _ = embed(model, TensorDataset(images, labels))
    pred = knn_predict(emb, gallery, gallery_labels, k=k)
    cos = F.cosine_similarity(emb, centroids[labels], dim=1)
    return pred, cos


def _layer(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    return model.cam_layer if recipe.layer == "last" else model.block_layers[-2]


def cam_scores(
    model: torch.nn.Module,
    split: Split,
    centroids: Tensor,
    recipe: Recipe,
    method: str,
    cfg: SkuConfig,
) -> CamScores:
    """Explain every image of a split with one recipe and method; score against its boxes."""
    assert split.regions is not None
    cam = ec.EmbeddingCAM(model, _layer(model, recipe), method=method)
    negatives = "abs" if recipe.signed else "clamp"
    parts: dict[str, list[Tensor]] = {f: [] for f in CAM_FIELDS}
    empty, no_ev, verdict = [], [], []
    grid = (0, 0)
    for start in range(0, len(split), cfg.cam_batch):
        sl = slice(start, start + cfg.cam_batch)
        images, labels, regions = split.images[sl], split.labels[sl], split.regions[sl]
        target = (
            ec.CentroidTarget(centroids, labels)
            if recipe.target == "centroid"
            else ec.ContrastiveTarget(centroids, labels)
        )
        res = cam(images, target)
        grid = tuple(res.raw.shape[-2:])
        maps = res.signed_maps() if recipe.signed else res.maps
        sc = ec.scoring.score_maps(maps, regions, negatives=negatives, auc=False)
        for f in CAM_FIELDS:
            parts[f].append(getattr(sc, f).cpu())
        empty.append(res.empty.cpu())
        no_ev.append(sc.no_evidence.cpu())
        verdict.append(
            ec.judge_features(
                maps,
                regions,
                criterion=cfg.judge_criterion,
                share=cfg.judge_share,
                negatives=negatives,
            ).cpu()
        )
    return CamScores(
        recipe=recipe.name,
        method=method,
        grid=grid,  # type: ignore[arg-type]
        scores={f: torch.cat(v) for f, v in parts.items()},
        empty=torch.cat(empty),
        no_evidence=torch.cat(no_ev),
        verdict=torch.cat(verdict),
    )


def evaluate_model(
    trained: Trained, data: Data, cfg: SkuConfig, intervened: dict[str, dict[str, Tensor]]
) -> ModelEval:
    """Measure one trained model on every evaluated split."""
    model = trained.result.model.eval()
    train_split = data.control_train if trained.name == CONTROL else data.splits["train"]
    assert train_split is not None
    gallery, gallery_labels = embed(model, train_split.dataset())
    cents = ec.ClassCentroids.from_embeddings(
        gallery, gallery_labels, num_classes=len(data.classes)
    ).centroids
    splits: dict[str, SplitEval] = {}
    for name, split in data.splits.items():
        if name == "train":
            continue
        pred, cos = _classify(
            model, split.images, split.labels, gallery, gallery_labels, cents, cfg.knn_k
        )
        ev = SplitEval(
            pred=pred, cos_true=cos, accuracy=float((pred == split.labels).float().mean())
        )
        for kind, images in intervened.get(name, {}).items():
            p, c = _classify(model, images, split.labels, gallery, gallery_labels, cents, cfg.knn_k)
            ev.interventions[kind] = {"pred": p, "cos_true": c}
        if split.regions is not None:
            for recipe in cfg.recipes:
                for method in cfg.methods:
                    ev.cams[recipe.name, method] = cam_scores(
                        model, split, cents, recipe, method, cfg
                    )
        splits[name] = ev
    test = data.splits["test"]
    knn_eval = evaluate(splits["test"].pred, test.labels, len(data.classes))
    hist = trained.result.history
    valid_acc = splits["valid"].accuracy if "valid" in splits else splits["test"].accuracy
    return ModelEval(
        name=trained.name,
        seed=trained.seed,
        macro_f1=float(knn_eval.macro_f1),
        errors=int(knn_eval.errors),
        splits=splits,
        centroids=cents,
        train_seconds=trained.seconds,
        final_loss=float(hist[-1].loss) if hist else float("nan"),
        active_fraction=float(hist[-1].active_fraction) if hist else float("nan"),
        converged=valid_acc >= cfg.train.converged_accuracy,
        model=model,
    )
