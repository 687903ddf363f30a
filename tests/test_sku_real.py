"""The SKU benchmark end to end on real photos: the committed grocery-mini fixture.

grocery-mini holds 6 products of the Grocery Store dataset (Klasson et al., WACV 2019, MIT
licence): a classification layout (train/valid/test folders of real store photos), the
product hierarchy and one catalogue photo per product. The classification part runs on the
folders; the full analysis runs on composites built from them with ``compose_export`` (real
cut-outs on real photos, exact masks, a planted background shortcut).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sku_helpers import without_times

from embedcam.datasets import compose_export

ROOT = Path(__file__).resolve().parents[1]
SKU = ROOT / "benchmarks" / "sku.py"
FIXTURE = Path(__file__).parent / "fixtures" / "grocery-mini"
LOSSES = ["triplet", "focal", "flexible"]


def run_sku(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SKU), "--preset", "smoke", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grocery") / "export"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.mark.slow
def test_classification_on_real_photos_and_a_content_keyed_cache(photos: Path, tmp_path) -> None:
    cache = tmp_path / "cache"
    args = ["--data", str(photos), "--extra-labels", str(photos / "extra_labels.csv")]
    args += ["--set", "methods=[gradcam]", "--cache", str(cache)]
    proc = run_sku(*args, "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["data"]["sizes"] == {"train": 48, "valid": 18, "test": 24}
    (seed,) = res["seeds"]
    assert [r["model"] for r in seed["table1"]["rows"]] == LOSSES  # no control on real data
    for name in LOSSES:
        m = seed["models"][name]
        assert 1 <= m["best_epoch"] <= m["epochs"] == 2 and m["stop_reason"] == "max_epochs"
        assert m["effective_rank"] >= 1.0 and -1.0 <= m["mean_pairwise_cosine"] <= 1.0
        assert isinstance(m["collapsed"], bool)
        assert m["errors"] == round((1 - m["accuracy"]) * 24)
    # Classification is compared pairwise on every test image, by hand here
    labels = seed["per_image"]["labels"]
    ok = {
        m: [p == y for p, y in zip(v["pred"], labels)]
        for m, v in seed["per_image"]["models"].items()
    }
    pairs = seed["classification_paired"]
    assert [(p["a"], p["b"]) for p in pairs] == [
        ("triplet", "focal"),
        ("triplet", "flexible"),
        ("focal", "flexible"),
    ]
    for p in pairs:
        a, b = ok[p["a"]], ok[p["b"]]
        assert p["only_a"] == sum(x and not y for x, y in zip(a, b))
        assert p["only_b"] == sum(y and not x for x, y in zip(a, b))
        assert abs(p["diff"] - (sum(a) - sum(b)) / len(labels)) < 1e-12
        assert p["newcombe_low"] <= p["diff"] <= p["newcombe_high"]
        assert 0.0 <= p["p_value"] <= p["p_holm"] <= 1.0
    assert "Paired tests of classification accuracy" in proc.stdout
    steps = " | ".join(f"{x['step']}: {x['reason']}" for x in seed["skipped"])
    assert "feature judging" in steps and "no boxes" in steps
    assert "separation from the control" in steps
    for x in seed["skipped"]:  # every skipped step is printed with its reason
        assert f"skipped {x['step']}" in proc.stdout.replace("\n", " ")
    html = (tmp_path / "a" / "report.html").read_text()
    assert "Skipped steps" in html and "feature judging" in html
    assert "Training and embedding health" in html

    # Same export, same config: no training, the same numbers.
    again = run_sku(*args, "--out", str(tmp_path / "b"))
    assert again.returncode == 0
    assert again.stdout.count("from the checkpoint cache") == len(LOSSES)
    rerun = json.loads((tmp_path / "b" / "results.json").read_text())
    assert without_times(rerun["seeds"]) == without_times(res["seeds"])

    # The export regenerated in place (one photo changed): the cache must not be reused. One
    # loss is enough to see it (the loss list is not part of the cache key: unchanged data
    # would load this model from the cache).
    photo = next((photos / "train" / "Granny-Smith").glob("*.jpg"))
    shutil.copy(next((photos / "train" / "Pink-Lady").glob("*.jpg")), photo)
    changed = run_sku(*args, "--set", "losses=[triplet]", "--out", str(tmp_path / "c"))
    assert changed.returncode == 0, changed.stdout[-3000:] + changed.stderr[-3000:]
    assert "from the checkpoint cache" not in changed.stdout
    assert "triplet" in changed.stdout
    assert len(list((cache / "checkpoints").iterdir())) == 2


@pytest.fixture(scope="module")
def composites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("composites") / "export"
    config = {
        "image_size": 64,
        "images_per_class": {"train": 10, "valid": 4, "test": 6},
        "convex": ["Arla-Medium-Fat-Milk", "Arla-Standard-Milk"],
        "license": "MIT",
        "credit": "Klasson et al., WACV 2019",
    }
    compose_export(
        FIXTURE / "iconic", FIXTURE / "train", out, config, labels=FIXTURE / "extra_labels.csv"
    )
    return out


@pytest.mark.slow
def test_the_whole_analysis_on_real_composites(composites: Path, tmp_path) -> None:
    out = tmp_path / "out"
    proc = run_sku(
        "--data", str(composites), "--extra-labels", str(composites / "additional_labels.csv"),
        "--out", str(out), "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    (seed,) = res["seeds"]
    t1 = seed["table1"]
    assert t1["n_test"] == 36 and [r["model"] for r in t1["rows"]] == LOSSES
    assert all("hard_correct" in r for r in t1["rows"])
    for name in LOSSES:
        gaps = {g["split"]: g for g in seed["models"][name]["bg_gap"]}
        assert set(gaps) == {"test", "valid"}  # BG-gap on every split with masks
        for split, g in gaps.items():
            assert g["region"] == "mask"
            assert g["images"] == {"test": 36, "valid": 24}[split]
            assert abs(g["bg_gap"] - (g["acc_mixed_same"] - g["acc_mixed_rand"])) < 1e-6
    # Calibration runs on the validation split's exact masks, without a synthetic control.
    cal = seed["calibration"]
    assert cal is not None and -1.0 <= cal["chosen"]["kappa"] <= 1.0
    assert any(r.get("hard_correct_calibrated") is not None for r in t1["rows"])
    # Recipes are compared with the box-area chance and the grid ceiling instead.
    effects = seed["recipe_effects"]
    assert effects and {e["method"] for e in effects} == set(res["config"]["methods"])
    for e in effects:
        for r in e["rows"]:
            assert 0.0 < r["chance"] <= r["ceiling"] <= 1.0
            assert r["low"] <= r["lift"] <= r["high"]
            assert abs(r["lift"] - (r["energy_in_box"] - r["chance"])) < 1e-9
    steps = " ".join(x["step"] for x in seed["skipped"])
    assert "separation from the control" in steps and "calibration" not in steps
    assert "validation accuracy" not in steps  # measured by the calibration audit
    html = (out / "report.html").read_text()
    assert "Interventions and BG-gap per split" in html
    assert "Recipes against the box-area chance" in html
