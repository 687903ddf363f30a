"""Smoke test of benchmarks/dataset_speed.py --quick: it runs, its JSON has the documented schema.

Timings are never asserted (shared, noisy machines); the structure and internal consistency are.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PASSES = ("embed", "explain")


@pytest.mark.slow
def test_dataset_speed_quick_json_schema(tmp_path):
    out = tmp_path / "dataset_speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "dataset_speed.py"),
            "--quick",
            "--profile",
            "--json",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paper_cnn" in proc.stdout and "from 128 to 384 images" in proc.stdout  # rich report
    data = json.loads(out.read_text())
    assert data["schema"] == "embedcam.dataset_speed/1"
    machine = data["machine"]
    assert {"cpu", "cores", "torch_threads", "omp_num_threads", "num_workers", "torch"} <= set(
        machine
    )
    assert machine["torch_threads"] >= 1 and machine["num_workers"] == 0
    assert machine["load_avg_1min_start"] >= 0 and machine["load_avg_1min_end"] >= 0
    settings = data["settings"]
    assert settings["quick"] is True and settings["maps"] == "none"
    repeats = settings["repeats"]
    assert repeats == 1
    target = settings["target_ratio"]
    assert target == 0.8

    assert set(data["models"]) == {"paper_cnn", "resnet50"}
    for name, rec in data["models"].items():
        assert rec["images"] > 0 and rec["batch"] > 0 and rec["input_size"] > 0, name
        assert rec["rows"] == rec["images"]  # one recipe: one record per image
        assert rec["recipe"].startswith("centroid/") and rec["recipe"].endswith("/gradcam")
        prof = rec["profile"]  # --profile: cProfile parts of one call, interleaved steps
        assert prof["explain_dataset_s"] > 0 and prof["embed_pass_s"] > 0
        assert any(k.startswith("CAM") for k in prof["parts_s"]) and "other" in prof["parts_s"]
        assert set(prof["parts_pct"]) == set(prof["parts_s"])
        assert all(v >= 0 for v in prof["parts_s"].values())
        comp = rec["components"]
        ms = comp["ms_per_batch"]
        assert {"forward", "cam", "score_maps", "judge", "data_loading"} <= set(ms)
        assert all(v > 0 for v in ms.values())
        scoring = sum(v for k, v in ms.items() if k not in ("forward", "cam", "data_loading"))
        assert math.isclose(comp["scoring_ms_per_batch"], scoring)
        assert math.isclose(
            comp["predicted_ratio"],
            (ms["data_loading"] + ms["forward"]) / (ms["data_loading"] + ms["cam"] + scoring),
        )
        rate = {}
        for p in PASSES:
            c = rec[p]
            assert len(c["times_s"]) == repeats and all(t > 0 for t in c["times_s"])
            assert math.isclose(c["median_s"], statistics.median(c["times_s"]))
            assert math.isclose(c["images_per_s"], rec["images"] / c["median_s"])
            rate[p] = c["images_per_s"]
        assert rec["ratio"] > 0
        assert math.isclose(rec["ratio"], rate["explain"] / rate["embed"])
        cpu = {p: rec[p]["median_cpu_s"] for p in PASSES}
        for p in PASSES:
            assert len(rec[p]["cpu_times_s"]) == repeats and cpu[p] > 0
            assert math.isclose(cpu[p], statistics.median(rec[p]["cpu_times_s"]))
        assert math.isclose(rec["cpu_ratio"], cpu["embed"] / cpu["explain"])
        assert rec["paired_ratio"] > 0
        assert rec["target_met"] is (rec["ratio"] >= target)
    assert data["models"]["paper_cnn"]["layer"] == "features.block4.relu"
    assert data["models"]["resnet50"]["layer"] == "layer4"

    mem = data["memory"]
    assert mem["images"] == 384 and mem["rows"] == 384 and mem["parts"] >= 1
    assert mem["seconds"] > 0 and math.isclose(mem["images_per_s"], mem["images"] / mem["seconds"])
    curve = mem["curve"]
    assert len(curve) >= 3
    seen = [c["images"] for c in curve]
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == mem["images"]
    for c in curve:
        assert c["rss_mb"] > 0 and c["peak_mb"] > 0
    peaks = [c["peak_mb"] for c in curve]
    assert peaks == sorted(peaks)  # a peak so far never decreases
    ref = next(c for c in curve if c["images"] == mem["reference_images"])
    end = curve[-1]
    assert math.isclose(
        mem["rss_growth_pct"], 100 * (end["rss_mb"] - ref["rss_mb"]) / ref["rss_mb"]
    )
    assert math.isclose(
        mem["peak_growth_pct"], 100 * (end["peak_mb"] - ref["peak_mb"]) / ref["peak_mb"]
    )
    early = [c["rss_mb"] for c in curve if c["images"] in mem["early_window_images"]]
    late = [c["rss_mb"] for c in curve if c["images"] in mem["late_window_images"]]
    assert early and late and mem["late_window_images"][-1] == mem["images"]
    assert math.isclose(mem["early_median_rss_mb"], statistics.median(early))
    assert math.isclose(mem["late_median_rss_mb"], statistics.median(late))
    assert math.isclose(
        mem["median_rss_growth_pct"],
        100 * (statistics.median(late) - statistics.median(early)) / statistics.median(early),
    )
