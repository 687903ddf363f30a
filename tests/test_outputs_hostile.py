"""Hostile conditions for everything that writes outputs: kills, full disks, odd names, modes.

One test per defect of an adversarial review; each failed before its fix.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sku_helpers import load_sku
from skubench import report
from skubench.config import build_config

import embedcam.atomic as atomic
from embedcam.cli import main
from embedcam.errors import ConfigurationError, DataError
from embedcam.report import Report, image_grid, markdown_table

ROOT = Path(__file__).resolve().parents[1]


_sku = load_sku


HOSTILE = ["<script>alert(1)</script>", "a|b", "*x*", "**y**"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _listing(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _seed_result(models: list[str]) -> dict[str, Any]:
    return {
        "seed": 0,
        "models": {
            n: {"macro_f1": 0.5, "errors": 1, "accuracy": 0.5, "converged": True} for n in models
        },
        "hard_images": [0],
        "table1": {
            "rows": [
                {"model": n, "macro_f1": 0.5, "errors": 1, "hard_correct": None} for n in models
            ],
            "n_hard": 1,
            "n_test": 4,
            "criterion": "paper",
            "recipe": "paper",
            "method": "gradcam",
        },
        "shortcut_check": None,
        "per_image": {"labels": [0, 1], "models": {}},
    }


def _results(models: list[str] | None = None, source: str = "export") -> dict[str, Any]:
    res = {
        "config": {"preset": "quick", "data": {"image_size": 64}, "train": {"width": 0.25}},
        "data": {"source": source, "synthetic": False, "classes": ["c0", "c1"], "sizes": {}},
        "seeds": [_seed_result(models or ["triplet", "focal"])],
        "summary": {},
        "timings": {"total_s": 1.0},
    }
    res["scaled_down"] = report.scaled_down(res)
    return res


def _write_benchmark(results: dict[str, Any], out: Path, figures: list | None = None) -> None:
    cfg = SimpleNamespace(preset="quick", seeds=[0])
    data = SimpleNamespace(source=results["data"]["source"])
    _sku().write_outputs(results, figures or [], cfg, data, out)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``fail(after=n)``: the (n+1)-th fsync from now raises ENOSPC, as a full disk does."""
    real = os.fsync
    state = {"left": None}

    def fsync(fd: int) -> None:
        if state["left"] is not None:
            if state["left"] == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            state["left"] -= 1
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def fail(after: int) -> None:
        state["left"] = after

    yield fail


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert left == []


# 1 ------------------------------------------------------------------ leftovers of a kill


def test_a_killed_writers_temporaries_are_removed_and_a_live_writers_kept(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".results.json.{dead}.abcd1234.tmp"
    stale_file.write_bytes(b"half a file")
    stale_stage = tmp_path / f".embedcam-stage.{dead}.efgh5678.tmp"
    (stale_stage / "figures").mkdir(parents=True)
    (stale_stage / "figures" / "a.png").write_bytes(b"png")
    live = tmp_path / f".report.html.{os.getpid()}.ijkl9012.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".notes.txt.swp"  # not our pattern
    other.write_bytes(b"x")

    atomic.atomic_write_text(tmp_path / "table1.md", "new")

    assert not stale_file.exists() and not stale_stage.exists()
    assert live.read_bytes() == b"being written" and other.exists()
    assert (tmp_path / "table1.md").read_text() == "new"


# 2 ------------------------------------------------------------------ a full disk mid-run


def test_benchmark_outputs_are_all_or_nothing_on_a_full_disk(tmp_path, full_disk):
    out = tmp_path / "out"
    _write_benchmark(_results(), out)
    before = _listing(out)
    assert set(before) == {"results.json", "table1.md", "report.md", "report.html"}

    for after in range(4):  # the disk fills up at the 1st, 2nd, 3rd or 4th file
        full_disk(after)
        with pytest.raises(DataError, match=r"No space left on device.*free some space") as info:
            _write_benchmark(_results(["triplet", "flexible"]), out)
        assert str(out) in str(info.value)
        assert _listing(out) == before, after
        _no_temporaries(out)
        assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_report_outputs_are_all_or_nothing_on_a_full_disk(tmp_path, full_disk):
    fig = image_grid([[None]], tmp_path / "out" / "figures" / "f.png", col_titles=["a"])
    rep = Report("r")
    rep.add_figure(fig)
    with atomic.atomic_outputs(tmp_path / "out"):
        rep.write_markdown(tmp_path / "out" / "report.md")
        rep.write_html(tmp_path / "out" / "report.html")
    before = _listing(tmp_path / "out")
    full_disk(2)  # the figure and report.md are staged, then report.html fails
    with pytest.raises(DataError, match="report.html"):
        with atomic.atomic_outputs(tmp_path / "out"):
            image_grid([[None], [None]], tmp_path / "out" / "figures" / "f.png")
            rep2 = Report("r2")
            rep2.add_figure(tmp_path / "out" / "figures" / "f.png")
            rep2.write_markdown(tmp_path / "out" / "report.md")
            rep2.write_html(tmp_path / "out" / "report.html")
    assert _listing(tmp_path / "out") == before
    _no_temporaries(tmp_path / "out")


def test_interrupt_mid_run_keeps_the_old_outputs(tmp_path):
    out = tmp_path / "out"
    _write_benchmark(_results(), out)
    before = _listing(out)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_outputs(out):
            atomic.atomic_write_text(out / "results.json", "{}")
            raise KeyboardInterrupt
    assert _listing(out) == before
    _no_temporaries(out)


# 3 ------------------------------------------------------------------ modes


def test_outputs_files_and_folders_get_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        with atomic.atomic_outputs(out):
            fig = image_grid([[None]], out / "figures" / "f.png", col_titles=["a"])
            _write_benchmark(_results(), out, [(fig, "caption")])
    finally:
        os.umask(old)
    for p in [out, *out.rglob("*")]:
        want = 0o755 if p.is_dir() else 0o644
        assert p.stat().st_mode & 0o777 == want, p


# 4 ------------------------------------------------------------------ hostile names


def test_markdown_escapes_html_and_markup_of_user_text():
    rep = Report("r")
    for name in HOSTILE:
        rep.add_heading(name)
        rep.add_paragraph(f"class {name} is hard")
    rep.add_table(["class"], [[n] for n in HOSTILE])
    md = rep.to_markdown(".")
    assert "<script>" not in md and "&lt;script>alert(1)&lt;/script>" in md
    assert "class \\*x\\* is hard" in md and "## \\*x\\*" in md
    assert "| a\\|b |" in md
    table = markdown_table(["class"], [["<b>x</b>"]])
    assert "<b>" not in table and "&lt;b>x&lt;/b>" in table


def test_benchmark_reports_show_hostile_names_literally(tmp_path):
    out = tmp_path / "out"
    _write_benchmark(_results(HOSTILE, source="<i>src</i>*s*"), out)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    table1 = (out / "table1.md").read_text()
    for text in (md, table1):
        assert "<script>" not in text and "<i>" not in text
        assert "\\*\\*y\\*\\*" in text and "\\*x\\*" in text and "a\\|b" in text
    assert "<script>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<strong>y</strong>" not in page and "**y**" in page and "*x*" in page
    assert "&lt;i&gt;src&lt;/i&gt;*s*" in page


# 7 ------------------------------------------------------------------ empty lists


@pytest.mark.parametrize("field", ["seeds", "methods", "recipes", "losses"])
def test_benchmark_config_refuses_empty_lists(field):
    with pytest.raises(ConfigurationError, match=field):
        build_config("smoke", **{field: []})


def test_benchmark_seeds_zero_exits_non_zero(tmp_path, capsys):
    assert _sku().main(["--preset", "smoke", "--seeds", "0", "--out", str(tmp_path / "o")]) == 2
    assert "seeds" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_benchmark_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep")
    args = ["--preset", "smoke", "--out", str(out), "--cache", str(tmp_path / "c")]
    assert _sku().main(args) == 2
    text = capsys.readouterr().out
    assert "is a file" in text and "results.txt" in text
    assert out.read_text() == "keep" and not (tmp_path / "c").exists()


# CLI --------------------------------------------------------------------------------------------

FACTORY = """
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 4),
    )
"""


@pytest.fixture(scope="module")
def cli_work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile_cli")
    (root / "tiny_hostile.py").write_text(FACTORY)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(images / name)
    return {"root": root, "images": images, "model": root / "tiny_hostile.py"}


def _explain(work: dict[str, Path], out: Path) -> list[str]:
    return [
        "explain",
        "--model",
        f"{work['model']}:make",
        "--layer",
        "0",
        "--reference",
        str(work["images"] / "a.png"),
        str(work["images"]),
        "--out",
        str(out),
    ]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_cli_explain_on_a_full_disk_keeps_old_outputs_and_prints_one_line(
    cli_work, tmp_path, full_disk, capsys
):
    torch.set_num_threads(1)
    out = tmp_path / "out"
    assert main(_explain(cli_work, out)) == 0
    before = _listing(out)
    assert len(before) == 5
    capsys.readouterr()
    full_disk(2)  # two PNGs staged, the third fails
    assert main(_explain(cli_work, out)) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(out) in line
    assert _listing(out) == before
    _no_temporaries(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def test_cli_audit_refuses_an_empty_recipe(cli_work, tmp_path, capsys):
    args = ["audit", "--model", f"{cli_work['model']}:make", "--layer", "0"]
    args += ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--recipe", ""]
    assert main(args) == 2
    assert "--recipe" in _one_error_line(capsys)


def test_cli_audit_refuses_an_out_folder_inside_the_export(cli_work, tmp_path, capsys):
    data = tmp_path / "export"
    data.mkdir()
    args = ["audit", "--model", f"{cli_work['model']}:make", "--layer", "0"]
    args += ["--data", str(data), "--out", str(data / "audit")]
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "--out" in line and "inside" in line
    assert not (data / "audit").exists()


def test_benchmark_results_json_is_moved_into_place_last(tmp_path):
    """results.json is moved into place after the reports (its presence means complete)."""
    out = tmp_path / "out"
    order: list[str] = []
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).parent == out:
            order.append(Path(dst).name)
        real(src, dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace)
        _write_benchmark(_results(), out)
    assert order[-1] == "results.json" and len(order) == 4
    assert json.loads((out / "results.json").read_text())["seeds"][0]["seed"] == 0


def test_cli_explain_out_equal_to_the_input_folder_says_so(cli_work, tmp_path, capsys):
    # It used to say "the folder ... holds no image files" about a folder of images.
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(cli_work["images"], photos)
    args = _explain({**cli_work, "images": photos}, photos)
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "is the input folder" in line and "holds no image files" not in line
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "b.png"]


def test_cli_explain_reports_a_broken_symlink_among_the_inputs(cli_work, tmp_path, capsys):
    import shutil

    photos = tmp_path / "photos"
    shutil.copytree(cli_work["images"], photos)
    (photos / "c.png").symlink_to(tmp_path / "gone.png")
    assert main(_explain({**cli_work, "images": photos}, tmp_path / "out")) == 2
    assert "c.png' in the input folder" in _one_error_line(capsys)


def test_cli_explain_without_weights_says_the_model_keeps_its_factory_weights(
    cli_work, tmp_path, capsys
):
    assert main(_explain(cli_work, tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "note: no --weights given" in out and "pass --weights FILE" in out
