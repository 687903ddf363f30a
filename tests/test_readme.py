"""The README's usage example runs (so it can never rot), and the package exports what it says."""

from __future__ import annotations

import re
from pathlib import Path

import embedcam as ec

ROOT = Path(__file__).resolve().parents[1]


def test_readme_usage_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    res = namespace["res"]
    assert tuple(res.maps.shape) == (8, 96, 128)
    assert float(res.maps.min()) >= 0.0 and float(res.maps.max()) <= 1.0
    assert "torch.Size([8, 96, 128])" in capsys.readouterr().out


def test_public_names_exist():
    for name in ec.__all__:
        assert hasattr(ec, name), name
