"""Training the paper's CNN with each loss (and the control), cached and resumable per seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paper_sku.train import TrainConfig, TrainResult, train
from rich.console import Console

from .config import SkuConfig
from .data import Data

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


def train_all(
    cfg: SkuConfig, data: Data, cache: Path, seed: int, console: Console
) -> list[Trained]:
    """Train (or load from the checkpoint cache, or resume) every model for one seed."""
    import time

    out = []
    key = f"{cfg.data_key()}-{cfg.train_key()}"
    for name in model_names(cfg, data):
        split = data.control_train if name == CONTROL else data.splits["train"]
        assert split is not None
        tc = train_config(cfg, name, seed, cache / "checkpoints" / key / f"{name}-seed{seed}")
        console.print(f"[bold]training[/] {name} (seed {seed}, {tc.epochs} epochs)")
        start = time.perf_counter()
        result = train(tc, split.dataset(), extra_labels=data.extra_labels, console=console)
        out.append(Trained(name, seed, result, time.perf_counter() - start))
    return out
