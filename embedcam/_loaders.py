"""Reading a user's loader: batch forms, fixed order, sub-loaders for shards and resumed runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset

from embedcam._checks import as_label_tensor
from embedcam.errors import ConfigurationError, DataError, ShapeError


@dataclass
class Batch:
    """One batch in embedcam's terms.

    Attributes:
        images: ``(B, C, H, W)`` float.
        labels: ``(B,)`` int64 class indices.
        boxes: One ``(K_i, 4)`` xyxy tensor per image, or ``None``.
        masks: ``(B, H, W)`` bool object masks (or regions), or ``None``.
        references: ``(B, D)`` reference embeddings, or ``None``.
        index: ``(B,)`` int64 dataset positions given by the batch (``"index"`` key), or ``None``.
        ids: One string id per image (``"id"`` key), or ``None``.
    """

    images: Tensor
    labels: Tensor
    boxes: list[Tensor] | None = None
    masks: Tensor | None = None
    references: Tensor | None = None
    index: Tensor | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


_FORMS = (
    "(images, labels), (images, labels, boxes) with one (K, 4) tensor per image, "
    "(images, labels, masks) with a (B, H, W) bool tensor, or a dict with 'image' and 'label' "
    "keys (and optionally 'boxes', 'mask', 'reference', 'index', 'id')"
)


def parse_batch(batch: Any, step: int) -> Batch:
    """Turn a loader batch into a `Batch`, with errors that say which batch and why."""
    if isinstance(batch, Mapping):
        missing = [k for k in ("image", "label") if k not in batch]
        if missing:
            raise DataError(
                f"batch {step}: a dict batch needs 'image' and 'label' keys; missing {missing}, "
                f"got {sorted(map(str, batch))}. Batches may be {_FORMS}"
            )
        images, labels = batch["image"], batch["label"]
        boxes, masks = batch.get("boxes"), batch.get("mask")
        refs, index, ids = batch.get("reference"), batch.get("index"), batch.get("id")
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        images, labels = batch[0], batch[1]
        boxes = masks = refs = index = ids = None
        if len(batch) == 3:
            extra = batch[2]
            if isinstance(extra, Tensor) and extra.dtype == torch.bool and extra.dim() == 3:
                masks = extra
            elif isinstance(extra, (list, tuple)):
                boxes = list(extra)
            else:
                raise DataError(
                    f"batch {step}: the third element must be a list of (K, 4) box tensors or "
                    f"a (B, H, W) bool mask tensor, got {type(extra).__name__}"
                )
    else:
        raise DataError(f"batch {step}: got {type(batch).__name__}; batches may be {_FORMS}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ShapeError(f"batch {step}: images must be a (B, C, H, W) tensor, got {shape}")
    n = int(images.shape[0])
    labels = as_label_tensor(labels)
    if labels.shape != (n,):
        raise ShapeError(f"batch {step}: {n} images but labels of shape {tuple(labels.shape)}")
    if boxes is not None:
        if len(boxes) != n:
            raise ShapeError(f"batch {step}: {n} images but {len(boxes)} box tensors")
        boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    if masks is not None:
        masks = torch.as_tensor(masks)
        if masks.shape != (n, *images.shape[-2:]):
            raise ShapeError(
                f"batch {step}: masks must be (B, H, W) = {(n, *images.shape[-2:])}, got "
                f"{tuple(masks.shape)}"
            )
        masks = masks.bool()
    if refs is not None:
        refs = torch.as_tensor(refs)
        if refs.dim() != 2 or refs.shape[0] != n:
            raise ShapeError(
                f"batch {step}: 'reference' must be (B, D) with B={n}, got {tuple(refs.shape)}"
            )
    if index is not None:
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        if index.shape != (n,):
            raise ShapeError(f"batch {step}: 'index' must hold {n} values")
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise ShapeError(f"batch {step}: 'id' must hold {n} values, got {len(ids)}")
    return Batch(images, labels.to(torch.int64), boxes, masks, refs, index, ids)


def is_sequential(loader: Iterable[Any]) -> bool:
    """Whether ``loader`` is a DataLoader over a sized map-style dataset in dataset order."""
    if not isinstance(loader, DataLoader):
        return False
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    return isinstance(sampler, SequentialSampler) and hasattr(loader.dataset, "__len__")


def check_fixed_order(loader: Iterable[Any], what: str) -> None:
    """Refuse a shuffled DataLoader: its order changes every run, so records cannot resume."""
    if isinstance(loader, DataLoader):
        sampler = (
            loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
        )
        if isinstance(sampler, RandomSampler):
            raise ConfigurationError(
                f"{what} is a shuffled DataLoader; its order changes from run to run, so records "
                "cannot be compared, sharded or resumed. Build it with shuffle=False"
            )


def subset_loader(loader: DataLoader, positions: Sequence[int]) -> DataLoader:
    """The same loader (batch size, workers, collate) restricted to ``positions``, in order."""
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "shuffle": False,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": False,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
        kwargs["persistent_workers"] = False
    return DataLoader(Subset(loader.dataset, list(positions)), **kwargs)  # type: ignore[arg-type]


def shard_positions(n: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous share of ``n`` positions, cut at batch boundaries.

    Cutting at batch boundaries keeps every batch identical to a one-process run's, so the
    numbers are identical too (at equal thread counts).
    """
    batches = math.ceil(n / batch_size)
    lo, hi = batches * rank // world, batches * (rank + 1) // world
    return list(range(lo * batch_size, min(n, hi * batch_size)))


def sample_paths(loader: Iterable[Any]) -> list[str] | None:
    """File paths per dataset position when the dataset is an embedcam ``ImageDataset``."""
    dataset = getattr(loader, "dataset", None)
    index = getattr(dataset, "index", None)
    samples = getattr(index, "samples", None)
    if samples is None:
        return None
    try:
        return [str(s.path) for s in samples]
    except AttributeError:
        return None


def iter_batches(loader: Iterable[Any]) -> Iterator[tuple[int, Batch]]:
    """Parsed batches with their step number."""
    for step, raw in enumerate(loader):
        yield step, parse_batch(raw, step)
