"""Presenting the SKU benchmark: rich tables, Table 1 as Markdown, figures, report.html."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import embedcam as ec
from embedcam.report import GridCell, Report, image_grid, markdown_table

from .config import RecipeSpec, SkuConfig
from .data import Data
from .evaluate import FigureMaps
from .models import CONTROL

PAPER_TABLE1 = [
    ("triplet", "0.86", "118", "50 (27%)"),
    ("focal", "0.87", "110", "63 (34%, computed: the paper gives the count)"),
    ("flexible", "0.89", "98", "65 (35%)"),
]


def _lit(text: object) -> str:
    r"""``text`` for the report's inline markup, shown as written: ``\``, ``*``, `` ` `` escaped.

    Class, model, recipe and file names are data: a class named ``**x**`` must not turn bold.
    """
    return re.sub(r"([\\*`])", r"\\\1", str(text))


def _cells(rows: list[list[str]]) -> list[list[str]]:
    """Table cells as literal text, except the report's own markup cells (``**COLLAPSED**``)."""
    return [[c if c in _MARKUP_CELLS else _lit(c) for c in r] for r in rows]


def _escaped(table: tuple[list[str], list[list[str]]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a table builder as literal text (see `_cells`)."""
    headers, rows = table
    return [_lit(h) for h in headers], _cells(rows)


def _md_text(text: object) -> str:
    """Plain text for a Markdown line written directly (``table1.md``'s headings)."""
    out = re.sub(r"([\\*_`|~\[\]#])", r"\\\1", str(text))
    return out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _range(values: list[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def epochs_note(results: dict[str, Any]) -> str:
    """How long the models trained, from the per-model summaries (the config only bounds it).

    E.g. ``"epochs 23-41 (plateau stopping, patience 5; best epochs 18-36)"``. Without per-model
    epoch counts (older results) the configured bounds are given as bounds.
    """
    train = results.get("config", {}).get("train", {})
    models = [m for s in results.get("seeds", []) for m in s.get("models", {}).values()]
    epochs = [int(m["epochs"]) for m in models if m.get("epochs") is not None]
    if not epochs:
        most = train.get("max_epochs", train.get("epochs"))
        return f"at most {most} epochs per model (epochs trained not recorded)"
    text = f"epochs {_range(epochs)}"
    reasons = Counter(str(m["stop_reason"]) for m in models if m.get("stop_reason"))
    how = []
    if reasons:
        patience = train.get("patience")
        if set(reasons) == {"plateau"}:
            how.append("plateau stopping" + (f", patience {patience}" if patience else ""))
        else:
            how.append(
                "stopped by "
                + ", ".join(f"{r} ({n} model{'s' if n > 1 else ''})" for r, n in reasons.items())
                + (f"; patience {patience}" if patience and "plateau" in reasons else "")
            )
    best = [int(m["best_epoch"]) for m in models if m.get("best_epoch") is not None]
    if best:
        how.append(f"best epoch{'s' if len(set(best)) > 1 else ''} {_range(best)} kept")
    return text + (f" ({'; '.join(how)})" if how else "")


def scaled_down(results: dict[str, Any]) -> list[str]:
    """What this run changes relative to the paper's experiment.

    Reads the results dict (``config``, ``data`` and the per-model summaries of ``seeds``), so
    the epochs reported are the epochs the models trained, not the configured maximum.
    """
    cfg = results.get("config", {})
    data = results.get("data", {})
    notes = []
    if data.get("synthetic"):
        notes.append(
            "data: the synthetic shelf generator (subtle sibling glyph, planted background "
            "shortcut) instead of SKU CLASSIFICATION, which cannot be downloaded here"
        )
    size = cfg.get("data", {}).get("image_size")
    if size is not None and size != 128:
        notes.append(f"input size {size} px instead of 128 px")
    width = cfg.get("train", {}).get("width")
    if width is not None and width != 1.0:
        notes.append(f"CNN width x{width} (filters 64..512 scaled) instead of x1")
    sizes = data.get("sizes", {})
    notes.append(
        f"{len(data.get('classes', []))} classes, {sizes.get('train', 0)} training and "
        f"{sizes.get('test', 0)} test images; {epochs_note(results)}"
    )
    notes.append("feature judgement automated (embedcam.judge_features) instead of by eye")
    return notes


def data_line(source: str, classes: list[str], sizes: dict[str, int], show: int = 8) -> str:
    """One line describing the data: source, classes (the first ``show`` named) and splits."""
    named = ", ".join(classes[:show]) + (
        f", ... ({len(classes) - show} more)" if len(classes) > show else ""
    )
    return f"data: {source}; {len(classes)} classes ({named}); " + ", ".join(
        f"{k} {v}" for k, v in sizes.items()
    )


def audit_line(
    name: str, seed: int, images: int, seconds: float, accuracy: float, macro_f1: float
) -> str:
    """The line printed when one model's audit finishes."""
    return (
        f"audited {name} (seed {seed}): {images} test images in {seconds:.1f} s; "
        f"accuracy {accuracy:.3f}, macro-F1 {macro_f1:.3f}"
    )


def print_data(console: Console, source: str, classes: list[str], sizes: dict[str, int]) -> None:
    """Print `data_line` literally (class names and paths are data, not rich markup)."""
    console.print(escape(data_line(source, classes, sizes)))


def print_audit(
    console: Console,
    name: str,
    seed: int,
    images: int,
    seconds: float,
    accuracy: float,
    macro_f1: float,
) -> None:
    """Print `audit_line` literally."""
    console.print(escape(audit_line(name, seed, images, seconds, accuracy, macro_f1)))


def skipped_steps(results: dict[str, Any]) -> list[tuple[str, str, list[int]]]:
    """Analysis steps that could not run: ``(step, reason, seeds)``, each pair once."""
    out: dict[tuple[str, str], list[int]] = {}
    for s in results.get("seeds", []):
        for item in s.get("skipped") or []:
            key = (str(item.get("step", "?")), str(item.get("reason", "")))
            out.setdefault(key, []).append(s.get("seed"))
    return [(step, reason, seeds) for (step, reason), seeds in out.items()]


def _seeds_suffix(seeds: list[int], results: dict[str, Any]) -> str:
    n = len(results.get("seeds", []))
    return (
        ""
        if len(seeds) == n
        else f" (seed{'s' if len(seeds) > 1 else ''} " + ", ".join(map(str, seeds)) + ")"
    )


def _model_cell(seed_res: dict[str, Any], name: str) -> str:
    """A model's name, marked when its embeddings collapsed (never compared silently)."""
    collapsed = seed_res.get("models", {}).get(name, {}).get("collapsed")
    return f"{name} (collapsed)" if collapsed else name


def table1_rows(seed_res: dict[str, Any]) -> list[list[str]]:
    """Table 1 rows of one seed as strings."""
    t = seed_res["table1"]
    rows = []
    for r in t["rows"]:
        hc = (
            f"{r['hard_correct']} ({_pct(r['hard_correct_pct'])}%) "
            f"[{_pct(r['wilson_low'])}, {_pct(r['wilson_high'])}]"
            if r.get("hard_correct") is not None
            else "- (needs boxes)"
        )
        row = [_model_cell(seed_res, r["model"]), f"{r['macro_f1']:.3f}", str(r["errors"]), hc]
        if "hard_correct_calibrated" in r:
            row.append(
                f"{r['hard_correct_calibrated']} ({_pct(r['hard_correct_calibrated_pct'])}%) "
                f"[{_pct(r['calibrated_wilson_low'])}, {_pct(r['calibrated_wilson_high'])}]"
            )
        rows.append(row)
    return rows


TABLE1_HEADERS = [
    "loss",
    "macro F1",
    "total errors",
    "hard images with class and features correct [Wilson 95%]",
]


def table1_headers(seed_res: dict[str, Any]) -> list[str]:
    """Table 1's headers; one more column when a calibrated judge exists."""
    cal = seed_res["table1"].get("calibrated_judge")
    if not cal:
        return TABLE1_HEADERS
    return TABLE1_HEADERS[:-1] + [
        "hard images with class and features correct, paper judge [Wilson 95%]",
        f"... calibrated judge ({judge_label(cal)} on {cal['recipe']}/{cal['method']})",
    ]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose cells and headers read as written (names are data)."""
    return markdown_table([_lit(h) for h in headers], _cells(rows))


def table1_markdown(results: dict[str, Any]) -> str:
    """Table 1 of every seed, the paired tests, and the paper's numbers, as Markdown."""
    parts = []
    for s in results["seeds"]:
        t = s["table1"]
        parts.append(
            "### "
            + _md_text(
                f"Table 1, seed {s['seed']} ({t['n_hard']} hard images of {t['n_test']} test "
                f"images; judge: {t['criterion']} on {t['recipe']} / {t['method']})"
            )
            + "\n"
        )
        parts.append(_table(table1_headers(s), table1_rows(s)))
        if s.get("classification_paired"):
            parts.append("\nPaired comparisons of classification accuracy (every test image):\n")
            parts.append(_table(*pairwise_table(s, "classification_paired")))
        if s.get("paired") and s["paired"]["pairwise"]:
            parts.append("\nPaired comparisons on the hard images (exact McNemar, Holm):\n")
            parts.append(_table(*pairwise_table(s)))
    parts.append("\n### The paper's Table 1 (185 hard images, judged by eye)\n")
    parts.append(markdown_table(TABLE1_HEADERS, [list(r) for r in PAPER_TABLE1]))
    return "\n".join(parts) + "\n"


def pairwise_table(
    seed_res: dict[str, Any], key: str = "paired"
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a pairwise McNemar / Newcombe table.

    ``key="paired"``: "class and features correct" on the hard images (Table 1's last column);
    ``key="classification_paired"``: classification correctness on every test image.
    """
    headers = ["pair", "only A", "only B", "p", "p (Holm)", "diff A-B [Newcombe 95%]"]
    rows = []
    pairs = seed_res.get(key) or []
    for r in pairs["pairwise"] if isinstance(pairs, dict) else pairs:
        rows.append(
            [
                f"{_model_cell(seed_res, r['a'])} vs {_model_cell(seed_res, r['b'])}",
                str(r["only_a"]),
                str(r["only_b"]),
                _num(r["p_value"]),
                _num(r["p_holm"]),
                f"{_num(r['diff'], '+.3f')} [{_num(r['newcombe_low'], '+.3f')}, "
                f"{_num(r['newcombe_high'], '+.3f')}]",
            ]
        )
    return headers, rows


def separation_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the recipe-separation table (one row per recipe, method and model)."""
    headers = [
        "recipe",
        "method",
        "grid",
        "model",
        "E",
        "E - control [95%]",
        "Cohen d",
        "control E",
        "ceiling",
        "chance",
        "separates",
    ]
    rows = []
    for s in seed_res.get("separation", []):
        for i, r in enumerate(s["rows"]):
            first = i == 0
            rows.append(
                [
                    (s["recipe"] + (" (signed)" if s["signed"] else "")) if first else "",
                    s["method"] if first else "",
                    "x".join(map(str, s["grid"])) if first else "",
                    r["model"],
                    _num(r["mean"]),
                    f"{_num(r['diff'], '+.3f')} "
                    f"[{_num(r['low'], '+.3f')}, {_num(r['high'], '+.3f')}]",
                    _num(r["cohen_d"], "+.2f"),
                    _num(s["control_mean"]) if first else "",
                    _num(s["ceiling_mean"]) if first else "",
                    _num(s["chance_mean"]) if first else "",
                    ("yes" if s["separates"] else "no") if first else "",
                ]
            )
    return headers, rows


def trust_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the trust checks (one row per model and recipe)."""
    headers = [
        "model",
        "recipe",
        "own vs impostor rho",
        "class-specific",
        "|rho| after randomisation",
        "unchanged",
        "deletion AUC (random)",
        "insertion AUC (random)",
        "beats random",
    ]
    rows = []
    for model, recs in seed_res.get("trust", {}).get("models", {}).items():
        for i, (recipe, r) in enumerate(recs.items()):
            rows.append(
                [
                    model if i == 0 else "",
                    recipe,
                    _num(r["specificity_rho"]),
                    _pct(100 * r["specific"]),
                    _num(r["randomization_rho"]),
                    _pct(100 * r["unchanged"]),
                    f"{_num(r['deletion_auc'])} ({_num(r['random_deletion_auc'])})",
                    f"{_num(r['insertion_auc'])} ({_num(r['random_insertion_auc'])})",
                    _pct(100 * r["beats_random"]),
                ]
            )
    return headers, rows


TRUST_TEXT = (
    "Can the maps be trusted? On the first {images} test images: **class-specific** is the share "
    "whose map for the own centroid differs from the map for the nearest impostor centroid "
    "(Spearman rho below 0.9); **unchanged** the share whose map still correlates with the "
    "original (|rho| >= 0.5) after every layer was re-initialised from the head down (Adebayo "
    "et al., NeurIPS 2018: a map that survives does not depend on what the model learned); "
    "deletion and insertion AUCs of the explained score with {steps} steps and blur "
    "imputation, against a random pixel order (lower deletion and higher insertion are more "
    "faithful); **beats random** the share better on both."
)


def models_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Classification and background reliance per model."""
    headers = [
        "model",
        "accuracy",
        "valid acc",
        "converged",
        "Mixed-Same",
        "Mixed-Rand",
        "BG-gap",
        "Only-BG",
        "cos drop (Mixed-Rand)",
    ]
    rows = []
    for name, m in seed_res["models"].items():
        iv = m.get("interventions", {})
        converged = m.get("converged")
        rows.append(
            [
                name,
                _num(m.get("accuracy")),
                _num(m.get("valid_accuracy")),
                "-" if converged is None else ("yes" if converged else "NO"),
                _num(iv.get("acc_mixed_same")),
                _num(iv.get("acc_mixed_rand")),
                _num(iv.get("bg_gap"), "+.3f"),
                _num(iv.get("acc_only_bg")),
                _num(iv.get("cos_drop_mixed_rand"), "+.3f"),
            ]
        )
    return headers, rows


def bg_gap_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Interventions and BG-gap on every split that has masks or boxes, per model.

    ``region`` says what was moved: ``mask`` (exact object masks) or ``box`` (box rectangles,
    which carry some background along, so the gap is a lower bound on the reliance).
    """
    headers = [
        "model", "split", "region", "images", "accuracy", "Mixed-Same", "Mixed-Rand", "BG-gap",
        "Only-BG",
    ]  # fmt: skip
    rows = []
    for name, m in seed_res["models"].items():
        for g in m.get("bg_gap") or []:
            rows.append(
                [
                    name,
                    str(g["split"]),
                    str(g["region"]),
                    str(g["images"]),
                    _num(g.get("accuracy")),
                    _num(g.get("acc_mixed_same")),
                    _num(g.get("acc_mixed_rand")),
                    _num(g.get("bg_gap"), "+.3f"),
                    _num(g.get("acc_only_bg")),
                ]
            )
    return headers, rows


def recipe_effects_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each recipe's energy in box against the box-area chance and the grid ceiling, per model.

    ``lift`` is the mean of energy in box minus the box's area fraction (what a uniform map
    scores) with a paired bootstrap 95% interval; ``headroom`` the share of the way from chance
    to the ceiling (the best a box-shaped map reaches on the CAM grid) that the recipe covers.
    """
    headers = [
        "recipe/method", "grid", "model", "images", "energy in box", "chance", "ceiling",
        "lift [95% CI]", "headroom", "above chance",
    ]  # fmt: skip
    rows = []
    for eff in seed_res.get("recipe_effects") or []:
        grid = "x".join(str(g) for g in eff["grid"]) or "-"
        for r in eff["rows"]:
            lift = (
                "-"
                if r["lift"] is None
                else f"{r['lift']:+.3f} [{_num(r['low'], '+.3f')}, {_num(r['high'], '+.3f')}]"
            )
            rows.append(
                [
                    f"{eff['recipe']}/{eff['method']}",
                    grid,
                    r["model"],
                    str(r["images"]),
                    _num(r["energy_in_box"]),
                    _num(r["chance"]),
                    _num(r["ceiling"]),
                    lift,
                    "-" if r["headroom"] is None else f"{100 * r['headroom']:.0f}%",
                    "yes" if r["above_chance"] else "no",
                ]
            )
    return headers, rows


#: The marker of a collapsed model in the Markdown/HTML tables (bold there; red in the console).
COLLAPSED = "**COLLAPSED**"


def _health(m: dict[str, Any]) -> str:
    collapsed = m.get("collapsed")
    return "-" if collapsed is None else (COLLAPSED if collapsed else "ok")


def training_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Training and embedding health per model.

    ``epochs`` is what the model trained (the kept checkpoint and why training stopped beside
    it), ``train s`` the training compute summed over epochs (also across resumed runs) and
    ``run s`` what this run spent (about 0 when the checkpoint came from the cache). Health:
    the effective rank and mean pairwise cosine of the test embeddings, the share of active
    triplets in the kept epoch, and whether the embeddings collapsed.
    """
    headers = [
        "model",
        "epochs",
        "kept epoch",
        "stopped by",
        "train s",
        "run s",
        "effective rank",
        "mean cosine",
        "active triplets",
        "embedding",
    ]
    rows = []
    for name, m in seed_res["models"].items():
        epochs, best = m.get("epochs"), m.get("best_epoch")
        active = m.get("active_fraction")
        rows.append(
            [
                name,
                "-" if epochs is None else str(epochs),
                "-" if best is None else str(best),
                str(m.get("stop_reason") or "-"),
                _num(m.get("train_seconds"), ".1f"),
                _num(m.get("run_seconds"), ".1f"),
                _num(m.get("effective_rank"), ".1f"),
                _num(m.get("mean_pairwise_cosine")),
                "-" if active is None else f"{100 * active:.1f}%",
                _health(m),
            ]
        )
    return headers, rows


def collapsed_models(seed_res: dict[str, Any]) -> list[str]:
    """Names of the models whose embeddings collapsed."""
    return [n for n, m in seed_res["models"].items() if m.get("collapsed")]


def _collapse_text(seed_res: dict[str, Any], name: str) -> str:
    m = seed_res["models"][name]
    return (
        f"{name} (seed {seed_res['seed']}): the embeddings collapsed (effective rank "
        f"{_num(m.get('effective_rank'), '.1f')}, mean pairwise cosine "
        f"{_num(m.get('mean_pairwise_cosine'))}); its maps and scores are not comparable with "
        "a healthy model's"
    )


def all_images_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Energy in box and pointing beside their baselines, judge rate, empty maps: every image."""
    headers = [
        "recipe/method",
        "model",
        "energy in box",
        "chance",
        "gaussian",
        "ceiling",
        "pointing",
        "gaussian pointing",
        "judge rate",
        "empty maps",
    ]
    rows = []
    for key, per_model in seed_res.get("all_images", {}).items():
        for name, v in per_model.items():
            rows.append(
                [
                    key,
                    name,
                    _num(v["energy_in_box"]),
                    _num(v.get("chance")),
                    _num(v.get("gaussian")),
                    _num(v.get("ceiling")),
                    _num(v["pointing_game"]),
                    _num(v.get("gaussian_pointing")),
                    _num(v["judge_rate"]),
                    _num(v["empty_rate"]),
                ]
            )
    return headers, rows


def judge_label(spec: dict[str, Any]) -> str:
    """A calibration candidate in words: ``region_iou >= 0.4``, ``lost (top25%) and ...``."""
    if spec.get("learned") is not None or spec.get("criterion") == "learned":
        return f"learned (p >= {spec['threshold']:g})"
    parts = []
    ev = spec.get("evidence")
    if ev is not None:
        parts.append(f"{ev['test']} ({ev['region']})")
    m = spec.get("map")
    if m is not None:
        parts.append(f"{m['criterion']} >= {m['threshold']:g}")
    return " and ".join(parts) if parts else str(spec.get("criterion"))


def _interval(c: dict[str, Any]) -> str:
    return (
        f"{_num(c.get('test_kappa'))} [{_num(c.get('test_kappa_low'))}, "
        f"{_num(c.get('test_kappa_high'))}]"
    )


def calibration_table(seed_res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The best judge of every family on the calibration split, and its test kappa."""
    headers = [
        "family",
        "best judge",
        "recipe/method",
        "kappa (calibration)",
        "kappa (test) [95%]",
        "sensitivity (test)",
        "specificity (test)",
    ]
    cal = seed_res.get("calibration")
    rows = []
    if cal:
        for c in cal["best_per_criterion"]:
            rows.append(
                [
                    c.get("family", c["criterion"]),
                    judge_label(c),
                    f"{c['recipe']}/{c['method']}",
                    _num(c["kappa"]),
                    _interval(c),
                    _num(c.get("test_sensitivity")),
                    _num(c.get("test_specificity")),
                ]
            )
    return headers, rows


def chosen_text(cal: dict[str, Any]) -> str:
    """The chosen judge, its kappas, and the truth's own reliability, in one sentence."""
    ch = cal["chosen"]
    text = (
        f"Chosen judge: {judge_label(ch)} on {ch['recipe']}/{ch['method']}: kappa "
        f"{_num(ch['kappa'])} on the calibration split, {_interval(ch)} on the test split "
        "(bootstrap 95% interval, resampling (image, model) pairs)."
    )
    if cal.get("truth_retest_kappa_test") is not None:
        text += (
            " The truth itself is noisy: redrawn with other foreign backgrounds for Mixed-Rand, "
            f"it agrees with itself at kappa {_num(cal.get('truth_retest_kappa_valid'))} "
            f"(calibration) and {_num(cal['truth_retest_kappa_test'])} (test), and the majority "
            "of five redraws, a judge that knew everything but the background's draw, reaches "
            f"{_num(cal.get('truth_ceiling_kappa_valid'))} and "
            f"{_num(cal.get('truth_ceiling_kappa_test'))}: the ceiling of any judge."
        )
    return text


#: Cells shown with rich markup instead of literally in the console tables.
_RICH_CELLS = {COLLAPSED: "[bold red]collapsed[/]"}
# cells that hold the report's own inline markup (every other cell is data, escaped)
_MARKUP_CELLS = frozenset(_RICH_CELLS)


def _rich(title: str, headers: list[str], rows: list[list[str]]) -> Table:
    """A rich table; the title, headers and cells are data, so they are printed literally."""
    table = Table(title=escape(title), show_lines=False)
    for h in headers:
        table.add_column(escape(h), overflow="fold")
    for r in rows:
        table.add_row(*(_RICH_CELLS.get(c, escape(c)) for c in r))
    return table


def print_report(results: dict[str, Any], console: Console) -> None:
    """Print every table of the run.

    Every string from the data or the results is escaped (``rich.markup.escape``): rich would
    otherwise read text in square brackets, such as ``[min, max]`` or a class named ``[red]x``,
    as markup and drop it.
    """
    for s in results["seeds"]:
        t = s["table1"]
        console.print(
            _rich(
                f"Table 1, seed {s['seed']}: {t['n_hard']} hard images of {t['n_test']}",
                table1_headers(s),
                table1_rows(s),
            )
        )
        if s.get("classification_paired"):
            console.print(
                _rich(
                    "Paired tests of classification accuracy (every test image)",
                    *_escaped(pairwise_table(s, "classification_paired")),
                )
            )
        if s.get("paired") and s["paired"]["pairwise"]:
            console.print(_rich("Paired tests on the hard images", *pairwise_table(s)))
        console.print(_rich("Models: accuracy and background reliance", *models_table(s)))
        console.print(_rich("Models: training and embedding health", *training_table(s)))
        if bg_gap_table(s)[1]:
            console.print(_rich("Interventions and BG-gap per split", *bg_gap_table(s)))
        if recipe_effects_table(s)[1]:
            console.print(
                _rich("Recipes against the box-area chance and the grid ceiling",
                      *recipe_effects_table(s))
            )  # fmt: skip
        for name in collapsed_models(s):
            console.print(
                f"[bold red]WARNING: {escape(_collapse_text(s, name))}[/]", highlight=False
            )
        check = s.get("shortcut_check")
        if check:
            style = "green" if check["ok"] else "bold red"
            msg = (
                "shortcut took hold, control clean, all converged"
                if check["ok"]
                else ("WARNING: " + "; ".join(check["problems"]))
            )
            console.print(f"[{style}]{escape(msg)}[/]")
        if s.get("separation"):
            console.print(
                _rich(
                    "Which recipe separates the shortcut models from the control (home-background "
                    "test images)",
                    *separation_table(s),
                )
            )
        if s.get("trust"):
            console.print(_rich("Can the maps be trusted?", *trust_table(s)))
        if s.get("calibration"):
            cal = s["calibration"]
            console.print(
                _rich(
                    f"Judge calibration on the calibration split (truth: {cal['ground_truth']})",
                    *calibration_table(s),
                )
            )
            console.print(escape(chosen_text(cal)))
    if len(results["seeds"]) > 1:
        console.print(_rich("Across seeds (mean +- sd [min, max])", *summary_table(results)))
    for step, reason, seeds in skipped_steps(results):
        console.print(
            f"[yellow]{escape(f'skipped {step}: {reason}' + _seeds_suffix(seeds, results))}[/]",
            highlight=False,
        )
    console.print(f"wall time: {results['timings']['total_s']:.0f} s")


SUMMARY_KEYS = ("macro_f1", "errors", "hard_correct_pct", "bg_gap", "shift_drop", "diff", "kappa")


def summary_table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Key numbers across seeds."""
    rows = []
    for key, v in results["summary"].items():
        if key.rsplit(".", 1)[-1] in SUMMARY_KEYS and "candidates" not in key:
            rows.append(
                [
                    key,
                    f"{v['mean']:.3f} +- {v['sd']:.3f}",
                    f"[{v['min']:.3f}, {v['max']:.3f}]",
                ]
            )
    return ["number", "mean +- sd", "range"], rows


# --------------------------------------------------------------------------- figures
#
# The figures draw maps the evaluation kept (``evaluate.figure_maps``: the library's records of
# the chosen images, ``maps="full"``) and the audits' verdicts; nothing here runs a CAM.


def _spread(indices: list[int], labels: torch.Tensor, n: int) -> list[int]:
    """Up to ``n`` indices, taking classes in turn so that a figure shows several classes."""
    by_class: dict[int, list[int]] = {}
    for i in indices:
        by_class.setdefault(int(labels[i]), []).append(i)
    out: list[int] = []
    while len(out) < n and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(out) < n:
                out.append(by_class[c].pop(0))
    return out


def _ok(seed_res: dict[str, Any], name: str, i: int) -> tuple[bool, bool]:
    """(class correct, features correct) of test image ``i`` for model ``name``."""
    per = seed_res["per_image"]
    m = per["models"][name]
    feats = m.get("features_correct")
    return m["pred"][i] == per["labels"][i], bool(feats[i]) if feats is not None else False


#: The galleries of instructive hard images, by kind: (figure title, caption).
CASE_KINDS = {
    "all correct": (
        "Hard images that every model gets right (class and features)",
        "Gallery: hard images where every model shown has class and features correct.",
    ),
    "only one correct": (
        "Hard images that exactly one model gets right (class and features)",
        "Gallery: hard images where exactly one model shown has class and features correct.",
    ),
    "all wrong": (
        "Hard images that every model gets wrong (class and features)",
        "Gallery: hard images where every model shown has both the class and the features wrong.",
    ),
}


def pick_cases(seed_res: dict[str, Any], cfg: SkuConfig, per_kind: int) -> dict[str, list[int]]:
    """Instructive hard images, judged over every model a gallery shows (the losses and the
    control): all correct (class and features, every model), only one correct, all wrong
    (class and features wrong, every model: every panel red).

    ``cfg`` is kept for the call signature; the models are those of ``per_image``, which are
    the columns of the galleries (`case_rows`).
    """
    del cfg
    names = list(seed_res["per_image"]["models"])
    kinds: dict[str, list[int]] = {k: [] for k in CASE_KINDS}
    for i in seed_res["hard_images"]:
        verdicts = [_ok(seed_res, n, i) for n in names]
        both = [c and f for c, f in verdicts]
        if all(both):
            kind: str | None = "all correct"
        elif sum(both) == 1:
            kind = "only one correct"
        elif not any(c or f for c, f in verdicts):
            kind = "all wrong"
        else:
            kind = None
        if kind and len(kinds[kind]) < per_kind:
            kinds[kind].append(i)
    return kinds


def recipe_images(seed_res: dict[str, Any], data: Data, cfg: SkuConfig) -> list[int]:
    """Home-background test images that the first loss model and the control both get right."""
    test = data.splits["test"]
    models = seed_res["per_image"]["models"]
    names = [cfg.losses[0], CONTROL]
    if any(n not in models for n in names) or test.home is None:
        return []
    labels = seed_res["per_image"]["labels"]
    ok = [
        i
        for i in range(len(labels))
        if bool(test.home[i]) and all(models[n]["pred"][i] == labels[i] for n in names)
    ]
    return _spread(ok, test.labels, max(cfg.figures // 2, 2))


def figure_plan(seed_res: dict[str, Any], data: Data, cfg: SkuConfig) -> dict[str, list[int]]:
    """The test images of every figure (empty when there are no figures to draw)."""
    if not data.has_boxes or cfg.figures == 0 or not seed_res["hard_images"]:
        return {}
    plan = {
        "hard_images": _spread(seed_res["hard_images"], data.splits["test"].labels, cfg.figures)
    }
    for kind, idx in pick_cases(seed_res, cfg, per_kind=max(1, cfg.figures // 3)).items():
        if idx:
            plan[f"gallery_{kind.replace(' ', '_')}"] = idx
    rec = recipe_images(seed_res, data, cfg)
    if rec:
        plan["recipes"] = rec
    return plan


def _shown(maps: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Signed recipes are shown as ``|map|`` (evidence for or against)."""
    return maps.abs() if spec.signed else maps


def recipe_figure(
    indices: list[int], maps: FigureMaps, data: Data, cfg: SkuConfig, out: Path
) -> tuple[Path, str]:
    """Maps of every recipe for the first loss model and the control, on home-background images."""
    names = [cfg.losses[0], CONTROL]
    test = data.splits["test"]
    images = test.images[indices]
    rows: list[list[GridCell | None]] = [
        [GridCell(image=images[i], boxes=test.boxes[idx] if test.boxes else None)]
        for i, idx in enumerate(indices)
    ]
    cols = ["image"]
    method = cfg.methods[-1]
    for spec in cfg.recipes:
        for n in names:
            cols.append(f"{n}\n{spec.name}")
            m = _shown(maps.get(n, spec.label(method), indices), spec)
            for i in range(len(indices)):
                rows[i].append(GridCell(image=images[i], map=m[i]))
    path = image_grid(
        rows,
        out / "figures" / "recipes.png",
        col_titles=cols,
        title=f"Where the evidence is ({method}): shortcut-trained model vs. control",
    )
    return path, (
        "Home-background test images that both models classify correctly: the maps of each "
        f"recipe for {names[0]} (trained with the background shortcut) and the control. "
        "Signed recipes show |map|."
    )


# A label breaks after these characters (kept on the line they end).
_BREAK_AFTER = re.compile(r"(?<=[-_ ./])")


def _wrap_label(text: str, width: int) -> list[str]:
    """Greedy line filling at ``-``, ``_``, space, ``.`` and ``/``; a piece longer than
    ``width`` is cut into ``width``-sized chunks."""
    pieces: list[str] = []
    for piece in _BREAK_AFTER.split(text):
        pieces += [piece[k : k + width] for k in range(0, len(piece), width)] if piece else []
    lines: list[str] = []
    for piece in pieces:
        if lines and len(lines[-1]) + len(piece) <= width:
            lines[-1] += piece
        else:
            lines.append(piece)
    return [line.strip() for line in lines]


def short_labels(names: list[str], width: int = 22, lines: int = 2) -> list[str]:
    """Figure labels of at most ``lines`` lines of about ``width`` characters, distinct when the
    names are.

    A name that fits stays whole, broken onto lines after ``-``, ``_``, spaces, ``.`` or ``/``.
    A longer one keeps its beginning, an ellipsis, and on the last line its end - where sibling
    products differ (``Arla-Ecological-Medium-Fat-Milk-1L`` vs. ``...-2L``). When two labels
    would still read the same, the last line shows a window further into the names until they
    differ; failing that, a ``#k`` suffix tells them apart. (Cutting at a fixed length, as
    ``name[:18]``, made ``Arla-Ecological-Medium-Fat-Milk`` and ``Arla-Ecological-Sour-Cream``
    the same label.)
    """
    ell = "\u2026"

    def shorten(name: str, shift: int = 0) -> str:
        wrapped = _wrap_label(name, width)
        if len(wrapped) <= lines:
            return "\n".join(wrapped)
        head = _wrap_label(name, width - 1)[: max(lines - 1, 1)]
        head[-1] += ell
        if lines == 1:
            return head[0]
        end = len(name) - shift
        size = width if shift == 0 else width - 1
        tail = name[max(end - size, 0) : end]
        cut = _BREAK_AFTER.search(tail[:-1], 1) if shift == 0 else None
        if cut is not None and cut.start() <= len(tail) // 3:
            tail = tail[cut.start() :]  # start the end part at a word
        return "\n".join([*head, tail.strip() + (ell if shift else "")])

    labels = [shorten(n) for n in names]
    counts = Counter(labels)
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if counts[lab] > 1:
            groups.setdefault(lab, []).append(i)
    taken = set(labels)
    for members in groups.values():
        distinct = sorted({names[i] for i in members})
        if len(distinct) == 1:
            continue  # the same name twice: the same label is right
        for shift in range(1, max(len(n) for n in distinct)):
            trial = {n: shorten(n, shift) for n in distinct}
            if len(set(trial.values())) == len(distinct) and not set(trial.values()) & taken:
                break
        else:
            trial = {n: f"{shorten(n)} #{k + 1}" for k, n in enumerate(distinct)}
        for i in members:
            labels[i] = trial[names[i]]
        taken |= set(trial.values())
    return labels


def case_rows(
    seed_res: dict[str, Any], maps: FigureMaps, data: Data, cfg: SkuConfig, indices: list[int]
) -> list[list[GridCell | None]]:
    """One row per image: the original with its box, then each model's darkened image."""
    test = data.splits["test"]
    images, labels = test.images[indices], test.labels[indices]
    names = short_labels(data.classes)
    rows: list[list[GridCell | None]] = [
        [
            GridCell(
                image=images[i],
                title=names[int(labels[i])],
                boxes=test.boxes[idx] if test.boxes is not None else None,
            )
        ]
        for i, idx in enumerate(indices)
    ]
    spec = cfg.recipes[0]
    for name in seed_res["per_image"]["models"]:
        m = _shown(maps.get(name, cfg.table1_recipe, indices), spec)
        dark = ec.darken(images, m, factor=cfg.darken_factor)
        for i, idx in enumerate(indices):
            c_ok, f_ok = _ok(seed_res, name, idx)
            border = "green" if c_ok and f_ok else ("red" if not (c_ok or f_ok) else "orange")
            rows[i].append(
                GridCell(
                    image=dark[i],
                    subtitle=f"class {'ok' if c_ok else 'x'} | features {'ok' if f_ok else 'x'}",
                    border=border,
                )
            )
    return rows


def make_figures(
    seed_res: dict[str, Any],
    plan: dict[str, list[int]],
    maps: FigureMaps,
    data: Data,
    cfg: SkuConfig,
    out: Path,
) -> list[tuple[Path, str]]:
    """Figures 1-4 of the paper for chosen hard images, a gallery of instructive cases, and the
    recipe comparison, from the maps of `figure_plan`'s images."""
    figs: list[tuple[Path, str]] = []
    cols = ["image"] + list(seed_res["per_image"]["models"])
    for key, idx in plan.items():
        if key == "recipes":
            continue
        if key == "hard_images":
            title = (
                "Hard images: each model's darkened image (green: class and features correct, "
                "orange: one of them, red: neither)"
            )
            caption = (
                "Hard images, as in the paper's Figures 1-4: the original with its box, "
                "then each model's image darkened where the map shows no evidence."
            )
        else:
            kind = key.removeprefix("gallery_").replace("_", " ")
            title, caption = CASE_KINDS[kind]
        path = image_grid(
            case_rows(seed_res, maps, data, cfg, idx),
            out / "figures" / f"{key}.png",
            col_titles=cols,
            title=title,
        )
        figs.append((path, caption))
    if "recipes" in plan:
        figs.append(recipe_figure(plan["recipes"], maps, data, cfg, out))
    return figs


def write_reports(
    results: dict[str, Any], figures: list[tuple[Path, str]], cfg: SkuConfig, data: Data, out: Path
) -> None:
    """table1.md, report.md and a self-contained report.html (tables and figures).

    Written all or nothing (joining the run's [`atomic_outputs`][embedcam.atomic.atomic_outputs]
    block when there is one): on any error the old files stay, complete. Every name from the data or
    the config (classes, models, recipes, files) is shown as written, never as Markdown or HTML.
    """
    from .io import atomic_outputs

    with atomic_outputs(out, exclude=("audits",)):
        _write_reports(results, figures, cfg, data, out)


def _write_reports(
    results: dict[str, Any], figures: list[tuple[Path, str]], cfg: SkuConfig, data: Data, out: Path
) -> None:
    from .io import atomic_write_text

    atomic_write_text(out / "table1.md", table1_markdown(results))
    rep = Report("embedcam SKU benchmark: the paper's Table 1, judged automatically")
    rep.add_paragraph(
        f"Preset {_lit(cfg.preset)}, seeds {cfg.seeds}, data: {_lit(data.source)}. "
        f"Wall time {results['timings']['total_s']:.0f} s."
    )
    rep.add_heading("Scaled down relative to the paper")
    rep.add_list([_lit(n) for n in results["scaled_down"]])
    skipped = skipped_steps(results)
    if skipped:
        rep.add_heading("Skipped steps")
        rep.add_paragraph("Analysis steps that could not run on this data:")
        rep.add_list(
            [
                f"**{_lit(step)}**: {_lit(reason)}{_seeds_suffix(seeds, results)}"
                for step, reason, seeds in skipped
            ]
        )
    for s in results["seeds"]:
        t = s["table1"]
        rep.add_heading(f"Table 1, seed {s['seed']}")
        rep.add_table(
            [_lit(h) for h in table1_headers(s)],
            _cells(table1_rows(s)),
            caption=_lit(
                f"{t['n_hard']} hard images of {t['n_test']}; judge {t['criterion']} on "
                f"{t['recipe']}/{t['method']}"
            ),
        )
        if s.get("classification_paired"):
            rep.add_table(
                *_escaped(pairwise_table(s, "classification_paired")),
                caption="Classification accuracy on every test image: exact McNemar with Holm "
                "correction, Newcombe's paired interval of the accuracy difference",
            )
        if s.get("paired") and s["paired"]["pairwise"]:
            rep.add_table(
                *_escaped(pairwise_table(s)),
                caption="Class and features correct on the hard images: exact McNemar with "
                "Holm correction",
            )
        rep.add_heading("Accuracy and background reliance", level=3)
        rep.add_table(*_escaped(models_table(s)))
        rep.add_heading("Training and embedding health", level=3)
        rep.add_table(*_escaped(training_table(s)))
        if bg_gap_table(s)[1]:
            rep.add_heading("Interventions and BG-gap per split", level=3)
            rep.add_table(
                *_escaped(bg_gap_table(s)),
                caption="accuracy after moving the object onto a same-class (Mixed-Same) or "
                "random-class (Mixed-Rand) background, or removing it (Only-BG); BG-gap = "
                "Mixed-Same - Mixed-Rand. Region 'box' moves box rectangles, 'mask' exact masks",
            )
        if recipe_effects_table(s)[1]:
            rep.add_heading("Recipes against the box-area chance and the grid ceiling", level=3)
            rep.add_table(
                *_escaped(recipe_effects_table(s)),
                caption="lift = energy in box - box area fraction (a uniform map's score), "
                "paired bootstrap 95% interval; headroom = lift / (ceiling - chance)",
            )
        for name in collapsed_models(s):
            rep.add_paragraph(f"**Warning: {_lit(_collapse_text(s, name))}.**")
        if s.get("shortcut_check"):
            chk = s["shortcut_check"]
            rep.add_paragraph(
                "Shortcut check: "
                + ("passed" if chk["ok"] else "FAILED: " + _lit("; ".join(chk["problems"])))
            )
        if s.get("separation"):
            rep.add_heading("Which recipe separates background-reliant models", level=3)
            rep.add_table(*_escaped(separation_table(s)))
        if s.get("trust"):
            rep.add_heading("Trust: specificity, randomisation, faithfulness", level=3)
            rep.add_paragraph(TRUST_TEXT.format(**s["trust"]))
            rep.add_table(*_escaped(trust_table(s)))
        if s.get("all_images"):
            rep.add_heading("Every test image", level=3)
            rep.add_table(*_escaped(all_images_table(s)))
        if s.get("calibration"):
            rep.add_heading("Judge calibration", level=3)
            rep.add_table(*_escaped(calibration_table(s)))
            rep.add_paragraph(_lit(chosen_text(s["calibration"])))
    if len(results["seeds"]) > 1:
        rep.add_heading("Across seeds")
        rep.add_table(*_escaped(summary_table(results)))
    rep.add_heading("The paper's Table 1")
    rep.add_table(TABLE1_HEADERS, _cells([list(r) for r in PAPER_TABLE1]))
    rep.add_heading("Figures")
    if not figures:
        rep.add_paragraph(
            "No figures: they show maps judged against boxes, and this data has none."
            if not getattr(data, "has_boxes", True)
            else "No figures were made (no hard images, or `figures: 0` in the config)."
        )
    for path, caption in figures:
        rep.add_figure(path, caption=caption)
    rep.write_markdown(out / "report.md")
    rep.write_html(out / "report.html")
