"""Packaging: the wheel holds only the library with complete metadata, ``import embedcam`` is
light and lazy, the house tooling agrees on one ruff, docstring examples run, reprs stay short."""

from __future__ import annotations

import ast
import email.parser
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a clean copy of the sources (a stale ``build/`` cannot leak into it)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "embedcam", src / "embedcam", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("embedcam-*.whl")
    return path


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode())


def test_wheel_contains_only_the_library(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"embedcam", next(t for t in top if t.endswith(".dist-info"))}
    assert "embedcam/py.typed" in names
    assert "embedcam/cam/core.py" in names
    assert not any(n.startswith(("examples/", "benchmarks/", "tests/")) for n in names)
    # the docs' figure script is docs/figures.py, not a command of the library
    assert "embedcam/datasets/__main__.py" not in names
    assert "embedcam/__main__.py" in names  # python -m embedcam is the CLI


def test_wheel_version_is_the_package_version(wheel):
    import embedcam

    meta = _metadata(wheel)
    assert meta["Version"] == embedcam.__version__ == "0.1.0"
    assert wheel.name.startswith(f"embedcam-{embedcam.__version__}-")
    # the version is written once, in embedcam/__init__.py
    assert not re.search(r'^version\s*=\s*"', (ROOT / "pyproject.toml").read_text(), re.M)


def test_wheel_licence_is_an_spdx_expression(wheel):
    meta = _metadata(wheel)
    assert meta["License-Expression"] == "MIT"
    assert meta["License"] is None  # the deprecated free-text field is not written


# import name -> distribution name, for every third-party module the library imports
DISTRIBUTIONS = {
    "torch": "torch",
    "torchvision": "torchvision",
    "captum": "captum",
    "pytorch_grad_cam": "grad-cam",
    "numpy": "numpy",
    "scipy": "scipy",
    "skimage": "scikit-image",
    "PIL": "pillow",
    "pydantic": "pydantic",
    "rich": "rich",
    "matplotlib": "matplotlib",
    "yaml": "pyyaml",
    "pyarrow": "pyarrow",
    "pandas": "pandas",
}
# optional: imported only behind a clear error that says which extra to install
EXTRAS = {"pandas": "pandas"}


def _third_party_imports() -> set[str]:
    found = set()
    for path in (ROOT / "embedcam").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"embedcam", "__future__"}


def test_every_imported_distribution_is_declared(wheel):
    imported = _third_party_imports()
    unknown = imported - set(DISTRIBUTIONS)
    assert not unknown, f"map these imports to their distributions in DISTRIBUTIONS: {unknown}"
    requires = _metadata(wheel).get_all("Requires-Dist")
    base, extra = set(), set()
    for req in requires:
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
        m = re.search(r"extra == \"(\w+)\"", req)
        (extra if m else base).add(name if not m else (m.group(1), name))
    for module in sorted(imported):
        dist = DISTRIBUTIONS[module]
        if module in EXTRAS:
            assert (EXTRAS[module], dist) in extra, f"{dist} is not in the [{EXTRAS[module]}] extra"
        else:
            assert dist in base, f"embedcam imports {module} but does not depend on {dist}"
    assert {"scipy", "pillow"} <= base


# -- import cost ----------------------------------------------------------------------------------


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return proc.stdout


HEAVY = ("scipy", "skimage", "pyarrow", "captum", "pytorch_grad_cam", "matplotlib", "pandas")


def test_import_embedcam_loads_no_heavy_dependency():
    code = (
        "import sys, json, embedcam; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(json.loads(_run(code)))
    assert "embedcam" in loaded
    assert loaded.isdisjoint(HEAVY), loaded & set(HEAVY)


def test_public_names_resolve_lazily_and_all_at_once():
    code = """
import json, sys, types
import embedcam as ec
before = "embedcam.scoring" in sys.modules
fn = ec.judge_features
out = {
    "before": before,
    "after": "embedcam.scoring" in sys.modules,
    "fn": fn.__module__.startswith("embedcam.scoring"),
    "missing_from_dir": sorted(set(ec.__all__) - set(dir(ec))),
}
ns = {}
exec("from embedcam import *", ns)
out["star_missing"] = sorted(set(ec.__all__) - set(ns))
import embedcam.audit  # the sub-module must not hide the function of the same name
out["audit"] = type(ec.audit).__name__
out["recipe"] = ec.Recipe.__module__
out["cam"] = isinstance(ec.cam, types.ModuleType)
try:
    ec.no_such_name
except AttributeError as err:
    out["error"] = str(err)
print(json.dumps(out))
"""
    out = json.loads(_run(code))
    assert out == {
        "before": False,
        "after": True,
        "fn": True,
        "missing_from_dir": [],
        "star_missing": [],
        "audit": "function",
        "recipe": "embedcam.recipe",
        "cam": True,
        "error": "module 'embedcam' has no attribute 'no_such_name'",
    }


@pytest.mark.parametrize(
    "name", ["audit", "compare", "Judge", "EmbeddingCAM", "darken", "stats", "datasets"]
)
def test_from_import_after_the_submodule_was_imported(name):
    # the eager package bound each name once; the lazy one must give the same objects
    import embedcam
    import embedcam.audit

    value = getattr(embedcam, name)
    exec_ns: dict = {}
    exec(f"from embedcam import {name}", exec_ns)
    assert exec_ns[name] is value
    assert callable(embedcam.audit) and embedcam.audit.__module__ == "embedcam.audit"


def test_sku_help_does_not_import_torch():
    code = (
        "import runpy, sys; sys.argv = ['sku.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('benchmarks/sku.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'LIGHT')"
    )
    out = _run(code)
    assert "--preset {paper,quick,real,smoke,validity}" in out
    assert out.rstrip().endswith("LIGHT")


# -- house tooling --------------------------------------------------------------------------------


def test_one_ruff_version_everywhere():
    installed = importlib.metadata.version("ruff")
    pin = re.search(r'"ruff==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    rev = re.search(r"astral-sh/ruff-pre-commit\n\s+rev: v(\S+)", hooks).group(1)
    assert pin == rev == installed
    assert "id: ruff-format" in hooks and "id: mypy" in hooks


def test_changelog_has_unreleased_and_the_current_version():
    import embedcam

    text = (ROOT / "CHANGELOG.md").read_text()
    heads = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert heads[:2] == ["Unreleased", embedcam.__version__]


# -- short reprs ----------------------------------------------------------------------------------


def _index(n: int, root: Path):
    from embedcam.datasets import DatasetIndex, Sample

    samples = [
        Sample(
            path=root / f"{i}.jpg",
            split=("train", "valid", "test")[i % 3],
            label=i % 2,
            class_name="ab"[i % 2],
        )
        for i in range(n)
    ]
    return DatasetIndex.build(
        root=root, format="folder", classes=["a", "b"], samples=samples, has_boxes=False
    )


def test_dataset_index_repr_is_one_exact_line():
    index = _index(4, Path("/data/shelf"))
    expected = (
        "DatasetIndex(root='/data/shelf', format='folder', classes=2, samples=4, "
        "splits={'train': 2, 'valid': 1, 'test': 1}, boxes=False, additional_labels=[])"
    )
    assert repr(index) == str(index) == expected


def test_dataset_index_repr_stays_short_for_5000_samples():
    import rich.pretty

    index = _index(5000, Path("/data/shelf"))
    text = repr(index)
    assert "\n" not in text and len(text) < 200
    assert "samples=5000" in text and "'train': 1667" in text and "'test': 1666" in text
    # rich (and devtools) print pydantic models field by field: the summary, not 5,000 samples
    assert len(rich.pretty.pretty_repr(index)) < 300


# -- the docs' figures ----------------------------------------------------------------------------


def test_docs_figures_script_writes_the_two_grids(tmp_path):
    from PIL import Image

    from embedcam.datasets import generate_shelf, intervention_grid, preview_grid

    subprocess.run(
        [sys.executable, str(ROOT / "docs" / "figures.py"), str(tmp_path / "img")],
        check=True,
        capture_output=True,
    )
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    index = generate_shelf(tmp_path / "shelf", figures.CONFIG)
    shelf = np.asarray(Image.open(tmp_path / "img" / "synthetic_shelf.png"))
    grid = np.asarray(Image.open(tmp_path / "img" / "interventions.png"))
    # 2 rows x 8 columns of 96-pixel tiles 2 pixels apart; 4 rows x 5 columns of 80
    assert shelf.shape == (2 * 98 + 2, 8 * 98 + 2, 3)
    assert grid.shape == (4 * 82 + 2, 5 * 82 + 2, 3)
    assert np.array_equal(shelf, preview_grid(index, n=16, cols=8, tile=96))
    assert np.array_equal(grid, intervention_grid(index, n=4, tile=80))
