"""Shared by the SKU benchmark tests."""

from __future__ import annotations

import json
from typing import Any


def without_times(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy of the per-seed results without wall times, which differ between runs."""
    seeds = json.loads(json.dumps(seeds))
    for s in seeds:
        for m in s["models"].values():
            m.pop("train_seconds")
            m.pop("run_seconds")
    return seeds
