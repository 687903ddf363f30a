import doctest
import importlib

import pytest

MODULES = ["model", "losses", "mining", "sampler", "train", "knn"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"paper_sku.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"paper_sku.{name} has no examples"
    assert result.failed == 0
