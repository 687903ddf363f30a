"""The report of :func:`embedcam.audit`: Markdown, self-contained HTML and the example figure.

The report formats an :class:`~embedcam.audit.AuditResult`; it computes nothing but the maps of
the handful of images shown in the example figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from embedcam.report.document import Report
from embedcam.report.figures import GridCell, image_grid

if TYPE_CHECKING:  # pragma: no cover
    from embedcam.audit import AuditResult, Comparison
    from embedcam.centroids import ClassCentroids
    from embedcam.recipe import Recipe

__all__ = ["audit_report", "write_audit_report", "example_figure", "comparison_report"]


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def audit_report(result: AuditResult, folder: str | Path | None = None) -> Report:
    """Build the :class:`~embedcam.report.Report` of an audit.

    Args:
        result: The audit.
        folder: The output folder holding the example figure (left out when ``None``).

    Returns:
        The report (write it with ``write_markdown`` / ``write_html``).
    """
    c, h = result.classification, result.health
    rep = Report(f"embedcam audit: {result.name}")
    rep.add_paragraph(
        f"{c.images} query images, {len(result.classes)} classes, classified by "
        + (f"kNN (k = {c.k}) against the gallery" if c.classifier == "knn" else "nearest centroid")
        + "."
    )
    rep.add_heading("Classification and embedding health")
    rep.add_table(
        ["macro F1", "accuracy", "errors", "valid accuracy", "effective rank", "mean cosine"],
        [
            [
                _num(c.macro_f1),
                _num(c.accuracy),
                str(c.errors),
                _num(c.valid_accuracy),
                f"{h.effective_rank:.1f} of {h.dim}",
                _num(h.mean_pairwise_cosine),
            ]
        ],
    )
    if h.collapsed:
        rep.add_paragraph(
            "**Warning: the embeddings look collapsed** (effective rank below 4 or mean pairwise "
            "cosine above 0.5): maps and scores of this model are not comparable with a healthy "
            "model's."
        )
    rep.add_heading("Explanations")
    rep.add_paragraph(
        "Energy in box is the share of the map's mass on the object; **chance** is what a map "
        "that ignores the object gets (the box's area fraction) and **ceiling** what a perfect "
        "box-shaped map reaches at the CAM grid's resolution. Features correct: the judge "
        f"({_judge_text(result)}), with Wilson 95% intervals."
    )
    rows = []
    for r in result.recipes:
        rows.append(
            [
                f"`{r.recipe.name}`",
                _num(r.mean_score),
                _pct(r.empty_rate),
                r.region or "-",
                _num(r.energy_in_box),
                _num(r.chance),
                _num(r.ceiling),
                _num(r.pointing_game),
                str(r.judged) if r.judged else "-",
                str(r.judged_when_wrong) if r.judged_when_wrong else "-",
            ]
        )
    rep.add_table(
        [
            "recipe",
            "score",
            "empty",
            "region",
            "energy in box",
            "chance",
            "ceiling",
            "pointing",
            "features correct",
            "... on errors",
        ],
        rows,
    )
    if result.interventions:
        rep.add_heading("Background reliance (interventions)")
        rep.add_paragraph(
            "Accuracy when the object is pasted on another image of its class (Mixed-Same) or of "
            "another class (Mixed-Rand), when the object is removed (Only-BG) or shown alone "
            "(Only-FG). **BG-gap** = Mixed-Same - Mixed-Rand: how much the right background "
            "helps (Xiao et al. 2021). With box regions the box rectangle counts as object."
        )
        rep.add_table(
            [
                "split",
                "region",
                "images",
                "accuracy",
                "Mixed-Same",
                "Mixed-Rand",
                "Only-BG",
                "Only-FG",
                "BG-gap",
            ],
            [
                [
                    iv.split,
                    iv.region,
                    str(iv.images),
                    _num(iv.accuracy),
                    *[
                        _num(iv.accuracy_after.get(k))
                        for k in ("mixed_same", "mixed_rand", "only_bg", "only_fg")
                    ],
                    _num(iv.bg_gap, "+.3f"),
                ]
                for iv in result.interventions
            ],
        )
    if result.figure and folder is not None:
        rep.add_heading("Examples")
        rep.add_paragraph(
            "Misclassified and correctly classified query images with every recipe's map; the "
            "frame is green when the judge says the features are correct, red when not."
        )
        rep.add_figure(Path(folder) / result.figure)
    skipped = list(result.skipped) + [s for iv in result.interventions for s in iv.skipped]
    if skipped:
        rep.add_heading("Skipped")
        rep.add_table(["step", "why"], [[s.step, s.reason] for s in skipped])
    rep.add_heading("Versions")
    rep.add_table(["package", "version"], [[k, v] for k, v in result.versions.items()])
    return rep


def _judge_text(result: AuditResult) -> str:
    j = result.judge
    crits = [j.criterion] if isinstance(j.criterion, str) else list(j.criterion)
    thr = {"paper": j.share, "energy": j.energy, "region_iou": j.iou, "wsol": j.box_iou}
    parts = [f"{c} >= {thr[c]}" if c in thr else c for c in crits]
    return f" {j.combine} ".join(parts)


def write_audit_report(result: AuditResult, out: str | Path) -> None:
    """Write ``report.md``, ``report.html`` and then ``results.json`` into ``out``.

    ``results.json`` is written last: when it is present, the report beside it is complete.

    Args:
        result: The audit.
        out: The output folder (the figure, if any, must already be there).
    """
    out = Path(out)
    rep = audit_report(result, out)
    (out / "results.json").unlink(missing_ok=True)
    rep.write_markdown(out / "report.md")
    rep.write_html(out / "report.html")
    result.save_json(out / "results.json")


def _spread(positions: list[int], labels: list[int], n: int) -> list[int]:
    """Up to ``n`` positions, one per class first."""
    picked, seen = [], set()
    for p in positions:
        if labels[p] not in seen:
            picked.append(p)
            seen.add(labels[p])
        if len(picked) == n:
            return picked
    for p in positions:
        if p not in picked:
            picked.append(p)
        if len(picked) == n:
            break
    return picked


def example_figure(
    model: nn.Module,
    loader: Iterable[Any],
    centroids: ClassCentroids,
    recipes: Sequence[Recipe],
    result: AuditResult,
    path: str | Path,
    *,
    per_kind: int = 3,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
) -> Path | None:
    """Draw misclassified and correct query images with every recipe's map.

    Args:
        model: The model.
        loader: The query loader (a DataLoader over a map-style dataset).
        centroids: The class centroids.
        recipes: The recipes (one column each).
        result: The audit (predictions and verdicts).
        path: Where to write the PNG.
        per_kind: Images of each kind (wrong, right).
        embedding_fn: Picks the embedding from the model output.
        reshape_transform: Maps token outputs to ``(B, K, h, w)``.

    Returns:
        The PNG path, or ``None`` when the loader has no random access.
    """
    from embedcam._loaders import is_sequential, iter_batches, subset_loader
    from embedcam.pipeline import explain_dataset

    if not is_sequential(loader):
        return None
    pi = result.per_image
    wrong = [i for i, (p, t) in enumerate(zip(pi.pred, pi.labels)) if p != t]
    right = [i for i, (p, t) in enumerate(zip(pi.pred, pi.labels)) if p == t]
    chosen = _spread(wrong, pi.labels, per_kind) + _spread(right, pi.labels, per_kind)
    if not chosen:
        return None
    sub = subset_loader(loader, chosen)  # type: ignore[arg-type]
    recs = explain_dataset(
        model,
        sub,
        centroids,
        list(recipes),
        maps="full",
        embedding_fn=embedding_fn,
        reshape_transform=reshape_transform,
        progress=False,
    )
    images, boxes = [], []
    for _, batch in iter_batches(sub):
        images.append(batch.images)
        boxes.extend(batch.boxes if batch.boxes is not None else [None] * len(batch))
    imgs = torch.cat(images)
    lo = imgs.flatten(1).amin(1)[:, None, None, None]
    hi = imgs.flatten(1).amax(1)[:, None, None, None]
    shown = ((imgs - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)  # normalised inputs -> [0, 1]
    maps = {r.name: recs.maps(r) for r in recipes}
    cells: list[list[GridCell | None]] = []
    row_titles = []
    names = result.classes
    for j, pos in enumerate(chosen):
        true, pred = pi.labels[pos], pi.pred[pos]
        b = boxes[j]
        row: list[GridCell | None] = [
            GridCell(
                shown[j],
                title=f"true {names[true]}"[:28],
                subtitle=(f"pred {names[pred]}" if pred != true else "class ok")[:28],
                border="green" if pred == true else "red",
                boxes=b if b is not None and len(b) else None,
            )
        ]
        for r in recipes:
            m = maps[r.name][j]
            m = m.abs() if r.signed else m
            verdict = pi.verdict.get(r.name, [None] * (pos + 1))[pos]
            row.append(
                GridCell(
                    shown[j],
                    map=m.clamp(0, 1),
                    boxes=b if b is not None and len(b) else None,
                    border=None if verdict is None else ("green" if verdict else "red"),
                    subtitle=""
                    if verdict is None
                    else ("features ok" if verdict else "features wrong"),
                )
            )
        cells.append(row)
        row_titles.append("error" if pred != true else "correct")
    return image_grid(
        cells,
        path,
        row_titles=row_titles,
        col_titles=["image"] + [textwrap.fill(r.name.replace("/", " / "), 24) for r in recipes],
        title=f"{result.name}: examples",
        cell_size=2.4,
    )


def comparison_report(comparison: Comparison, results: Sequence[AuditResult]) -> Report:
    """A report of :func:`embedcam.compare`: Table 1 and the paired tests.

    Args:
        comparison: The comparison.
        results: The audits compared (for their classification rows).

    Returns:
        The report.
    """
    rep = Report("embedcam comparison")
    rep.add_paragraph(
        f"{len(comparison.hard_images)} hard images (misclassified by at least one model); "
        f"features judged with recipe `{comparison.recipe}`."
    )
    rep.add_table(
        ["model", "macro F1", "errors", "class correct on hard", "class + features on hard"],
        [
            [
                r.name,
                f"{r.macro_f1:.3f}",
                str(r.errors),
                str(r.class_correct_hard),
                str(r.hard_correct),
            ]
            for r in comparison.rows
        ],
    )
    if comparison.cochran_q_p is not None:
        rep.add_paragraph(f"Cochran's Q over all models: p = {comparison.cochran_q_p:.3g}.")
    if comparison.pairwise:
        rep.add_table(
            [
                "a",
                "b",
                "only a",
                "only b",
                "p (exact McNemar)",
                "p (Holm)",
                "difference [Newcombe 95%]",
            ],
            [
                [
                    p.a,
                    p.b,
                    str(p.only_a),
                    str(p.only_b),
                    _num(p.p_value, ".3g"),
                    _num(p.p_holm, ".3g"),
                    f"{_num(p.diff, '+.3f')} [{_num(p.low, '+.3f')}, {_num(p.high, '+.3f')}]",
                ]
                for p in comparison.pairwise
            ],
        )
    return rep
