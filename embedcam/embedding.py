"""Embed a whole loader (sharded under torch.distributed) and check the embeddings' health."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from embedcam import _dist
from embedcam._checks import all_finite, check_float_images
from embedcam._loaders import (
    Batch,
    check_fixed_order,
    is_sequential,
    iter_batches,
    shard_positions,
    subset_loader,
)
from embedcam._model import embed as pick_embedding
from embedcam._model import floating_dtype, model_device
from embedcam.cam._model import model_lock
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError

__all__ = ["Embedded", "embed_loader", "EmbeddingHealth", "embedding_health"]


@dataclass
class Embedded:
    """The embeddings of a loader, in loader order, on the CPU.

    Attributes:
        embeddings: ``(N, D)`` float32.
        labels: ``(N,)`` int64.
        has_regions: Whether the batches carried boxes or masks.
        has_masks: Whether the batches carried object masks.
    """

    embeddings: Tensor
    labels: Tensor
    has_regions: bool = False
    has_masks: bool = False

    def __len__(self) -> int:
        return int(self.labels.numel())


def _shard(loader: Iterable[Any]) -> tuple[Iterable[Any], list[int] | None]:
    rank, world = _dist.rank_world()
    if world == 1:
        return loader, None
    if not is_sequential(loader):
        raise ConfigurationError(
            "under torch.distributed, embedcam shards the data itself: pass a DataLoader over a "
            "map-style dataset with shuffle=False, the same on every rank"
        )
    n = len(loader.dataset)  # type: ignore[attr-defined]
    positions = shard_positions(n, loader.batch_size or 1, rank, world)  # type: ignore[attr-defined]
    return subset_loader(loader, positions), positions  # type: ignore[arg-type]


def embed_batches(
    model: nn.Module | Callable[[Tensor], Any],
    batches: Iterable[tuple[int, Batch]],
    embedding_fn: Callable[[Any], Tensor] | None = None,
    transform: Callable[[Batch], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Embed parsed batches in eval mode under inference mode (the model's mode is restored).

    ``transform`` turns a batch into the images to embed (e.g. an intervention). Float images are
    cast to the dtype of the model's floating-point parameters (float64 from NumPy into a float32
    model); integer images raise. An ``nn.Module`` is locked for the whole loop, like a CAM call,
    so that concurrent calls from other threads cannot leave it in the wrong mode.
    """
    module = model if isinstance(model, nn.Module) else None
    dev = model_device(module) if module is not None else torch.device("cpu")
    dtype = floating_dtype(module) if module is not None else None
    embs, labels = [], []
    with model_lock(module) if module is not None else contextlib.nullcontext():
        modes = [(m, m.training) for m in module.modules()] if module is not None else []
        try:
            if module is not None:
                module.eval()
            with torch.inference_mode():
                for step, batch in batches:
                    images = transform(batch) if transform is not None else batch.images
                    check_float_images(images)
                    images = images.to(dev, dtype) if dtype is not None else images.to(dev)
                    emb = pick_embedding(model(images), embedding_fn)
                    if emb.shape[0] != len(batch):
                        raise DataError(f"batch {step}: {emb.shape[0]} embeddings for {len(batch)}")
                    if not all_finite(emb):
                        raise EmbedcamValueError(
                            f"batch {step}: the model produced NaN or infinite embeddings; check "
                            "the input normalisation and the weights"
                        )
                    embs.append(emb.float().cpu())
                    labels.append(batch.labels.cpu())
        finally:
            for m, mode in modes:
                m.training = mode
    if not embs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(embs), torch.cat(labels)


def gather_rows(*tensors: Tensor) -> list[Tensor]:
    """Concatenate each tensor's rows over the ranks, in rank order (shards are contiguous)."""
    parts = _dist.all_gather_objects([t.cpu() for t in tensors])
    out = []
    for i in range(len(tensors)):
        pieces = [p[i] for p in parts if p[i].shape[0] > 0]
        out.append(torch.cat(pieces) if pieces else tensors[i])
    return out


def embed_loader(
    model: nn.Module | Callable[[Tensor], Any],
    loader: Iterable[Any],
    *,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    progress: bool = False,
    what: str = "embed",
) -> Embedded:
    """Embed every image of a loader, in loader order.

    Under torch.distributed each rank embeds a contiguous shard of the dataset and every rank
    receives the whole result.

    Args:
        model: The embedding model (its mode is restored).
        loader: Batches as accepted by `embedcam.explain_dataset`, in a fixed order.
        embedding_fn: Picks the embedding from a tuple/dict model output.
        progress: Show a rich progress bar (rank 0).
        what: The bar's label.

    Returns:
        The `Embedded` embeddings and labels (CPU).

    Raises:
        DataError: An empty loader or a malformed batch.
        EmbedcamValueError: Non-finite embeddings.
        ConfigurationError: A shuffled loader, or a loader that cannot be sharded.

    Examples:
        >>> import torch
        >>> net = torch.nn.Flatten()
        >>> e = embed_loader(net, [(torch.ones(2, 1, 2, 2), torch.tensor([0, 1]))])
        >>> tuple(e.embeddings.shape), e.labels.tolist()
        ((2, 4), [0, 1])
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    check_fixed_order(loader, "the loader")
    source, _ = _shard(loader)
    flags = {"regions": False, "masks": False}
    rank, _ = _dist.rank_world()
    total = len(source) if hasattr(source, "__len__") else None  # type: ignore[arg-type]
    bar = Progress(
        TextColumn(f"[bold]{what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        disable=not progress or rank != 0,
        transient=True,
    )

    def batches() -> Iterable[tuple[int, Batch]]:
        with bar:
            task = bar.add_task(what, total=total)
            for step, batch in iter_batches(source):
                flags["regions"] |= batch.boxes is not None or batch.masks is not None
                flags["masks"] |= batch.masks is not None
                yield step, batch
                bar.advance(task)

    emb, labels = embed_batches(model, batches(), embedding_fn)
    emb, labels = gather_rows(emb, labels)
    if labels.numel() == 0:
        raise DataError(f"{what}: the loader yielded no images")
    has = _dist.all_gather_objects((flags["regions"], flags["masks"]))
    return Embedded(
        emb, labels, any(h[0] for h in has), any(h[1] for h in has) and all(h[1] for h in has)
    )


class EmbeddingHealth(BaseModel):
    """Signs that an embedding model collapsed (all images mapped to a few directions).

    Attributes:
        images: Number of embeddings measured.
        dim: Embedding dimension.
        effective_rank: ``exp`` of the entropy of the normalised singular values of the
            L2-normalised embeddings (Roy & Vetterli 2007); 1 = one direction, ``dim`` = all.
            Not centred: a collapse onto one direction plus small noise must read 1, not the
            rank of the noise.
        mean_pairwise_cosine: Mean cosine over pairs of distinct embeddings; near 1 = collapsed.
        collapsed: ``effective_rank < min(4, dim / 2)`` or ``mean_pairwise_cosine > 0.5``.
    """

    model_config = ConfigDict(frozen=True)

    images: int
    dim: int
    effective_rank: float
    mean_pairwise_cosine: float
    collapsed: bool


def embedding_health(embeddings: Tensor) -> EmbeddingHealth:
    """Effective rank and mean pairwise cosine of a set of embeddings.

    A healthy metric-learning model spreads classes over many directions: small CNNs trained
    with triplet losses on the 81 products of the Grocery Store dataset (Klasson et al., WACV 2019)
    reached effective ranks of 17-35 and mean pairwise cosines of 0.06-0.20 on 128-d embeddings,
    while focal-loss models that collapsed read 1.8-3.3 and 0.72-0.997. ``collapsed`` flags a rank
    below 4 (or below half the dimension, for tiny embeddings) or a mean cosine above 0.5.

    Args:
        embeddings: ``(N, D)`` with ``N >= 2``.

    Returns:
        The `EmbeddingHealth`.

    Raises:
        EmbedcamValueError: Fewer than two embeddings, or non-finite / zero rows.

    Examples:
        >>> import torch
        >>> h = embedding_health(torch.eye(4))
        >>> round(h.effective_rank, 2), round(h.mean_pairwise_cosine, 2), h.collapsed
        (4.0, 0.0, False)
    """
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise EmbedcamValueError(
            f"embedding_health needs (N, D) embeddings with N >= 2, got {tuple(embeddings.shape)}"
        )
    x = embeddings.detach().to(torch.float64).cpu()
    norms = x.norm(dim=1, keepdim=True)
    if not bool(torch.isfinite(x).all()) or bool((norms == 0).any()):
        raise EmbedcamValueError("embeddings have NaN/inf or zero-norm rows")
    u = x / norms
    n = u.shape[0]
    s = u.sum(0)
    mean_cos = float((s @ s - n) / (n * (n - 1)))
    sv = torch.linalg.svdvals(u)
    p = sv / sv.sum() if float(sv.sum()) > 0 else sv
    p = p[p > 0]
    erank = float(torch.exp(-(p * p.log()).sum())) if p.numel() else 1.0
    return EmbeddingHealth(
        images=n,
        dim=int(u.shape[1]),
        effective_rank=erank,
        mean_pairwise_cosine=mean_cos,
        collapsed=bool(erank < min(4.0, u.shape[1] / 2) or mean_cos > 0.5 or math.isnan(erank)),
    )
