"""Class centroids: the arithmetic mean embedding of each class, streamed over a DataLoader.

The paper's reference embedding of a class is the arithmetic mean of the embeddings of all its
training images (Volnova and Suschinskiy, 2026, step 1).
[`ClassCentroids.fit`][embedcam.centroids.ClassCentroids.fit] computes it in one pass under
inference mode, accumulating sums and counts in float64 so that the result does not depend on batch
order or size, with memory ``O(C x D)`` whatever the dataset size. Under ``torch.distributed`` each
rank passes its own shard and the sums and counts are all-reduced, so every rank ends with the
global centroids.

Examples:
    >>> import torch, embedcam as ec
    >>> model = torch.nn.Flatten()          # "embeds" a 1x1x2 image as its two pixel values
    >>> images = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]]).reshape(3, 1, 1, 2)
    >>> loader = [(images, torch.tensor([0, 0, 1]))]
    >>> cents = ec.ClassCentroids.fit(model, loader, progress=False)
    >>> cents.centroids
    tensor([[2., 0.],
            [0., 2.]])
    >>> cents.counts
    tensor([2, 1])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from embedcam._checks import all_finite, as_label_tensor
from embedcam._model import embed, model_device
from embedcam._repr import tensor_summary
from embedcam.atomic import atomic_torch_save
from embedcam.errors import ConfigurationError, DataError, EmbedcamValueError, ShapeError

__all__ = ["ClassCentroids"]

_FORMAT = "embedcam.ClassCentroids/1"


def _split_batch(batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(batch, Mapping):
        missing = [k for k in ("image", "label") if k not in batch]
        if missing:
            raise DataError(
                f"a dict batch must have 'image' and 'label' keys; missing {missing}, got keys "
                f"{sorted(batch)}. Rename the keys in the dataset or collate function"
            )
        return batch["image"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise DataError(
        f"loader batches must be (images, labels) tuples or dicts with 'image'/'label' keys, got "
        f"{type(batch).__name__}; wrap the dataset so it yields one of these"
    )


@dataclass
class ClassCentroids:
    """Per-class mean embeddings with their sample counts.

    Build with [`fit`][embedcam.centroids.ClassCentroids.fit] (or
    [`from_embeddings`][embedcam.centroids.ClassCentroids.from_embeddings] when the embeddings are
    already in memory); persist with [`save`][embedcam.centroids.ClassCentroids.save] /
    [`load`][embedcam.centroids.ClassCentroids.load].

    Attributes:
        centroids: ``(C, D)`` float32 class means (L2-normalised rows if ``normalized``). Rows of
            classes without samples (only with ``allow_empty=True``) are zero.
        counts: ``(C,)`` int64 number of samples per class.
        normalized: whether the rows were L2-normalised after averaging.
        metadata: free-form information saved with the centroids (e.g. the model name).
    """

    centroids: Tensor
    counts: Tensor
    normalized: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        empty = int((self.counts == 0).sum())
        return (
            f"ClassCentroids(centroids={tensor_summary(self.centroids)}, "
            f"images={int(self.counts.sum())}, empty_classes={empty}, "
            f"normalized={self.normalized})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.centroids.shape[1])

    @classmethod
    def fit(
        cls,
        model: nn.Module | Callable[[Tensor], Any],
        loader: Iterable[Any],
        num_classes: int | None = None,
        progress: bool = True,
        *,
        embedding_fn: Callable[[Any], Tensor] | None = None,
        normalize: bool = False,
        allow_empty: bool = False,
        device: torch.device | str | None = None,
    ) -> ClassCentroids:
        """Compute class centroids in one streaming pass over ``loader``.

        The model runs in eval mode under `torch.inference_mode`; its previous training mode
        is restored afterwards. Sums and counts accumulate in float64 on the model's device.

        Args:
            model: the embedding model (a module, or any callable on an image batch).
            loader: an iterable of batches, each ``(images, labels)`` or a dict with ``image`` and
                ``label`` keys (e.g. a ``torch.utils.data.DataLoader``).
            num_classes: number of classes ``C``. If ``None``, ``C = max label + 1`` (all ranks
                agree on it under ``torch.distributed``).
            progress: show a rich progress bar.
            embedding_fn: picks the ``(B, D)`` embedding from the model output when the model
                returns a tuple, dict or anything else that is not the embedding itself.
            normalize: L2-normalise each centroid after averaging (the paper uses the plain mean).
            allow_empty: allow classes without samples (their centroid row is zero, count 0);
                by default such a class is an error naming it.
            device: where to run the model; defaults to the device of its first parameter.

        Returns:
            The fitted centroids (float32, on the model's device).

        Raises:
            DataError: the loader is empty, a batch has the wrong form, or a class has no samples.
            ShapeError: the embeddings are not ``(B, D)`` or the labels do not match the batch.
            EmbedcamValueError: a label is negative or ``>= num_classes``, or an embedding is
                not finite.
            ConfigurationError: the model output is not a tensor and no ``embedding_fn`` was given.
        """
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ConfigurationError(f"num_classes must be a positive int, got {num_classes!r}")
        dev = (
            torch.device(device)
            if device is not None
            else (model_device(model) if isinstance(model, nn.Module) else torch.device("cpu"))
        )
        sums: Tensor | None = None
        counts: Tensor | None = None
        was_training = (
            [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
        )
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        bar = Progress(
            TextColumn("[bold]centroids"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not progress,
            transient=True,
        )
        try:
            if isinstance(model, nn.Module):
                model.eval()
            with bar, torch.inference_mode():
                task = bar.add_task("centroids", total=total)
                for step, batch in enumerate(loader):
                    images, labels = _split_batch(batch)
                    labels = as_label_tensor(labels).to(dev)
                    emb = embed(model(images.to(dev)), embedding_fn)
                    if emb.shape[0] != labels.shape[0]:
                        raise ShapeError(
                            f"batch {step}: {emb.shape[0]} embeddings but {labels.shape[0]} "
                            "labels; the loader must yield one label per image"
                        )
                    if not all_finite(emb):
                        raise EmbedcamValueError(
                            f"batch {step}: the model produced NaN or infinite embeddings; check "
                            "the input normalisation and the weights"
                        )
                    if labels.numel() and int(labels.min()) < 0:
                        raise EmbedcamValueError(
                            f"batch {step}: negative label {int(labels.min())}; labels must be "
                            "class indices in [0, C)"
                        )
                    top = int(labels.max()) + 1 if labels.numel() else 0
                    if num_classes is not None and top > num_classes:
                        raise EmbedcamValueError(
                            f"batch {step}: label {top - 1} is >= num_classes={num_classes}; "
                            "raise num_classes or fix the label mapping"
                        )
                    if sums is None:
                        width = num_classes if num_classes is not None else max(top, 1)
                        sums = torch.zeros(width, emb.shape[1], dtype=torch.float64, device=dev)
                        counts = torch.zeros(width, dtype=torch.int64, device=dev)
                    elif emb.shape[1] != sums.shape[1]:
                        raise ShapeError(
                            f"batch {step}: embedding dimension {emb.shape[1]} differs from the "
                            f"first batch's {sums.shape[1]}"
                        )
                    assert counts is not None
                    if top > sums.shape[0]:  # grow when num_classes is inferred
                        grow = top - sums.shape[0]
                        sums = torch.cat([sums, sums.new_zeros(grow, sums.shape[1])])
                        counts = torch.cat([counts, counts.new_zeros(grow)])
                    sums.index_add_(0, labels, emb.to(torch.float64))
                    counts.index_add_(0, labels, torch.ones_like(labels))
                    bar.advance(task)
        finally:
            for m, mode in was_training:
                m.train(mode)
        sums, counts = cls._all_reduce(sums, counts, num_classes, dev)
        return cls._finish(sums, counts, normalize=normalize, allow_empty=allow_empty)

    @staticmethod
    def _all_reduce(
        sums: Tensor | None, counts: Tensor | None, num_classes: int | None, dev: torch.device
    ) -> tuple[Tensor, Tensor]:
        import torch.distributed as dist

        distributed = dist.is_available() and dist.is_initialized()
        if not distributed:
            if sums is None or counts is None:
                raise DataError("the loader yielded no batches; there is nothing to average")
            return sums, counts
        # Ranks may have seen different label ranges, or no data at all: agree on (C, D) first.
        shape = torch.tensor(
            [sums.shape[0] if sums is not None else 0, sums.shape[1] if sums is not None else 0],
            dtype=torch.int64,
            device=dev,
        )
        dist.all_reduce(shape, op=dist.ReduceOp.MAX)
        width, dim = int(shape[0]), int(shape[1])
        if num_classes is not None:
            width = num_classes
        if dim == 0:
            raise DataError("no rank's loader yielded any batch; there is nothing to average")
        full_sums = torch.zeros(width, dim, dtype=torch.float64, device=dev)
        full_counts = torch.zeros(width, dtype=torch.int64, device=dev)
        if sums is not None and counts is not None:
            full_sums[: sums.shape[0]] = sums
            full_counts[: counts.shape[0]] = counts
        dist.all_reduce(full_sums)
        dist.all_reduce(full_counts)
        return full_sums, full_counts

    @classmethod
    def _finish(
        cls, sums: Tensor, counts: Tensor, *, normalize: bool, allow_empty: bool
    ) -> ClassCentroids:
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty and not allow_empty:
            raise DataError(
                f"class(es) {empty[:20]} have no samples, so their centroid is undefined; add "
                "images of these classes, pass num_classes matching the labels present, or pass "
                "allow_empty=True to get zero rows for them"
            )
        means = sums / counts.clamp_min(1).to(torch.float64)[:, None]
        if normalize:
            norms = torch.linalg.vector_norm(means, dim=1, keepdim=True)
            zero = [i for i in (norms[:, 0] == 0).nonzero().flatten().tolist() if i not in empty]
            if zero:
                raise EmbedcamValueError(
                    f"class(es) {zero} have a zero mean embedding and cannot be normalised; "
                    "use normalize=False"
                )
            means = means / norms.clamp_min(torch.finfo(torch.float64).tiny)
        return cls(centroids=means.to(torch.float32), counts=counts, normalized=normalize)

    @classmethod
    def from_embeddings(
        cls,
        embeddings: Tensor,
        labels: Tensor,
        num_classes: int | None = None,
        *,
        normalize: bool = False,
        allow_empty: bool = False,
    ) -> ClassCentroids:
        """Compute centroids from embeddings already in memory (one-shot, float64 means).

        Args:
            embeddings: ``(N, D)`` embeddings.
            labels: ``(N,)`` class indices.
            num_classes: ``C``; defaults to ``max label + 1``.
            normalize: L2-normalise each centroid.
            allow_empty: allow classes without samples (zero rows).

        Returns:
            The centroids.

        Raises:
            ShapeError: mismatched or wrongly shaped inputs.
            EmbedcamValueError: labels out of range or non-finite embeddings.
            DataError: a class has no samples (unless ``allow_empty``).
        """
        loader = [(embeddings, labels)]
        return cls.fit(
            nn.Identity(),
            loader,
            num_classes=num_classes,
            progress=False,
            normalize=normalize,
            allow_empty=allow_empty,
            device=embeddings.device,
        )

    def to(self, device: torch.device | str) -> ClassCentroids:
        """A copy on ``device``.

        Args:
            device: target device.

        Returns:
            The centroids on ``device``.
        """
        return ClassCentroids(
            self.centroids.to(device), self.counts.to(device), self.normalized, dict(self.metadata)
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the centroids, counts and metadata to ``path`` atomically (temp file + rename).

        Args:
            path: destination file (conventionally ``.pt``).
        """
        payload = {
            "format": _FORMAT,
            "centroids": self.centroids.detach().cpu(),
            "counts": self.counts.detach().cpu(),
            "normalized": self.normalized,
            "num_classes": self.num_classes,
            "dim": self.dim,
            "metadata": dict(self.metadata),
        }
        atomic_torch_save(payload, Path(path))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], map_location: torch.device | str = "cpu"
    ) -> ClassCentroids:
        """Read centroids written by [`save`][embedcam.centroids.ClassCentroids.save].

        Args:
            path: file written by [`save`][embedcam.centroids.ClassCentroids.save].
            map_location: device to load the tensors to.

        Returns:
            The centroids.

        Raises:
            DataError: the file is missing, empty, truncated or corrupt, not a torch file, not an
                embedcam centroid file, or malformed (a missing key, a value of the wrong type or
                shape, NaN/inf centroids, negative counts); the message names the file and what
                is wrong. Loading uses ``weights_only=True``: a file holding arbitrary pickled
                objects is refused.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"centroid file {p} does not exist; write it with ClassCentroids.save")
        if p.stat().st_size == 0:
            raise DataError(
                f"centroid file {p} is empty (0 bytes); an interrupted copy or write? Write it "
                "again with ClassCentroids.save"
            )
        try:
            payload = torch.load(p, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises many types for corrupt files
            raise DataError(f"cannot read centroid file {p}: {_load_reason(p, err)}") from err
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise DataError(f"{p} is not an embedcam centroid file (expected format {_FORMAT})")
        return cls(*_check_payload(p, payload))


def _load_reason(p: Path, err: Exception) -> str:
    """Why ``torch.load`` failed, in words (torch's own messages are often blank or cryptic)."""
    import pickle
    import zipfile

    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    detail = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    with p.open("rb") as fh:
        head = fh.read(4)
    if "weights_only" in str(err) or "Unsupported global" in str(err):
        return (
            f"it holds objects that weights_only=True loading refuses ({detail}); centroid "
            "files hold only tensors, numbers and strings"
        )
    if head.startswith(b"PK") or zipfile.is_zipfile(p):
        return f"the file is truncated or corrupt ({detail}); write it again"
    if isinstance(err, (pickle.UnpicklingError, EOFError)) and head[:1] == b"\x80":
        return f"the file is truncated or corrupt ({detail}); write it again"
    return f"it is not a torch file written by ClassCentroids.save ({detail})"


_PAYLOAD_KEYS = ("centroids", "counts", "normalized", "num_classes", "dim", "metadata")


def _check_payload(p: Path, payload: dict[str, Any]) -> tuple[Tensor, Tensor, bool, dict]:
    """Validate a loaded centroid payload; return ``(centroids, counts, normalized, metadata)``."""
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    if missing:
        raise DataError(f"{p} is malformed: missing key(s) {missing}; write it with save")

    def bad(what: str) -> DataError:
        return DataError(f"{p} is malformed: {what}")

    cents, counts = payload["centroids"], payload["counts"]
    c, d = payload["num_classes"], payload["dim"]
    for key, v in (("num_classes", c), ("dim", d)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(f"{key} must be an int >= 1, got {v!r}")
    if not isinstance(payload["normalized"], bool):
        raise bad(f"normalized must be a bool, got {payload['normalized']!r}")
    if not isinstance(payload["metadata"], dict):
        raise bad(f"metadata must be a dict, got {type(payload['metadata']).__name__}")
    if not isinstance(cents, Tensor):
        raise bad(f"centroids must be a tensor, got {type(cents).__name__}")
    if cents.dim() != 2:
        raise bad(f"centroids must be 2-D (C, D), got {tuple(cents.shape)}")
    if not cents.is_floating_point():
        raise bad(f"centroids must be floating, got {cents.dtype}")
    if tuple(cents.shape) != (c, d):
        raise bad(f"centroids are {tuple(cents.shape)} but num_classes={c}, dim={d}")
    if not isinstance(counts, Tensor):
        raise bad(f"counts must be a tensor, got {type(counts).__name__}")
    if tuple(counts.shape) != (c,):
        raise bad(f"counts must be ({c},), one per class, got {tuple(counts.shape)}")
    if counts.is_floating_point() or counts.dtype == torch.bool or counts.is_complex():
        raise bad(f"counts must be integer, got {counts.dtype}")
    rows = (~torch.isfinite(cents).all(1)).nonzero().flatten().tolist()
    if rows:
        raise bad(f"centroids have NaN or infinite values in rows {rows[:10]}")
    negative = (counts < 0).nonzero().flatten().tolist()
    if negative:
        raise bad(f"counts of classes {negative[:10]} are negative")
    return cents, counts.to(torch.int64), payload["normalized"], dict(payload["metadata"])
