"""Packaging and docstring examples: the wheel holds only the library; doctests run."""

from __future__ import annotations

import doctest
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import embedcam.cam.core
import embedcam.centroids
import embedcam.errors
import embedcam.targets

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module", [embedcam.errors, embedcam.targets, embedcam.centroids, embedcam.cam.core]
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_wheel_contains_only_the_library(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("embedcam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"embedcam", next(t for t in top if t.endswith(".dist-info"))}
    assert "embedcam/py.typed" in names
    assert "embedcam/cam/core.py" in names
    assert not any(n.startswith(("examples/", "benchmarks/", "tests/")) for n in names)
