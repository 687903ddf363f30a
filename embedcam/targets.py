"""Embedding targets: the per-image score a CAM explains.

A classifier CAM explains a class logit. An embedding model has no logits, so embedcam explains a
similarity instead (the recipe of Volnova and Suschinskiy, 2026, after the similarity targets of
the pytorch-grad-cam embeddings tutorial):

* [`CentroidTarget`][embedcam.targets.CentroidTarget] - cosine similarity between each image's
  embedding and the centroid of its class (the paper's recipe: the *true* class, whatever the
  classifier predicted);
* [`ReferenceTarget`][embedcam.targets.ReferenceTarget] - cosine similarity to any reference
  embedding per image (a query, a gallery match, a prototype);
* [`ContrastiveTarget`][embedcam.targets.ContrastiveTarget] - cosine to the own centroid minus
  cosine to the most similar *other* centroid: what separates the image from its nearest competitor,
  which is what tells sibling classes apart;
* [`ContrastivePairTarget`][embedcam.targets.ContrastivePairTarget] - cosine to one reference
  minus cosine to another (retrieval: what in the query made the wrong gallery image outrank the
  right one).

Every target is a callable ``(B, D) -> (B,)`` on a batch of embeddings and offers
[`EmbeddingTarget.as_gradcam_targets`][embedcam.targets.EmbeddingTarget.as_gradcam_targets] for
pytorch-grad-cam, whose API wants one callable per sample. Invalid inputs (NaN or zero-norm vectors,
labels outside ``[0, C)``, a batch of the wrong size) raise errors from
[`embedcam.errors`][embedcam.errors] instead of returning NaN scores.

Examples:
    >>> import torch, embedcam as ec
    >>> centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> target = ec.CentroidTarget(centroids, labels=[0, 1])
    >>> target(torch.tensor([[3.0, 4.0], [3.0, 4.0]]))
    tensor([0.6000, 0.8000])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from embedcam._checks import as_label_tensor, check_labels_in_range, check_matrix, check_rows
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

__all__ = [
    "EmbeddingTarget",
    "CentroidTarget",
    "ReferenceTarget",
    "ContrastiveTarget",
    "ContrastivePairTarget",
]


def _owned(t: Tensor) -> Tensor:
    """``t`` detached, as a tensor that autograd may save for backward.

    An inference tensor (made under ``torch.inference_mode()``, the usual way to compute gallery
    embeddings and centroids) cannot take part in a recorded computation: it is copied once, here,
    to a normal tensor. Any other tensor is only detached (no copy).
    """
    if t.is_inference():
        with torch.inference_mode(False):
            return t.clone()
    return t.detach()


def _reference_rows(ref: Tensor, name: str) -> tuple[Tensor, bool]:
    """Validate a ``(B, D)`` or ``(D,)`` reference; return it as an owned ``(B|1, D)`` matrix."""
    if not isinstance(ref, Tensor) or ref.dim() not in (1, 2):
        raise ShapeError(
            f"{name} must be (B, D) or (D,), got "
            f"{tuple(ref.shape) if isinstance(ref, Tensor) else type(ref).__name__}"
        )
    single = ref.dim() == 1
    ref2 = ref.reshape(1, -1) if single else ref
    check_matrix(ref2, name=name, what="reference")
    return _owned(ref2), single


def _cosine_rows(e: Tensor, ref: Tensor) -> Tensor:
    """Row-wise cosine of two validated (B, D) matrices (no epsilon: zero norms were rejected).

    Computed in at least float32: in float16 the product of two norms above 256 overflows to inf
    and every cosine would silently become 0 (and every CAM empty).
    """
    dt = torch.promote_types(e.dtype, torch.float32)
    e, ref = e.to(dt), ref.to(dt)
    return (e * ref).sum(dim=1) / (
        torch.linalg.vector_norm(e, dim=1) * torch.linalg.vector_norm(ref, dim=1)
    )


class EmbeddingTarget(ABC):
    """Base class of embedding targets: a score per image computed from its embedding.

    Subclasses implement [`score`][embedcam.targets.EmbeddingTarget.score];
    [`__call__`][embedcam.targets.EmbeddingTarget.__call__] validates the embeddings once (shape,
    batch size, NaN, zero norm) and then calls it. A target built for a fixed batch (one label or
    reference per image) has `batch_size`; a batch-agnostic target has ``None``.
    """

    #: Number of images the target was built for, or ``None`` when any batch size works.
    batch_size: int | None = None

    #: Whether the score is a cosine, whose gradient vanishes at ``|score| = 1`` (an image
    #: explained against its own embedding): the CAM then flags the explanation as degenerate
    #: (see [`CamResult`][embedcam.cam.result.CamResult]). False for other scores.
    is_cosine: bool = False

    @abstractmethod
    def score(self, embeddings: Tensor) -> Tensor:
        """Compute the per-image score from validated embeddings.

        Args:
            embeddings: ``(B, D)`` float tensor with finite, non-zero rows.

        Returns:
            ``(B,)`` scores, differentiable with respect to ``embeddings``.
        """

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension ``D`` the target expects."""

    def __call__(self, embeddings: Tensor) -> Tensor:
        """Score a batch of embeddings.

        Args:
            embeddings: ``(B, D)`` float tensor (one embedding per image).

        Returns:
            ``(B,)`` tensor of scores.

        Raises:
            ShapeError: ``embeddings`` is not ``(B, D)``, ``D`` differs from the target's, or ``B``
                differs from the number of labels / references the target was built with.
            EmbedcamValueError: an embedding is NaN, infinite or all-zero.
        """
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else None
            raise ShapeError(
                f"embeddings must be a (B, D) tensor, got {shape or type(embeddings).__name__}; "
                "if the model returns a tuple or dict, pass embedding_fn to pick the embedding"
            )
        if embeddings.shape[1] != self.dim:
            raise ShapeError(
                f"embeddings have dimension {embeddings.shape[1]} but the target's reference "
                f"vectors have dimension {self.dim}; build the target from embeddings of the "
                "same model"
            )
        self.check_batch(embeddings.shape[0])
        check_rows(embeddings.detach(), name="embeddings", what="image")
        return self.score(embeddings)

    def check_batch(self, batch_size: int) -> None:
        """Raise `ShapeError` if ``batch_size`` does not fit the target.

        Args:
            batch_size: number of images about to be scored.

        Raises:
            ShapeError: the target holds a different number of labels / references.
        """
        if self.batch_size is not None and batch_size != self.batch_size:
            raise ShapeError(
                f"the target was built for {self.batch_size} images but the batch has "
                f"{batch_size}; build one target per batch with one label/reference per image"
            )

    def as_gradcam_targets(self, batch_size: int | None = None) -> list[Callable[[Tensor], Tensor]]:
        """Per-sample callables in the form pytorch-grad-cam expects.

        pytorch-grad-cam calls ``target(model_output[i])`` for each image ``i`` and silently
        truncates a short list (``zip``); this list always has exactly one callable per image.

        Args:
            batch_size: required for batch-agnostic targets (a single reference embedding); must
                match `batch_size` otherwise.

        Returns:
            A list of ``B`` callables mapping a ``(D,)`` embedding to a scalar score.

        Raises:
            ConfigurationError: the target is batch-agnostic and ``batch_size`` is missing.
            ShapeError: ``batch_size`` differs from the target's.
        """
        if batch_size is None:
            if self.batch_size is None:
                raise ConfigurationError(
                    "this target works for any batch size; pass batch_size= to as_gradcam_targets "
                    "so that there is exactly one target per image"
                )
            batch_size = self.batch_size
        self.check_batch(batch_size)
        return [_SampleTarget(self, i) for i in range(batch_size)]

    def select(self, index: int) -> EmbeddingTarget:
        """The target restricted to one image of the batch (used for per-sample adapters).

        Args:
            index: position of the image in the batch.

        Returns:
            A target with ``batch_size`` 1 (or a batch-agnostic target unchanged).
        """
        return self


class _SampleTarget:
    """One image's target, called by pytorch-grad-cam on a ``(D,)`` embedding."""

    def __init__(self, parent: EmbeddingTarget, index: int) -> None:
        self.parent = parent.select(index)
        self.index = index

    def __call__(self, embedding: Tensor) -> Tensor:
        return self.parent(embedding.reshape(1, -1))[0]


class CentroidTarget(EmbeddingTarget):
    """Cosine similarity between each image's embedding and the centroid of a given class.

    ``score_b = cos(embedding_b, centroids[labels_b])``. Following the paper, pass the *true*
    labels to explain what the model took as evidence for the true class.

    Args:
        centroids: ``(C, D)`` class centroids (e.g. ``ClassCentroids.centroids``); need not be
            normalised.
        labels: ``(B,)`` class index per image, in ``[0, C)``.

    Raises:
        ShapeError: ``centroids`` is not 2-D or ``labels`` is not 1-D.
        EmbedcamValueError: a label is outside ``[0, C)``, or a referenced centroid is NaN or
            zero-norm.

    Examples:
        >>> import torch
        >>> t = CentroidTarget(torch.eye(3), torch.tensor([2]))
        >>> t(torch.tensor([[0.0, 1.0, 1.0]]))
        tensor([0.7071])
    """

    is_cosine = True

    def __init__(self, centroids: Tensor, labels: Tensor | Sequence[int]) -> None:
        if not isinstance(centroids, Tensor) or centroids.dim() != 2:
            raise ShapeError(
                "centroids must be a (C, D) tensor, got "
                f"{tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids)}"
            )
        self.labels = _owned(as_label_tensor(labels))
        check_labels_in_range(self.labels, centroids.shape[0])
        used = torch.unique(self.labels.to(centroids.device))
        check_matrix(centroids[used], name="centroids", what="centroid")
        self.centroids = _owned(centroids)
        self.batch_size = int(self.labels.numel())

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.centroids.shape[1])

    def score(self, embeddings: Tensor) -> Tensor:
        """Cosine of each embedding to its class centroid, ``(B, D) -> (B,)``."""
        cents = self.centroids.to(embeddings.device, embeddings.dtype)
        ref = cents[self.labels.to(embeddings.device)]
        return _cosine_rows(embeddings, ref)

    def select(self, index: int) -> CentroidTarget:
        """The target for image ``index`` alone."""
        return CentroidTarget(self.centroids, self.labels[index : index + 1])


class ReferenceTarget(EmbeddingTarget):
    """Cosine similarity between each image's embedding and a reference embedding.

    ``score_b = cos(embedding_b, reference_b)``. A single ``(D,)`` reference is used for every
    image (the target is then batch-agnostic).

    Args:
        reference_embeddings: ``(B, D)`` one reference per image, or ``(D,)`` one for all.

    Raises:
        ShapeError: the reference is not 1-D or 2-D.
        EmbedcamValueError: a reference is NaN or zero-norm.

    Examples:
        >>> import torch
        >>> t = ReferenceTarget(torch.tensor([0.0, 2.0]))
        >>> t(torch.tensor([[1.0, 1.0], [0.0, -5.0]]))
        tensor([ 0.7071, -1.0000])
    """

    is_cosine = True

    def __init__(self, reference_embeddings: Tensor) -> None:
        self.reference, self._single = _reference_rows(reference_embeddings, "reference_embeddings")
        self.batch_size = None if self._single else int(self.reference.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.reference.shape[1])

    def score(self, embeddings: Tensor) -> Tensor:
        """Cosine of each embedding to its reference, ``(B, D) -> (B,)``."""
        ref = self.reference.to(embeddings.device, embeddings.dtype)
        return _cosine_rows(embeddings, ref.expand_as(embeddings))

    def select(self, index: int) -> ReferenceTarget:
        """The target for image ``index`` alone."""
        if self._single:
            return self
        return ReferenceTarget(self.reference[index : index + 1])


class ContrastiveTarget(EmbeddingTarget):
    """Own-centroid cosine minus the cosine to the most similar other centroid.

    ``score_b = cos(e_b, c_{y_b}) - cos(e_b, c_{j*})`` with ``j* != y_b`` the competitor. This
    explains what separates the image from its nearest rival class rather than what makes it look
    like its family: on sibling classes that differ in a small detail, the plain centroid cosine is
    dominated by shared shape and colour (see the project's FINDINGS), the contrastive one is not.

    The competitor is chosen without gradient (an ``argmax``), and the gradient flows through both
    cosines. Centroids with zero norm (classes without samples, fitted with ``allow_empty=True``)
    are never competitors.

    Args:
        centroids: ``(C, D)`` class centroids, ``C >= 2``.
        labels: ``(B,)`` class index per image.
        competitor: ``"embedding"`` (default) picks the other centroid most similar to the image's
            embedding (its nearest rival now); ``"centroid"`` picks the other centroid most similar
            to the image's own class centroid (a fixed rival per class).

    Raises:
        ConfigurationError: fewer than two usable centroids, or an unknown ``competitor``.
        EmbedcamValueError: a label is outside ``[0, C)``, or a centroid is NaN, or a referenced
            centroid is zero-norm.

    Examples:
        >>> import torch
        >>> t = ContrastiveTarget(torch.eye(3), torch.tensor([0]))
        >>> t(torch.tensor([[3.0, 0.0, 4.0]]))
        tensor([-0.2000])
    """

    def __init__(
        self,
        centroids: Tensor,
        labels: Tensor | Sequence[int],
        competitor: Literal["embedding", "centroid"] = "embedding",
    ) -> None:
        if not isinstance(centroids, Tensor) or centroids.dim() != 2:
            raise ShapeError(
                "centroids must be a (C, D) tensor, got "
                f"{tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids)}"
            )
        if competitor not in ("embedding", "centroid"):
            raise ConfigurationError(
                f"competitor must be 'embedding' or 'centroid', got {competitor!r}"
            )
        if not bool(torch.isfinite(centroids).all()):
            raise EmbedcamValueError(
                "centroids contain NaN or infinite values; refit them from finite embeddings"
            )
        self.labels = _owned(as_label_tensor(labels))
        check_labels_in_range(self.labels, centroids.shape[0])
        used = torch.unique(self.labels.to(centroids.device))
        check_matrix(centroids[used], name="centroids", what="centroid")
        self.centroids = _owned(centroids)
        # Normal tensors even when the target is built under torch.inference_mode().
        with torch.inference_mode(False):
            usable = torch.linalg.vector_norm(self.centroids, dim=1) > 0
            self._unit = self.centroids / torch.linalg.vector_norm(
                self.centroids, dim=1, keepdim=True
            ).clamp_min(torch.finfo(self.centroids.dtype).tiny)
        if int(usable.sum()) < 2:
            raise ConfigurationError(
                "a contrastive target needs at least two classes with non-zero centroids; use "
                "CentroidTarget for a single class"
            )
        self.usable = usable
        self.competitor = competitor
        self.batch_size = int(self.labels.numel())

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.centroids.shape[1])

    def competitors(self, embeddings: Tensor) -> Tensor:
        """Index of the rival centroid for each image, ``(B, D) -> (B,)`` int64.

        Args:
            embeddings: ``(B, D)`` embeddings (only used when ``competitor="embedding"``).

        Returns:
            ``(B,)`` class indices, never equal to the image's own label.
        """
        dt = torch.promote_types(embeddings.dtype, torch.float32)  # no float16 overflow
        unit = self._unit.to(embeddings.device, dt)
        labels = self.labels.to(embeddings.device)
        with torch.no_grad():
            if self.competitor == "embedding":
                sims = embeddings.detach().to(dt) @ unit.T
            else:
                sims = unit[labels] @ unit.T
            sims = sims.masked_fill(~self.usable.to(embeddings.device), float("-inf"))
            sims.scatter_(1, labels[:, None], float("-inf"))
            return sims.argmax(dim=1)

    def score(self, embeddings: Tensor) -> Tensor:
        """Own-centroid cosine minus rival cosine, ``(B, D) -> (B,)``."""
        cents = self.centroids.to(embeddings.device, embeddings.dtype)
        own = cents[self.labels.to(embeddings.device)]
        rival = cents[self.competitors(embeddings)]
        return _cosine_rows(embeddings, own) - _cosine_rows(embeddings, rival)

    def select(self, index: int) -> ContrastiveTarget:
        """The target for image ``index`` alone."""
        return ContrastiveTarget(self.centroids, self.labels[index : index + 1], self.competitor)


class ContrastivePairTarget(EmbeddingTarget):
    """Cosine to one reference minus cosine to another: why ``toward`` beat ``away``.

    ``score_b = cos(e_b, toward_b) - cos(e_b, away_b)``. In retrieval, with the query's image
    explained, ``toward`` the embedding of a wrong gallery image that outranked the right one and
    ``away`` the embedding of that right one, the map shows the query evidence that made the wrong
    neighbour win (a positive score: it did win). Swap the two to see what spoke for the right one.
    Either reference may be a single ``(D,)`` vector shared by the batch.

    This is a difference of cosines, so the saturated-cosine rule of the degenerate flag does not
    apply (``is_cosine`` is false); the sensitivity rule does.

    Args:
        toward: ``(B, D)`` or ``(D,)`` embeddings the score rewards similarity to.
        away: ``(B, D)`` or ``(D,)`` embeddings the score penalises similarity to.

    Raises:
        ShapeError: a reference is not 1-D or 2-D, the two have different dimensions, or
            different batch sizes.
        EmbedcamValueError: a reference is NaN or zero-norm.

    Examples:
        >>> import torch
        >>> t = ContrastivePairTarget(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
        >>> t(torch.tensor([[3.0, 4.0], [4.0, 3.0]]))
        tensor([-0.2000,  0.2000])
    """

    def __init__(self, toward: Tensor, away: Tensor) -> None:
        self.toward, single_t = _reference_rows(toward, "toward")
        self.away, single_a = _reference_rows(away, "away")
        if self.toward.shape[1] != self.away.shape[1]:
            raise ShapeError(
                f"toward has dimension {self.toward.shape[1]} but away has "
                f"{self.away.shape[1]}; both must be embeddings of the same model"
            )
        sizes = {
            int(r.shape[0])
            for r, single in ((self.toward, single_t), (self.away, single_a))
            if not single
        }
        if len(sizes) > 1:
            raise ShapeError(
                f"toward holds {self.toward.shape[0]} references but away holds "
                f"{self.away.shape[0]}; pass one of each per image, or a single (D,) vector"
            )
        self._single = (single_t, single_a)
        self.batch_size = sizes.pop() if sizes else None

    @property
    def dim(self) -> int:
        """Embedding dimension ``D``."""
        return int(self.toward.shape[1])

    def score(self, embeddings: Tensor) -> Tensor:
        """``cos(e, toward) - cos(e, away)`` per row, ``(B, D) -> (B,)``."""
        t = self.toward.to(embeddings.device, embeddings.dtype).expand_as(embeddings)
        a = self.away.to(embeddings.device, embeddings.dtype).expand_as(embeddings)
        return _cosine_rows(embeddings, t) - _cosine_rows(embeddings, a)

    def select(self, index: int) -> ContrastivePairTarget:
        """The target for image ``index`` alone."""
        t = self.toward if self._single[0] else self.toward[index : index + 1]
        a = self.away if self._single[1] else self.away[index : index + 1]
        return ContrastivePairTarget(t[0] if self._single[0] else t, a[0] if self._single[1] else a)
