"""Smoke test of benchmarks/trust_speed.py: it runs on a tiny setting and its JSON adds up."""

from __future__ import annotations

import json

import pytest
import trust_speed


def test_trust_speed_tiny(tmp_path, capsys):
    out = tmp_path / "t.json"
    args = ["--images", "6", "--size", "32", "--steps", "2", "--repeats", "1", "--batch", "4"]
    assert trust_speed.main([*args, "--json", str(out)]) == 0
    assert "deletion+insertion" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["schema"] == "embedcam.trust_speed/1"
    assert data["forwards_per_run"] == 2 * 3 * 6
    assert set(data["seconds"]) == {
        "gradcam-maps",
        "deletion+insertion",
        "deletion+insertion+random",
    }
    assert all(v > 0 for v in data["seconds"].values())
    assert data["target_under_60s"] == (data["seconds"]["deletion+insertion"] < 60)


def test_trust_speed_refuses_bad_settings():
    with pytest.raises(SystemExit):
        trust_speed.main(["--steps", "0"])
