"""End-to-end smoke run of benchmarks/sku.py and the internal consistency of its results."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sku_helpers import without_times
from skubench.config import build_config

import embedcam as ec

ROOT = Path(__file__).resolve().parents[1]
SKU = ROOT / "benchmarks" / "sku.py"


@functools.cache
def _sku() -> Any:
    """benchmarks/sku.py as a module, loaded on first use (not when this file is imported)."""
    spec = importlib.util.spec_from_file_location("sku_bench", SKU)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sku_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run the benchmark's ``main`` in this process (for runs that stop before any training).

    Returns:
        The exit code and what was printed.
    """
    monkeypatch.setenv("COLUMNS", "200")  # the width the subprocess runs get
    code = _sku().main(list(args))
    return code, capsys.readouterr().out


def run_sku(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SKU), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One run of the smoke preset, shared by every test that reads its outputs."""
    base = tmp_path_factory.mktemp("sku")
    proc = run_sku("--preset", "smoke", "--out", str(base / "out"), "--cache", str(base / "cache"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return base, proc, json.loads((base / "out" / "results.json").read_text())


@pytest.mark.slow
def test_outputs_exist_and_report_is_self_contained(smoke):
    base, proc, res = smoke
    out = base / "out"
    for name in ("results.json", "table1.md", "report.html", "report.md"):
        assert (out / name).is_file(), name
    assert res["figures"] and all((out / f).is_file() for f in res["figures"])
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64,") == len(res["figures"])
    assert "Table 1" in proc.stdout and "hard images" in proc.stdout
    assert not list(out.glob(".*"))  # no temp files left by the atomic writes


@pytest.mark.slow
def test_counts_add_up(smoke):
    _, _, res = smoke
    (seed,) = res["seeds"]
    per = seed["per_image"]
    labels = per["labels"]
    losses = res["config"]["losses"]
    wrong = {m: [p != y for p, y in zip(v["pred"], labels)] for m, v in per["models"].items()}
    # Hard images are exactly the test images with at least one loss model wrong.
    hard = [i for i in range(len(labels)) if any(wrong[m][i] for m in losses)]
    assert seed["hard_images"] == hard
    t1 = seed["table1"]
    assert t1["n_hard"] == len(hard) and t1["n_test"] == len(labels) == res["data"]["sizes"]["test"]
    assert [r["model"] for r in t1["rows"]] == losses + ["control"]
    for row in t1["rows"]:
        m = row["model"]
        assert row["errors"] == sum(wrong[m]) == seed["models"][m]["errors"]
        feats = per["models"][m]["features_correct"]
        both = sum(1 for i in hard if not wrong[m][i] and feats[i])
        assert row["hard_correct"] == both
        assert row["class_correct_hard"] == sum(1 for i in hard if not wrong[m][i])
        assert row["features_correct_hard"] == sum(1 for i in hard if feats[i])
        assert math.isclose(row["hard_correct_pct"], 100 * both / len(hard))
        ci = ec.stats.wilson_interval(both, len(hard))
        assert math.isclose(row["wilson_low"], 100 * ci.low, abs_tol=1e-9)
        assert row["wilson_low"] <= row["hard_correct_pct"] <= row["wilson_high"]
        acc = 1 - sum(wrong[m]) / len(labels)
        assert math.isclose(seed["models"][m]["accuracy"], acc, abs_tol=1e-6)
        iv = seed["models"][m]["interventions"]
        assert math.isclose(iv["bg_gap"], iv["acc_mixed_same"] - iv["acc_mixed_rand"], abs_tol=1e-9)
    # Pairwise discordant counts come from the same per-image outcomes.
    outcome = {
        m: [not wrong[m][i] and per["models"][m]["features_correct"][i] for i in hard]
        for m in losses
    }
    for pr in seed["paired"]["pairwise"]:
        a, b = outcome[pr["a"]], outcome[pr["b"]]
        assert pr["only_a"] == sum(x and not y for x, y in zip(a, b))
        assert pr["only_b"] == sum(y and not x for x, y in zip(a, b))
        assert pr["p_holm"] >= pr["p_value"]
    table_md = (smoke[0] / "out" / "table1.md").read_text()
    for row in t1["rows"]:
        # a collapsed model is named as such (the smoke preset's 2 epochs may collapse some)
        collapsed = seed["models"][row["model"]]["collapsed"]
        name = f"{row['model']} (collapsed)" if collapsed else row["model"]
        assert f"| {name} | {row['macro_f1']:.3f} | {row['errors']} |" in table_md


@pytest.mark.slow
def test_beyond_the_paper_sections(smoke):
    _, _, res = smoke
    seed = res["seeds"][0]
    recipes = {r["name"] for r in res["config"]["recipes"]}
    assert {s["recipe"] for s in seed["separation"]} == recipes
    for s in seed["separation"]:
        assert 0 <= s["chance_mean"] <= s["ceiling_mean"] <= 1
        for r in s["rows"]:
            assert r["low"] <= r["diff"] <= r["high"]
    # every test image: each score beside its baselines (a box-area chance below the ceiling)
    for per_model in seed["all_images"].values():
        for v in per_model.values():
            assert 0 < v["chance"] <= v["ceiling"] <= 1 and 0 <= v["gaussian"] <= 1
            assert 0 <= v["gaussian_pointing"] <= 1
    cal = seed["calibration"]
    families = {c["family"] for c in cal["best_per_criterion"]}
    evidence = {"kept", "lost", "decisive"}
    learned = {"learned", "learned (every recipe)"}
    combined = {f"{e}+map" for e in evidence}
    assert families == set(ec.scoring.CRITERIA) | evidence | combined | learned
    for key in ("truth_retest_kappa_valid", "truth_retest_kappa_test", "truth_ceiling_kappa_test"):
        assert cal[key] is None or -1 <= cal[key] <= 1
    best = max(c["kappa"] for c in cal["candidates"] if c["kappa"] is not None)
    assert cal["chosen"]["kappa"] == best
    ch = cal["chosen"]
    if ch["test_kappa"] is not None and ch["test_kappa_low"] is not None:
        assert ch["test_kappa_low"] <= ch["test_kappa"] + 1e-9
        assert ch["test_kappa"] <= ch["test_kappa_high"] + 1e-9
    else:
        assert "test_kappa_low" in ch
    assert set(seed["shortcut_check"]) >= {"took_hold", "control_clean", "shift_drop"}
    # the trust section: every model x recipe, shares in [0, 1], correlations in [-1, 1]
    trust = seed["trust"]
    assert trust["images"] == 8 and trust["steps"] == 4
    assert set(trust["models"]) == set(seed["models"])
    n_recipes = len(res["config"]["recipes"]) * len(res["config"]["methods"])
    names = {frozenset(recs) for recs in trust["models"].values()}
    assert len(names) == 1 and len(next(iter(names))) == n_recipes
    for recs in trust["models"].values():
        for r in recs.values():
            for key in ("specific", "unchanged", "beats_random", "empty"):
                assert 0.0 <= r[key] <= 1.0
            for key in ("specificity_rho", "randomization_rho"):
                assert r[key] is None or -1.0 <= r[key] <= 1.0
            for key in ("deletion_auc", "insertion_auc", "random_deletion_auc"):
                assert -2.0 <= r[key] <= 2.0  # AUCs of a cosine (or a difference of two)
    base, proc, _ = smoke
    assert (
        "Trust: specificity, randomisation, faithfulness"
        in (base / "out" / "report.md").read_text()
    )
    assert "Can the maps be trusted?" in proc.stdout


@pytest.mark.slow
def test_table1_equals_a_direct_count_from_the_audits(smoke):
    """Table 1 (``ec.compare`` over the loss audits, the control row and the calibrated column
    in skubench) equals a count made directly from the audits' per-image data and records."""
    base, _, res = smoke
    out = base / "out"
    (seed,) = res["seeds"]
    cfg = res["config"]
    losses = cfg["losses"]
    key = f"{cfg['recipes'][0]['name']}/{cfg['methods'][0]}"
    audits = {
        m: ec.AuditResult.load_json(out / p["test"] / "results.json")
        for m, p in seed["audits"].items()
    }
    assert list(audits) == losses + ["control"]
    labels = audits[losses[0]].per_image.labels
    hard = [
        i
        for i in range(len(labels))
        if any(audits[m].per_image.pred[i] != labels[i] for m in losses)
    ]
    comp = ec.compare([audits[m] for m in losses], recipe=key)
    assert comp.hard_images == hard == seed["hard_images"]
    assert hard, "the smoke preset should leave hard images"
    rows = {r["model"]: r for r in seed["table1"]["rows"]}
    compared = {r.name: r for r in comp.rows}

    def ok(m: str, i: int) -> bool:
        return audits[m].per_image.pred[i] == labels[i]

    for m, a in audits.items():
        direct = sum(1 for i in hard if ok(m, i) and a.per_image.verdict[key][i])
        assert rows[m]["hard_correct"] == direct
        assert rows[m]["class_correct_hard"] == sum(ok(m, i) for i in hard)
        if m in losses:
            assert compared[m].hard_correct.k == direct
            assert compared[m].class_correct_hard == rows[m]["class_correct_hard"]
    for pr, mine in zip(comp.pairwise, seed["paired"]["pairwise"]):
        assert (pr.a, pr.b, pr.only_a, pr.only_b) == (
            mine["a"],
            mine["b"],
            mine["only_a"],
            mine["only_b"],
        )
        va, vb = (
            [ok(n, i) and audits[n].per_image.verdict[key][i] for i in hard] for n in (pr.a, pr.b)
        )
        assert pr.only_a == sum(x and not y for x, y in zip(va, vb))
    # The calibrated column: the chosen judge applied to the stored scores of the records and
    # the evidence tests kept per test image in the results.
    chosen = seed["table1"]["calibrated_judge"]
    table_key = key if chosen["recipe"] == "all" else f"{chosen['recipe']}/{chosen['method']}"
    for m, a in audits.items():
        verdict = _judged(chosen, m, a, seed)
        direct = sum(1 for i in hard if ok(m, i) and verdict[i])
        assert rows[m]["hard_correct_calibrated"] == direct
    assert table_key in audits[losses[0]].per_image.verdict
    # every family's best judge: its test kappa again, from the records and the audits' truth
    truth = np.concatenate([_truth(a) for a in audits.values()])
    for spec in seed["calibration"]["best_per_criterion"]:
        judged = np.concatenate([_judged(spec, m, a, seed) for m, a in audits.items()])
        agr = ec.stats.cohen_kappa(judged, truth)
        if spec["test_kappa"] is None:
            assert agr.kappa is None or math.isnan(agr.kappa)
        else:
            assert agr.kappa == pytest.approx(spec["test_kappa"], abs=1e-9), spec["family"]


def _truth(a: ec.AuditResult) -> np.ndarray:
    """The interventional truth, recomputed: survives Mixed-Rand, not Only-BG-B."""
    labels = np.array(a.per_image.labels)
    rand = np.array(a.per_image.intervened_pred["mixed_rand"]) == labels
    return rand & (np.array(a.per_image.intervened_pred["only_bg"]) != labels)


def _judged(spec: dict[str, Any], m: str, a: ec.AuditResult, seed: dict[str, Any]) -> np.ndarray:
    """A calibration candidate's test verdicts for one model, recomputed independently."""
    field = {"paper": "positive_share", "energy": "energy", "region_iou": "region_iou",
             "wsol": "wsol_box_iou"}  # fmt: skip
    df = pd.read_parquet(a.records)
    learned = spec.get("learned")
    if learned is not None:
        cols = []
        for name in learned["features"]:
            rkey, what = name.split(":", 1)
            if "@" in what:
                f, region = what.split("@", 1)
                cols.append(np.asarray(seed["evidence"][m][rkey][region][f], dtype=float))
            else:
                part = df[df["recipe"] == rkey].sort_values("position")
                cols.append(np.nan_to_num(part[what].to_numpy(dtype=float), nan=0.0))
        z = (np.stack(cols, 1) - np.array(learned["mean"])) / np.array(learned["scale"])
        logit = learned["intercept"] + z @ np.array(learned["coef"])
        return 1 / (1 + np.exp(-logit)) >= spec["threshold"]
    rkey = f"{spec['recipe']}/{spec['method']}"
    verdict = np.ones(len(a.per_image.labels), dtype=bool)
    if spec.get("map") is not None:
        c, t = spec["map"]["criterion"], spec["map"]["threshold"]
        judge = ec.Judge(criterion=c, **({field[c]: t} if c in field else {}))
        verdict &= judge.from_scores(df[df["recipe"] == rkey].sort_values("position")).numpy()
    ev = spec.get("evidence")
    if ev is not None:
        tests = seed["evidence"][m][rkey][ev["region"]]
        kept, lost = np.array(tests["kept"], dtype=bool), np.array(tests["lost"], dtype=bool)
        verdict &= {"kept": kept, "lost": lost, "decisive": kept & lost}[ev["test"]]
    return verdict


@pytest.mark.slow
def test_rerun_reuses_cache_and_gives_identical_numbers(smoke, tmp_path):
    base, _, first = smoke
    # Remove one model's checkpoint: the re-run retrains it (same seed) and reuses the rest.
    key_dirs = list((base / "cache" / "checkpoints").iterdir())
    shutil.rmtree(key_dirs[0] / "focal-seed0")
    proc = run_sku(
        "--preset", "smoke", "--out", str(tmp_path / "again"), "--cache", str(base / "cache")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "results.json").read_text())

    def numbers(res: dict) -> tuple:
        # Wall times differ between runs; every other number must be identical.
        summary = {k: v for k, v in res["summary"].items() if not k.endswith("_seconds")}
        return without_times(res["seeds"]), summary

    assert numbers(again) == numbers(first)


@pytest.mark.slow
def test_classification_export_runs_the_classification_part(smoke, tmp_path, monkeypatch, capsys):
    base, _, _ = smoke
    shelf = next((base / "cache" / "data").glob("shelf-*[!l]"))  # the main export, not -control
    folder = tmp_path / "folder"
    coco = json.loads((shelf / "train" / "_annotations.coco.json").read_text())
    for split in ("train", "valid", "test"):
        coco = json.loads((shelf / split / "_annotations.coco.json").read_text())
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        owner = {a["image_id"]: cats[a["category_id"]] for a in coco["annotations"]}
        for img in coco["images"]:
            dst = folder / split / owner[img["id"]] / img["file_name"]
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shelf / split / img["file_name"], dst)
    proc = run_sku(
        "--preset",
        "smoke",
        "--data",
        str(folder),
        "--out",
        str(tmp_path / "cls"),
        "--cache",
        str(tmp_path / "cache"),
        "--set",
        "losses=[triplet,focal]",
        "--set",
        "methods=[gradcam]",  # nothing to score without boxes: one method is enough
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "has no boxes" in proc.stdout
    res = json.loads((tmp_path / "cls" / "results.json").read_text())
    rows = res["seeds"][0]["table1"]["rows"]
    assert [r["model"] for r in rows] == ["triplet", "focal"]
    assert all("hard_correct" not in r for r in rows)
    skipped = " ".join(x["step"] for x in res["seeds"][0]["skipped"])
    assert "feature judging" in skipped and "skipped feature judging" in proc.stdout
    # Without a validation split there is nothing to stop on: a clear error before training.
    shutil.rmtree(folder / "valid")
    code, out = sku_main(
        monkeypatch, capsys,
        "--preset", "smoke", "--data", str(folder), "--out", str(tmp_path / "nv"),
        "--cache", str(tmp_path / "cache"), "--set", "losses=[triplet]",
    )  # fmt: skip
    assert code == 2
    assert "has no validation split" in out and "valid/ (or val/)" in out
    assert not (tmp_path / "nv" / "results.json").exists()


def test_flexible_loss_on_a_classification_export_needs_extra_labels(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "folder"
    for split in ("train", "test"):
        (folder / split / "a").mkdir(parents=True)
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(folder / split / cls / "x.png")
    code, out = sku_main(
        monkeypatch, capsys,
        "--preset", "smoke", "--data", str(folder),
        "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 2
    assert "--extra-labels" in out
    assert not (tmp_path / "o" / "results.json").exists()


def test_config_overrides_and_errors(tmp_path):
    cfg = build_config("quick", overrides=["train.epochs=3", "seeds=[0, 1]"])
    assert cfg.train.epochs == 3 and cfg.seeds == [0, 1]
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  width: 0.5\nknn_k: 3\n")
    cfg = build_config("smoke", file=f)
    assert cfg.train.width == 0.5 and cfg.knn_k == 3 and cfg.data.image_size == 32
    with pytest.raises(ec.errors.ConfigurationError, match="train.epochs"):
        build_config("quick", overrides=["train.epochs=many"])
    with pytest.raises(ec.errors.ConfigurationError, match="unknown preset"):
        build_config("huge")
    with pytest.raises(ec.errors.ConfigurationError, match="key.sub=value"):
        build_config("quick", overrides=["epochs"])
    assert build_config("validity").seeds == [0, 1, 2]


def test_help(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        sku_main(monkeypatch, capsys, "--help")
    assert info.value.code == 0 and "--preset" in capsys.readouterr().out


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    """SIGKILL during training, run again: the result equals an uninterrupted run's."""
    import signal
    import time

    # One model (no control), one CAM method: training is what is interrupted here (the smoke
    # fixture covers the rest); Table 1 has no pairs to compare.
    args = ["--preset", "smoke", "--set", "train.epochs=6", "--set", "losses=[triplet]"]
    args += ["--set", "control=false", "--set", "methods=[gradcam]"]
    # The same thread count as run_sku: float reductions, hence the last bits, depend on it.
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}
    cache = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, str(SKU), *args, "--out", str(tmp_path / "a"), "--cache", str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    # Poll until the first checkpoint is written (or the run ends early, which fails below).
    while proc.poll() is None and not list(cache.glob("checkpoints/*/triplet-seed0/*.pt")):
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()  # SIGKILL
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished before the kill
    assert list(cache.glob("checkpoints/*/triplet-seed0/*.pt")), "no checkpoint before the kill"
    assert not (tmp_path / "a" / "results.json").exists()  # it really was interrupted
    resumed = run_sku(*args, "--out", str(tmp_path / "a"), "--cache", str(cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Run one after the other: two runs at once on 2 cores, 2 threads each, were slower.
    fresh = run_sku(*args, "--out", str(tmp_path / "b"), "--cache", str(tmp_path / "cache2"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    a = json.loads((tmp_path / "a" / "results.json").read_text())["seeds"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["seeds"]
    assert without_times(a) == without_times(b)


def test_without_pandas_the_benchmark_says_how_to_get_it():
    code = (
        "import sys, runpy; sys.modules['pandas'] = None; sys.argv = ['sku.py', '--help']; "
        f"runpy.run_path({str(SKU)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert "needs pandas" in proc.stderr and "make demo" in proc.stderr
