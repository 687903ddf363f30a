"""Triplet miners: which (anchor, positive, negative) triplets a batch contributes.

Miners are separate from losses (the pytorch-metric-learning design): a loss computes a distance
matrix in its own space (plain, squared or focal ``exp(D / sigma)``) and a margin for every
(anchor, negative) pair, and hands both to a miner, which returns index triplets. A miner only
selects triplets: how their losses are averaged is the loss's
[`reducer`][paper_sku.reducers.TripletReducer], whatever the miner. All miners are vectorised over
the batch; none loops over triplets in Python.

Every miner works on the *loss-space* distance ``dist`` (B, B) and the per-pair margins
``margins`` (B, B). With a constant margin, the rules below are exactly the published ones; with a
per-pair margin (the flexible-margin loss) the margin enters through the *effective negative
distance* ``dist[a, n] - margins[a, n]``: a smaller value means a larger loss.

- [`SemiHardMiner`][paper_sku.mining.SemiHardMiner] with ``style="tensorflow"`` (the default)
  follows TensorFlow Addons' ``triplet_semihard_loss`` (after Schroff et al., *FaceNet*, CVPR
  2015): for every ordered positive pair (a, p), p != a, take among the negatives *farther* than
  the positive (``dist[a, n] > dist[a, p]``) the one with the smallest effective distance (with a
  constant margin: the closest such negative); if there is none, take the negative with the
  largest effective distance (the farthest negative). TensorFlow averages over all ordered
  positive pairs, zeros included: [`MeanReducer`][paper_sku.reducers.MeanReducer].
- ``style="pml"`` follows pytorch-metric-learning's ``TripletMarginMiner("semihard")``: every
  triplet with ``0 < dist[a, n] - dist[a, p] <= margins[a, n]``. pytorch-metric-learning's
  ``TripletMarginLoss`` averages over the non-zero losses:
  [`MeanActiveReducer`][paper_sku.reducers.MeanActiveReducer].
- [`BatchHardMiner`][paper_sku.mining.BatchHardMiner] (Hermans et al., *In Defense of the Triplet
  Loss for Person Re-Identification*, 2017): per anchor the farthest positive and the negative
  with the smallest effective distance; the paper averages over anchors
  ([`MeanReducer`][paper_sku.reducers.MeanReducer]).

Examples:
    Anchors 1 and 3 have no negative farther than their positive, so they take the farthest one.

    >>> import torch
    >>> from paper_sku.mining import SemiHardMiner
    >>> dist = torch.tensor([[0.0, 1.0, 2.0, 0.5],
    ...                      [1.0, 0.0, 0.5, 0.8],
    ...                      [2.0, 0.5, 0.0, 1.0],
    ...                      [0.5, 0.8, 1.0, 0.0]])
    >>> t = SemiHardMiner()(dist, torch.tensor([0, 0, 1, 1]), torch.zeros(4, 4))
    >>> t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()
    ([0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1])
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Literal, NamedTuple

import torch

from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

__all__ = [
    "Triplets",
    "TripletMiner",
    "SemiHardMiner",
    "BatchHardMiner",
    "check_labels",
]


class Triplets(NamedTuple):
    """Index triplets into a batch, each ``(T,)`` int64."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


def check_labels(labels: torch.Tensor, batch_size: int) -> None:
    """Check that a batch's labels can form triplets.

    Args:
        labels: ``(B,)`` integer class labels.
        batch_size: ``B``, the number of embeddings.

    Raises:
        ShapeError: If ``labels`` is not ``(B,)``.
        EmbedcamValueError: If ``labels`` are not integers, the batch has fewer than 2 classes,
            or no class has 2 images (no positive pair).
    """
    if labels.ndim != 1 or labels.shape[0] != batch_size:
        raise ShapeError(
            f"labels must be ({batch_size},) to match the batch, got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise EmbedcamValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    classes, counts = torch.unique(labels, return_counts=True)
    if classes.numel() < 2:
        raise EmbedcamValueError(
            f"a triplet batch needs at least 2 classes, got only class(es) {classes.tolist()}; "
            "sample P >= 2 classes per batch (PKSampler)"
        )
    if int(counts.max()) < 2:
        raise EmbedcamValueError(
            f"the batch has no positive pair: each of its {classes.numel()} classes has one image; "
            "sample K >= 2 images per class (PKSampler)"
        )


class TripletMiner(ABC):
    """Base class: validates the inputs once, then calls ``mine``.

    Subclasses implement [`mine`][paper_sku.mining.TripletMiner.mine]. A miner only selects
    triplets; the loss's reducer averages their losses.
    """

    @property
    def reduction(self) -> Literal["mean", "mean_nonzero"]:
        """Deprecated: the reduction a loss used for this miner before reducers were injected.

        ``"mean"`` (over all mined triplets) or ``"mean_nonzero"`` (over positive losses). A loss
        built without a ``reducer`` still follows it, with a ``DeprecationWarning`` where it is
        ``"mean_nonzero"``; pass ``reducer=`` to the loss instead.

        Returns:
            The legacy reduction name.
        """
        warnings.warn(
            "TripletMiner.reduction is deprecated: a miner only selects triplets; pass "
            "reducer=MeanReducer() or MeanActiveReducer() (paper_sku.reducers) to the loss",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._legacy_reduction()

    def _legacy_reduction(self) -> Literal["mean", "mean_nonzero"]:
        return "mean"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, dist: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor) -> Triplets:
        """Mine triplets.

        Args:
            dist: ``(B, B)`` loss-space distances (larger = farther).
            labels: ``(B,)`` integer class labels.
            margins: ``(B, B)`` margin of every (anchor, negative) pair.

        Returns:
            The mined [`Triplets`][paper_sku.mining.Triplets].

        Raises:
            ShapeError: If the shapes disagree.
            EmbedcamValueError: If the labels cannot form triplets (see
                [`check_labels`][paper_sku.mining.check_labels]).
        """
        if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
            raise ShapeError(f"dist must be a square (B, B) matrix, got {tuple(dist.shape)}")
        if margins.shape != dist.shape:
            raise ShapeError(
                f"margins must be {tuple(dist.shape)} like dist, got {tuple(margins.shape)}"
            )
        check_labels(labels, dist.shape[0])
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
        return self.mine(dist, same & ~eye, ~same, margins)

    @abstractmethod
    def mine(
        self,
        dist: torch.Tensor,
        is_pos: torch.Tensor,
        is_neg: torch.Tensor,
        margins: torch.Tensor,
    ) -> Triplets:
        """Select triplets (the one hook a miner implements).

        Args:
            dist: ``(B, B)`` loss-space distances.
            is_pos: ``(B, B)`` bool, same class and not the anchor itself.
            is_neg: ``(B, B)`` bool, different class.
            margins: ``(B, B)`` per-(anchor, negative) margins.

        Returns:
            The mined [`Triplets`][paper_sku.mining.Triplets].
        """


class SemiHardMiner(TripletMiner):
    """Semi-hard negatives, TensorFlow semantics by default (see the module docstring).

    Args:
        style: ``"tensorflow"``: one negative per ordered positive pair (TensorFlow Addons).
            ``"pml"``: every triplet with ``0 < d_an - d_ap <= margin``, as
            pytorch-metric-learning's ``TripletMarginMiner("semihard")``.

    Raises:
        ConfigurationError: If ``style`` is unknown.
    """

    def __init__(self, style: Literal["tensorflow", "pml"] = "tensorflow") -> None:
        if style not in ("tensorflow", "pml"):
            raise ConfigurationError(
                f"unknown semi-hard style {style!r}; use 'tensorflow' or 'pml'"
            )
        self.style = style

    def _legacy_reduction(self) -> Literal["mean", "mean_nonzero"]:
        return "mean" if self.style == "tensorflow" else "mean_nonzero"

    def __repr__(self) -> str:
        return f"SemiHardMiner(style={self.style!r})"

    def mine(
        self,
        dist: torch.Tensor,
        is_pos: torch.Tensor,
        is_neg: torch.Tensor,
        margins: torch.Tensor,
    ) -> Triplets:
        """Select semi-hard triplets; see the class docstring."""
        if self.style == "pml":
            gap = dist[:, None, :] - dist[:, :, None]  # [a, p, n] = d_an - d_ap
            keep = (
                is_pos[:, :, None] & is_neg[:, None, :] & (gap > 0) & (gap <= margins[:, None, :])
            )
            a, p, n = keep.nonzero(as_tuple=True)
            return Triplets(a, p, n)
        return Triplets(*_tensorflow_semihard(dist, is_pos, is_neg, margins))


def _tensorflow_semihard(
    dist: torch.Tensor, is_pos: torch.Tensor, is_neg: torch.Tensor, margins: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # O(B^2 log B) memory O(B^2): TF tiles a (B^2, B) mask; sorting each anchor's negatives by
    # distance turns "negatives farther than p" into a suffix of the sorted row, and the best
    # negative of every suffix is a running minimum, found for all p at once by searchsorted.
    b = dist.shape[0]
    inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
    eff = dist - margins
    sorted_d, order = torch.sort(torch.where(is_neg, dist, inf), dim=1)
    eff_sorted = torch.where(is_neg.gather(1, order), eff.gather(1, order), inf)
    _, rev_idx = torch.cummin(eff_sorted.flip(1), dim=1)
    suffix_best = (b - 1 - rev_idx).flip(1)  # sorted position of the best negative from j on
    start = torch.searchsorted(sorted_d.contiguous(), dist.contiguous(), right=True)
    has_outside = start < is_neg.sum(dim=1, keepdim=True)
    outside = order.gather(1, suffix_best.gather(1, start.clamp(max=b - 1)))
    fallback = torch.where(is_neg, eff, -inf).argmax(dim=1, keepdim=True).expand(b, b)
    negative = torch.where(has_outside, outside, fallback)
    a, p = is_pos.nonzero(as_tuple=True)
    return a, p, negative[a, p]


class BatchHardMiner(TripletMiner):
    """Batch-hard mining (Hermans et al. 2017): hardest positive and negative per anchor.

    Anchors without a positive or a negative in the batch contribute nothing; one triplet per
    remaining anchor.
    """

    def mine(
        self,
        dist: torch.Tensor,
        is_pos: torch.Tensor,
        is_neg: torch.Tensor,
        margins: torch.Tensor,
    ) -> Triplets:
        """Select the farthest positive and the hardest negative of every anchor."""
        inf = torch.tensor(float("inf"), dtype=dist.dtype, device=dist.device)
        valid = is_pos.any(dim=1) & is_neg.any(dim=1)
        positive = torch.where(is_pos, dist, -inf).argmax(dim=1)
        negative = torch.where(is_neg, dist - margins, inf).argmin(dim=1)
        anchor = torch.arange(dist.shape[0], device=dist.device)[valid]
        return Triplets(anchor, positive[valid], negative[valid])
