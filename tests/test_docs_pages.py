"""The Python code blocks of the how-to pages run, in order, as a reader would run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Blocks that need several processes or GPUs are shown, not run; they say so themselves.
NOT_RUN = ("init_process_group",)


@pytest.mark.parametrize("page", ["audit.md"])
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    run = [b for b in blocks if not any(word in b for word in NOT_RUN)]
    assert len(run) >= 2
    namespace: dict = {}
    for i, block in enumerate(run):
        exec(compile(block, f"docs/{page}[{i}]", "exec"), namespace)
    assert (tmp_path / "audit" / "results.json").is_file()
    assert (tmp_path / "records" / "_manifest.json").is_file()
