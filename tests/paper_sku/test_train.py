import io
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from paper_sku.knn import embed, evaluate, knn_predict
from paper_sku.model import PaperCNN
from paper_sku.sampler import PKSampler
from paper_sku.train import (
    BEST_NAME,
    CHECKPOINT_NAME,
    EpochStats,
    TrainConfig,
    _epoch_line,
    _plateau,
    build_model,
    l2_penalty,
    load_checkpoint,
    load_model,
    penalized_parameters,
    train,
)
from rich.console import Console
from torch.utils.data import Dataset, TensorDataset

from embedcam.errors import ConfigurationError, DataError, ShapeError


def prototypes_dataset(n_per_class: int, classes: int, amplitude: float, seed: int):
    """Smooth random class prototypes (4x4 noise upsampled to 32x32) plus unit pixel noise."""
    g = torch.Generator().manual_seed(1234)  # the same prototypes for train and test
    coarse = torch.rand(classes, 3, 4, 4, generator=g) - 0.5
    protos = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.arange(classes).repeat(n_per_class)
    noise = torch.randn(len(labels), 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(amplitude * protos[labels] + noise, labels)


def knn_accuracy(model, train_set, test_set, classes):
    gallery, gallery_labels = embed(model, train_set)
    query, query_labels = embed(model, test_set)
    pred = knn_predict(query, gallery, gallery_labels, k=5)
    return evaluate(pred, query_labels, classes).accuracy


CLASSES = 6
EXTRA = {c: (c // 3, c // 2) for c in range(CLASSES)}  # (category, group)


@pytest.fixture(scope="module")
def synthetic():
    return (
        prototypes_dataset(40, CLASSES, 0.6, seed=1),
        prototypes_dataset(20, CLASSES, 0.6, seed=2),
    )


@pytest.fixture(scope="module")
def untrained_accuracy(synthetic):
    torch.manual_seed(0)
    model = build_model(TrainConfig(image_size=32, width=0.25)).eval()
    return knn_accuracy(model, *synthetic, CLASSES)


@pytest.mark.parametrize("loss", ["triplet", "focal", "flexible"])
def test_each_loss_trains_to_high_knn_accuracy(loss, synthetic, untrained_accuracy):
    train_set, test_set = synthetic
    cfg = TrainConfig(
        loss=loss, image_size=32, width=0.25, p=CLASSES, k=4, epochs=4, sigma=0.5, progress=False
    )
    result = train(cfg, train_set, extra_labels=EXTRA)
    acc = knn_accuracy(result.model, train_set, test_set, CLASSES)
    # chance is 1/6; the untrained network's kNN is ~0.43; trained ~0.93 (measured)
    assert acc >= 0.8, acc
    assert acc >= untrained_accuracy + 0.3, (acc, untrained_accuracy)
    assert result.history[-1].active_fraction < result.history[0].active_fraction


class Interrupted(Exception):
    pass


class AugmentedDataset(Dataset):
    """Random augmentation from all three global RNGs, and an optional crash after N items."""

    def __init__(self, base: TensorDataset, crash_after: int | None = None):
        self.base, self.crash_after, self.calls = base, crash_after, 0
        self.labels = base.tensors[1]

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Interrupted(f"simulated crash at item {self.calls}")
        image, label = self.base[i]
        image = image + 0.05 * torch.randn_like(image)
        if random.random() < 0.5:
            image = image.flip(-1)
        image = image * float(np.random.uniform(0.9, 1.1))
        return {"image": image, "label": label}


def small_config(tmp_path, **overrides):
    base = dict(
        image_size=32, width=0.125, p=4, k=4, epochs=3, progress=False, seed=3,
        checkpoint_dir=tmp_path,
    )  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def test_interrupt_and_resume_equals_uninterrupted_run(tmp_path):
    data = prototypes_dataset(16, 4, 1.0, seed=5)  # 64 items, 4 batches of 16 per epoch
    full = train(small_config(tmp_path / "full"), AugmentedDataset(data))

    cfg = small_config(tmp_path / "resumed")
    with pytest.raises(Interrupted):
        train(cfg, AugmentedDataset(data, crash_after=2 * 64 + 20))  # dies inside epoch 3
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT_NAME)["epoch"] == 2
    resumed = train(cfg, AugmentedDataset(data))
    assert resumed.resumed_from == 2 and len(resumed.history) == 3

    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name, value in full_state.items():
        assert torch.equal(value, resumed_state[name]), name
    assert [h.loss for h in resumed.history] == [h.loss for h in full.history]
    assert [h.active_fraction for h in resumed.history] == [h.active_fraction for h in full.history]


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    runs = [
        train(small_config(None, epochs=1, seed=s, checkpoint_dir=None), AugmentedDataset(data))
        for s in (0, 0, 1)
    ]
    w = [r.model.head.fc2.weight for r in runs]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_resume_continues_to_more_epochs_and_skips_finished_runs(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    train(small_config(tmp_path, epochs=1), data)
    longer = train(small_config(tmp_path, epochs=2), data)
    assert longer.resumed_from == 1 and [h.epoch for h in longer.history] == [1, 2]
    done = train(small_config(tmp_path, epochs=2), data)
    assert done.resumed_from == 2 and len(done.history) == 2
    assert torch.equal(done.model.head.fc2.weight, longer.model.head.fc2.weight)
    fresh = train(small_config(tmp_path, epochs=1), data, resume=False)
    assert fresh.resumed_from == 0


def test_resume_with_a_different_config_raises(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    train(small_config(tmp_path, epochs=1), data)
    with pytest.raises(ConfigurationError, match=r"different config \(margin: 0.2 -> 0.5\)"):
        train(small_config(tmp_path, epochs=2, margin=0.5), data)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    train(small_config(tmp_path, epochs=1), data)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def failing_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("paper_sku.train.torch.save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(small_config(tmp_path, epochs=2), data)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1


def test_corrupt_or_missing_checkpoint_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="could not be read"):
        train(small_config(tmp_path), prototypes_dataset(8, 4, 1.0, seed=5))


def test_l2_penalty_covers_conv_and_linear_weights_only():
    torch.manual_seed(0)
    model = PaperCNN(width=0.125, in_size=32)
    params = penalized_parameters(model)
    assert len(params) == 7  # 5 convolutions + 2 linear layers; no biases, no BatchNorm
    assert all(p.ndim >= 2 for p in params)
    expected = 0.5 * 1e-3 * sum(float((p.detach().double() ** 2).sum()) for p in params)
    assert float(l2_penalty(model, 1e-3).detach()) == pytest.approx(expected, rel=1e-5)
    model.zero_grad()
    l2_penalty(model, 1e-3).backward()
    assert model.features.block0.bn.weight.grad is None
    assert model.head.fc1.bias.grad is None
    assert torch.allclose(model.head.fc1.weight.grad, 1e-3 * model.head.fc1.weight)


def test_progress_bar_shows_loss_active_fraction_and_throughput():
    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    cfg = TrainConfig(image_size=32, width=0.125, p=4, k=4, epochs=1)
    result = train(cfg, data, console=console)
    text = console.file.getvalue()
    assert "epoch 1/1" in text and "loss" in text and "active" in text and "img/s" in text
    stats = result.history[0]
    assert stats.num_images == 32 and stats.images_per_second > 0


def test_bad_config_and_data():
    with pytest.raises(ConfigurationError, match="invalid TrainConfig"):
        TrainConfig(p=1)
    with pytest.raises(ConfigurationError, match="invalid TrainConfig"):
        TrainConfig(los="focal")
    with pytest.raises(ConfigurationError, match="invalid TrainConfig"):
        TrainConfig(loss="arcface")
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    with pytest.raises(ConfigurationError, match="needs extra_labels"):
        train(TrainConfig(loss="flexible", image_size=32, width=0.125, p=4, k=4), data)
    with pytest.raises(ShapeError, match=r"training images must be \(B, 3, 64, 64\)"):
        train(TrainConfig(image_size=64, width=0.125, p=4, k=4, progress=False), data)
    with pytest.raises(DataError, match="empty"):
        train(TrainConfig(image_size=32, p=4, k=4), TensorDataset(torch.zeros(0, 3, 32, 32)))
    with pytest.raises(ConfigurationError, match="balance_level needs extra_labels"):
        train(TrainConfig(image_size=32, width=0.125, p=4, k=4, balance_level=0), data)
    quick = TrainConfig.quick(epochs=2)
    assert (quick.image_size, quick.width, quick.epochs) == (64, 0.25, 2)


def test_flexible_training_with_group_balanced_batches(monkeypatch):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    seen_groups = []
    original = PKSampler.__iter__

    def recording_iter(self):
        for batch in original(self):
            seen_groups.append({EXTRA4[int(data.tensors[1][i])][0] for i in batch})
            yield batch

    monkeypatch.setattr(PKSampler, "__iter__", recording_iter)
    cfg = TrainConfig(
        loss="flexible", image_size=32, width=0.125, p=2, k=4, epochs=1, balance_level=0,
        progress=False,
    )  # fmt: skip
    result = train(cfg, data, extra_labels=EXTRA4)
    assert len(result.history) == 1 and math.isfinite(result.history[0].loss)
    # p = 2 classes per batch over 2 categories: every batch holds one class of each category
    assert seen_groups and all(groups == {"x", "y"} for groups in seen_groups)


EXTRA4 = {0: ("x", "a"), 1: ("x", "b"), 2: ("x", "c"), 3: ("y", "d")}


def test_load_model_returns_the_trained_weights(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    result = train(small_config(tmp_path, epochs=1), data)
    model = load_model(tmp_path / CHECKPOINT_NAME)
    assert not model.training
    x = data.tensors[0][:4]
    with torch.no_grad():
        assert torch.equal(model(x), result.model(x))


def test_config_loads_from_yaml_and_json(tmp_path):
    (tmp_path / "c.yaml").write_text("loss: focal\nsigma: 0.5\nepochs: 3\n")
    (tmp_path / "c.json").write_text('{"loss": "flexible", "p": 4}')
    assert TrainConfig.load(tmp_path / "c.yaml") == TrainConfig(loss="focal", sigma=0.5, epochs=3)
    assert TrainConfig.load(tmp_path / "c.json") == TrainConfig(loss="flexible", p=4)
    (tmp_path / "bad.yaml").write_text("sigma: -1\n")
    with pytest.raises(ConfigurationError, match="sigma"):
        TrainConfig.load(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(DataError, match="must hold a mapping"):
        TrainConfig.load(tmp_path / "list.yaml")
    with pytest.raises(DataError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.yaml")


def _history(accs):
    return [
        EpochStats(
            epoch=i + 1, loss=0.1, penalty=0.0, active_fraction=0.5, images_per_second=1.0,
            seconds=1.0, num_images=16, valid_accuracy=a,
        )
        for i, a in enumerate(accs)
    ]  # fmt: skip


def test_plateau_rule_by_hand():
    cfg = TrainConfig(patience=2, progress=False)
    # best at epoch 2 (0.5); epochs 3 and 4 do not beat it: stop after epoch 4
    assert _plateau(_history([0.3, 0.5, 0.4, 0.5]), cfg) == (2, True)
    assert _plateau(_history([0.3, 0.5, 0.4]), cfg) == (2, False)
    # min_delta: 0.52 is not better than 0.5 + 0.05, so the best stays at epoch 2
    assert _plateau(
        _history([0.3, 0.5, 0.52, 0.51]), cfg.model_copy(update={"min_delta": 0.05})
    ) == (2, True)
    # min_epochs is a warm-up: epoch 1's 0.9 is neither kept nor a reason to stop; the best
    # is taken from epoch 3 on, and the stop comes `patience` epochs after it
    late = cfg.model_copy(update={"min_epochs": 3})
    assert _plateau(_history([0.9, 0.1, 0.2, 0.1]), late) == (3, False)
    assert _plateau(_history([0.9, 0.1, 0.2, 0.1, 0.2]), late) == (3, True)
    assert _plateau(_history([0.9, 0.1, 0.2, 0.3, 0.3, 0.3]), late) == (4, True)
    # a warm-up longer than the run: the last epoch counts
    short = late.model_copy(update={"epochs": 2})
    assert _plateau(_history([0.9, 0.1]), short) == (2, False)
    # without validation numbers the last epoch is the best and nothing stops
    assert _plateau(_history([None, None]), cfg) == (2, False)


def test_patience_stops_keeps_the_best_epoch_and_resumes_stopped(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    valid = prototypes_dataset(4, 4, 1.0, seed=6)
    cfg = small_config(tmp_path / "stop", epochs=8, patience=1, min_delta=0.2)
    result = train(cfg, data, valid=valid)
    accs = [h.valid_accuracy for h in result.history]
    assert all(a is not None for a in accs)
    assert result.stop_reason in ("plateau", "max_epochs")
    best, stopped = _plateau(result.history, cfg)
    assert result.best_epoch == best and stopped == (result.stop_reason == "plateau")
    # the returned model is the best epoch's: it reproduces that epoch's validation accuracy
    gallery, gl = embed(result.model, data)
    query, ql = embed(result.model, valid)
    acc = float((knn_predict(query, gallery, gl, k=5) == ql).float().mean())
    assert acc == pytest.approx(accs[result.best_epoch - 1])
    assert result.history[-1].effective_rank is not None
    assert 0.0 <= result.history[-1].mean_pairwise_cosine <= 1.0
    # load_model gives the same weights; a re-run trains nothing and returns them again
    loaded = load_model(tmp_path / "stop" / CHECKPOINT_NAME)
    again = train(cfg, data, valid=valid)
    assert again.resumed_from == len(result.history) and again.best_epoch == result.best_epoch
    for model in (loaded, again.model):
        assert torch.equal(model.head.fc2.weight, result.model.head.fc2.weight)


def test_validation_does_not_change_the_weights(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    valid = prototypes_dataset(4, 4, 1.0, seed=6)
    plain = train(small_config(None, epochs=2, checkpoint_dir=None), AugmentedDataset(data))
    checked = train(
        small_config(None, epochs=2, checkpoint_dir=None), AugmentedDataset(data), valid=valid
    )
    assert checked.best_epoch == 2 and checked.stop_reason == "epochs"
    assert torch.equal(plain.model.head.fc2.weight, checked.model.head.fc2.weight)


def test_patience_without_validation_or_missing_best_weights(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    with pytest.raises(ConfigurationError, match="patience needs a validation set"):
        train(small_config(tmp_path, patience=2), data)
    valid = prototypes_dataset(4, 4, 1.0, seed=6)
    cfg = small_config(tmp_path / "b", epochs=6, patience=1, min_delta=0.99)  # stops at 2
    first = train(cfg, data, valid=valid)
    assert first.stop_reason == "plateau" and first.best_epoch == 1
    (tmp_path / "b" / BEST_NAME).unlink()
    with pytest.raises(DataError, match="best epoch"):
        train(cfg, data, valid=valid)


def test_checkpoints_written_before_the_stopping_fields_still_resume(tmp_path):
    data = prototypes_dataset(8, 4, 1.0, seed=5)
    train(small_config(tmp_path, epochs=1), data)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    for key in ("patience", "min_epochs", "min_delta", "eval_k"):
        del ckpt["config"][key]  # as written by an older version
    torch.save(ckpt, tmp_path / CHECKPOINT_NAME)
    resumed = train(small_config(tmp_path, epochs=2), data)
    assert resumed.resumed_from == 1 and resumed.epochs == 2


def test_each_epoch_prints_one_line_and_flags_a_collapse():
    cfg = TrainConfig(epochs=30, embedding_dim=128)
    base = dict(epoch=3, loss=0.05, penalty=0.01, active_fraction=0.4, images_per_second=210.0,
                seconds=12.0, num_images=2624)  # fmt: skip
    assert _epoch_line(EpochStats(**base), cfg) == (
        "epoch 3/30: loss 0.0500, active triplets 0.40, 210 img/s"
    )
    healthy = EpochStats(**base, valid_accuracy=0.3, effective_rank=29.7, mean_pairwise_cosine=0.05)
    line = _epoch_line(healthy, cfg)
    assert "validation kNN accuracy 0.300, effective rank 29.7, mean cosine 0.05" in line
    assert "collapsing" not in line
    for erank, cos in ((3.3, 0.2), (30.0, 0.91)):
        h = EpochStats(**base, valid_accuracy=0.1, effective_rank=erank, mean_pairwise_cosine=cos)
        assert "(embeddings collapsing)" in _epoch_line(h, cfg)
    # Tiny embeddings: a rank of 1.5 of 2 dimensions is not a collapse.
    h = EpochStats(**base, valid_accuracy=0.9, effective_rank=1.5, mean_pairwise_cosine=0.0)
    assert "collapsing" not in _epoch_line(h, TrainConfig(embedding_dim=2))
