"""The SKU benchmark's report: files, console output, figures and documents.

Fast unit tests on small hand-made results dicts (the end-to-end smoke run is
``tests/test_sku_benchmark.py``); one test per report defect that users found.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from sku_helpers import load_sku
from skubench import io as skuio
from skubench import report

from embedcam.report import GridCell, Report, image_grid

ROOT = Path(__file__).resolve().parents[1]


_sku = load_sku


ARLA = ["Arla-Ecological-Medium-Fat-Milk", "Arla-Ecological-Sour-Cream"]


def _model(**extra: Any) -> dict[str, Any]:
    m = {
        "macro_f1": 0.7,
        "errors": 3,
        "accuracy": 0.75,
        "valid_accuracy": 0.8,
        "converged": True,
        "train_seconds": 12.5,
        "final_loss": 0.02,
        "active_fraction": 0.2,
    }
    m.update(extra)
    return m


def _seed(seed: int = 0, models: dict[str, dict[str, Any]] | None = None, **extra: Any):
    models = models or {"triplet": _model(), "focal": _model()}
    res = {
        "seed": seed,
        "models": models,
        "hard_images": [0],
        "table1": {
            "rows": [
                {
                    "model": name,
                    "macro_f1": m["macro_f1"],
                    "errors": m["errors"],
                    "hard_correct": None,
                }
                for name, m in models.items()
            ],
            "n_hard": 1,
            "n_test": 4,
            "criterion": "paper",
            "recipe": "paper",
            "method": "gradcam",
        },
        "shortcut_check": None,
        "per_image": {"labels": [0, 1, 0, 1], "models": {}},
    }
    res.update(extra)
    return res


def _results(seeds: list[dict[str, Any]] | None = None, **train: Any) -> dict[str, Any]:
    seeds = seeds or [_seed()]
    res = {
        "config": {
            "preset": "quick",
            "data": {"image_size": 64},
            "train": {"width": 0.25, "epochs": 60, **train},
        },
        "data": {
            "synthetic": False,
            "classes": ARLA,
            "sizes": {"train": 10, "valid": 4, "test": 4},
        },
        "seeds": seeds,
        "summary": {},
        "timings": {"total_s": 3.0},
    }
    res["scaled_down"] = report.scaled_down(res)
    return res


def _console(**kwargs: Any) -> Console:
    return Console(record=True, width=200, file=io.StringIO(), **kwargs)


def _write(results: dict[str, Any], out: Path) -> tuple[str, str]:
    cfg = SimpleNamespace(preset="quick", seeds=[s["seed"] for s in results["seeds"]])
    data = SimpleNamespace(source="a Roboflow export")
    report.write_reports(results, [], cfg, data, out)  # type: ignore[arg-type]
    return (out / "report.md").read_text(), (out / "report.html").read_text()


# 1 ------------------------------------------------------------------ file permissions


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_file_gets_the_permissions_of_a_new_file(tmp_path, umask):
    """mkstemp's 0600 was kept by skubench.io; the library's writer gives 0o666 & ~umask."""
    old = os.umask(umask)
    try:
        skuio.atomic_write_json(tmp_path / "results.json", {"a": 1})
        skuio.atomic_write_text(tmp_path / "notes.txt", "x")
        _write(_results(), tmp_path)
    finally:
        os.umask(old)
    names = ["results.json", "notes.txt", "table1.md", "report.md", "report.html"]
    for name in names:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left


# 2 ------------------------------------------------------------------ rich markup


def test_text_in_square_brackets_and_class_names_print_literally():
    results = _results(
        [
            _seed(0, {"[red]x": _model(), "focal": _model()}),
            _seed(1, {"[red]x": _model(), "focal": _model()}),
        ]
    )
    results["summary"] = {
        "[bold]m[/].macro_f1": {"mean": 0.5, "sd": 0.1, "min": 0.4, "max": 0.6},
    }
    results["seeds"][0]["shortcut_check"] = {"ok": False, "problems": ["[link]class [a][/]"]}
    console = _console()
    report.print_report(results, console)
    report.print_data(console, "shop [v2]", ["[red]x", "[bold]Milk[/bold]"], {"test": 4})
    text = console.export_text()
    assert "Across seeds (mean +- sd [min, max])" in text
    assert "[red]x" in text and "[bold]m[/].macro_f1" in text
    assert "WARNING: [link]class [a][/]" in text
    assert "data: shop [v2]; 2 classes ([red]x, [bold]Milk[/bold]); test 4" in text


# 3 ------------------------------------------------------------------ console width


def test_console_is_wide_when_the_output_is_logged(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    console = _sku().make_console(file=io.StringIO(), record=True)
    assert console.width == _sku().LOG_WIDTH >= 150
    line = "x" * 120
    console.print(line)
    assert line in console.export_text()  # one line, not wrapped at 80
    monkeypatch.setenv("COLUMNS", "100")  # an explicit width still wins
    assert _sku().make_console(file=io.StringIO()).width == 100


# 4 ------------------------------------------------------------------ audit progress


def test_one_line_per_model_as_each_audit_finishes(monkeypatch):
    done: list[str] = []

    def fake_audit(trained, data, cfg, out):
        done.append(trained.name)
        c = SimpleNamespace(images=48, accuracy=0.75, macro_f1=0.5 + 0.1 * len(done))
        return SimpleNamespace(test=SimpleNamespace(classification=c))

    monkeypatch.setattr(_sku(), "audit_model", fake_audit)
    trained = [SimpleNamespace(name=n, seed=3) for n in ("triplet", "focal")]
    console = _console()
    audits, times = _sku().audit_all(trained, None, None, Path("."), console)
    assert len(audits) == 2 and set(times) == {"triplet-seed3", "focal-seed3"}
    lines = [ln for ln in console.export_text().splitlines() if ln.startswith("audited")]
    assert len(lines) == 2
    assert re.fullmatch(
        r"audited triplet \(seed 3\): 48 test images in \d+\.\d s; accuracy 0\.750, "
        r"macro-F1 0\.600",
        lines[0],
    )
    assert lines[1].startswith("audited focal (seed 3)") and "macro-F1 0.700" in lines[1]


# 5 ------------------------------------------------------------------ figure title


HARD_TITLE = (
    "Hard images: each model's darkened image (green: class and features correct, "
    "orange: one of them, red: neither)"
)


@pytest.mark.parametrize("cols", [1, 2, 4, 5])
def test_a_long_figure_title_lies_inside_the_image(tmp_path, cols):
    """White panels without frames: every non-white pixel is the title's."""
    cells = [[GridCell(torch.ones(3, 16, 16)) for _ in range(cols)]]
    path = image_grid(cells, tmp_path / "g.png", title=HARD_TITLE, cell_size=2.0, dpi=100)
    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (200, 200 * cols)  # the canvas keeps its size
    ys, xs = np.nonzero(img < 200)
    assert xs.size, "the title was not drawn"
    assert xs.min() >= 2 and xs.max() <= img.shape[1] - 3  # not cut at the left or right edge
    assert ys.min() >= 1
    if cols <= 4:  # too wide for one line there: wrapped
        assert ys.max() - ys.min() > 25


# 6 ------------------------------------------------------------------ class names


def test_class_labels_keep_distinct_classes_distinct():
    labels = report.short_labels(ARLA)
    assert len(set(labels)) == 2
    assert labels[0].replace("\n", "") == ARLA[0] and labels[1].replace("\n", "") == ARLA[1]
    long = [
        "Arla-Ecological-Medium-Fat-Milk-Organic-Large-Bottle-1L",
        "Arla-Ecological-Medium-Fat-Milk-Organic-Large-Bottle-2L",
        "A" * 30 + "x" + "B" * 30,
        "A" * 30 + "y" + "B" * 30,
        "Granny-Smith",
        *ARLA,
    ]
    labels = report.short_labels(long, width=22, lines=2)
    assert len(set(labels)) == len(long)
    for label in labels:
        parts = label.split("\n")
        assert len(parts) <= 2 and all(len(p) <= 23 for p in parts), label
    assert labels[0].endswith("1L") and labels[1].endswith("2L")
    assert labels[4] == "Granny-Smith"
    assert report.short_labels(["same", "same"]) == ["same", "same"]


# 7 ------------------------------------------------------------------ "all wrong" gallery


def _gallery_seed() -> dict[str, Any]:
    labels = [0, 1, 0, 1]
    return {
        "hard_images": [0, 1, 2, 3],
        "per_image": {
            "labels": labels,
            "models": {
                # image 0: every model wrong on class and features
                # image 1: no model fully right, but focal's class is right (was "all wrong")
                # image 2: only focal fully right; image 3: every model fully right
                "triplet": {"pred": [1, 0, 1, 1], "features_correct": [False, False, True, True]},
                "focal": {"pred": [1, 1, 0, 1], "features_correct": [False, False, True, True]},
                "control": {"pred": [1, 0, 1, 1], "features_correct": [False, True, False, True]},
            },
        },
    }


class _Maps:
    def get(self, model: str, recipe: str, positions: list[int]) -> torch.Tensor:
        return torch.full((len(positions), 8, 8), 0.5)


def test_all_wrong_gallery_shows_only_wrong_verdicts():
    seed = _gallery_seed()
    cfg = SimpleNamespace(
        losses=["triplet", "focal"],
        recipes=[SimpleNamespace(signed=False)],
        table1_recipe="paper/gradcam",
        darken_factor=0.25,
    )
    kinds = report.pick_cases(seed, cfg, per_kind=5)  # type: ignore[arg-type]
    assert kinds == {"all correct": [3], "only one correct": [2], "all wrong": [0]}
    test = SimpleNamespace(
        images=torch.rand(4, 3, 8, 8),
        labels=torch.tensor([0, 1, 0, 1]),
        boxes=[torch.tensor([[1, 1, 5, 5]])] * 4,
    )
    data = SimpleNamespace(classes=ARLA, splits={"test": test})
    rows = report.case_rows(seed, _Maps(), data, cfg, kinds["all wrong"])  # type: ignore[arg-type]
    (row,) = rows
    assert [c.subtitle for c in row[1:]] == ["class x | features x"] * 3
    assert {c.border for c in row[1:]} == {"red"}
    assert row[0].title == report.short_labels(ARLA)[0]
    assert "wrong" in report.CASE_KINDS["all wrong"][0]


# 8 ------------------------------------------------------------------ Markdown lists


def test_scaled_down_notes_are_a_bullet_list_in_the_html(tmp_path):
    results = _results()
    md, page = _write(results, tmp_path)
    notes = results["scaled_down"]
    assert "\n".join(f"- {n}" for n in notes) in md  # one tight list
    (ul,) = re.findall(r"<ul>\n(.*?)\n</ul>", page, flags=re.S)
    assert len(re.findall(r"<li>", ul)) == len(notes)
    assert "<p>- " not in page


def test_any_markdown_list_in_a_report_renders_as_a_list():
    rep = Report("r")
    rep.add_paragraph("intro")
    rep.add_paragraph("- one **bold**")
    rep.add_paragraph("- two\n  continued")
    rep.add_paragraph("1. first\n2. second")
    rep.add_list(["a", "b"], ordered=False)
    page = rep.to_html()
    assert "<ul>\n<li>one <strong>bold</strong></li>\n<li>two continued</li>\n</ul>" in page
    assert "<ol>\n<li>first</li>\n<li>second</li>\n</ol>" in page
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in page
    md = rep.to_markdown(".")
    assert "intro\n\n- one **bold**\n- two continued\n\n1. first\n2. second\n\n- a\n- b\n" in md


# 9 ------------------------------------------------------------------ epochs, times, health


def test_epochs_train_and_run_seconds_and_health_from_the_model_summaries(tmp_path):
    models = {
        "triplet": _model(
            epochs=23,
            best_epoch=18,
            stop_reason="plateau",
            train_seconds=812.4,
            run_seconds=0.02,
            effective_rank=31.5,
            mean_pairwise_cosine=0.12,
            collapsed=False,
            active_fraction=0.25,
        ),
        "focal": _model(
            epochs=41,
            best_epoch=36,
            stop_reason="plateau",
            train_seconds=1450.0,
            run_seconds=1450.0,
            effective_rank=1.4,
            mean_pairwise_cosine=0.97,
            collapsed=True,
            active_fraction=0.0,
        ),
    }
    results = _results([_seed(0, models)], patience=5)
    (note,) = [n for n in results["scaled_down"] if "epochs" in n]
    assert "epochs 23-41 (plateau stopping, patience 5; best epochs 18-36 kept)" in note
    assert "60" not in note  # the configured maximum is not what the models trained

    headers, rows = report.training_table(results["seeds"][0])
    row = dict(zip(headers, rows[0]))
    assert row["epochs"] == "23" and row["kept epoch"] == "18" and row["stopped by"] == "plateau"
    assert row["train s"] == "812.4" and row["run s"] == "0.0"
    assert row["effective rank"] == "31.5" and row["mean cosine"] == "0.120"
    assert row["active triplets"] == "25.0%" and row["embedding"] == "ok"
    assert dict(zip(headers, rows[1]))["embedding"] == "**COLLAPSED**"
    # Table 1 and the paired tests name the collapsed model as such
    names = [r[0] for r in report.table1_rows(results["seeds"][0])]
    assert "focal (collapsed)" in names and "triplet" in names

    md, page = _write(results, tmp_path)
    row_md = "| focal | 41 | 36 | plateau | 1450.0 | 1450.0 | 1.4 | 0.970 | 0.0% | **COLLAPSED** |"
    assert row_md in md
    assert "<td><strong>COLLAPSED</strong></td>" in page
    assert "<strong>Warning: focal (seed 0): the embeddings collapsed" in page

    console = Console(
        record=True, width=200, file=io.StringIO(), force_terminal=True, color_system="standard"
    )
    report.print_report(results, console)
    styled = console.export_text(styles=True, clear=False)
    assert re.search(r"\x1b\[1;31mcollapsed\x1b\[0m", styled)
    assert re.search(r"\x1b\[1;31mWARNING: focal \(seed 0\): the embeddings collapsed", styled)
    assert "COLLAPSED" not in console.export_text()


def test_missing_per_model_training_keys_are_shown_as_unknown():
    results = _results()  # today's summaries: no epochs, run seconds or health
    (note,) = [n for n in results["scaled_down"] if "epochs" in n]
    assert "at most 60 epochs" in note
    headers, rows = report.training_table(results["seeds"][0])
    row = dict(zip(headers, rows[0]))
    assert row["epochs"] == "-" and row["run s"] == "-" and row["embedding"] == "-"
    assert row["train s"] == "12.5"


# 10 ----------------------------------------------------------------- skipped steps


def test_skipped_steps_are_printed_and_reported(tmp_path):
    skipped = [{"step": "judge calibration", "reason": "no object masks in [this] export"}]
    results = _results([_seed(0, skipped=skipped), _seed(1, skipped=skipped)])
    results["seeds"][1]["skipped"] = skipped + [{"step": "interventions", "reason": "no boxes"}]
    console = Console(
        record=True, width=200, file=io.StringIO(), force_terminal=True, color_system="standard"
    )
    report.print_report(results, console)
    text = console.export_text(clear=False)
    assert "skipped judge calibration: no object masks in [this] export\n" in text
    assert "skipped interventions: no boxes (seed 1)" in text
    assert text.count("skipped judge calibration") == 1
    styled = console.export_text(styles=True)
    assert "\x1b[33mskipped judge calibration: no object masks in [this] export\x1b[0m" in styled
    md, page = _write(results, tmp_path)
    assert "## Skipped steps" in md
    assert "- **judge calibration**: no object masks in [this] export\n" in md
    assert "<h2>Skipped steps</h2>" in page
    assert "<li><strong>judge calibration</strong>: no object masks in [this] export</li>" in page
    md, page = _write(_results(), tmp_path)
    assert "Skipped steps" not in md
