"""Docstring examples: pytest collects and runs them (``--doctest-modules``); none is lost.

The examples themselves run as pytest items of ``embedcam/`` and ``examples/`` (see the
``[tool.pytest.ini_options]`` of pyproject.toml); this file checks that the configuration
collects them and that the modules documented with examples keep them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

#: Modules (a package counts with its sub-modules) whose docstrings hold runnable examples.
DOCUMENTED = [
    "embedcam.boxes",
    "embedcam.cam.core",
    "embedcam.centroids",
    "embedcam.classify",
    "embedcam.cli",
    "embedcam.datasets._segmentation",
    "embedcam.datasets.composite",
    "embedcam.datasets.index",
    "embedcam.datasets.roboflow",
    "embedcam.datasets.synthetic",
    "embedcam.datasets.torch_dataset",
    "embedcam.embedding",
    "embedcam.errors",
    "embedcam.interventions",
    "embedcam.masks",
    "embedcam.pipeline",
    "embedcam.recipe",
    "embedcam.report.document",
    "embedcam.report.figures",
    "embedcam.scoring",
    "embedcam.stats",
    "embedcam.targets",
]


def _examples(module_name: str) -> list[doctest.Example]:
    """The examples doctest runs (``+SKIP`` ones left out) of a module or package."""
    module = importlib.import_module(module_name)
    modules = [module]
    if hasattr(module, "__path__"):  # a package: its sub-modules too
        for info in pkgutil.walk_packages(module.__path__, f"{module_name}."):
            modules.append(importlib.import_module(info.name))
    return [
        e
        for m in modules
        for t in doctest.DocTestFinder().find(m)
        for e in t.examples
        if not e.options.get(doctest.SKIP)
    ]


def test_pytest_collects_the_docstring_examples(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getoption("doctestmodules") is True
    assert {"embedcam", "tests", "examples"} <= set(pytestconfig.getini("testpaths"))
    flags = set(pytestconfig.getini("doctest_optionflags"))
    assert flags == {"ELLIPSIS", "NORMALIZE_WHITESPACE"}
    # scripts and generated folders are never imported for their docstrings
    assert {"benchmarks", "outputs", "site"} <= set(pytestconfig.getini("norecursedirs"))


@pytest.mark.parametrize("module_name", DOCUMENTED)
def test_documented_modules_keep_their_examples(module_name: str) -> None:
    # What the hand-written runners checked (``testmod(...).attempted > 0``): an example that
    # fails is fixed, not deleted.
    assert _examples(module_name), f"{module_name} has no runnable docstring example"


def test_a_skipped_example_is_not_counted(tmp_path, monkeypatch) -> None:
    # The guard above must not count +SKIP examples: a module whose only example is skipped has
    # no runnable example.
    (tmp_path / "skipped_mod.py").write_text(
        'def f():\n    """Example.\n\n    >>> f()  # doctest: +SKIP\n    1\n    """\n\n\n'
        'def g():\n    """Example.\n\n    >>> g()\n    2\n    """\n    return 2\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = [e.source for e in _examples("skipped_mod")]
    assert sources == ["g()\n"]
