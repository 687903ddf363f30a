"""The report of `embedcam.audit`: Markdown, self-contained HTML and the example figure.

The report formats an `AuditResult` and draws the maps that the audit
computed for its example figure; it never runs a CAM itself.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from embedcam.atomic import atomic_outputs
from embedcam.report.document import Report
from embedcam.report.document import _literal as lit
from embedcam.report.figures import GridCell, image_grid

if TYPE_CHECKING:  # pragma: no cover
    from embedcam.audit import AuditResult, Comparison
    from embedcam.recipe import Recipe

__all__ = [
    "audit_report",
    "write_audit_report",
    "Examples",
    "pick_examples",
    "example_figure",
    "comparison_report",
]


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def audit_report(result: AuditResult, folder: str | Path | None = None) -> Report:
    """Build the `Report` of an audit.

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
        "that ignores the object gets (the box's area fraction), **gaussian** what a centred "
        "Gaussian that ignores the image gets (Choe et al., CVPR 2020), and **ceiling** what a "
        "perfect box-shaped map reaches at the CAM grid's resolution; pointing and IoU have "
        "their Gaussian baselines beside them. Features correct: the judge "
        f"({_judge_text(result)}), with Wilson 95% intervals."
    )
    rows = []
    for r in result.recipes:
        rows.append(
            [
                lit(r.recipe.name.replace("/", " / ")),
                _num(r.mean_score),
                _pct(r.empty_rate),
                r.region or "-",
                _num(r.energy_in_box),
                _num(r.chance),
                _num(r.gaussian),
                _num(r.ceiling),
                _num(r.pointing_game),
                _num(r.gaussian_pointing),
                _num(r.region_iou),
                _num(r.gaussian_iou),
                _num(r.ceiling_iou),
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
            "gaussian",
            "ceiling",
            "pointing",
            "gaussian pointing",
            "IoU",
            "gaussian IoU",
            "ceiling IoU",
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
            "helps (Xiao et al. 2021)."
            + (
                " With box regions the box rectangle counts as object."
                if any(iv.region == "box" for iv in result.interventions)
                else ""
            )
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
                    lit(iv.split),
                    lit(iv.region),
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
    if result.trust:
        from embedcam.audit import TRUST_COLUMNS, trust_rows

        rep.add_heading("Can the maps be trusted?")
        rep.add_paragraph(
            f"On the first {result.trust[0].images} query images. **Specific**: the map of the "
            "image's own centroid differs from the map of its nearest impostor centroid "
            "(Spearman rho below 0.9). **Unchanged**: the map survives re-initialising every "
            "layer from the head down (|rho| at least 0.5; Adebayo et al., NeurIPS 2018): such "
            "a map does not depend on what the model learned. **Deletion / insertion**: the "
            "area under the explained score as pixels are removed (blurred) or added back in "
            "map order, beside a random order; a faithful map deletes faster (lower) and "
            "inserts faster (higher)."
        )
        rep.add_table(
            list(TRUST_COLUMNS),
            [[lit(c) for c in row] for row in trust_rows(result.trust)],
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
        rep.add_table(["step", "why"], [[lit(s.step), lit(s.reason)] for s in skipped])
    rep.add_heading("Versions")
    rep.add_table(["package", "version"], [[lit(k), lit(v)] for k, v in result.versions.items()])
    return rep


def _judge_text(result: AuditResult) -> str:
    j = result.judge
    crits = [j.criterion] if isinstance(j.criterion, str) else list(j.criterion)
    thr = {
        "paper": j.positive_share,
        "energy": j.energy,
        "region_iou": j.region_iou,
        "wsol": j.wsol_box_iou,
    }
    parts = [f"{c} >= {thr[c]}" if c in thr else c for c in crits]
    return f" {j.combine} ".join(parts)


def write_audit_report(result: AuditResult, out: str | Path) -> None:
    """Write ``report.md``, ``report.html`` and ``results.json`` into ``out``, all or nothing.

    The three files are staged and moved into place together, ``results.json`` last (see
    [`atomic_outputs`][embedcam.atomic.atomic_outputs]): on any error (a full disk) the old
    ones stay, complete; when ``results.json`` is present, the report beside it is complete.
    Inside an ``atomic_outputs`` block over ``out`` (the CLI's), they join that block's outputs.

    Args:
        result: The audit.
        out: The output folder (the figure, if any, must already be there).

    Raises:
        DataError: If the folder cannot be written (a full disk, no permission).
    """
    out = Path(out)
    rep = audit_report(result, out)
    with atomic_outputs(out, exclude=("records",)):
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


@dataclass
class Examples:
    """The images and maps an example figure shows (computed by `embedcam.audit`).

    Attributes:
        positions: Query positions shown, misclassified ones first.
        images: ``(N, 3, H, W)`` the images as the model saw them.
        boxes: One ``(K, 4)`` box tensor (or ``None``) per image.
        maps: Per recipe name, ``(N, H, W)`` the scored maps (signed recipes: ``|map|``).
    """

    positions: list[int]
    images: Tensor
    boxes: list[Tensor | None]
    maps: dict[str, Tensor]


def pick_examples(result: AuditResult, per_kind: int = 3) -> list[int]:
    """Up to ``per_kind`` misclassified and ``per_kind`` correct positions, spread over classes.

    Args:
        result: The audit.
        per_kind: Images of each kind.

    Returns:
        Query positions, misclassified first.
    """
    pi = result.per_image
    wrong = [i for i, (p, t) in enumerate(zip(pi.pred, pi.labels)) if p != t]
    right = [i for i, (p, t) in enumerate(zip(pi.pred, pi.labels)) if p == t]
    return _spread(wrong, pi.labels, per_kind) + _spread(right, pi.labels, per_kind)


def example_figure(
    examples: Examples, recipes: Sequence[Recipe], result: AuditResult, path: str | Path
) -> Path:
    """Draw the example images with every recipe's map, framed by the verdicts.

    Args:
        examples: What to show.
        recipes: The recipes (one column each).
        result: The audit (predictions, verdicts, class names).
        path: Where to write the PNG.

    Returns:
        The PNG path.
    """
    pi = result.per_image
    imgs = examples.images.float()
    lo = imgs.flatten(1).amin(1)[:, None, None, None]
    hi = imgs.flatten(1).amax(1)[:, None, None, None]
    shown = ((imgs - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)  # normalised inputs -> [0, 1]
    names = result.classes
    cells: list[list[GridCell | None]] = []
    row_titles = []
    for j, pos in enumerate(examples.positions):
        true, pred = pi.labels[pos], pi.pred[pos]
        b = examples.boxes[j]
        b = b if b is not None and len(b) else None
        row: list[GridCell | None] = [
            GridCell(
                shown[j],
                title=_short(f"true {names[true]}"),
                subtitle=_short(f"pred {names[pred]}") if pred != true else "class correct",
                border="green" if pred == true else "red",
                boxes=b,
            )
        ]
        for r in recipes:
            m = examples.maps[r.name][j]
            verdict = pi.verdict.get(r.name, [None] * (pos + 1))[pos]
            empty = bool(m.abs().max() == 0)
            text = "no evidence" if empty else ""
            if verdict is not None:
                text = ("features correct" if verdict else "features wrong") + (
                    ", no evidence" if empty else ""
                )
            row.append(
                GridCell(
                    shown[j],
                    map=m.abs().clamp(0, 1),
                    boxes=b,
                    border=None if verdict is None else ("green" if verdict else "red"),
                    subtitle=text,
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
        cell_size=2.6,
    )


def _short(text: str, n: int = 30) -> str:
    """Shorten to ``n`` characters keeping both ends (class names often differ at the end)."""
    return text if len(text) <= n else text[: n // 2 - 1] + "..." + text[-(n // 2 - 2) :]


def comparison_report(comparison: Comparison) -> Report:
    """A report of `embedcam.compare`: Table 1 and the paired tests.

    Args:
        comparison: The comparison.

    Returns:
        The report.
    """
    rep = Report("embedcam comparison")
    rep.add_paragraph(
        f"{len(comparison.hard_images)} hard images (misclassified by at least one model); "
        f"features judged with recipe {lit(comparison.recipe)}."
    )
    rep.add_table(
        ["model", "macro F1", "errors", "class correct on hard", "class + features on hard"],
        [
            [
                lit(r.name),
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
                    lit(p.a),
                    lit(p.b),
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
