"""The paper's three triplet losses, each trained with semi-hard mining.

All three share one template (:class:`TripletLossBase`): pairwise distances ``D`` -> a distance
transform ``phi`` -> a margin for every (anchor, negative) pair -> a miner picks triplets ->
``l = [phi(D_ap) - phi(D_an) + m_an]_+`` -> reduction chosen by the miner.

Distances (``distance=``), on L2-normalised embeddings:

- ``"squared"`` (default, as FaceNet): ``D = ||u - v||^2 = 2 - 2 cos(u, v)``, in ``[0, 4]``.
- ``"euclidean"``: ``D = ||u - v||``, in ``[0, 2]``.

The margin lives on the scale of ``phi(D)``: the squared-distance scale for :class:`TripletLoss`
(FaceNet's ``alpha = 0.2``), the ``exp(D / sigma)`` scale for the focal losses.

- :class:`TripletLoss` - Schroff, Kalenichenko & Philbin, *FaceNet*, CVPR 2015.
- :class:`FocalTripletLoss` - Zhang et al., *Focal triplet loss*, IEEE Access 2018:
  ``phi(D) = exp(D / sigma)`` up-weights hard triplets. Default ``sigma = 1.0`` on squared
  distances (see *Choosing sigma* below); the paper does not say whether ``D`` is squared, the
  default here is squared (consistent with the other two losses).
- :class:`FlexibleMarginTripletLoss` - Petrova 2025, *Method of training image classifiers using
  additional labels*, DOI 10.26102/2310-6018/2025.49.2.041. **The published formula could not be
  read; this is a reconstruction** (see the class docstring).

Choosing sigma: ``sigma = 0.3`` (the value in public focal-triplet implementations) collapses
the embedding on real photos. On the Grocery Store dataset (Klasson et al., WACV 2019; 81 products,
64 px, the small CNN at width 0.25, Adam at lr 1e-3) the focal loss with ``sigma = 0.3`` on squared
distances reached a mean pairwise cosine of 0.91 after one epoch and 0.997 after two (effective
rank 3.3), and its validation kNN accuracy stayed at 0.10-0.15 while the triplet loss reached 0.30.
The cause is the kernel's curvature, not the margin or weight decay: ``phi''(D) = exp(D / sigma) /
sigma**2`` is 11 at ``D = 0`` and about 1e6 at ``D = 4`` for ``sigma = 0.3``, so Adam's step of
roughly fixed size overshoots and lands where all embeddings coincide, where the squared distance's
gradient ``2 (u - v)`` vanishes and nothing pulls them apart again. Weight decay 0 collapsed too; a
learning rate of 1e-4 or Euclidean distances avoided it; ``sigma = 0.5`` still nearly collapsed one
seed in three (mean cosine 0.895). With ``sigma = 1.0`` (12 epochs, seeds 0/1/2) the best
validation accuracies were 0.314/0.284/0.311 for the focal loss and 0.318/0.324/0.311 for the
flexible margin against 0.314/0.297/0.334 for the plain triplet loss, with effective ranks of 30-35
and mean cosines below 0.2 for all three. Both focal losses keep their papers' form
``[phi(D_ap) - phi(D_an) + m]_+``; only the kernel width is a choice, and it is a constructor
argument.

Numerics: distances and losses are computed in float64 and cast back to the embeddings' dtype.
``exp(4 / 0.05) = 5.5e34`` fits float32, so the focal losses neither overflow nor produce NaN for
``sigma >= 0.05`` on normalised embeddings; a result that would overflow raises an error instead of
returning ``inf``. The Euclidean square root has a zero gradient at zero distance, not NaN.

Examples:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from paper_sku.losses import TripletLoss
    >>> emb = F.normalize(torch.randn(8, 16), dim=1)
    >>> loss = TripletLoss(margin=0.2)(emb, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    >>> loss.ndim, bool(loss >= 0)
    (0, True)
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn

from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from paper_sku.mining import SemiHardMiner, TripletMiner, check_labels

__all__ = [
    "Distance",
    "LossOutput",
    "pairwise_distance",
    "TripletLossBase",
    "TripletLoss",
    "FocalTripletLoss",
    "FlexibleMarginTripletLoss",
    "difference_degree",
    "ExtraLabels",
]

Distance = Literal["squared", "euclidean"]
#: A class -> additional-labels table: ``{class_id: (category, group, ...)}``, a sequence whose
#: row ``c`` holds class ``c``'s labels, or an integer tensor ``(C, L)``.
ExtraLabels = Mapping[int, Sequence[Hashable]] | Sequence[Sequence[Hashable]] | torch.Tensor


class LossOutput(NamedTuple):
    """A loss value and mining statistics for progress reports.

    Attributes:
        loss: Scalar loss (differentiable).
        num_triplets: Number of mined triplets.
        num_active: Number of mined triplets with a positive loss.
        active_fraction: ``num_active / num_triplets`` (0 when nothing was mined).
    """

    loss: torch.Tensor
    num_triplets: int
    num_active: int
    active_fraction: float


def pairwise_distance(x: torch.Tensor, distance: Distance = "squared") -> torch.Tensor:
    """All pairwise distances of a batch of embeddings.

    Args:
        x: ``(B, D)`` embeddings.
        distance: ``"squared"`` Euclidean or plain ``"euclidean"``.

    Returns:
        ``(B, B)`` distances with an exact zero diagonal.

    Raises:
        ConfigurationError: If ``distance`` is unknown.
    """
    if distance not in ("squared", "euclidean"):
        raise ConfigurationError(f"unknown distance {distance!r}; use 'squared' or 'euclidean'")
    sq_norm = (x * x).sum(dim=1)
    sq = (sq_norm[:, None] + sq_norm[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    sq = sq * (1.0 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))
    if distance == "squared":
        return sq
    # sqrt has an infinite derivative at 0 (the diagonal, duplicate images): route those entries
    # through sqrt(1) and zero them, so their gradient is 0 instead of NaN.
    positive = sq > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, sq, torch.ones_like(sq))), 0.0)


def _check_embeddings(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else "non-tensor"
        raise ShapeError(f"embeddings must be a (B, D) tensor, got {shape}")
    if not embeddings.is_floating_point():
        raise EmbedcamValueError(f"embeddings must be floating point, got {embeddings.dtype}")
    if not isinstance(labels, torch.Tensor):
        raise EmbedcamValueError(f"labels must be a (B,) integer tensor, got {type(labels)}")
    bad = ~torch.isfinite(embeddings).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise EmbedcamValueError(
            f"embeddings contain NaN or inf in rows {rows[:10]}; check the model's inputs and the "
            "learning rate (a diverged model produces NaN)"
        )
    check_labels(labels, embeddings.shape[0])


class TripletLossBase(nn.Module, ABC):
    """Template of the triplet losses: validate, distances, ``phi``, margins, mine, reduce.

    Subclasses override :meth:`phi` (distance transform) and/or :meth:`margin_matrix`.

    Args:
        distance: ``"squared"`` or ``"euclidean"``.
        miner: A :class:`~paper_sku.mining.TripletMiner`; default
            :class:`~paper_sku.mining.SemiHardMiner` with TensorFlow semantics.

    Raises:
        ConfigurationError: If ``distance`` is unknown or ``miner`` is not a TripletMiner.
    """

    def __init__(self, distance: Distance = "squared", miner: TripletMiner | None = None) -> None:
        super().__init__()
        if distance not in ("squared", "euclidean"):
            raise ConfigurationError(f"unknown distance {distance!r}; use 'squared' or 'euclidean'")
        miner = SemiHardMiner() if miner is None else miner
        if not isinstance(miner, TripletMiner):
            raise ConfigurationError(f"miner must be a TripletMiner, got {type(miner).__name__}")
        self.distance: Distance = distance
        self.miner = miner

    def phi(self, dist: torch.Tensor) -> torch.Tensor:
        """Distance transform applied before the hinge (identity here).

        Args:
            dist: ``(B, B)`` distances, float64.

        Returns:
            ``(B, B)`` transformed distances.
        """
        return dist

    @abstractmethod
    def margin_matrix(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Margin of every (anchor, negative) pair of the batch.

        Args:
            labels: ``(B,)`` class labels.
            dtype: dtype of the result.

        Returns:
            ``(B, B)`` margins.
        """

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """Loss and mining statistics.

        Args:
            embeddings: ``(B, D)`` embeddings (L2-normalised for the documented distance ranges).
            labels: ``(B,)`` integer class labels; at least 2 classes and one positive pair.

        Returns:
            A :class:`LossOutput`.

        Raises:
            ShapeError: If shapes are wrong.
            EmbedcamValueError: On NaN/inf embeddings, fewer than 2 classes, no positive pair, a
                class missing from the additional-labels table, or an overflowing focal loss.
        """
        _check_embeddings(embeddings, labels)
        labels = labels.to(embeddings.device)
        x = embeddings.to(torch.float64)
        transformed = self.phi(pairwise_distance(x, self.distance))
        margins = self.margin_matrix(labels, torch.float64)
        with torch.no_grad():
            a, p, n = self.miner(transformed.detach(), labels, margins)
        losses = torch.relu(transformed[a, p] - transformed[a, n] + margins[a, n])
        active = losses > 0
        num_triplets, num_active = int(losses.numel()), int(active.sum())
        if num_triplets == 0 or (self.miner.reduction == "mean_nonzero" and num_active == 0):
            # Nothing to learn from, but keep the graph so backward() still works.
            loss = x.sum() * 0.0
        elif self.miner.reduction == "mean_nonzero":
            loss = losses[active].mean()
        else:
            loss = losses.mean()
        loss = loss.to(embeddings.dtype)
        if not bool(torch.isfinite(loss)):
            raise EmbedcamValueError(
                f"the loss overflowed {embeddings.dtype} (max phi(D) = "
                f"{float(transformed.max()):.3g}); increase sigma or use float64 embeddings"
            )
        fraction = num_active / num_triplets if num_triplets else 0.0
        return LossOutput(loss, num_triplets, num_active, fraction)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss; see :meth:`compute`.

        Args:
            embeddings: ``(B, D)`` embeddings.
            labels: ``(B,)`` integer class labels.

        Returns:
            Scalar loss tensor.
        """
        return self.compute(embeddings, labels).loss


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class TripletLoss(TripletLossBase):
    """Triplet loss ``[D_ap - D_an + margin]_+`` (Schroff et al., FaceNet, CVPR 2015).

    Args:
        margin: Margin on the distance's scale (FaceNet: 0.2 on squared distance).
        distance: ``"squared"`` (default) or ``"euclidean"``.
        miner: Triplet miner; default TensorFlow-style :class:`~paper_sku.mining.SemiHardMiner`.

    Raises:
        ConfigurationError: If ``margin`` is not positive or ``distance`` is unknown.
    """

    def __init__(
        self, margin: float = 0.2, distance: Distance = "squared", miner: TripletMiner | None = None
    ) -> None:
        super().__init__(distance=distance, miner=miner)
        self.margin = _check_positive("margin", margin)

    def margin_matrix(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A constant ``margin`` for every pair; see :meth:`TripletLossBase.margin_matrix`."""
        b = labels.shape[0]
        return torch.full((b, b), self.margin, dtype=dtype, device=labels.device)


class FocalTripletLoss(TripletLoss):
    """Focal triplet loss ``[exp(D_ap / s) - exp(D_an / s) + margin]_+`` (Zhang et al. 2018).

    The exponential kernel makes the gradient grow with the distance, so hard triplets weigh more.
    The margin lives in ``exp`` space: ``phi`` is 1 at ``D = 0`` and ``exp(4 / sigma)`` at the
    largest squared distance of normalised embeddings.

    Args:
        margin: Margin on the ``exp(D / sigma)`` scale.
        sigma: Kernel width (> 0). 1.0 by default: 0.3, the value of public implementations,
            collapses the embedding on real photos (see the module docstring).
        distance: ``"squared"`` (default) or ``"euclidean"``.
        miner: Triplet miner; default TensorFlow-style semi-hard.

    Raises:
        ConfigurationError: If ``margin`` or ``sigma`` is not positive.

    Examples:
        >>> import torch
        >>> from paper_sku.losses import FocalTripletLoss
        >>> loss = FocalTripletLoss(margin=0.2, sigma=0.05)
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
        >>> float(loss(emb, torch.tensor([0, 0, 1, 1])))  # D_an = 4: no loss, no overflow
        0.0
    """

    def __init__(
        self,
        margin: float = 0.2,
        sigma: float = 1.0,
        distance: Distance = "squared",
        miner: TripletMiner | None = None,
    ) -> None:
        super().__init__(margin=margin, distance=distance, miner=miner)
        self.sigma = _check_positive("sigma", sigma)

    def phi(self, dist: torch.Tensor) -> torch.Tensor:
        """``exp(D / sigma)``; see :meth:`TripletLossBase.phi`."""
        return torch.exp(dist / self.sigma)


def difference_degree(
    table: torch.Tensor, mode: Literal["hierarchical", "count"] = "hierarchical"
) -> torch.Tensor:
    """Difference degree ``k`` of every pair of classes from their additional labels.

    Two different classes always differ at the class level, so ``k >= 1``.

    - ``"hierarchical"`` (default): columns are levels from coarsest to finest (category, group,
      subgroup). If the first level where the classes differ is ``j`` (0-based) of ``L``,
      ``k = 1 + L - j``; classes with identical labels have ``k = 1``. A different category
      therefore counts every finer level as different too, even if a group name is reused.
    - ``"count"`` (multi-label reading): ``k = 1 + number of columns that differ``.

    Args:
        table: ``(C, L)`` integer-coded additional labels of each class.
        mode: ``"hierarchical"`` or ``"count"``.

    Returns:
        ``(C, C)`` int64 difference degrees; the diagonal is 0.

    Raises:
        ConfigurationError: If ``mode`` is unknown.

    Examples:
        >>> import torch
        >>> table = torch.tensor([[0, 0], [0, 1], [1, 0]])  # (category, group)
        >>> difference_degree(table).tolist()
        [[0, 2, 3], [2, 0, 3], [3, 3, 0]]
        >>> difference_degree(table, "count").tolist()
        [[0, 2, 2], [2, 0, 3], [2, 3, 0]]
    """
    if mode not in ("hierarchical", "count"):
        raise ConfigurationError(f"unknown difference mode {mode!r}; use 'hierarchical' or 'count'")
    c, levels = table.shape
    differs = table[:, None, :] != table[None, :, :]  # (C, C, L)
    if mode == "count":
        k = 1 + differs.sum(dim=2)
    else:
        any_diff = differs.any(dim=2)
        first = torch.where(any_diff, differs.to(torch.int64).argmax(dim=2), levels)
        k = 1 + levels - first
    return k.masked_fill(torch.eye(c, dtype=torch.bool, device=table.device), 0).to(torch.int64)


def _encode_table(
    extra_labels: ExtraLabels, levels: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-code a class -> labels table. Returns ``(table (C, L), known (C,) bool)``."""
    if isinstance(extra_labels, torch.Tensor):
        if extra_labels.ndim != 2 or extra_labels.is_floating_point():
            raise ShapeError(
                f"an extra_labels tensor must be (C, L) integers, got {tuple(extra_labels.shape)} "
                f"{extra_labels.dtype}"
            )
        rows: dict[int, Sequence[Hashable]] = {
            i: extra_labels[i].tolist() for i in range(extra_labels.shape[0])
        }
    elif isinstance(extra_labels, Mapping):
        rows = dict(extra_labels)
    else:
        rows = dict(enumerate(extra_labels))
    if not rows:
        raise EmbedcamValueError("extra_labels is empty; give each class its additional labels")
    for cls, row in rows.items():
        if not isinstance(cls, int) or cls < 0:
            raise EmbedcamValueError(f"extra_labels keys must be class ids >= 0, got {cls!r}")
        if isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise EmbedcamValueError(
                f"extra_labels[{cls}] must be a sequence such as (category, group), got {row!r}"
            )
    widths = {len(row) for row in rows.values()}
    if len(widths) != 1 or 0 in widths:
        raise EmbedcamValueError(
            f"every class needs the same number (>= 1) of additional labels, got lengths {widths}"
        )
    width = widths.pop()
    cols = list(range(width)) if levels is None else list(levels)
    if not cols or any(not 0 <= j < width for j in cols) or len(set(cols)) != len(cols):
        raise ConfigurationError(
            f"levels must be distinct column indices in [0, {width}), got {levels!r}"
        )
    num_classes = max(rows) + 1
    table = torch.zeros(num_classes, len(cols), dtype=torch.int64)
    known = torch.zeros(num_classes, dtype=torch.bool)
    codes: list[dict[Hashable, int]] = [{} for _ in cols]
    for cls, row in rows.items():
        for out_j, j in enumerate(cols):
            table[cls, out_j] = codes[out_j].setdefault(row[j], len(codes[out_j]))
        known[cls] = True
    return table, known


_MARGIN_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda k: k,
    "log": lambda k: torch.log1p(k) / math.log(2.0),
}


class FlexibleMarginTripletLoss(FocalTripletLoss):
    """Triplet loss with a flexible, label-dependent margin (Petrova 2025) - a reconstruction.

    **The published formula could not be read; this is a reconstruction** from the method's
    description: the margin between an anchor and a negative grows with how different their
    classes are according to additional labels (e.g. category and group of a product class).

    - Difference degree ``k(a, n) >= 1`` from :func:`difference_degree`; the default reading is
      **hierarchical** (levels coarsest first; differing at a coarser level counts all finer
      levels as different), because the paper's product classes have category / group /
      subgroup levels. ``difference="count"`` counts differing labels instead.
    - Margin ``m(a, n) = base_margin * g(k)`` with ``g(k) = k`` (``"linear"``) or
      ``g(k) = ln(1 + k) / ln 2`` (``"log"``), or any callable on a float64 tensor of ``k``.
      Both built-in ``g`` give ``g(1) = 1``, so classes that share all additional labels get the
      base margin.
    - Loss ``[phi(D_ap) - phi(D_an) + m(a, n)]_+`` with ``phi = exp(D / sigma)`` (``focal=True``,
      the paper's setting) or the identity.
    - Mining uses the per-pair margin: the semi-hard miner ranks negatives by
      ``phi(D_an) - m(a, n)`` (TensorFlow style) or tests ``0 < phi(D_an) - phi(D_ap) <= m(a, n)``
      (PML style); the selected negative's margin is gathered by index.

    With all additional labels equal the loss equals :class:`FocalTripletLoss` with the base
    margin.

    Args:
        base_margin: ``alpha``, the margin of classes that share all additional labels.
        margin_fn: ``"linear"``, ``"log"`` or a callable ``g(k)``.
        levels: Column indices of the table to use, coarsest first; default all, in order.
        focal: Use the focal ``exp(D / sigma)`` distance (default) or plain distances.
        sigma: Kernel width of the focal distance; 1.0 as for :class:`FocalTripletLoss`.
        extra_labels: The class -> additional-labels table (keyword-only, required):
            ``{class_id: (category, group, ...)}``, a sequence of rows, or a ``(C, L)`` tensor.
            Labels may be any hashable values (names or ids).
        difference: ``"hierarchical"`` (default) or ``"count"``.
        distance: ``"squared"`` (default) or ``"euclidean"``.
        miner: Triplet miner; default TensorFlow-style semi-hard.

    Raises:
        ConfigurationError: On a non-positive margin or sigma, unknown ``margin_fn`` or
            ``difference``, or bad ``levels``.
        EmbedcamValueError: On a malformed table.

    Attributes:
        margin_table: ``(C, C)`` float64 margin of every ordered pair of classes (diagonal 0).
        known: ``(C,)`` bool, which class ids the table covers.

    Examples:
        >>> from paper_sku.losses import FlexibleMarginTripletLoss
        >>> table = {0: ("dairy", "milk"), 1: ("dairy", "yogurt"), 2: ("snacks", "chips")}
        >>> loss = FlexibleMarginTripletLoss(0.25, extra_labels=table)
        >>> loss.margin_table.tolist()
        [[0.0, 0.5, 0.75], [0.5, 0.0, 0.75], [0.75, 0.75, 0.0]]
    """

    def __init__(
        self,
        base_margin: float = 0.2,
        margin_fn: Literal["linear", "log"] | Callable[[torch.Tensor], torch.Tensor] = "linear",
        levels: Sequence[int] | None = None,
        focal: bool = True,
        sigma: float = 1.0,
        *,
        extra_labels: ExtraLabels,
        difference: Literal["hierarchical", "count"] = "hierarchical",
        distance: Distance = "squared",
        miner: TripletMiner | None = None,
    ) -> None:
        super().__init__(margin=base_margin, sigma=sigma, distance=distance, miner=miner)
        if isinstance(margin_fn, str):
            if margin_fn not in _MARGIN_FNS:
                raise ConfigurationError(
                    f"unknown margin_fn {margin_fn!r}; use 'linear', 'log' or a callable g(k)"
                )
            g = _MARGIN_FNS[margin_fn]
        elif callable(margin_fn):
            g = margin_fn
        else:
            raise ConfigurationError(f"margin_fn must be a name or a callable, got {margin_fn!r}")
        self.focal = bool(focal)
        self.margin_fn = margin_fn
        table, known = _encode_table(extra_labels, levels)
        k = difference_degree(table, difference).to(torch.float64)
        margins = self.margin * g(k)
        margins = margins.masked_fill(torch.eye(k.shape[0], dtype=torch.bool), 0.0)
        if not bool(torch.isfinite(margins).all()) or bool((margins < 0).any()):
            raise ConfigurationError("margin_fn must give finite, non-negative margins for k >= 1")
        self.table = table
        self.known = known
        self.margin_table = margins

    def phi(self, dist: torch.Tensor) -> torch.Tensor:
        """``exp(D / sigma)`` if ``focal`` else the identity."""
        return super().phi(dist) if self.focal else dist

    def margin_matrix(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-pair margins looked up from :attr:`margin_table`.

        Raises:
            EmbedcamValueError: If a label is not in the additional-labels table.
        """
        num = self.known.shape[0]
        in_range = (labels >= 0) & (labels < num)
        ok = in_range.clone()
        ok[in_range] = self.known.to(labels.device)[labels[in_range]]
        if not bool(ok.all()):
            missing = sorted(set(labels[~ok].tolist()))
            raise EmbedcamValueError(
                f"class(es) {missing} are missing from the additional-labels table (it covers "
                f"{int(self.known.sum())} classes with ids < {num}); add their labels to "
                "extra_labels"
            )
        table = self.margin_table.to(device=labels.device, dtype=dtype)
        return table[labels][:, labels]
