"""Shared by the SKU benchmark tests."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load_sku() -> Any:
    """benchmarks/sku.py as a module, loaded on first use (not when a test file is imported)."""
    spec = importlib.util.spec_from_file_location("sku_main", ROOT / "benchmarks" / "sku.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_times(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy of the per-seed results without wall times, which differ between runs."""
    seeds = json.loads(json.dumps(seeds))
    for s in seeds:
        for m in s["models"].values():
            m.pop("train_seconds")
            m.pop("run_seconds")
    return seeds
