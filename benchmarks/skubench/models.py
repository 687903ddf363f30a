"""Training the paper's CNN with each loss (and the control), cached and resumable per seed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from paper_sku.knn import embed, knn_predict
from paper_sku.train import TrainConfig, TrainResult, train
from rich.console import Console

from .config import SkuConfig
from .data import Data, Split

#: The clean reference model's name (original triplet loss, no background shortcut).
CONTROL = "control"


@dataclass
class Trained:
    """One trained model."""

    name: str
    seed: int
    result: TrainResult
    seconds: float


def model_names(cfg: SkuConfig, data: Data) -> list[str]:
    """The rows of every table: the configured losses, then the control (synthetic only)."""
    names = list(cfg.losses)
    if data.control_train is not None:
        names.append(CONTROL)
    return names


def train_config(cfg: SkuConfig, name: str, seed: int, checkpoint_dir: Path) -> TrainConfig:
    """The ``paper_sku`` training config of one model."""
    t = cfg.train
    return TrainConfig(
        loss="triplet" if name == CONTROL else name,
        margin=t.margin,
        sigma=t.sigma,
        margin_fn=t.flexible_margin_fn,
        image_size=cfg.data.image_size,
        width=t.width,
        p=t.p,
        k=t.k,
        epochs=t.epochs,
        lr=t.lr,
        weight_decay=t.weight_decay,
        seed=seed,
        device=cfg.device,
        checkpoint_dir=checkpoint_dir,
        progress=True,
    )


def valid_accuracy(result: TrainResult, train: Split, valid: Split, k: int) -> float:
    """kNN accuracy of a model on the validation split against its training gallery."""
    gallery, gallery_labels = embed(result.model, train.dataset())
    query, _ = embed(result.model, valid.dataset())
    pred = knn_predict(query, gallery, gallery_labels, k=k)
    return float((pred == valid.labels).float().mean())


def train_all(
    cfg: SkuConfig, data: Data, cache: Path, seed: int, console: Console
) -> list[Trained]:
    """Train (or load from the checkpoint cache, or resume) every model for one seed.

    A model whose validation kNN accuracy stays below ``train.converged_accuracy`` after
    ``train.epochs`` is trained on, ``train.extend_epochs`` at a time, up to
    ``train.max_epochs``: metric-learning runs on subtle cues plateau for a seed-dependent
    number of epochs before they learn the cue (FINDINGS section 2). Continuing from the
    checkpoint is deterministic, so a re-run reproduces the same weights.
    """
    out = []
    key = f"{cfg.data_key()}-{cfg.train_key()}"
    valid = data.splits.get("valid")  # without one, no stopping rule (never look at the test)
    t = cfg.train
    for name in model_names(cfg, data):
        split = data.control_train if name == CONTROL else data.splits["train"]
        assert split is not None
        tc = train_config(cfg, name, seed, cache / "checkpoints" / key / f"{name}-seed{seed}")
        console.print(f"[bold]training[/] {name} (seed {seed}, {tc.epochs} epochs)")
        start = time.perf_counter()
        result = train(tc, split.dataset(), extra_labels=data.extra_labels, console=console)
        acc = valid_accuracy(result, split, valid, cfg.knn_k) if valid is not None else 1.0
        while acc < t.converged_accuracy and len(result.history) < t.max_epochs:
            epochs = min(len(result.history) + t.extend_epochs, t.max_epochs)
            console.print(
                f"  {name}: validation accuracy {acc:.2f} < {t.converged_accuracy}: "
                f"training on to {epochs} epochs"
            )
            tc = tc.model_copy(update={"epochs": epochs})
            result = train(tc, split.dataset(), extra_labels=data.extra_labels, console=console)
            acc = valid_accuracy(result, split, valid, cfg.knn_k)
        out.append(Trained(name, seed, result, time.perf_counter() - start))
    return out
