"""Smoke test of benchmarks/speed.py --quick: it runs and its JSON has the documented schema.

Timings are not asserted (shared, noisy machines); the structure and internal consistency are.
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
CONFIGS = {
    "forward",
    "native-gradcam",
    "native-gradcam++",
    "native-hirescam",
    "embedcam-grad-cam",
    "embedcam-captum",
    "pgc-gradcam",
    "pgc-gradcam++",
    "captum-gradcam",
}
RATIOS = {
    "native_gradcam_over_forward": ("native-gradcam", "forward"),
    "native_gradcampp_over_forward": ("native-gradcam++", "forward"),
    "native_hirescam_over_forward": ("native-hirescam", "forward"),
    "native_gradcam_over_pgc": ("native-gradcam", "pgc-gradcam"),
    "native_gradcampp_over_pgc": ("native-gradcam++", "pgc-gradcam++"),
    "native_gradcam_over_captum": ("native-gradcam", "captum-gradcam"),
}


@pytest.mark.slow
def test_speed_quick_json_schema(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "speed.py"),
            "--quick",
            "--json",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "native_gradcam_over_pgc" in proc.stdout  # the rich report was printed
    data = json.loads(out.read_text())
    assert data["schema"] == "embedcam.speed/1"
    assert {"cpu", "cores", "torch_threads", "torch", "device"} <= set(data["machine"])
    assert data["settings"]["quick"] is True
    repeats = data["settings"]["repeats"]
    assert repeats == 2  # --quick: two timed repeats per config
    assert set(data["models"]) == {"paper_cnn", "resnet50"}
    for rec in data["models"].values():
        assert set(rec["configs"]) == CONFIGS
        rate = {}
        for name, c in rec["configs"].items():
            assert len(c["times_s"]) == repeats and all(t > 0 for t in c["times_s"])
            assert math.isclose(c["median_s"], statistics.median(c["times_s"]))
            assert math.isclose(c["images_per_s"], rec["batch"] / c["median_s"])
            rate[name] = c["images_per_s"]
        assert set(rec["ratios"]) == set(RATIOS)
        for key, (a, b) in RATIOS.items():
            assert math.isclose(rec["ratios"][key], rate[a] / rate[b])
        assert set(rec["targets_met"]) >= {"gradcam_ge_0.9x_forward", "ge_2x_pgc"}
    mem = data["models"]["paper_cnn"]["memory"]
    assert {"forward", "native-gradcam", "pgc-gradcam"} <= set(mem)
    for m in mem.values():
        assert m["peak_mb"] >= m["base_mb"] > 0 and m["extra_mb"] >= 0
    ratio = data["models"]["paper_cnn"]["memory_ratio_over_forward"]
    assert ratio["forward"] == 1.0
    e2e = data["end_to_end"]
    assert e2e["images"] == 100 and e2e["images_per_s"] > 0
    assert 0.0 <= e2e["mean_energy_in_box"] <= 1.0
    assert data["scoring"]["maps"] >= 500 and data["scoring"]["maps_per_s"] > 0
