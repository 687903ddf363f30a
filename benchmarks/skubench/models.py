"""Training the paper's CNN with each loss (and the control), cached and resumable per seed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from paper_sku.train import TrainConfig, TrainResult, train
from rich.console import Console
from rich.markup import escape

from embedcam.errors import DataError

from .config import SkuConfig
from .data import Data

#: The clean reference model's name (original triplet loss, no background shortcut).
CONTROL = "control"


@dataclass
class Trained:
    """One trained model.

    Attributes:
        name: Loss name or ``"control"``.
        seed: Training seed.
        result: The training result (the best epoch's model, its history).
        seconds: What this run spent on it (about 0 when the checkpoint cache had it).
    """

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
    """The ``paper_sku`` training config of one model (plateau stopping on the valid split).

    The synthetic control trains all ``epochs``: it is the reference of the shortcut check and
    learns the subtle glyph only after a flat stretch that a plateau rule mistakes for the end
    (with patience 5 it stopped at epoch 31 with test accuracy 0.81, against 1.00 after 40).
    """
    t = cfg.train
    return TrainConfig(
        loss="triplet" if name == CONTROL else name,
        margin=t.margin,
        sigma=t.sigma,
        distance=t.distance,
        margin_fn=t.flexible_margin_fn,
        image_size=cfg.data.image_size,
        width=t.width,
        p=t.p,
        k=t.k,
        epochs=t.epochs,
        patience=None if name == CONTROL else t.patience,
        min_epochs=t.min_epochs,
        min_delta=t.min_delta,
        eval_k=cfg.knn_k,
        lr=t.lr,
        weight_decay=t.weight_decay,
        seed=seed,
        device=cfg.device,
        checkpoint_dir=checkpoint_dir,
        progress=True,
    )


def train_all(
    cfg: SkuConfig, data: Data, cache: Path, seed: int, console: Console
) -> list[Trained]:
    """Train (or load from the checkpoint cache, or resume) every model for one seed.

    Each model trains until its validation kNN accuracy plateaus (``train.patience``) and the
    best epoch is kept; the validation split decides, never the test split. The cache folder is
    keyed by the data's content digest and every setting that changes training, so a changed
    export or setting trains anew instead of reusing stale models.
    """
    valid = data.splits.get("valid")
    if valid is None:
        raise DataError(
            f"{data.source} has no validation split: the benchmark stops training on the "
            "validation accuracy and calibrates on it (never on the test split); add a "
            "valid/ (or val/) split to the export"
        )
    out = []
    key = f"{data.digest}-{cfg.train_key()}"
    t = cfg.train
    for name in model_names(cfg, data):
        split = data.control_train if name == CONTROL else data.splits["train"]
        assert split is not None
        # the control trains all epochs (no plateau rule): its own folder name, so a cache
        # written when it still stopped on a plateau is never resumed under the other rule
        folder = f"{name}-all-epochs-seed{seed}" if name == CONTROL else f"{name}-seed{seed}"
        tc = train_config(cfg, name, seed, cache / "checkpoints" / key / folder)
        if name == CONTROL:
            console.print(f"[bold]training[/] {escape(name)} (seed {seed}; all {t.epochs} epochs)")
        else:
            warm = f"; epochs 1-{t.min_epochs - 1} warm up" if t.min_epochs > 1 else ""
            console.print(
                f"[bold]training[/] {escape(name)} (seed {seed}; up to {t.epochs} epochs, "
                f"stopping after {t.patience} without validation gain{warm})"
            )
        start = time.perf_counter()
        result = train(
            tc, split.dataset(), extra_labels=data.extra_labels, console=console,
            valid=valid.dataset(),
        )  # fmt: skip
        seconds = time.perf_counter() - start
        last = result.history[-1]
        best = result.history[result.best_epoch - 1]
        cached = " (from the checkpoint cache)" if result.resumed_from == result.epochs else ""
        console.print(
            f"  {escape(name)}: {result.epochs} epochs ({result.stop_reason}), kept epoch "
            f"{result.best_epoch}: validation accuracy {best.valid_accuracy:.3f}, effective rank "
            f"{best.effective_rank:.1f}, mean cosine {best.mean_pairwise_cosine:.2f}, active "
            f"triplets {last.active_fraction:.2f}; {result.train_seconds:.0f} s of training"
            + cached
        )
        out.append(Trained(name, seed, result, seconds))
    return out
