"""Audit an embedding model over a dataset: `audit` (one model), `compare` (several).

``audit`` is the per-model evaluation of the paper (Volnova & Suschinskiy 2026), generalised to a
user's model and data: embeddings and class centroids from a gallery loader, kNN (or nearest
centroid) classification of the queries with macro-F1, every recipe explained and scored on every
query image (`explain_dataset`), the automated judge with Wilson intervals,
background interventions and BG-gap (Xiao et al. 2021) where masks or boxes exist, embedding
health, and a report. ``compare`` puts several audits of the same query images side by side: the
paper's Table 1 on the hard images with paired exact McNemar tests, Holm correction and
Cochran's Q.
"""

from __future__ import annotations

import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from embedcam import _dist
from embedcam._loaders import Batch, is_sequential, iter_batches, shard_positions, subset_loader
from embedcam.atomic import atomic_outputs, atomic_write_text
from embedcam.boxes import boxes_to_masks
from embedcam.centroids import ClassCentroids
from embedcam.classify import evaluate, knn_predict, nearest_centroid_predict
from embedcam.embedding import (
    Embedded,
    EmbeddingHealth,
    embed_batches,
    embed_loader,
    embedding_health,
    gather_rows,
)
from embedcam.errors import ConfigurationError, DataError, EmbedcamError, ShapeError
from embedcam.pipeline import DatasetRecords, Judge, as_recipes, explain_dataset
from embedcam.recipe import Recipe
from embedcam.trust import TrustSummary

__all__ = [
    "AUDIT_SCHEMA",
    "CollapseWarning",
    "Skipped",
    "Rate",
    "Classification",
    "RecipeSummary",
    "InterventionSummary",
    "PerImage",
    "AuditResult",
    "audit",
    "Comparison",
    "compare",
]

#: Version tag of ``results.json`` written by `audit`.
AUDIT_SCHEMA = "embedcam.audit/1"

INTERVENTIONS = ("mixed_same", "mixed_rand", "only_bg", "only_fg")


class CollapseWarning(UserWarning):
    """The audited model's embeddings look collapsed (see `EmbeddingHealth`)."""


def _f(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


class Skipped(BaseModel):
    """A step that was not run, and why (printed in the console and the report).

    Attributes:
        step: What was skipped.
        reason: Why, and what would make it run.
    """

    step: str
    reason: str


class Rate(BaseModel):
    """``k`` of ``n`` with a Wilson 95% interval.

    Attributes:
        k: Successes.
        n: Trials.
        rate: ``k / n`` (``None`` when ``n = 0``).
        low: Lower Wilson bound.
        high: Upper Wilson bound.
    """

    k: int
    n: int
    rate: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, mask: Tensor | np.ndarray) -> Rate:
        """The rate of ``True`` in a bool vector.

        Args:
            mask: ``(n,)`` bool.

        Returns:
            The rate with its interval.
        """
        from embedcam.stats import wilson_interval

        arr = np.asarray(mask, dtype=bool)
        k, n = int(arr.sum()), int(arr.size)
        if n == 0:
            return cls(k=0, n=0, rate=None, low=None, high=None)
        ci = wilson_interval(k, n)
        return cls(k=k, n=n, rate=k / n, low=_f(ci.low), high=_f(ci.high))

    def __str__(self) -> str:
        if self.rate is None:
            return "-"
        low, high = self.low or 0.0, self.high or 0.0
        return f"{self.k}/{self.n} ({100 * self.rate:.1f}%) [{100 * low:.1f}, {100 * high:.1f}]"


class Classification(BaseModel):
    """How well the embeddings classify the query images.

    Attributes:
        classifier: ``"knn"`` (against the gallery) or ``"centroid"`` (nearest class centroid).
        k: Neighbours of the kNN vote.
        images: Query images.
        macro_f1: Macro-F1 over the classes present.
        accuracy: Fraction correct.
        errors: Misclassified images (the single-model "hard" images).
        valid_accuracy: Accuracy on the validation loader, when one was given.
    """

    classifier: Literal["knn", "centroid"]
    k: int
    images: int
    macro_f1: float
    accuracy: float
    errors: int
    valid_accuracy: float | None = None


class RecipeSummary(BaseModel):
    """One recipe over the query images.

    Attributes:
        recipe: The recipe.
        images: Images explained.
        mean_score: Mean explained score (e.g. cosine to the true centroid).
        empty_rate: Share of maps with no positive evidence.
        region: ``"box"`` or ``"mask"`` (what maps were scored against), ``None`` without either.
        energy_in_box: Mean energy in box (NaN-free images).
        chance: Mean box area fraction: the energy a map that ignores the object gets.
        ceiling: Mean energy a box-shaped map reaches on the CAM grid.
        gaussian: Mean energy in box of a centred Gaussian map (it ignores the image; Choe et
            al., CVPR 2020): a recipe below it localises worse than "the middle of the photo".
        pointing_game: Mean strict pointing hit.
        gaussian_pointing: Pointing hit rate of the centred Gaussian (is the centre on the object).
        region_iou: Mean IoU of the thresholded map with the region.
        gaussian_iou: Mean region IoU of the centred Gaussian.
        ceiling_iou: Mean region IoU of the box drawn on the CAM grid.
        positive_share: Mean share of the ``s > 0`` region on the object (the paper's reading).
        judged: Features judged correct, over all query images.
        judged_when_right: ... over the correctly classified images.
        judged_when_wrong: ... over the misclassified images.
        class_and_features: Class and features correct (the paper's Table 1 outcome), over all.
    """

    recipe: Recipe
    images: int
    mean_score: float | None
    empty_rate: float
    region: str | None = None
    energy_in_box: float | None = None
    chance: float | None = None
    ceiling: float | None = None
    gaussian: float | None = None
    pointing_game: float | None = None
    gaussian_pointing: float | None = None
    region_iou: float | None = None
    gaussian_iou: float | None = None
    ceiling_iou: float | None = None
    positive_share: float | None = None
    judged: Rate | None = None
    judged_when_right: Rate | None = None
    judged_when_wrong: Rate | None = None
    class_and_features: Rate | None = None


class InterventionSummary(BaseModel):
    """Background reliance measured by intervention on one split (Xiao et al. 2021).

    Attributes:
        split: ``"queries"`` or ``"valid"``.
        region: ``"mask"`` (exact object masks) or ``"box"`` (box rectangles: the object's
            surroundings inside the box count as object, so reliance is underestimated).
        images: Images intervened on.
        accuracy: Accuracy on the original images.
        accuracy_after: Accuracy per intervention (``mixed_same``, ``mixed_rand``, ``only_bg``,
            ``only_fg``).
        bg_gap: ``acc(mixed_same) - acc(mixed_rand)``: how much the right background helps.
        cos_drop: Mean drop of the cosine to the true centroid per intervention.
        skipped: Interventions that could not be built (e.g. a class with one image has no
            Mixed-Same donor), with the reason.
    """

    split: str
    region: Literal["mask", "box"]
    images: int
    accuracy: float
    accuracy_after: dict[str, float]
    bg_gap: float | None
    cos_drop: dict[str, float]
    skipped: list[Skipped] = Field(default_factory=list)


class PerImage(BaseModel):
    """Per query image outcomes (what `compare` pairs across models).

    Attributes:
        ids: Image ids (paths when the dataset knows them).
        labels: True classes.
        pred: Predicted classes.
        verdict: Per recipe name, the judge's verdict (``None`` without boxes or masks).
        intervened_pred: Per intervention, the predicted class of each query image after it
            (empty when no intervention ran on the queries).
    """

    ids: list[str]
    labels: list[int]
    pred: list[int]
    verdict: dict[str, list[bool | None]] = Field(default_factory=dict)
    intervened_pred: dict[str, list[int]] = Field(default_factory=dict)


class AuditResult(BaseModel):
    """Everything `audit` measured for one model (``results.json``).

    Attributes:
        schema_version: `AUDIT_SCHEMA`.
        name: The model's name in tables.
        classes: Class names.
        classification: kNN / centroid classification of the queries.
        health: Embedding health of the gallery.
        recipes: One summary per recipe.
        judge: The judge's settings.
        interventions: Background reliance per split with masks or boxes.
        skipped: Steps not run, and why.
        per_image: Per-image outcomes.
        records: The records folder (``None`` when kept in memory).
        figure: The example figure's file name in the output folder.
        versions: Versions of the software that produced the numbers.
        timings: Seconds per step.
    """

    model_config = ConfigDict(protected_namespaces=())

    schema_version: str = AUDIT_SCHEMA
    name: str
    classes: list[str]
    classification: Classification
    health: EmbeddingHealth
    recipes: list[RecipeSummary]
    judge: Judge
    interventions: list[InterventionSummary] = Field(default_factory=list)
    trust: list[TrustSummary] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    per_image: PerImage
    records: str | None = None
    figure: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)

    @property
    def macro_f1(self) -> float:
        """Macro-F1 of the classification."""
        return self.classification.macro_f1

    @property
    def accuracy(self) -> float:
        """Accuracy of the classification."""
        return self.classification.accuracy

    @property
    def errors(self) -> int:
        """Misclassified query images."""
        return self.classification.errors

    def __repr_args__(self) -> Any:
        # one short line for repr(), str(), rich and pydantic alike (not every per-image value)
        yield "name", self.name
        yield "images", self.classification.images
        yield "macro_f1", round(self.macro_f1, 3)
        yield "recipes", [r.recipe.name for r in self.recipes]
        yield "skipped", len(self.skipped)

    def __repr__(self) -> str:
        return (
            f"AuditResult(name={self.name!r}, images={self.classification.images}, "
            f"macro_f1={self.macro_f1:.3f}, recipes={[r.recipe.name for r in self.recipes]}, "
            f"skipped={len(self.skipped)})"
        )

    def summary_table(self) -> Any:
        """A rich table of the recipes' scores beside their baselines and judge rates.

        Returns:
            A ``rich.table.Table``.
        """
        from rich.table import Table

        c, h = self.classification, self.health
        health = (
            f"effective rank {h.effective_rank:.1f} of {h.dim}, mean pairwise cosine "
            f"{h.mean_pairwise_cosine:.2f}"
        )
        table = Table(
            title=(
                f"{self.name}: macro-F1 {c.macro_f1:.3f}, accuracy {c.accuracy:.3f}, "
                f"{c.errors} errors of {c.images} ({c.classifier})"
            ),
            caption=(
                f"[bold red]COLLAPSED embeddings ({health}): not comparable with a healthy model[/]"
                if h.collapsed
                else f"embeddings: {health}"
            ),
        )
        for col in (
            "recipe",
            "score",
            "empty",
            "energy in box",
            "chance",
            "gaussian",
            "ceiling",
            "features correct [Wilson 95%]",
            "class + features",
        ):
            table.add_column(col, overflow="fold", no_wrap=col == "recipe")
        for r in self.recipes:
            table.add_row(
                r.recipe.name,
                _num(r.mean_score),
                f"{100 * r.empty_rate:.1f}%",
                _num(r.energy_in_box),
                _num(r.chance),
                _num(r.gaussian),
                _num(r.ceiling),
                str(r.judged) if r.judged else "-",
                str(r.class_and_features) if r.class_and_features else "-",
            )
        return table

    def trust_table(self) -> Any:
        """A rich table of the trust checks (`audit` with ``trust_images``).

        Returns:
            A ``rich.table.Table``.
        """
        from rich.table import Table

        table = Table(
            title=f"{self.name}: can the maps be trusted?",
            caption="impostor rho: rank correlation of the own-class and nearest-impostor maps; "
            "specific: they differ (rho < 0.9); random-weights |rho|: of the map and the map "
            "after re-initialising every layer; unchanged: it survives that (|rho| >= 0.5, bad); "
            "deletion / insertion: AUCs of the score, random pixel order in brackets; beats "
            "random: both beat it",
        )
        for col in TRUST_COLUMNS:
            table.add_column(col, overflow="fold", no_wrap=col == "recipe")
        for row in trust_rows(self.trust):
            table.add_row(*row)
        return table

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the result as JSON, atomically.

        Args:
            path: Destination file.

        Returns:
            The path.
        """
        atomic_write_text(path, self.model_dump_json(indent=2))
        return Path(path)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> AuditResult:
        """Read a result written by `save_json`.

        Args:
            path: A ``results.json``.

        Returns:
            The result.

        Raises:
            DataError: The file is missing, empty, not UTF-8, not (complete) JSON, nested too
                deeply or not an audit result (the message names the file and the problem).
        """
        from pydantic import ValidationError

        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except (OSError, ValidationError, ValueError, RecursionError) as err:
            # pydantic reports non-UTF-8, truncated, too deeply nested and wrong-schema JSON as
            # a ValidationError; RecursionError is kept for a parser without a depth limit
            raise DataError(f"cannot read audit results from {path}: {err}") from err


#: Columns of the trust tables (console and report).
TRUST_COLUMNS = (
    "recipe",
    "images",
    "impostor rho",
    "specific",
    "random-weights |rho|",
    "unchanged",
    "deletion (random)",
    "insertion (random)",
    "beats random",
)


def trust_rows(summaries: Sequence[TrustSummary]) -> list[list[str]]:
    """The cells of `TRUST_COLUMNS` for each summary (plain text)."""
    return [
        [
            t.recipe,
            str(t.images),
            _num(t.specificity_rho),
            f"{t.specific:.0%}",
            _num(t.randomization_rho),
            f"{t.unchanged:.0%}",
            f"{_num(t.deletion_auc)} ({_num(t.random_deletion_auc)})",
            f"{_num(t.insertion_auc)} ({_num(t.random_insertion_auc)})",
            f"{t.beats_random:.0%}",
        ]
        for t in summaries
    ]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _versions() -> dict[str, str]:
    import embedcam

    return {
        "embedcam": embedcam.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }


def _classifier(
    classifier: str, k: int, gallery: Embedded, centroids: Tensor
) -> Callable[[Tensor], Tensor]:
    if classifier == "knn":
        return lambda e: knn_predict(e, gallery.embeddings, gallery.labels, k=k)
    return lambda e: nearest_centroid_predict(e, centroids)


def _cos_true(emb: Tensor, labels: Tensor, centroids: Tensor) -> Tensor:
    return torch.nn.functional.cosine_similarity(emb, centroids[labels], dim=1)


def _region_masks(batch: Batch) -> Tensor | None:
    if batch.masks is not None:
        return batch.masks
    if batch.boxes is not None:
        return boxes_to_masks(batch.boxes, size=tuple(batch.images.shape[-2:]))
    return None


def _interventions(
    model: nn.Module,
    loader: Iterable[Any],
    split: str,
    emb: Embedded,
    classify: Callable[[Tensor], Tensor],
    centroids: Tensor,
    seed: int,
    embedding_fn: Callable[[Any], Tensor] | None,
) -> tuple[InterventionSummary, dict[str, list[int]]]:
    """Mixed-Same, Mixed-Rand, Only-BG, Only-FG over a whole split, streamed batch by batch.

    Donors are drawn over the whole split from the labels alone (so they do not depend on the
    batch size or the number of processes) and read from the dataset by index.
    """
    from embedcam import interventions as iv

    labels = emb.labels
    gen = torch.Generator().manual_seed(seed)
    skipped: list[Skipped] = []
    donors: dict[str, Tensor] = {}
    for kind, fn in (("mixed_same", iv.same_class_donors), ("mixed_rand", iv.other_class_donors)):
        try:
            donors[kind] = fn(labels, gen)
        except EmbedcamError as err:
            skipped.append(Skipped(step=kind, reason=str(err)))
    dataset, collate = loader.dataset, loader.collate_fn  # type: ignore[attr-defined]
    rank, world = _dist.rank_world()
    positions = shard_positions(len(dataset), loader.batch_size or 1, rank, world)  # type: ignore[attr-defined]
    source = subset_loader(loader, positions)  # type: ignore[arg-type]

    def donor_batch(idx: list[int], step: int) -> Batch:
        from embedcam._loaders import parse_batch

        return parse_batch(collate([dataset[j] for j in idx]), step)

    preds: dict[str, list[Tensor]] = {k: [] for k in INTERVENTIONS}
    coss: dict[str, list[Tensor]] = {k: [] for k in INTERVENTIONS}
    seen = 0
    kinds_region: set[str] = set()
    for step, batch in iter_batches(source):
        pos = positions[seen : seen + len(batch)]
        seen += len(batch)
        masks = _region_masks(batch)
        assert masks is not None
        kinds_region.add("mask" if batch.masks is not None else "box")
        images = batch.images
        built = {"only_bg": iv.only_bg(images, masks), "only_fg": iv.only_fg(images, masks)}
        for kind, d in donors.items():
            db = donor_batch([int(d[p]) for p in pos], step)
            dmasks = _region_masks(db)
            assert dmasks is not None
            backgrounds = iv.remove_objects(db.images, dmasks)
            built[kind] = iv.paste_objects(images, masks, backgrounds)
        for kind, imgs in built.items():
            e, lab = embed_batches(model, [(step, Batch(imgs, batch.labels))], embedding_fn)
            preds[kind].append(classify(e))
            coss[kind].append(_cos_true(e, lab, centroids))
    acc0 = float((classify(emb.embeddings) == labels).float().mean())
    cos0 = _cos_true(emb.embeddings, labels, centroids)
    after: dict[str, float] = {}
    drops: dict[str, float] = {}
    per_image: dict[str, list[int]] = {}
    for kind in INTERVENTIONS:
        if kind not in ("only_bg", "only_fg") and kind not in donors:
            continue
        p_local = torch.cat(preds[kind]) if preds[kind] else torch.zeros(0, dtype=torch.int64)
        c_local = torch.cat(coss[kind]) if coss[kind] else torch.zeros(0)
        p, c = gather_rows(p_local, c_local)
        per_image[kind] = p.tolist()
        after[kind] = float((p == labels).float().mean())
        drops[kind] = float((cos0 - c).mean())
    gap = (
        after["mixed_same"] - after["mixed_rand"]
        if "mixed_same" in after and "mixed_rand" in after
        else None
    )
    region_all = _dist.all_gather_objects(sorted(kinds_region))
    region = "mask" if all(r == ["mask"] for r in region_all if r) else "box"
    summary = InterventionSummary(
        split=split,
        region=region,
        images=int(labels.numel()),
        accuracy=acc0,
        accuracy_after=after,
        bg_gap=gap,
        cos_drop=drops,
        skipped=skipped,
    )
    return summary, per_image


def _mean(x: Tensor) -> float | None:
    x = x.to(torch.float64)
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else None


def _summaries(
    records: DatasetRecords, recipes: list[Recipe], correct: Tensor
) -> tuple[list[RecipeSummary], dict[str, list[bool | None]]]:
    df = records.table()
    out, verdicts = [], {}
    import pyarrow.compute as pc

    for recipe in recipes:
        t = df.filter(pc.equal(df["recipe"], recipe.name))

        def col(name: str, t: Any = t) -> Tensor:
            arr = t[name].to_numpy(zero_copy_only=False)
            if arr.dtype == object:
                arr = np.array([np.nan if v is None else float(v) for v in arr])
            return torch.from_numpy(np.asarray(arr, dtype=np.float64))

        empty = torch.from_numpy(t["empty"].to_numpy(zero_copy_only=False).astype(bool))
        region = t["region"][0].as_py() if t.num_rows else None
        summary = RecipeSummary(
            recipe=recipe,
            images=t.num_rows,
            mean_score=_mean(col("score")),
            empty_rate=float(empty.float().mean()) if t.num_rows else 0.0,
            region=region,
        )
        raw_verdict = t["verdict"].to_pylist()
        verdicts[recipe.name] = raw_verdict
        if region is not None:
            v = torch.tensor([bool(x) for x in raw_verdict])
            summary = summary.model_copy(
                update={
                    "energy_in_box": _mean(col("energy_in_box")),
                    "chance": _mean(col("area_fraction")),
                    "ceiling": _mean(col("ceiling")),
                    "gaussian": _mean(col("gaussian_energy_in_box")),
                    "pointing_game": _mean(col("pointing_game")),
                    "gaussian_pointing": _mean(col("gaussian_pointing_game")),
                    "region_iou": _mean(col("region_iou")),
                    "gaussian_iou": _mean(col("gaussian_region_iou")),
                    "ceiling_iou": _mean(col("ceiling_region_iou")),
                    "positive_share": _mean(col("positive_share")),
                    "judged": Rate.of(v),
                    "judged_when_right": Rate.of(v[correct]),
                    "judged_when_wrong": Rate.of(v[~correct]),
                    "class_and_features": Rate.of(v & correct),
                }
            )
        out.append(summary)
    return out, verdicts


def audit(
    model: nn.Module,
    gallery: Iterable[Any],
    queries: Iterable[Any],
    recipes: Recipe | Sequence[Recipe],
    *,
    valid: Iterable[Any] | None = None,
    name: str = "model",
    class_names: Sequence[str] | None = None,
    classifier: Literal["knn", "centroid"] = "knn",
    k: int = 5,
    judge: Judge | None = None,
    interventions: bool = True,
    trust_images: int = 0,
    trust_steps: int = 10,
    out: str | os.PathLike[str] | None = None,
    figure: bool = True,
    overwrite: bool = False,
    seed: int = 0,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    console: Any = None,
) -> AuditResult:
    """Audit one embedding model: classify, explain, score, judge, intervene, report.

    Steps (each that cannot run is listed in ``skipped`` with the reason, and printed):

    1. Embed the ``gallery`` (e.g. the training split): class centroids and embedding health
       (effective rank, mean pairwise cosine: a collapsed model is flagged).
    2. Classify the ``queries`` (e.g. the test split) by kNN against the gallery (or by the
       nearest centroid): macro-F1, accuracy, errors; ``valid`` too, when given.
    3. Explain every query image with every recipe (`explain_dataset`, records
       under ``out/records``); with boxes or masks, score the maps, judge them, and summarise
       energy in box beside the chance level (box area) and the grid ceiling.
    4. With boxes or masks and a map-style dataset: the four background interventions of Xiao
       et al. (2021) on the queries and ``valid``, and BG-gap. Exact masks are used when the
       batches carry them; otherwise the box rectangles (labelled as such).
    5. With ``trust_images``: the trust checks of every recipe on the first query images.
    6. With ``out``: ``results.json`` (this result), ``report.md``, a self-contained
       ``report.html`` and ``examples.png`` (a few misclassified and correct images with every
       recipe's map). ``results.json`` is written last, so its presence means a complete report.

    Under ``torchrun`` every step is sharded over the processes (centroids and predictions are
    gathered); rank 0 writes the report and every rank returns the same result.

    Args:
        model: The embedding model (left as it was).
        gallery: Loader of labelled gallery images (centroids, kNN gallery).
        queries: Loader of the images to classify and explain, in a fixed order.
        recipes: The recipes to explain with.
        valid: Optional validation loader (accuracy, interventions).
        name: The model's name in tables.
        class_names: Names of the classes (default ``"0"``, ``"1"``, ...).
        classifier: ``"knn"`` or ``"centroid"``.
        k: Neighbours of the kNN vote.
        judge: Judge settings (default `Judge`).
        interventions: Run the background interventions where possible.
        trust_images: Run the trust checks of every centroid or contrastive recipe
            ([`check_recipe`][embedcam.trust.check_recipe]: class specificity, cascading weight
            randomisation, deletion/insertion) on the first this many query images; 0 (the
            default) skips them. They explain each image about a dozen times per layer of the
            model (the randomisation cascade), so a few dozen images are enough.
        trust_steps: Deletion/insertion steps of the trust checks.
        out: Output folder; ``None`` keeps everything in memory and writes nothing.
        figure: Draw ``examples.png`` (with ``out``).
        overwrite: Replace records in ``out/records`` made with other settings (a model with
            other weights, other recipes); by default such a folder is refused, and one made with
            the same settings is resumed.
        seed: Seed of the intervention donors.
        embedding_fn: Picks the embedding from a tuple/dict model output.
        reshape_transform: Maps token outputs to ``(B, K, h, w)`` (ViT).
        progress: Show progress bars and print the summary.
        console: A ``rich.console.Console`` to print to (default: a new one).

    Returns:
        The `AuditResult`.

    Raises:
        ConfigurationError: Bad recipes (none, duplicate names), classifier, judge or ``k``,
            ``class_names`` that is not a list or has fewer names than the gallery has classes,
            or shuffled loaders.
        DataError: Empty or malformed loaders, classes of the queries missing from the gallery.
        ShapeError: Queries whose embedding size differs from the gallery's.
    """
    from rich.console import Console

    recipe_list = as_recipes(recipes)
    judge = judge if judge is not None else Judge()
    if not isinstance(judge, Judge):
        raise ConfigurationError(f"judge must be an embedcam.Judge, got {type(judge).__name__}")
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
            raise ConfigurationError(
                f"class_names must be a list of names, got {type(class_names).__name__}"
            )
        class_names = [str(c) for c in class_names]
    if classifier not in ("knn", "centroid"):
        raise ConfigurationError(f"classifier must be 'knn' or 'centroid', got {classifier!r}")
    if not isinstance(k, int) or k < 1:
        raise ConfigurationError(f"k must be a positive int, got {k!r}")
    for key, value, low in (("trust_images", trust_images, 0), ("trust_steps", trust_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigurationError(f"{key} must be an int >= {low}, got {value!r}")
    rank, _ = _dist.rank_world()
    if console is None:
        console = Console(stderr=True)
        if not console.is_terminal:  # logged: do not wrap tables at 80 columns
            console = Console(stderr=True, width=160)
    say = progress and rank == 0
    out_path = Path(out) if out is not None else None
    timings: dict[str, float] = {}
    skipped: list[Skipped] = []
    t0 = time.perf_counter()

    gal = embed_loader(
        model, gallery, embedding_fn=embedding_fn, progress=progress, what="embed gallery"
    )
    seen_classes = int(gal.labels.max()) + 1
    if class_names and len(class_names) < seen_classes:
        raise ConfigurationError(
            f"class_names has {len(class_names)} names but the gallery has labels up to "
            f"{seen_classes - 1} ({seen_classes} classes); pass one name per class"
        )
    num_classes = max(seen_classes, len(class_names) if class_names else 0)
    cents = ClassCentroids.from_embeddings(
        gal.embeddings, gal.labels, num_classes=num_classes, allow_empty=True
    )
    health = embedding_health(gal.embeddings)
    timings["embed_gallery_s"] = time.perf_counter() - t0
    if health.collapsed:
        warnings.warn(
            f"{name}: the embeddings look collapsed (effective rank {health.effective_rank:.1f}"
            f" of {health.dim}, mean pairwise cosine {health.mean_pairwise_cosine:.2f}); maps and "
            "scores of this model are not comparable with a healthy model's",
            CollapseWarning,
            stacklevel=2,
        )
    if say and health.collapsed:
        console.print(
            f"[bold red]{name}: the embeddings look collapsed[/] (effective rank "
            f"{health.effective_rank:.1f}, mean pairwise cosine {health.mean_pairwise_cosine:.2f}"
            "); its maps and scores are not comparable with a healthy model's"
        )
    classify = _classifier(classifier, k if classifier == "knn" else 0, gal, cents.centroids)
    if classifier == "knn" and k > len(gal):
        raise ConfigurationError(f"k={k} exceeds the {len(gal)} gallery images; lower k")

    t1 = time.perf_counter()
    qry = embed_loader(
        model, queries, embedding_fn=embedding_fn, progress=progress, what="embed queries"
    )
    if qry.embeddings.shape[1] != gal.embeddings.shape[1]:
        raise ShapeError(
            f"query embeddings have dimension {qry.embeddings.shape[1]}, the gallery's "
            f"{gal.embeddings.shape[1]}"
        )
    missing = sorted(set(qry.labels.tolist()) - set(gal.labels.tolist()))
    if missing:
        names = [
            class_names[i] if class_names and i < len(class_names) else str(i) for i in missing
        ]
        raise DataError(
            f"query classes {names[:10]} have no gallery images, so they have no centroid and "
            "kNN cannot predict them; add gallery images of these classes"
        )
    pred = classify(qry.embeddings)
    correct = pred == qry.labels
    ev = evaluate(pred, qry.labels, num_classes)
    valid_acc = None
    val: Embedded | None = None
    if valid is not None:
        val = embed_loader(
            model, valid, embedding_fn=embedding_fn, progress=progress, what="embed valid"
        )
        valid_acc = float((classify(val.embeddings) == val.labels).float().mean())
    else:
        skipped.append(
            Skipped(
                step="validation accuracy",
                reason="no validation data was given (pass valid= in Python, or an export "
                "with a valid/ split)",
            )
        )
    timings["classify_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    records = explain_dataset(
        model,
        queries,
        cents,
        recipe_list,
        out=out_path / "records" if out_path is not None else None,
        judge=judge,
        overwrite=overwrite,
        embedding_fn=embedding_fn,
        reshape_transform=reshape_transform,
        progress=progress,
    )
    summaries, verdicts = _summaries(records, recipe_list, correct)
    timings["explain_s"] = time.perf_counter() - t2
    if not qry.has_regions:
        skipped.append(
            Skipped(
                step="box scores, judge and interventions",
                reason="the query batches carry no boxes or masks (a classification export); "
                "give batches a 'boxes' or 'mask' entry, e.g. from a COCO, YOLO or VOC export",
            )
        )

    t3 = time.perf_counter()
    ivs: list[InterventionSummary] = []
    intervened: dict[str, list[int]] = {}
    if interventions and qry.has_regions:
        for split, loader, emb in (("queries", queries, qry), ("valid", valid, val)):
            if loader is None or emb is None:
                continue
            if not emb.has_regions:
                skipped.append(
                    Skipped(step=f"interventions on {split}", reason="no boxes or masks")
                )
            elif not is_sequential(loader):
                skipped.append(
                    Skipped(
                        step=f"interventions on {split}",
                        reason="donor backgrounds are read from the dataset by index: pass a "
                        "DataLoader over a map-style dataset (shuffle=False)",
                    )
                )
            else:
                summary, per = _interventions(
                    model, loader, split, emb, classify, cents.centroids, seed, embedding_fn
                )
                ivs.append(summary)
                if split == "queries":
                    intervened = per
    elif not interventions:
        skipped.append(Skipped(step="interventions", reason="interventions=False"))
    timings["interventions_s"] = time.perf_counter() - t3

    t4 = time.perf_counter()
    trusted: list[TrustSummary] = []
    if trust_images:
        trusted = _trust(
            model, queries, recipe_list, cents.centroids, trust_images, trust_steps, seed,
            embedding_fn, reshape_transform, skipped, progress=say, console=console,
        )  # fmt: skip
        timings["trust_s"] = time.perf_counter() - t4
    timings["total_s"] = time.perf_counter() - t0

    classes = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    result = AuditResult(
        name=name,
        classes=classes,
        classification=Classification(
            classifier=classifier,
            k=k,
            images=len(qry),
            macro_f1=float(ev.macro_f1),
            accuracy=float(ev.accuracy),
            errors=int(ev.errors),
            valid_accuracy=valid_acc,
        ),
        health=health,
        recipes=summaries,
        judge=judge,
        interventions=ivs,
        trust=trusted,
        skipped=skipped,
        per_image=PerImage(
            ids=records.table(["id"])["id"].to_pylist()[:: len(recipe_list)],
            labels=qry.labels.tolist(),
            pred=pred.tolist(),
            verdict=verdicts,
            intervened_pred=intervened,
        ),
        records=str(records.path) if records.path is not None else None,
        versions=_versions(),
        timings=timings,
    )
    if out_path is not None:
        from embedcam.report.audit import example_figure, write_audit_report

        examples = (
            _examples(model, queries, cents, recipe_list, result, embedding_fn, reshape_transform)
            if figure
            else None
        )
        if rank == 0:
            if examples is None and figure:
                result.skipped.append(
                    Skipped(
                        step="example figure",
                        reason="images are read from the dataset by index: pass a DataLoader "
                        "over a map-style dataset",
                    )
                )
            elif examples is not None:
                fig = example_figure(examples, recipe_list, result, out_path / "examples.png")
                result.figure = fig.name
            write_audit_report(result, out_path)
        _dist.barrier()
    if say:
        console.print(result.summary_table())
        if result.trust:
            console.print(result.trust_table())
        for s in result.skipped:
            console.print(f"[yellow]skipped[/] {s.step}: {s.reason}", markup=True)
    return result


def _trust(
    model: nn.Module,
    queries: Iterable[Any],
    recipes: list[Recipe],
    centroids: Tensor,
    n: int,
    steps: int,
    seed: int,
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
    skipped: list[Skipped],
    *,
    progress: bool,
    console: Any,
) -> list[TrustSummary]:
    """The trust checks of every recipe on the first ``n`` query images (every rank alike)."""
    from embedcam.trust import check_recipe

    images: list[Tensor] = []
    labels: list[Tensor] = []
    have = 0
    for _, batch in iter_batches(queries):
        images.append(batch.images)
        labels.append(batch.labels)
        have += len(batch)
        if have >= n:
            break
    x, y = torch.cat(images)[:n], torch.cat(labels)[:n]
    if int(centroids.shape[0]) < 2:
        skipped.append(Skipped(step="trust checks", reason="they need at least two classes"))
        return []
    out: list[TrustSummary] = []
    for recipe in recipes:
        if recipe.target == "reference":
            skipped.append(
                Skipped(
                    step=f"trust checks of {recipe.name}",
                    reason="a reference recipe has no class to be specific to",
                )
            )
            continue
        if progress:
            console.print(f"trust checks of {recipe.name} on {len(y)} images", highlight=False)
        out.append(
            check_recipe(
                model,
                recipe,
                x,
                y,
                centroids,
                steps=steps,
                seed=seed,
                embedding_fn=embedding_fn,
                reshape_transform=reshape_transform,
            )  # fmt: skip
        )
    return out


def _examples(
    model: nn.Module,
    loader: Iterable[Any],
    centroids: ClassCentroids,
    recipes: list[Recipe],
    result: AuditResult,
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> Any:
    """Maps of a few misclassified and correct queries for the report (same engine, same maps)."""
    from embedcam.report.audit import Examples, pick_examples

    if not is_sequential(loader):
        return None
    chosen = pick_examples(result)
    if not chosen:
        return None
    sub = subset_loader(loader, chosen)  # type: ignore[arg-type]
    with _dist.local():
        recs = explain_dataset(
            model,
            sub,
            centroids,
            recipes,
            maps="full",
            embedding_fn=embedding_fn,
            reshape_transform=reshape_transform,
            progress=False,
        )
    images: list[Tensor] = []
    boxes: list[Any] = []
    for _, batch in iter_batches(sub):
        images.append(batch.images)
        boxes.extend(batch.boxes if batch.boxes is not None else [None] * len(batch))
    return Examples(
        positions=chosen,
        images=torch.cat(images),
        boxes=boxes,
        maps={r.name: recs.maps(r) for r in recipes},
    )


class ComparisonRow(BaseModel):
    """One model in a `Comparison` (a row of the paper's Table 1).

    Attributes:
        name: The model.
        macro_f1: Macro-F1.
        errors: Misclassified query images.
        class_correct_hard: Hard images it classifies correctly.
        hard_correct: Hard images with class *and* features correct, with a Wilson interval.
    """

    name: str
    macro_f1: float
    errors: int
    class_correct_hard: int
    hard_correct: Rate


class PairedTest(BaseModel):
    """Exact McNemar test of two models on the same hard images.

    Attributes:
        a: First model.
        b: Second model.
        only_a: Images only ``a`` gets right.
        only_b: Images only ``b`` gets right.
        p_value: Exact two-sided McNemar p-value.
        p_holm: Holm-corrected p-value over all pairs.
        diff: Rate of ``a`` minus rate of ``b``.
        low: Lower bound of Newcombe's 95% interval for ``diff``.
        high: Upper bound.
    """

    a: str
    b: str
    only_a: int
    only_b: int
    p_value: float | None
    p_holm: float | None
    diff: float | None
    low: float | None
    high: float | None


class Comparison(BaseModel):
    """Several models on the same query images: Table 1 and paired tests.

    Attributes:
        recipe: The recipe whose verdicts define "features correct".
        hard_images: Positions misclassified by at least one model (the paper's hard set).
        rows: One row per model.
        cochran_q: Cochran's Q statistic over all models (3 or more), else ``None``.
        cochran_q_df: Its degrees of freedom.
        cochran_q_p: Its p-value.
        pairwise: Paired tests of every pair.
    """

    recipe: str
    hard_images: list[int]
    rows: list[ComparisonRow]
    cochran_q: float | None = None
    cochran_q_df: int | None = None
    cochran_q_p: float | None = None
    pairwise: list[PairedTest]

    def __repr_args__(self) -> Any:
        # one short line: counts, not the hard images' positions or every paired test
        yield "recipe", self.recipe
        yield "models", [r.name for r in self.rows]
        yield "hard_images", len(self.hard_images)
        yield "cochran_q_p", self.cochran_q_p
        yield "pairwise", len(self.pairwise)

    def table(self) -> Any:
        """The comparison as a rich table (Table 1 layout).

        Returns:
            A ``rich.table.Table``.
        """
        from rich.table import Table

        t = Table(title=f"{len(self.hard_images)} hard images; features by recipe {self.recipe}")
        for col in ("model", "macro F1", "errors", "class + features on hard [Wilson 95%]"):
            t.add_column(col)
        for r in self.rows:
            t.add_row(r.name, f"{r.macro_f1:.3f}", str(r.errors), str(r.hard_correct))
        return t


def compare(
    results: Sequence[AuditResult] | Mapping[str, AuditResult],
    *,
    recipe: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Compare audits of several models on the same query images (the paper's Table 1).

    Hard images are the queries misclassified by at least one model. On them each model's
    outcome is "class and features correct" (prediction right and the judge's verdict true for
    ``recipe``); models are compared by exact McNemar tests on the same images with Holm
    correction and Newcombe intervals, and by Cochran's Q when there are three or more.

    Args:
        results: Audits (their ``name`` labels the rows) or a mapping name -> audit.
        recipe: The recipe name whose verdicts count (default: the first recipe of the first).
        out: Folder to write ``comparison.md``, a self-contained ``comparison.html`` and then
            ``comparison.json`` to (rank 0 only under torch.distributed).

    Returns:
        The `Comparison`.

    Raises:
        ConfigurationError: Fewer than two audits, something other than an `AuditResult`,
            audits of different images, no recipes, or a recipe without verdicts (no boxes or
            masks).
        DataError: An audit whose per-image lists have different lengths.
    """
    from embedcam import stats

    items = (
        list(results.items())
        if isinstance(results, Mapping)
        else [(getattr(r, "name", f"#{i}"), r) for i, r in enumerate(results)]
    )
    if len(items) < 2:
        raise ConfigurationError("compare needs at least two audits")
    for n, r in items:
        if not isinstance(r, AuditResult):
            raise ConfigurationError(
                f"compare takes AuditResult objects (from audit or AuditResult.load_json), got "
                f"{type(r).__name__} for {n!r}"
            )
        per = r.per_image
        lengths = {"ids": len(per.ids), "labels": len(per.labels), "pred": len(per.pred)}
        lengths.update({f"verdict[{k!r}]": len(v) for k, v in per.verdict.items()})
        if len(set(lengths.values())) > 1:
            raise DataError(
                f"audit {n!r} is inconsistent: its per-image lists have different lengths "
                f"{lengths}; was results.json edited or written by another version?"
            )
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"audit names must be unique, got {names}; pass a mapping")
    first = items[0][1]
    for n, r in items[1:]:
        if r.per_image.ids != first.per_image.ids or r.per_image.labels != first.per_image.labels:
            raise ConfigurationError(
                f"audit {n!r} is not of the same query images as {names[0]!r} (ids or labels "
                "differ); paired tests need the same images in the same order"
            )
    if recipe is None and not first.recipes:
        raise ConfigurationError(
            f"audit {names[0]!r} has no recipes, so there are no verdicts to compare; audit with "
            "at least one recipe, or pass recipe= with a recipe name that every audit has"
        )
    key = recipe if recipe is not None else first.recipes[0].recipe.name
    labels = np.array(first.per_image.labels)
    wrong = np.zeros(len(labels), dtype=bool)
    for _, r in items:
        wrong |= np.array(r.per_image.pred) != labels
    hard = np.nonzero(wrong)[0]
    outcomes = {}
    rows = []
    for n, r in items:
        if key not in r.per_image.verdict or any(v is None for v in r.per_image.verdict[key]):
            raise ConfigurationError(
                f"audit {n!r} has no verdicts for recipe {key!r} (no boxes or masks, or another "
                "recipe); pass recipe= with one of "
                f"{[s.recipe.name for s in r.recipes if s.judged is not None]}"
            )
        ok = (np.array(r.per_image.pred) == labels)[hard]
        both = ok & np.array(r.per_image.verdict[key], dtype=bool)[hard]
        outcomes[n] = both
        rows.append(
            ComparisonRow(
                name=n,
                macro_f1=r.macro_f1,
                errors=r.errors,
                class_correct_hard=int(ok.sum()),
                hard_correct=Rate.of(both),
            )
        )
    q_p = q_stat = q_df = None
    pairs: list[PairedTest] = []
    if hard.size:
        mat = np.stack([outcomes[n] for n in names], axis=1)
        if len(names) >= 3:
            q = stats.cochran_q(mat)
            q_p, q_stat, q_df = _f(q.p_value), _f(q.statistic), int(q.df)
        for pr in stats.pairwise_mcnemar(mat):
            a, b = names[pr.i], names[pr.j]
            ci = stats.newcombe_paired_interval(outcomes[a], outcomes[b])
            pairs.append(
                PairedTest(
                    a=a,
                    b=b,
                    only_a=pr.b,
                    only_b=pr.c,
                    p_value=_f(pr.p_value),
                    p_holm=_f(pr.p_holm),
                    diff=_f(ci.estimate),
                    low=_f(ci.low),
                    high=_f(ci.high),
                )
            )
    comparison = Comparison(
        recipe=key,
        hard_images=hard.tolist(),
        rows=rows,
        cochran_q=q_stat,
        cochran_q_df=q_df,
        cochran_q_p=q_p,
        pairwise=pairs,
    )
    if out is not None and _dist.rank_world()[0] == 0:
        from embedcam.report.audit import comparison_report

        folder = Path(out)
        rep = comparison_report(comparison)
        with atomic_outputs(folder, last=("comparison.json",)):  # all three or none
            rep.write_markdown(folder / "comparison.md")
            rep.write_html(folder / "comparison.html")
            atomic_write_text(folder / "comparison.json", comparison.model_dump_json(indent=2))
    return comparison
