"""Classify embeddings: k nearest neighbours, nearest centroid, macro-F1 (the paper's kNN).

Choices where the paper is silent (and why):

- **Similarity**: cosine (embeddings are L2-normalised, so this ranks exactly like Euclidean and
  squared distance).
- **k = 5** by default: an odd, small k.
- **Neighbour order**: by decreasing similarity; equal similarities keep gallery order (a stable
  sort), so the lower gallery index is the nearer neighbour.
- **Vote**: each of the k neighbours casts one vote for its class (uniform weights, like
  scikit-learn's default). A tie in votes goes to the tied class with the larger summed
  similarity of its voting neighbours (the closer group wins); a remaining tie goes to the smaller
  class id. Without vote ties the result equals ``KNeighborsClassifier(k, metric="cosine")``.
- **Macro-F1** averages the per-class F1 over the classes that occur in the true or the predicted
  labels (scikit-learn's ``f1_score(average="macro")`` default); a class with no true and no
  predicted samples is left out rather than counted as 0.
- Everything is torch: no scikit-learn needed (the tests compare against it).

Examples:
    >>> import torch
    >>> from embedcam.classify import knn_predict, evaluate
    >>> gallery = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pred = knn_predict(torch.tensor([[1.0, 0.2], [0.2, 1.0]]), gallery,
    ...                    torch.tensor([0, 0, 1, 1]), k=3)
    >>> pred.tolist()
    [0, 1]
    >>> evaluate(pred, torch.tensor([0, 0]), num_classes=2).errors
    1
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from embedcam._checks import all_finite
from embedcam.errors import EmbedcamValueError, ShapeError

__all__ = ["knn_predict", "nearest_centroid_predict", "KnnEvaluation", "evaluate"]


def _check_matrix(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ShapeError(f"{name} must be a (N, D) tensor, got {shape}")
    if not x.is_floating_point():
        raise EmbedcamValueError(f"{name} must be a float tensor, got {x.dtype}")
    if not all_finite(x):
        raise EmbedcamValueError(f"{name} contains NaN or inf; check the model that produced it")
    # a zero row is one without a non-zero entry: the float32 norm of a tiny (1e-30) row
    # underflows to 0 although its direction, and so its cosine, is well defined
    zero = x.abs().amax(dim=1) == 0 if x.shape[1] else torch.ones(x.shape[0], dtype=torch.bool)
    if bool(zero.any()):
        rows = zero.nonzero().flatten().tolist()[:10]
        raise EmbedcamValueError(f"{name} has zero-norm rows {rows}; cosine is undefined there")


def _check_chunk(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise EmbedcamValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise float64 rows without under- or overflow (rows are scaled by their max)."""
    x = x.to(torch.float64)
    return F.normalize(x / x.abs().amax(dim=1, keepdim=True), dim=1)


def knn_predict(
    query: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    k: int = 5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Classify query embeddings by a k-nearest-neighbour vote in a labelled gallery.

    Args:
        query: ``(Q, D)`` embeddings to classify.
        gallery: ``(G, D)`` reference embeddings (the training set).
        gallery_labels: ``(G,)`` integer labels of the gallery.
        k: Neighbours per query, ``1 <= k <= G``.
        chunk_size: Queries processed at once (bounds memory to ``chunk_size * G``).

    Returns:
        ``(Q,)`` int64 predicted labels (see the module docstring for ties); ``(0,)`` for
        ``Q = 0``.

    Raises:
        ShapeError: If shapes disagree or ``gallery_labels`` is not a tensor.
        EmbedcamValueError: On NaN / zero-norm embeddings, negative labels, a bad ``k`` or
            ``chunk_size``.
    """
    _check_matrix("query", query)
    _check_matrix("gallery", gallery)
    if query.shape[1] != gallery.shape[1]:
        raise ShapeError(f"query has dimension {query.shape[1]} but gallery has {gallery.shape[1]}")
    _check_chunk(chunk_size)
    if not isinstance(gallery_labels, torch.Tensor):
        raise ShapeError(
            f"gallery_labels must be a ({gallery.shape[0]},) integer tensor, got "
            f"{type(gallery_labels).__name__}; wrap it with torch.as_tensor"
        )
    if gallery_labels.ndim != 1 or gallery_labels.shape[0] != gallery.shape[0]:
        raise ShapeError(
            f"gallery_labels must be ({gallery.shape[0]},), got {tuple(gallery_labels.shape)}"
        )
    if gallery_labels.is_floating_point() or bool((gallery_labels < 0).any()):
        raise EmbedcamValueError("gallery_labels must be integer class ids >= 0")
    if not (isinstance(k, int) and 1 <= k <= gallery.shape[0]):
        raise EmbedcamValueError(f"k must be an int in [1, {gallery.shape[0]}], got {k!r}")
    labels = gallery_labels.to(gallery.device, torch.int64)
    num_classes = int(labels.max()) + 1
    g = _normalize(gallery)
    out = [torch.zeros(0, dtype=torch.int64, device=g.device)]  # an empty query gives (0,)
    for start in range(0, query.shape[0], chunk_size):
        q = _normalize(query[start : start + chunk_size].to(g.device))
        sims = q @ g.T
        top_sim, top_idx = torch.sort(sims, dim=1, descending=True, stable=True)
        top_sim, top_lab = top_sim[:, :k], labels[top_idx[:, :k]]
        votes = torch.zeros(q.shape[0], num_classes, dtype=torch.float64, device=g.device)
        votes.scatter_add_(1, top_lab, torch.ones_like(top_sim))
        sim_sum = torch.zeros_like(votes).scatter_add_(1, top_lab, top_sim)
        tied = votes == votes.max(dim=1, keepdim=True).values
        # argmax returns the first maximum, i.e. the smallest class id among exact ties.
        out.append(torch.where(tied, sim_sum, -torch.inf).argmax(dim=1))
    return torch.cat(out)


@dataclass(frozen=True)
class KnnEvaluation:
    """Classification quality of predicted labels.

    Attributes:
        macro_f1: Mean per-class F1 over the classes in the true or predicted labels.
        accuracy: Fraction of correct predictions.
        errors: Number of wrong predictions.
        confusion: ``(C, C)`` int64 counts, rows = true class, columns = predicted class.
        per_class_f1: ``(C,)`` float64 F1 of every class (0 where undefined).
        present: ``(C,)`` bool, classes that occur in the true or predicted labels.
    """

    macro_f1: float
    accuracy: float
    errors: int
    confusion: torch.Tensor
    per_class_f1: torch.Tensor
    present: torch.Tensor


def evaluate(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> KnnEvaluation:
    """Macro-F1, error count and confusion matrix of predictions.

    Args:
        pred: ``(N,)`` predicted labels in ``[0, num_classes)``.
        true: ``(N,)`` true labels in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        A `KnnEvaluation`.

    Raises:
        ShapeError: If ``pred`` and ``true`` are not the same ``(N,)`` shape, or empty.
        EmbedcamValueError: If a label is outside ``[0, num_classes)`` or the labels are not
            integers (float labels are refused, not truncated).

    Examples:
        >>> import torch
        >>> ev = evaluate(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), num_classes=3)
        >>> ev.errors, ev.confusion.tolist()
        (1, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
        >>> round(ev.macro_f1, 4)  # F1 = 1, 2/3, 2/3
        0.7778
    """
    for name, v in (("pred", pred), ("true", true)):
        if not isinstance(v, torch.Tensor):
            raise ShapeError(f"{name} must be an (N,) integer tensor, got {type(v).__name__}")
        if v.is_floating_point() or v.is_complex() or v.dtype == torch.bool:
            raise EmbedcamValueError(
                f"{name} must hold integer class ids, got dtype {v.dtype}; casting would truncate "
                "0.5 to class 0 silently"
            )
    if pred.ndim != 1 or pred.shape != true.shape or pred.numel() == 0:
        raise ShapeError(
            f"pred and true must be non-empty (N,) tensors of one shape, got {tuple(pred.shape)} "
            f"and {tuple(true.shape)}"
        )
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise EmbedcamValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    pred, true = pred.to(torch.int64).cpu(), true.to(torch.int64).cpu()
    for name, v in (("pred", pred), ("true", true)):
        if bool((v < 0).any()) or bool((v >= num_classes).any()):
            raise EmbedcamValueError(
                f"{name} has labels outside [0, {num_classes}): min {int(v.min())}, "
                f"max {int(v.max())}; pass the right num_classes"
            )
    confusion = torch.bincount(true * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )
    tp = confusion.diag().to(torch.float64)
    support = confusion.sum(dim=1).to(torch.float64)
    predicted = confusion.sum(dim=0).to(torch.float64)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), 0.0)
    present = denom > 0
    errors = int((pred != true).sum())
    return KnnEvaluation(
        macro_f1=float(f1[present].mean()),
        accuracy=1.0 - errors / pred.numel(),
        errors=errors,
        confusion=confusion,
        per_class_f1=f1,
        present=present,
    )


def nearest_centroid_predict(
    query: torch.Tensor, centroids: torch.Tensor, chunk_size: int = 4096
) -> torch.Tensor:
    """Classify query embeddings by the class centroid of highest cosine similarity.

    Args:
        query: ``(Q, D)`` embeddings.
        centroids: ``(C, D)`` class centroids (e.g. ``ClassCentroids.centroids``).
        chunk_size: Queries processed at once.

    Returns:
        ``(Q,)`` int64 class indices (ties go to the smaller class id); ``(0,)`` for ``Q = 0``.

    Raises:
        ShapeError: If shapes disagree.
        EmbedcamValueError: On NaN / zero-norm rows or a bad ``chunk_size``.

    Examples:
        >>> import torch
        >>> nearest_centroid_predict(torch.tensor([[1.0, 0.1], [0.0, 2.0]]),
        ...                          torch.tensor([[1.0, 0.0], [0.0, 1.0]])).tolist()
        [0, 1]
    """
    _check_matrix("query", query)
    _check_matrix("centroids", centroids)
    if query.shape[1] != centroids.shape[1]:
        raise ShapeError(
            f"query has dimension {query.shape[1]} but centroids have {centroids.shape[1]}"
        )
    _check_chunk(chunk_size)
    c = _normalize(centroids)
    out = [torch.zeros(0, dtype=torch.int64, device=c.device)]  # an empty query gives (0,)
    for start in range(0, query.shape[0], chunk_size):
        q = _normalize(query[start : start + chunk_size].to(c.device))
        out.append((q @ c.T).argmax(dim=1))
    return torch.cat(out)
