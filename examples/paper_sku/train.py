"""Training the paper's CNN with a triplet loss: config, loop, atomic checkpoints, exact resume.

Choices where the paper is silent (and why):

- **Optimiser**: Adam, learning rate 1e-3 - trains the quick preset reliably (measured on the
  synthetic shelf).
- **Batches**: P x K = 8 x 8 from [`PKSampler`][paper_sku.sampler.PKSampler]; one epoch is
  ``N // (P * K)`` batches unless ``batches_per_epoch`` says otherwise.
- **Tikhonov regularisation** (the paper's L2 regularisation) is an *explicit* penalty
  ``(weight_decay / 2) * sum ||W||^2`` over the weights of convolutions and linear layers, added to
  the loss. Biases and BatchNorm parameters are not penalised: shrinking them does not limit the
  model's capacity but shifts activations, and BatchNorm's scale is undone by the next
  normalisation anyway. Strength ``weight_decay = 1e-4``: weak enough not to slow the quick
  preset, strong enough to keep the flattened FC weights bounded. The penalty goes through Adam
  like the loss (classic L2, not decoupled AdamW decay), which is what "regularisation term"
  means.
- **Determinism**: ``train`` seeds torch, numpy and ``random`` with ``config.seed`` (like
  Lightning's ``seed_everything``), loads data in the main process, and the sampler draws from its
  own ``(seed, epoch)`` generator. On CPU the same config and data give the same weights.
- **Stopping** (``patience``): with a validation set, every epoch ends with the kNN accuracy of
  the validation images against the training images (``eval_k`` neighbours) and the embedding's
  health (effective rank, mean pairwise cosine). Training stops when the accuracy has not
  improved by more than ``min_delta`` for ``patience`` epochs, or at ``epochs``, and the model of
  the best epoch is returned. Epochs before ``min_epochs`` are a warm-up: they neither stop
  training nor count as the best (as Keras' ``start_from_epoch``), so a model whose validation
  accuracy saturates at once (a planted shortcut does that) is still trained for ``min_epochs``
  and never handed back after one epoch. On real photos the useful
  number of epochs varies by loss and seed, and an absolute accuracy target would either stop
  too early or never. The evaluation runs under a forked RNG, so the weights of every epoch are
  those of a run without validation.
- **Checkpoints**: after every epoch ``<checkpoint_dir>/checkpoint.pt`` is replaced atomically
  (temporary file in the same directory, ``fsync``, ``os.replace``): a crash leaves either the
  previous or the new checkpoint, never a torn one. It holds the model, the optimiser, the
  history, the config, the sampler state, the stopping state and the torch / numpy / Python RNG
  states taken at the end of the epoch, so ``resume=True`` continues exactly where an
  uninterrupted run would be. Only the last epoch is kept (a full-width model with Adam state is
  ~80 MB), plus ``best.pt``, the weights of the best validation epoch.

Examples:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from paper_sku.train import TrainConfig, train
    >>> data = TensorDataset(torch.rand(32, 3, 32, 32), torch.arange(4).repeat(8))
    >>> cfg = TrainConfig(image_size=32, width=0.125, p=4, k=4, epochs=1, progress=False)
    >>> result = train(cfg, data)
    >>> len(result.history), result.history[0].epoch
    (1, 1)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from embedcam.atomic import atomic_torch_save
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError, ShapeError
from paper_sku.losses import (
    ExtraLabels,
    FlexibleMarginTripletLoss,
    FocalTripletLoss,
    TripletLoss,
    TripletLossBase,
)
from paper_sku.margins import _encode_table
from paper_sku.mining import BatchHardMiner, SemiHardMiner, TripletMiner
from paper_sku.model import PaperCNN
from paper_sku.reducers import MeanActiveReducer, MeanReducer, TripletReducer
from paper_sku.sampler import PKSampler

__all__ = [
    "TrainConfig",
    "EpochStats",
    "TrainResult",
    "build_model",
    "build_loss",
    "l2_penalty",
    "penalized_parameters",
    "dataset_labels",
    "train",
    "load_checkpoint",
    "load_model",
    "CHECKPOINT_NAME",
    "BEST_NAME",
]

#: File name of the checkpoint inside ``TrainConfig.checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
#: File name of the best epoch's weights inside ``TrainConfig.checkpoint_dir``.
BEST_NAME = "best.pt"

# Fields that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset({"epochs", "progress", "device", "checkpoint_dir"})


class TrainConfig(BaseModel):
    """Training settings (pydantic; build from a dict, YAML or JSON).

    Defaults are the paper's model (128 px, width 1.0) with the choices of the module docstring;
    [`quick`][paper_sku.train.TrainConfig.quick] gives the fast CPU preset (64 px, width 0.25).

    Attributes:
        loss: ``"triplet"``, ``"focal"`` or ``"flexible"`` (needs ``extra_labels`` in ``train``).
        margin: Margin (base margin for ``"flexible"``) on the loss's scale.
        sigma: Focal kernel width (``"focal"`` and ``"flexible"``).
        margin_fn: ``"linear"`` or ``"log"`` growth of the flexible margin.
        difference: ``"hierarchical"`` or ``"count"`` reading of the difference degree.
        distance: ``"squared"`` or ``"euclidean"``.
        miner: ``"semihard"`` (TensorFlow), ``"semihard-pml"`` or ``"batch-hard"``.
        image_size: Input size of the square images (>= 32).
        width: Width multiplier of the CNN.
        embedding_dim: Embedding size.
        p: Classes per batch.
        k: Images per class per batch.
        batches_per_epoch: Batches per epoch; default ``N // (p * k)``.
        balance_level: Column of ``extra_labels`` whose groups the sampler balances; None = off.
        epochs: Number of epochs (the maximum when ``patience`` is set).
        patience: Stop after this many epochs without a validation improvement (needs a
            ``valid`` set in [`train`][paper_sku.train.train]); None trains all ``epochs``.
        min_epochs: The warm-up: epochs before this one neither stop training nor can be kept
            as the best, so at least ``min_epochs + patience`` epochs run (fewer only when
            ``epochs`` is smaller).
        min_delta: The validation accuracy must rise by more than this to count as better.
        eval_k: Neighbours of the validation kNN classifier.
        lr: Adam learning rate.
        weight_decay: Strength of the explicit L2 penalty ``(wd / 2) * sum ||W||^2``.
        seed: Seed of every RNG.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        checkpoint_dir: Where ``checkpoint.pt`` is written each epoch; None = no checkpoints.
        progress: Show rich progress bars.

    Raises:
        ConfigurationError: If a field has the wrong type or value (wraps pydantic's error).
    """

    model_config = ConfigDict(extra="forbid")

    loss: Literal["triplet", "focal", "flexible"] = "triplet"
    margin: float = Field(0.2, gt=0)
    sigma: float = Field(1.0, gt=0)
    margin_fn: Literal["linear", "log"] = "linear"
    difference: Literal["hierarchical", "count"] = "hierarchical"
    distance: Literal["squared", "euclidean"] = "squared"
    miner: Literal["semihard", "semihard-pml", "batch-hard"] = "semihard"
    image_size: int = Field(128, ge=32)
    width: float = Field(1.0, gt=0)
    embedding_dim: int = Field(128, ge=1)
    p: int = Field(8, ge=2)
    k: int = Field(8, ge=2)
    batches_per_epoch: int | None = Field(None, ge=1)
    balance_level: int | None = Field(None, ge=0)
    epochs: int = Field(20, ge=1)
    patience: int | None = Field(None, ge=1)
    min_epochs: int = Field(1, ge=1)
    min_delta: float = Field(0.0, ge=0)
    eval_k: int = Field(5, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: Path | None = None
    progress: bool = True

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigurationError(f"invalid TrainConfig: {err}") from err

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config from a YAML (``.yaml`` / ``.yml``) or JSON file.

        Args:
            path: The file.

        Returns:
            The config.

        Raises:
            DataError: If the file is missing or is not a mapping.
            ConfigurationError: If a field is invalid.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except UnicodeDecodeError as err:
            raise DataError(
                f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
            ) from err
        except RecursionError as err:
            raise DataError(
                f"config file {path} is nested too deeply; a TrainConfig is a flat mapping of "
                "fields"
            ) from err
        except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
            detail = " ".join(str(err).split())
            raise DataError(f"config file {path} is not valid YAML/JSON: {detail}") from err
        if not isinstance(data, dict):
            raise DataError(f"config file {path} must hold a mapping of fields, got {data!r}")
        return cls(**data)

    @classmethod
    def quick(cls, **overrides: Any) -> TrainConfig:
        """The fast CPU preset: 64 px, width 0.25 (a deviation from the paper's 128 px, 1.0).

        Args:
            **overrides: Any other field.

        Returns:
            The config.
        """
        return cls(**{"image_size": 64, "width": 0.25, **overrides})


class EpochStats(BaseModel):
    """What one epoch did.

    Attributes:
        epoch: 1-based epoch number.
        loss: Mean triplet loss over the epoch's batches (without the penalty).
        penalty: Mean L2 penalty.
        active_fraction: Mean fraction of mined triplets with a positive loss.
        images_per_second: Training throughput (data loading included).
        seconds: Wall time of the epoch.
        num_images: Images seen.
        valid_accuracy: kNN accuracy on the validation set after the epoch (None without one).
        effective_rank: Effective rank of the training images' embeddings after the epoch.
        mean_pairwise_cosine: Their mean pairwise cosine (near 1: collapsed).
    """

    epoch: int
    loss: float
    penalty: float
    active_fraction: float
    images_per_second: float
    seconds: float
    num_images: int
    valid_accuracy: float | None = None
    effective_rank: float | None = None
    mean_pairwise_cosine: float | None = None


@dataclass
class TrainResult:
    """The result of [`train`][paper_sku.train.train].

    Attributes:
        model: The trained model, in eval mode.
        config: The config used.
        history: One [`EpochStats`][paper_sku.train.EpochStats] per epoch, including epochs
            restored from a checkpoint.
        checkpoint_path: Path of the last checkpoint, or None without ``checkpoint_dir``.
        resumed_from: Number of epochs restored from a checkpoint (0 for a fresh run).
        best_epoch: The epoch whose weights ``model`` holds (the best validation epoch with
            ``patience``, else the last).
        stop_reason: ``"plateau"`` (patience ran out), ``"max_epochs"`` (stopping was on but
            ``epochs`` came first) or ``"epochs"`` (no stopping rule).
    """

    model: PaperCNN
    config: TrainConfig
    history: list[EpochStats]
    checkpoint_path: Path | None
    resumed_from: int
    best_epoch: int = 0
    stop_reason: str = "epochs"

    @property
    def epochs(self) -> int:
        """Epochs trained (also those restored from a checkpoint)."""
        return len(self.history)

    @property
    def train_seconds(self) -> float:
        """Training time summed over all epochs, resumed runs included."""
        return float(sum(h.seconds for h in self.history))


def build_model(config: TrainConfig) -> PaperCNN:
    """The [`PaperCNN`][paper_sku.model.PaperCNN] a config describes.

    Args:
        config: Training config.

    Returns:
        A freshly initialised model (uses the global torch RNG).
    """
    return PaperCNN(
        embedding_dim=config.embedding_dim, width=config.width, in_size=config.image_size
    )


def build_loss(config: TrainConfig, extra_labels: ExtraLabels | None = None) -> TripletLossBase:
    """The loss (with its miner and reducer) a config describes.

    Each ``miner`` name is a published recipe, miner and reducer together: ``"semihard"`` is
    TensorFlow Addons' (mean over all mined triplets), ``"semihard-pml"`` pytorch-metric-learning's
    (mean over the active triplets), ``"batch-hard"`` Hermans et al.'s (mean over anchors).

    Args:
        config: Training config.
        extra_labels: Class -> additional-labels table; required for ``loss="flexible"``.

    Returns:
        The loss module.

    Raises:
        ConfigurationError: If ``loss="flexible"`` and ``extra_labels`` is None.
    """
    miner: TripletMiner
    reducer: TripletReducer
    if config.miner == "batch-hard":
        miner, reducer = BatchHardMiner(), MeanReducer()
    elif config.miner == "semihard-pml":
        miner, reducer = SemiHardMiner("pml"), MeanActiveReducer()
    else:
        miner, reducer = SemiHardMiner("tensorflow"), MeanReducer()
    if config.loss == "triplet":
        return TripletLoss(config.margin, distance=config.distance, miner=miner, reducer=reducer)
    if config.loss == "focal":
        return FocalTripletLoss(
            config.margin, config.sigma, distance=config.distance, miner=miner, reducer=reducer
        )
    if extra_labels is None:
        raise ConfigurationError(
            "loss='flexible' needs extra_labels (class -> (category, group, ...)); pass them to "
            "train(..., extra_labels=...) or use loss='focal'"
        )
    return FlexibleMarginTripletLoss(
        config.margin,
        margin_fn=config.margin_fn,
        focal=True,
        sigma=config.sigma,
        extra_labels=extra_labels,
        difference=config.difference,
        distance=config.distance,
        miner=miner,
        reducer=reducer,
    )


def penalized_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weights the Tikhonov penalty covers: those of convolutions and linear layers.

    Args:
        model: Any module.

    Returns:
        The weight tensors of every ``nn.Conv*d`` and ``nn.Linear`` (no biases, no norm layers).
    """
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [m.weight for m in model.modules() if isinstance(m, kinds)]


def l2_penalty(model: nn.Module, weight_decay: float) -> torch.Tensor:
    """Explicit Tikhonov penalty ``(weight_decay / 2) * sum ||W||^2`` over conv / linear weights.

    Args:
        model: The model.
        weight_decay: Strength (>= 0).

    Returns:
        Scalar tensor (differentiable).

    Examples:
        >>> from torch import nn
        >>> lin = nn.Linear(2, 1)
        >>> _ = lin.weight.data.copy_(torch.tensor([[3.0, 4.0]]))
        >>> float(l2_penalty(lin, 0.1).detach())  # 0.05 * (9 + 16)
        1.25
    """
    params = penalized_parameters(model)
    if not params or weight_decay == 0:
        return next(model.parameters()).new_zeros(())
    return 0.5 * weight_decay * sum(w.pow(2).sum() for w in params)


def _split_item(item: Any) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        if "image" not in item or "label" not in item:
            raise DataError(
                f"dataset items that are dicts need 'image' and 'label' keys, got {sorted(item)}"
            )
        return item["image"], item["label"]
    if isinstance(item, Sequence) and not isinstance(item, str) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(
        f"dataset items must be (image, label, ...) tuples or dicts with image/label keys, got "
        f"{type(item).__name__}"
    )


def _collate(items: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(_split_item(it) for it in items))
    return default_collate(list(images)), torch.as_tensor(default_collate(list(labels)))


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Class label of every item of a dataset.

    Uses a ``labels`` or ``targets`` attribute when the dataset has one (avoids loading images),
    the second tensor of a ``TensorDataset``, and otherwise reads every item.

    Args:
        dataset: A map-style dataset of ``(image, label)`` tuples or image/label dicts.

    Returns:
        ``(N,)`` int64 labels.

    Raises:
        DataError: If the dataset is empty or its items have no label.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError("the training dataset is empty")
    for attr in ("labels", "targets"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == n:
            return torch.as_tensor(np.asarray(values)).to(torch.int64).flatten()
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, tuple) and len(tensors) >= 2:
        return tensors[1].to(torch.int64).flatten()
    return torch.tensor([int(_split_item(dataset[i])[1]) for i in range(n)], dtype=torch.int64)


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # weights_only loading accepts tensors and plain containers, not numpy arrays.
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys_np, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys_np.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by [`train`][paper_sku.train.train].

    Args:
        path: The ``checkpoint.pt`` file.
        map_location: Device to load tensors onto.

    Returns:
        A dict with ``epoch``, ``config`` (a dict), ``model``, ``optimizer``, ``history``,
        ``sampler`` and ``rng``. Rebuild the model with
        ``build_model(TrainConfig(**ckpt["config"]))`` and ``load_state_dict(ckpt["model"])``.

    Raises:
        DataError: If the file is missing or is not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    state = _torch_load(path, map_location, "checkpoint")
    if not isinstance(state, dict):
        raise DataError(
            f"{path} is not a paper_sku training checkpoint (it holds a {type(state).__name__}, "
            "not a dict); delete it to restart"
        )
    missing = sorted({"epoch", "config", "model"} - set(state))
    if missing:
        raise DataError(
            f"{path} is not a paper_sku training checkpoint: the keys {missing} are missing; "
            "delete it to restart"
        )
    _check_checkpoint(state, path)
    return state


def _torch_load(path: Path, map_location: str | torch.device, what: str) -> Any:
    """``torch.load(weights_only=True)`` with a message that says what is wrong with the file."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if not head:
        raise DataError(
            f"{what} {path} could not be read: it is empty (0 bytes), truncated or its save was "
            "interrupted; delete it to restart"
        )
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise DataError(
            f"{what} {path} could not be read: it is not a file written by torch.save (it "
            f"begins with {head!r}); delete it to restart"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        detail = " ".join(str(err).split())[:200] or type(err).__name__
        raise DataError(
            f"{what} {path} could not be read: it is truncated or corrupt ({detail}); delete it "
            "to restart"
        ) from err


def _check_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Types and ranges of a checkpoint's fields; a bad one is named with the fix."""

    def bad(what: str) -> DataError:
        return DataError(f"checkpoint {path} is damaged: {what}; delete it to restart")

    epoch, config = state["epoch"], state["config"]
    if not isinstance(config, dict):
        raise bad(f"'config' is a {type(config).__name__}, not a dict")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise bad(f"'epoch' is {epoch!r}, not an integer")
    epochs = config.get("epochs")
    top = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    if epoch < 0 or (top is not None and epoch > top):
        allowed = f"0 to {top}" if top is not None else ">= 0"
        raise bad(f"it claims epoch {epoch} but its config allows {allowed}")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise bad("'model' is not a state dict of tensors")
    history = state.get("history")
    if history is not None and (not isinstance(history, list) or len(history) != epoch):
        n = len(history) if isinstance(history, list) else type(history).__name__
        raise bad(f"its history has {n} epochs but it claims epoch {epoch}")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PaperCNN:
    """Rebuild the trained model stored in a checkpoint, in eval mode.

    A run with plateau stopping (``patience``) gives the weights of its best validation epoch
    (``best.pt`` beside the checkpoint), as [`train`][paper_sku.train.train] returned them;
    otherwise the last epoch's.

    Args:
        path: A ``checkpoint.pt`` written by [`train`][paper_sku.train.train].
        map_location: Device for the model.

    Returns:
        The model with the checkpoint's weights.

    Raises:
        DataError: If the file is missing or is not a checkpoint, or the best epoch's weights
            are missing.
    """
    path = Path(path)
    state = load_checkpoint(path, map_location=map_location)
    config = TrainConfig(**state["config"])
    model = build_model(config).to(map_location)
    weights = state["model"]
    history = _history(state, path)
    best, _ = _plateau(history, config)
    if config.patience is not None and history and best != len(history):
        weights = _load_best(path.with_name(BEST_NAME), best)
    _load_weights(model, weights, path)
    return model.eval()


def _history(state: Mapping[str, Any], path: Path) -> list[EpochStats]:
    try:
        return [EpochStats(**h) for h in state.get("history", [])]
    except (TypeError, ValueError) as err:
        detail = " ".join(str(err).split())[:200]
        raise DataError(
            f"checkpoint {path} is damaged: its history is not a list of epoch records "
            f"({detail}); delete it to restart"
        ) from err


def _load_weights(model: nn.Module, weights: Mapping[str, Any], path: Path) -> None:
    """``load_state_dict`` with a DataError naming the file when the weights do not fit."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError) as err:
        detail = " ".join(str(err).split())[:300]
        raise DataError(
            f"checkpoint {path} does not fit the model its config describes (another "
            f"architecture, or a damaged file): {detail}; delete it to restart"
        ) from err


def _check_resumable(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    current = config.model_dump(mode="json")
    # A field added after the checkpoint was written counts as its default value.
    defaults = {k: f.default for k, f in TrainConfig.model_fields.items()}
    saved = {**defaults, **saved}
    diff = sorted(
        key for key in current if key not in _RESUMABLE_CHANGES and saved.get(key) != current[key]
    )
    if diff:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
        raise ConfigurationError(
            f"checkpoint {path} was written with a different config ({details}); use another "
            "checkpoint_dir or resume=False to start over"
        )


def _plateau(history: Sequence[EpochStats], config: TrainConfig) -> tuple[int, bool]:
    """``(best epoch, stopped)`` of a history under the config's stopping rule.

    A pure function of the validation accuracies, so a resumed run decides exactly as an
    uninterrupted one. Epochs before ``min_epochs`` (or before ``epochs``, if that is smaller)
    are a warm-up: never the best, never a reason to stop. Without validation numbers the best
    epoch is the last.
    """
    start = min(config.min_epochs, config.epochs)
    best, best_acc = 0, -1.0
    for h in history:
        acc = h.valid_accuracy
        if acc is None:
            return len(history), False
        if h.epoch >= start and (best == 0 or acc > best_acc + config.min_delta):
            best, best_acc = h.epoch, acc
        if config.patience is not None and best and h.epoch - best >= config.patience:
            return best, True
    return (best or len(history)), False


def _evaluate(
    model: nn.Module, train_set: Dataset, valid: Dataset, k: int, device: torch.device
) -> tuple[float, float, float]:
    """Validation kNN accuracy and the health of the training embeddings.

    Runs under forked torch, numpy and Python RNGs (data loaders draw a seed from torch's
    generator, augmenting datasets from any of them), so evaluating does not change the
    training that follows.
    """
    from embedcam.classify import knn_predict
    from embedcam.embedding import embedding_health
    from paper_sku.knn import embed

    devices = [device] if device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            gallery, gallery_labels = embed(model, train_set, device=device)
            query, query_labels = embed(model, valid, device=device)
    finally:  # an augmenting dataset draws from Python's and numpy's generators too
        random.setstate(py_state)
        np.random.set_state(np_state)
    pred = knn_predict(query, gallery, gallery_labels, k=k)
    health = embedding_health(gallery)
    acc = float((pred == query_labels).float().mean())
    return acc, health.effective_rank, health.mean_pairwise_cosine


def train(
    config: TrainConfig,
    dataset: Dataset,
    extra_labels: ExtraLabels | None = None,
    resume: bool = True,
    console: Console | None = None,
    valid: Dataset | None = None,
) -> TrainResult:
    """Train [`PaperCNN`][paper_sku.model.PaperCNN] with the configured triplet loss.

    Args:
        config: Training settings.
        dataset: Map-style dataset yielding ``(image (3, S, S), label)`` tuples or dicts with
            ``image`` and ``label`` keys, ``S = config.image_size``.
        extra_labels: Class -> additional-labels table (needed by ``loss="flexible"`` and
            ``balance_level``).
        resume: Continue from ``checkpoint_dir/checkpoint.pt`` if it exists; False starts over
            (and overwrites it).
        console: Rich console for the progress bars (default: a new one on stderr).
        valid: Validation dataset (same item format). Every epoch is then evaluated (kNN
            accuracy against ``dataset``, embedding health), and with ``config.patience``
            training stops on a plateau and returns the best epoch's model.

    Returns:
        A [`TrainResult`][paper_sku.train.TrainResult]; the model is in eval mode on
        ``config.device``.

    Raises:
        ConfigurationError: On an invalid config, a flexible loss without extra labels,
            ``patience`` without ``valid``, or a checkpoint written with a different config.
        DataError: On an empty dataset, malformed items or an unreadable checkpoint.
        ShapeError: If the images are not ``(B, 3, S, S)``.
        EmbedcamValueError: If the loss becomes NaN (divergence).
    """
    if not isinstance(config, TrainConfig):
        raise ConfigurationError(f"config must be a TrainConfig, got {type(config).__name__}")
    device = torch.device(config.device)
    if config.patience is not None and valid is None:
        raise ConfigurationError(
            "patience needs a validation set: pass train(..., valid=dataset), or set "
            "patience=None to train all epochs"
        )
    labels = dataset_labels(dataset)
    if valid is not None:
        dataset_labels(valid)  # fails early and clearly on an empty or malformed set
    loss_fn = build_loss(config, extra_labels)
    groups = None
    if config.balance_level is not None:
        if extra_labels is None:
            raise ConfigurationError("balance_level needs extra_labels")
        table, known = _encode_table(extra_labels, [config.balance_level])
        groups = {c: int(table[c, 0]) for c in range(table.shape[0]) if known[c]}
    sampler = PKSampler(
        labels, config.p, config.k, config.batches_per_epoch, groups=groups, seed=config.seed
    )

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[EpochStats] = []
    start = 0
    path = None if config.checkpoint_dir is None else Path(config.checkpoint_dir) / CHECKPOINT_NAME
    best_path = None if path is None else path.with_name(BEST_NAME)
    best_state: dict[str, torch.Tensor] | None = None
    if resume and path is not None and path.exists():
        # RNG states must stay CPU tensors; load_state_dict moves weights to the device.
        state = load_checkpoint(path, map_location="cpu")
        _check_resumable(state["config"], config, path)
        missing = sorted({"optimizer", "history", "sampler", "rng"} - set(state))
        if missing:
            raise DataError(
                f"checkpoint {path} cannot be resumed: the keys {missing} are missing; delete "
                "it or pass resume=False to start over"
            )
        start = int(state["epoch"])
        if start > config.epochs:
            raise DataError(
                f"checkpoint {path} claims {start} trained epochs, more than the configured "
                f"epochs={config.epochs}; raise epochs to at least {start}, or pass "
                "resume=False (or delete the checkpoint) to start over"
            )
        _load_weights(model, state["model"], path)
        history = _history(state, path)
        try:
            optimizer.load_state_dict(state["optimizer"])
            sampler.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"], device)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            detail = " ".join(str(err).split())[:200] or type(err).__name__
            raise DataError(
                f"checkpoint {path} cannot be resumed: its optimizer, sampler or RNG state is "
                f"damaged ({detail}); delete it or pass resume=False to start over"
            ) from err

    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate, num_workers=0)
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("active {task.fields[active]:.2f}"),
        TextColumn("{task.fields[ips]:.0f} img/s"),
        TimeElapsedColumn(),
        console=console,
        # no bar for a run that is already finished (a cached checkpoint)
        disable=not config.progress or start >= config.epochs or _plateau(history, config)[1],
    )
    size = (config.image_size, config.image_size)
    with progress:
        task = progress.add_task(
            "train",
            total=len(sampler),
            epoch=start,
            epochs=config.epochs,
            loss=0.0,
            active=0.0,
            ips=0.0,
        )
        for epoch in range(start, config.epochs):
            if _plateau(history, config)[1]:
                break
            sampler.set_epoch(epoch)
            progress.reset(
                task,
                total=len(sampler),
                epoch=epoch + 1,
                epochs=config.epochs,
                loss=0.0,
                active=0.0,
                ips=0.0,
            )
            model.train()
            sums = {"loss": 0.0, "penalty": 0.0, "active": 0.0}
            seen, batches, t0 = 0, 0, time.perf_counter()
            for images, batch_labels in loader:
                if images.ndim != 4 or tuple(images.shape[1:]) != (3, *size):
                    raise ShapeError(
                        f"training images must be (B, 3, {size[0]}, {size[1]}), got "
                        f"{tuple(images.shape)}; resize them or set image_size"
                    )
                images = images.to(device, dtype=torch.float32)
                out = loss_fn.compute(model(images), batch_labels.to(device))
                penalty = l2_penalty(model, config.weight_decay)
                total = out.loss + penalty
                if not bool(torch.isfinite(total.detach())):
                    raise EmbedcamValueError(
                        f"the training loss became {float(total.detach())} in epoch "
                        f"{epoch + 1}; lower lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                sums["loss"] += float(out.loss.detach())
                sums["penalty"] += float(penalty.detach())
                sums["active"] += out.active_fraction
                seen += images.shape[0]
                batches += 1
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                progress.update(
                    task,
                    advance=1,
                    loss=sums["loss"] / batches,
                    active=sums["active"] / batches,
                    ips=ips,
                )
            seconds = time.perf_counter() - t0
            scores: dict[str, float] = {}
            if valid is not None:
                acc, erank, cos = _evaluate(model, dataset, valid, config.eval_k, device)
                scores = {
                    "valid_accuracy": acc,
                    "effective_rank": erank,
                    "mean_pairwise_cosine": cos,
                }
            history.append(
                EpochStats(
                    epoch=epoch + 1,
                    loss=sums["loss"] / batches,
                    penalty=sums["penalty"] / batches,
                    active_fraction=sums["active"] / batches,
                    images_per_second=seen / max(seconds, 1e-9),
                    seconds=seconds,
                    num_images=seen,
                    **scores,
                )
            )
            if config.progress:
                progress.console.print(_epoch_line(history[-1], config), highlight=False)
            sampler.set_epoch(epoch + 1)
            if valid is not None and _plateau(history, config)[0] == epoch + 1:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if best_path is not None:
                    atomic_torch_save({"epoch": epoch + 1, "model": best_state}, best_path)
            if path is not None:
                atomic_torch_save(
                    {
                        "epoch": epoch + 1,
                        "config": config.model_dump(mode="json"),
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": [h.model_dump() for h in history],
                        "sampler": sampler.state_dict(),
                        "rng": _rng_state(device),
                    },
                    path,
                )
    best_epoch, stopped = _plateau(history, config)
    if valid is not None and best_epoch != len(history) and config.patience is not None:
        if best_state is None:  # the best epoch was trained by an earlier (resumed) run
            best_state = _load_best(best_path, best_epoch)
        model.load_state_dict(best_state)
    elif config.patience is None:
        best_epoch = len(history)
    if config.patience is None:
        reason = "epochs"
    else:
        reason = "plateau" if stopped else "max_epochs"
    model.eval()
    return TrainResult(model, config, history, path, start, best_epoch, reason)


def _epoch_line(h: EpochStats, config: TrainConfig) -> str:
    """One printed line per epoch (above the bar on a terminal, a plain line in a log)."""
    line = (
        f"epoch {h.epoch}/{config.epochs}: loss {h.loss:.4f}, active triplets "
        f"{h.active_fraction:.2f}, {h.images_per_second:.0f} img/s"
    )
    if h.valid_accuracy is None:
        return line
    line += (
        f"; validation kNN accuracy {h.valid_accuracy:.3f}, effective rank "
        f"{h.effective_rank:.1f}, mean cosine {h.mean_pairwise_cosine:.2f}"
    )
    # the rule of embedcam.embedding_health
    low_rank = (h.effective_rank or 0.0) < min(4.0, config.embedding_dim / 2)
    if low_rank or (h.mean_pairwise_cosine or 0.0) > 0.5:
        line += " [bold red](embeddings collapsing)[/]"
    return line


def _load_best(path: Path | None, epoch: int) -> dict[str, torch.Tensor]:
    if path is None or not path.is_file():
        raise DataError(
            f"the best epoch ({epoch}) was trained by an earlier run but its weights "
            f"({path}) are missing; delete the checkpoint folder to train again"
        )
    state = _torch_load(path, "cpu", "best-epoch weights")
    if not isinstance(state, dict) or state.get("epoch") != epoch or "model" not in state:
        raise DataError(
            f"{path} does not hold the best epoch {epoch} of this run; delete the checkpoint "
            "folder to train again"
        )
    return state["model"]
