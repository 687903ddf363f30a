"""Malformed checkpoints, weight and config files: a DataError naming the file and the fix.

One test per defect of an adversarial review; each failed before its fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from paper_sku.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    build_model,
    load_checkpoint,
    load_model,
    train,
)
from skubench.config import build_config
from torch import nn
from torch.utils.data import TensorDataset

from embedcam.cli import _load_weights
from embedcam.errors import ConfigurationError, DataError

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **extra: object) -> TrainConfig:
    base = dict(image_size=32, width=0.125, p=2, k=2, epochs=1, progress=False)
    return TrainConfig(**{**base, "checkpoint_dir": tmp_path, **extra})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-epoch checkpoint of a tiny model (one batch of 4 images)."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.set_num_threads(1)
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]))
    train(_config(folder), data)
    return folder / CHECKPOINT_NAME


def _bad(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    return path


# 5 ------------------------------------------------------------------ paper_sku checkpoints


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"hello, not a checkpoint", r"not a file written by torch\.save"),
    ],
)
def test_empty_or_foreign_checkpoint_names_file_and_problem(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_truncated_checkpoint_names_file(tmp_path, trained):
    path = tmp_path / "checkpoint.pt"
    data = trained.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated or corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_with_missing_keys_or_wrong_types(tmp_path, trained):
    state = torch.load(trained, weights_only=True)
    with pytest.raises(DataError, match=r"keys \['model'\] are missing"):
        load_checkpoint(_bad(tmp_path, {k: v for k, v in state.items() if k != "model"}))
    with pytest.raises(DataError, match=r"'epoch' is 'ten', not an integer"):
        load_checkpoint(_bad(tmp_path, {**state, "epoch": "ten"}))
    with pytest.raises(DataError, match=r"'model' is not a state dict of tensors"):
        load_checkpoint(_bad(tmp_path, {**state, "model": [1, 2]}))
    with pytest.raises(DataError, match=r"holds a list"):
        load_checkpoint(_bad(tmp_path, [1, 2]))


@pytest.mark.parametrize("epoch", [10**9, -1, 2])
def test_checkpoint_claiming_impossible_epochs_is_refused(tmp_path, trained, epoch):
    state = torch.load(trained, weights_only=True)
    path = _bad(tmp_path, {**state, "epoch": epoch})
    with pytest.raises(DataError, match=rf"claims epoch {epoch}.*allows 0 to 1") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_resume_from_more_epochs_than_configured_is_refused(tmp_path, trained):
    state = torch.load(trained, weights_only=True)
    folder = tmp_path / "run"
    folder.mkdir()
    # a consistent checkpoint of 3 of 5 epochs, resumed with epochs=2: no silent skip
    cfg = {**state["config"], "epochs": 5}
    torch.save(
        {**state, "config": cfg, "epoch": 3, "history": state["history"] * 3},
        folder / CHECKPOINT_NAME,
    )
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(DataError, match=r"claims 3 trained epochs.*epochs=2") as info:
        train(_config(folder, epochs=2), data)
    assert str(folder / CHECKPOINT_NAME) in str(info.value)


def test_checkpoint_of_another_architecture_is_a_data_error(tmp_path, trained):
    state = torch.load(trained, weights_only=True)
    other = build_model(TrainConfig(**{**state["config"], "width": 0.25})).state_dict()
    path = _bad(tmp_path, {**state, "model": other})
    with pytest.raises(DataError, match=r"does not fit the model") as info:
        load_model(path)
    assert str(path) in str(info.value)


# 5 ------------------------------------------------------------------ CLI --weights


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"plain text", r"is not a file written by torch\.save"),
    ],
)
def test_cli_weights_empty_or_foreign(tmp_path, content, message):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        _load_weights(nn.Linear(2, 2), path)
    assert str(path) in str(info.value)


def test_cli_weights_truncated(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"truncated or corrupt"):
        _load_weights(nn.Linear(2, 2), path)


# 6 ------------------------------------------------------------------ config files


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.yaml", b"epochs: \xff\xfe", r"not UTF-8"),
        ("c.json", b"[" * 100_000, r"nested too deeply|not valid YAML/JSON"),
        ("c.yaml", b"[" * 100_000, r"nested too deeply|not valid YAML/JSON"),
        ("c.json", b'{"epochs": 3', r"not valid YAML/JSON"),
    ],
)
def test_train_config_file_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"seeds: [\xff]", r"not UTF-8"), (b"[" * 100_000, r"nested too deeply|cannot read")],
)
def test_benchmark_config_file_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message) as info:
        build_config("smoke", path)
    assert str(path) in str(info.value)
