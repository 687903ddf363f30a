"""Reading a user's loader: batch forms, fixed order, sub-loaders for shards and resumed runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset

from embedcam._checks import all_finite, as_label_tensor
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
            boxes, masks = _third_element(batch[2], images, step)
    else:
        raise DataError(f"batch {step}: got {type(batch).__name__}; batches may be {_FORMS}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ShapeError(f"batch {step}: images must be a (B, C, H, W) tensor, got {shape}")
    n = int(images.shape[0])
    labels = as_label_tensor(labels, name=f"batch {step}: labels")
    if labels.shape != (n,):
        raise ShapeError(f"batch {step}: {n} images but labels of shape {tuple(labels.shape)}")
    if images.dtype not in _FLOATS:
        raise DataError(
            f"batch {step}: images must be a floating tensor, got {images.dtype}; convert and "
            "normalise them as the model expects (e.g. torchvision's ToImage + ToDtype(float32, "
            "scale=True) + Normalize)"
        )
    _check_finite(images, step, "images", dim=0)
    if boxes is not None:
        if len(boxes) != n:
            raise ShapeError(f"batch {step}: {n} images but {len(boxes)} box tensors")
        boxes = [_box_tensor(b, step, i) for i, b in enumerate(boxes)]
    if masks is not None:
        masks = _mask_tensor(masks, step, (n, *images.shape[-2:]))
    if refs is not None:
        refs = _tensor(refs, step, "'reference'")
        if refs.dim() != 2 or refs.shape[0] != n or not refs.dtype.is_floating_point:
            raise ShapeError(
                f"batch {step}: 'reference' must be a floating (B, D) tensor with B={n}, got "
                f"{refs.dtype} of shape {tuple(refs.shape)}"
            )
        _check_finite(refs, step, "'reference'", dim=0)
    if index is not None:
        index = _tensor(index, step, "'index'").reshape(-1)
        if index.dtype.is_floating_point or index.dtype == torch.bool or index.is_complex():
            raise DataError(
                f"batch {step}: 'index' must hold integer dataset positions, got {index.dtype}"
            )
        if index.shape != (n,):
            raise ShapeError(f"batch {step}: 'index' must hold {n} values, got {index.numel()}")
        if bool((index < 0).any()):
            raise DataError(f"batch {step}: 'index' holds negative positions {index.tolist()}")
        index = index.to(torch.int64)
    if ids is not None:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise DataError(
                f"batch {step}: 'id' must be a sequence of {n} ids (one per image), got "
                f"{type(ids).__name__}"
            )
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise ShapeError(f"batch {step}: 'id' must hold {n} values, got {len(ids)}")
    return Batch(images, labels.to(torch.int64), boxes, masks, refs, index, ids)


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _third_element(extra: Any, images: Any, step: int) -> tuple[list[Any] | None, Any]:
    """``(boxes, masks)`` from the third element of a tuple batch.

    A list or tuple holds one box tensor per image; a tensor is masks when its last two sizes are
    the images' ``(H, W)`` and a ``(B, K, 4)`` box tensor when its last size is 4 (checked in
    that order, so a 4-pixel-wide mask is still a mask).
    """
    if isinstance(extra, (list, tuple)):
        return list(extra), None
    if isinstance(extra, Tensor) and isinstance(images, Tensor) and images.dim() == 4:
        if extra.dim() == 3 and tuple(extra.shape[1:]) == tuple(images.shape[-2:]):
            return None, extra
        if extra.dim() == 3 and extra.shape[-1] == 4:
            return list(extra.unbind(0)), None
    what = (
        f"a {extra.dtype} tensor of shape {tuple(extra.shape)}"
        if isinstance(extra, Tensor)
        else type(extra).__name__
    )
    size = tuple(images.shape[-2:]) if isinstance(images, Tensor) else "(H, W)"
    raise DataError(
        f"batch {step}: the third element must be boxes (a list of (K, 4) xyxy tensors, one per "
        f"image, or a (B, K, 4) tensor) or masks (a (B, H, W) tensor with (H, W) = {size}, bool "
        f"or 0/1), got {what}; drop class or score columns from boxes"
    )


def _tensor(x: Any, step: int, what: str) -> Tensor:
    """``torch.as_tensor(x)`` with a `DataError` naming the batch and field when it cannot be."""
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(
            f"batch {step}: {what} must be numeric (a tensor or nested list of numbers), got "
            f"{type(x).__name__}: {err}"
        ) from err


def _check_finite(x: Tensor, step: int, what: str, dim: int | None = None) -> None:
    """Raise a `DataError` naming the batch positions that hold NaN or infinity."""
    if all_finite(x):
        return
    bad = ~torch.isfinite(x)
    where = ""
    if dim == 0 and x.dim() > 0:
        rows = bad.reshape(x.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        where = f" at batch positions {rows[:10]}"
    raise DataError(
        f"batch {step}: {what}: {int(bad.sum())} NaN or infinite values{where}; fix the "
        "dataset or transform that produced them"
    )


def _box_tensor(b: Any, step: int, i: int) -> Tensor:
    """One image's boxes as float32 ``(K, 4)``; never reshapes a wrongly shaped tensor."""
    t = _tensor(b, step, f"the boxes of image {i}")
    if t.dim() == 1 and t.numel() in (0, 4):
        t = t.reshape(-1, 4)
    if t.dim() != 2 or t.shape[1] != 4:
        raise ShapeError(
            f"batch {step}: the boxes of image {i} must be (K, 4) xyxy (or (4,) for one box), "
            f"got shape {tuple(t.shape)}; drop class or score columns before batching"
        )
    t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"batch {step}: the boxes of image {i} hold NaN or infinity: {t.tolist()}")
    return t


def _mask_tensor(m: Any, step: int, shape: tuple[int, ...]) -> Tensor:
    """Masks as bool; numeric masks must be binary (0/1, or 0/255 for uint8), never thresholded."""
    t = _tensor(m, step, "masks")
    if tuple(t.shape) != shape:
        raise ShapeError(f"batch {step}: masks must be (B, H, W) = {shape}, got {tuple(t.shape)}")
    if t.dtype == torch.bool:
        return t
    values = torch.unique(t)
    allowed = {0.0, 1.0, 255.0} if t.dtype == torch.uint8 else {0.0, 1.0}
    if not {float(v) for v in values.tolist()} <= allowed:
        shown = values[:6].tolist()
        raise DataError(
            f"batch {step}: masks of dtype {t.dtype} must be binary ({sorted(allowed)}), got "
            f"values {shown}{'...' if values.numel() > 6 else ''}; threshold soft masks yourself "
            "(e.g. mask > 0.5) so the object region is what you intend"
        )
    return t != 0


def is_sequential(loader: Iterable[Any]) -> bool:
    """Whether ``loader`` is a DataLoader over a sized map-style dataset in dataset order."""
    if not isinstance(loader, DataLoader):
        return False
    sampler = getattr(loader.batch_sampler, "sampler", loader.sampler)
    return isinstance(sampler, SequentialSampler) and hasattr(loader.dataset, "__len__")


def check_fixed_order(loader: Iterable[Any], what: str) -> None:
    """Refuse a shuffled DataLoader: its order changes every run, so records cannot resume."""
    if isinstance(loader, DataLoader):
        sampler = getattr(loader.batch_sampler, "sampler", loader.sampler)
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
    return DataLoader(Subset(loader.dataset, list(positions)), **kwargs)


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
