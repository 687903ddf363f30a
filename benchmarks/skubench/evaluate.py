"""Per-model measurements: one [`embedcam.audit`][embedcam.audit] per trained model and split.

Every trained model is audited twice with the library: on the test split (Table 1: kNN against
its training gallery, every recipe explained, scored and judged, the interventions) and on the
calibration split (the per-image scores and interventions the judge is calibrated on). The
audits, with their per-image Parquet records, are written to ``<out>/audits/``; the analysis
only reads them. The few figure images are explained once more with full-resolution maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

import embedcam as ec

from .config import SkuConfig
from .data import Data, Split
from .models import CONTROL, Trained

#: Record columns the analysis reads (see ``embedcam.pipeline.SCORE_COLUMNS``).
RECORD_COLUMNS = (
    "position",
    "recipe",
    "grid_h",
    "grid_w",
    "no_evidence",
    "energy_in_box",
    "area_fraction",
    "ceiling",
    "pointing_game",
    "positive_share",
    "region_iou",
    "wsol_box_iou",
    "verdict",
)

#: Images per batch when a gallery is only embedded (no CAM): larger batches embed faster.
GALLERY_BATCH = 256


@dataclass
class ModelAudit:
    """One trained model: its audits and training summary.

    Attributes:
        name: Model name (a loss or ``"control"``).
        seed: Training seed.
        test: The audit with the test split as queries.
        calibration: The audit with the calibration split as queries where the judge can be
            calibrated (boxes and exact masks on the valid split); ``None`` otherwise.
        valid_accuracy: kNN accuracy on the calibration split (``None`` without one).
        train_seconds: Training compute time, summed over epochs (resumed runs included).
        run_seconds: What this run spent training or loading it (about 0 from the cache).
        epochs: Epochs trained.
        best_epoch: The epoch kept (best validation accuracy).
        stop_reason: ``"plateau"``, ``"max_epochs"`` or ``"epochs"``.
        final_loss: Loss of the kept epoch.
        active_fraction: Share of active triplets in the kept epoch.
        evidence: Split (``"test"``, ``"calibration"``) -> recipe -> evidence region -> field ->
            per image (dataset order): `evidence_per_recipe`, filled where the judge is
            calibrated.
        retest: Split -> ``(RETESTS, N)``: the kNN predictions after Mixed-Rand with other
            donors (`mixed_rand_retest`), filled where the judge is calibrated.
        converged: Validation kNN accuracy reached ``train.converged_accuracy`` (what the
            synthetic control must reach for the shortcut check; reported for every model on
            synthetic data), ``None`` on the user's data: real models stop on their own
            validation plateau and an absolute target means nothing there.
    """

    name: str
    seed: int
    test: ec.AuditResult
    calibration: ec.AuditResult | None
    valid_accuracy: float | None
    train_seconds: float
    run_seconds: float
    epochs: int
    best_epoch: int
    stop_reason: str
    final_loss: float
    active_fraction: float
    converged: bool | None
    evidence: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]] = field(
        default_factory=dict, repr=False
    )
    retest: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _records: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def records(self, split: str = "test") -> pd.DataFrame:
        """The per-image records of an audit (``"test"`` or ``"calibration"``), read once."""
        if split not in self._records:
            audit = self.test if split == "test" else self.calibration
            assert audit is not None and audit.records is not None
            self._records[split] = read_records(audit.records)
        return self._records[split]


def read_records(folder: str | Path) -> pd.DataFrame:
    """An audit's records folder as one DataFrame sorted by (recipe, position)."""
    df = pd.read_parquet(folder, columns=list(RECORD_COLUMNS))
    return df.sort_values(["recipe", "position"], kind="stable").reset_index(drop=True)


def recipe_records(df: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """The records of one recipe, one row per image in dataset order."""
    return df[df["recipe"] == recipe].reset_index(drop=True)


def recipes(model: torch.nn.Module, cfg: SkuConfig) -> list[ec.Recipe]:
    """Every configured recipe x method as library recipes; the first defines Table 1."""
    return [spec.resolve(model, method) for spec in cfg.recipes for method in cfg.methods]


def gallery_split(data: Data, name: str) -> Split:
    """The training split a model was trained on: its kNN gallery and centroids."""
    split = data.control_train if name == CONTROL else data.splits["train"]
    assert split is not None
    return split


def audit_model(trained: Trained, data: Data, cfg: SkuConfig, out: Path) -> ModelAudit:
    """Audit one trained model on the test split and on the calibration split."""
    model = trained.result.model.eval()
    rec = recipes(model, cfg)
    gallery = gallery_split(data, trained.name).loader(GALLERY_BATCH)
    valid = data.splits.get("valid")
    test_split = data.splits["test"]
    # Exact object masks feed the interventions where the split has them; otherwise the audit
    # uses the box rectangles and says so.
    valid_loader = (
        valid.loader(cfg.cam_batch, masks=valid.exact_masks) if valid is not None else None
    )
    # The calibration split is audited as queries where the judge can be calibrated: boxes to
    # judge maps by and exact masks for the interventional truth (a box rectangle moved onto
    # another background carries its own background along). Elsewhere it is the test audit's
    # valid= (validation accuracy and interventions). Not both: the interventions would run twice.
    calibrate = (
        valid is not None and valid.exact_masks and valid.boxes is not None and data.has_boxes
    )
    common: dict[str, Any] = {
        "name": trained.name,
        "class_names": data.classes,
        "k": cfg.knn_k,
        "judge": cfg.judge(),
        "seed": cfg.data.seed,
        "progress": False,
        # records are keyed by the model's weights and the settings: a re-run with the same
        # ones resumes them, one with other weights replaces them
        "overwrite": True,
    }
    tag = f"{trained.name}-seed{trained.seed}"
    test = ec.audit(
        model,
        gallery,
        test_split.loader(cfg.cam_batch, masks=test_split.exact_masks),
        rec,
        valid=None if calibrate else valid_loader,
        out=out / "audits" / tag,
        **common,
    )
    calibration = None
    if calibrate:
        calibration = ec.audit(
            model,
            gallery,
            valid_loader,
            rec,
            out=out / "audits" / f"{tag}-calibration",
            figure=False,  # never shown
            **common,
        )
    evidence: dict[str, dict[str, dict[str, dict[str, np.ndarray]]]] = {}
    retest: dict[str, np.ndarray] = {}
    if calibrate and valid is not None:
        evidence = {
            "test": evidence_per_recipe(model, rec, gallery, test_split, cfg, len(data.classes)),
            "calibration": evidence_per_recipe(model, rec, gallery, valid, cfg, len(data.classes)),
        }
        retest = {
            name: mixed_rand_retest(model, gallery, sp, cfg, cfg.data.seed + RETEST_SEED)
            for name, sp in (("test", test_split), ("calibration", valid))
        }
    result = trained.result
    hist = result.history
    c = test.classification
    valid_acc = calibration.accuracy if calibration is not None else c.valid_accuracy
    best = hist[result.best_epoch - 1] if hist else None
    return ModelAudit(
        name=trained.name,
        seed=trained.seed,
        test=test,
        calibration=calibration,
        valid_accuracy=valid_acc,
        train_seconds=result.train_seconds,
        run_seconds=trained.seconds,
        epochs=result.epochs,
        best_epoch=result.best_epoch,
        stop_reason=result.stop_reason,
        final_loss=float(best.loss) if best is not None else float("nan"),
        active_fraction=float(best.active_fraction) if best is not None else float("nan"),
        evidence=evidence,
        retest=retest,
        converged=(
            valid_acc is not None and valid_acc >= cfg.train.converged_accuracy
            if data.synthetic
            else None
        ),
    )


#: Offset of the retests' donor seeds from the audit's (any other value draws other donors).
RETEST_SEED = 7919
#: Redrawn Mixed-Rand backgrounds per image for the truth's retest (odd: a majority exists).
RETESTS = 5

#: The evidence regions the re-classification judges are tried with: name -> keywords of
#: `embedcam.trust.evidence_region` (the paper's ``s > 0``, a relative threshold, a fixed share).
EVIDENCE_REGIONS: dict[str, dict[str, float]] = {
    "s>0": {"threshold": 0.0},
    "s>0.5max": {"threshold": 0.5},
    "top25%": {"area": 0.25},
}
#: What `embedcam.trust.evidence_kept` gives per image and region (stored per split and recipe).
EVIDENCE_FIELDS = ("kept", "lost", "similarity_kept", "similarity_removed")


def evidence_per_recipe(
    model: torch.nn.Module,
    rec: list[ec.Recipe],
    gallery: Any,
    split: Split,
    cfg: SkuConfig,
    num_classes: int,
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """Per recipe, evidence region and image: darken outside the evidence, or the evidence.

    Returns recipe -> region name (`EVIDENCE_REGIONS`) -> field (`EVIDENCE_FIELDS`) -> values
    in dataset order: does the kNN prediction survive keeping only the evidence (``kept``), does
    it change when the evidence is darkened (``lost``), and the cosines to the original.
    """
    from embedcam import trust

    emb = ec.embed_loader(model, gallery)
    cents = ec.ClassCentroids.fit(
        model, gallery, num_classes=num_classes, progress=False, allow_empty=True
    )
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for recipe in rec:
        cam = recipe.cam(model)
        parts: dict[str, dict[str, list[np.ndarray]]] = {
            r: {f: [] for f in EVIDENCE_FIELDS} for r in EVIDENCE_REGIONS
        }
        for s in range(0, len(split), cfg.cam_batch):
            images = split.images[s : s + cfg.cam_batch]
            labels = split.labels[s : s + cfg.cam_batch]
            res = cam(images, recipe.make_target(cents.centroids, labels))
            maps = res.signed_maps().clamp_min(0) if recipe.signed else res.maps
            for region, kw in EVIDENCE_REGIONS.items():
                check = trust.evidence_kept(
                    model,
                    images,
                    maps,
                    emb.embeddings,
                    emb.labels,
                    k=cfg.knn_k,
                    factor=cfg.darken_factor,
                    **kw,
                )
                for f in EVIDENCE_FIELDS:
                    parts[region][f].append(getattr(check, f).numpy())
        out[recipe.name] = {
            r: {f: np.concatenate(v) for f, v in fields.items()} for r, fields in parts.items()
        }
    return out


def mixed_rand_retest(
    model: torch.nn.Module, gallery: Any, split: Split, cfg: SkuConfig, seed: int
) -> np.ndarray:
    """``(RETESTS, N)`` kNN predictions after Mixed-Rand with other donors: the truth's retests.

    The interventional truth draws one foreign background per image; drawing others and asking
    again measures how reliable that truth is, which bounds any judge's agreement with it. Draw
    ``r`` uses the donor seed ``seed + r``.
    """
    emb = ec.embed_loader(model, gallery)
    return np.stack([_mixed_rand_preds(model, emb, split, cfg, seed + r) for r in range(RETESTS)])


def _mixed_rand_preds(
    model: torch.nn.Module, emb: Any, split: Split, cfg: SkuConfig, seed: int
) -> np.ndarray:
    """The kNN prediction of every image of ``split`` after Mixed-Rand with donor seed ``seed``.

    ``emb`` is the gallery's embedding (`embedcam.embed_loader`).
    """
    from embedcam import interventions as iv
    from embedcam.classify import knn_predict

    assert split.masks is not None
    device = next(model.parameters()).device
    donors = iv.other_class_donors(split.labels, torch.Generator().manual_seed(seed))
    preds = []
    for s in range(0, len(split), cfg.cam_batch):
        idx = slice(s, s + cfg.cam_batch)
        d = donors[idx]
        backgrounds = iv.remove_objects(split.images[d], split.masks[d])
        pasted = iv.paste_objects(split.images[idx], split.masks[idx], backgrounds)
        with torch.inference_mode():
            e = model(pasted.to(device)).float()
        gal, lab = emb.embeddings.to(device), emb.labels.to(device)
        preds.append(knn_predict(e, gal, lab, k=cfg.knn_k).cpu().numpy())
    return np.concatenate(preds)


@dataclass
class FigureMaps:
    """Full-resolution maps of a few test images, per model and recipe (from records).

    Attributes:
        positions: Test-split positions explained, in order.
        maps: Model name -> recipe name -> ``(len(positions), H, W)`` maps as scored (signed
            recipes: the signed map in ``[-1, 1]``).
    """

    positions: list[int]
    maps: dict[str, dict[str, Tensor]]

    def get(self, model: str, recipe: str, positions: list[int]) -> Tensor:
        """The maps of ``positions`` (each must be in `positions`)."""
        rows = [self.positions.index(p) for p in positions]
        return self.maps[model][recipe][rows]


def figure_maps(
    trained: list[Trained], data: Data, cfg: SkuConfig, positions: list[int]
) -> FigureMaps:
    """Explain the figure images with every recipe, keeping the maps (``maps="full"``)."""
    positions = sorted(set(positions))
    test = data.splits["test"].loader(cfg.cam_batch)
    sub = DataLoader(
        Subset(test.dataset, positions),
        batch_size=cfg.cam_batch,
        shuffle=False,
        collate_fn=test.collate_fn,
    )
    out: dict[str, dict[str, Tensor]] = {}
    for t in trained:
        model = t.result.model.eval()
        cents = ec.ClassCentroids.fit(
            model,
            gallery_split(data, t.name).loader(GALLERY_BATCH),
            num_classes=len(data.classes),
            progress=False,
            allow_empty=True,
        )
        rec = recipes(model, cfg)
        recs = ec.explain_dataset(
            model, sub, cents, rec, judge=cfg.judge(), maps="full", progress=False
        )
        out[t.name] = {r.name: recs.maps(r) for r in rec}
    return FigureMaps(positions=positions, maps=out)


def trust_checks(trained: list[Trained], data: Data, cfg: SkuConfig) -> dict[str, Any]:
    """Can the maps be trusted? The checks of `embedcam.trust` per model and recipe.

    On the first ``cfg.trust_images`` test images: class specificity (own vs nearest-impostor
    centroid maps, at the recipe's layer and method), cascading parameter randomisation (on a
    deep copy) and deletion/insertion of the recipe's score (blur imputation, with the random
    order as baseline). Returns ``{"images": n, "models": {model: {recipe: {...}}}}``, or ``{}``
    when switched off.
    """
    from embedcam import trust

    test = data.splits["test"]
    n = min(cfg.trust_images, len(test))
    if n == 0:
        return {}
    images, labels = test.images[:n], test.labels[:n]
    out: dict[str, Any] = {}
    for t in trained:
        model = t.result.model.eval()
        cents = ec.ClassCentroids.fit(
            model,
            gallery_split(data, t.name).loader(GALLERY_BATCH),
            num_classes=len(data.classes),
            progress=False,
            allow_empty=True,
        )
        rows: dict[str, Any] = {}
        for recipe in recipes(model, cfg):
            summary = trust.check_recipe(
                model, recipe, images, labels, cents.centroids, steps=cfg.trust_steps,
                seed=cfg.data.seed,
            )  # fmt: skip
            rows[recipe.name] = summary.model_dump(exclude={"recipe", "images", "steps"})
        out[t.name] = rows
    return {"images": n, "steps": cfg.trust_steps, "models": out}
