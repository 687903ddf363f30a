"""Smoke test of benchmarks/pair_speed.py --quick: it runs and its JSON is self-consistent.

Timings are not asserted (shared, noisy machines); the structure and the arithmetic are.
"""

from __future__ import annotations

import json
import math

import pair_speed
import pytest


@pytest.mark.slow
def test_pair_speed_quick(tmp_path, capsys):
    out = tmp_path / "pairs.json"
    assert pair_speed.main(["--quick", "--json", str(out), "--models", "paper_cnn"]) == 0
    assert "explain_pair / single side" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema"] == "embedcam.pair_speed/1"
    assert data["settings"] == {"quick": True, "repeats": 2}
    rec = data["pairs"]["paper_cnn"]
    assert set(rec["configs"]) == set(pair_speed.PAIR_CONFIGS)
    n = rec["pairs"]
    for cfg, c in rec["configs"].items():
        assert c["repeats"] == 2 and c["median_s"] > 0
        explained = n if cfg == "single-side" else 2 * n
        assert math.isclose(c["images_per_s"], explained / c["median_s"])
    single = rec["configs"]["single-side"]["median_s"]
    assert math.isclose(
        rec["pair_over_single"], rec["configs"]["explain-pair"]["median_s"] / single
    )
    assert rec["target_pair_le_2.2x_single"] == (rec["pair_over_single"] <= 2.2)
    p = data["point_to_point"]
    assert set(p["configs"]) == set(pair_speed.P2P_CONFIGS)
    assert math.isclose(p["pairs_per_s"], p["images_per_s"] / 2)
    assert p["input_size"] == 224 and p["model"] == "resnet50"


def test_pair_speed_rejects_bad_repeats():
    with pytest.raises(SystemExit):
        pair_speed.main(["--repeats", "0"])
