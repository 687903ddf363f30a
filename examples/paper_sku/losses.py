"""The paper's three triplet losses: one loss composed of injected parts, three presets.

There is one loss, [`TripletLossBase`][paper_sku.losses.TripletLossBase], built from five parts,
each replaceable on its own (the pytorch-metric-learning design of injected distances and
reducers):

1. a distance ``D`` ([`BaseDistance`][paper_sku.distances.BaseDistance]; squared Euclidean by
   default),
2. a distance transform ``phi`` ([`DistanceTransform`][paper_sku.distances.DistanceTransform]:
   the identity, the focal kernel ``exp(D / sigma)``, ...),
3. a margin rule ``m(a, n)`` ([`MarginRule`][paper_sku.margins.MarginRule]: a fixed margin or the
   flexible margin),
4. a miner that only selects triplets ([`TripletMiner`][paper_sku.mining.TripletMiner]),
5. a reducer ([`TripletReducer`][paper_sku.reducers.TripletReducer]: mean over all mined
   triplets, mean over the active ones, or sum), independent of the miner.

The loss of a mined triplet is ``l = [phi(D_ap) - phi(D_an) + m(a, n)]_+``. The paper's losses are
presets of those parts, differing only in ``phi`` and the margin rule:

- [`TripletLoss`][paper_sku.losses.TripletLoss]: identity and a fixed margin;
- [`FocalTripletLoss`][paper_sku.losses.FocalTripletLoss]: ``exp(D / sigma)`` and a fixed margin;
- [`FlexibleMarginTripletLoss`][paper_sku.losses.FlexibleMarginTripletLoss]: ``exp(D / sigma)``
  (or the identity with ``focal=False``) and the flexible margin.

All three default to the TensorFlow-style semi-hard miner and the mean over all mined triplets;
``miner=`` and ``reducer=`` replace them independently.

Distances (``distance=``), on L2-normalised embeddings:

- ``"squared"`` (default, as FaceNet): ``D = ||u - v||^2 = 2 - 2 cos(u, v)``, in ``[0, 4]``.
- ``"euclidean"``: ``D = ||u - v||``, in ``[0, 2]``.

The margin lives on the scale of ``phi(D)``: the squared-distance scale for
[`TripletLoss`][paper_sku.losses.TripletLoss] (FaceNet's ``alpha = 0.2``), the ``exp(D / sigma)``
scale for the focal losses.

- [`TripletLoss`][paper_sku.losses.TripletLoss] - Schroff, Kalenichenko & Philbin, *FaceNet*,
  CVPR 2015.
- [`FocalTripletLoss`][paper_sku.losses.FocalTripletLoss] - Zhang et al., *Focal triplet loss*,
  IEEE Access 2018: ``phi(D) = exp(D / sigma)`` up-weights hard triplets. Default ``sigma = 1.0``
  on squared distances (see *Choosing sigma* below); the paper does not say whether ``D`` is
  squared, the default here is squared (consistent with the other two losses).
- [`FlexibleMarginTripletLoss`][paper_sku.losses.FlexibleMarginTripletLoss] - Petrova 2025,
  *Method of training image classifiers using additional labels*, DOI
  10.26102/2310-6018/2025.49.2.041. **The published formula could not be read; this is a
  reconstruction** (see the class docstring).

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
    Anchor 0 has its positive at squared distance 2 and its negatives at 4 and 2, so the semi-hard
    negative is the one at 4 and the triplet's loss is ``[2 - 4 + 0.2]_+ = 0``; the batch-hard
    negative is the one at 2, with loss ``[2 - 2 + 0.2]_+ = 0.2``.

    >>> import torch
    >>> from paper_sku.losses import TripletLoss, TripletLossBase
    >>> from paper_sku.distances import FocalTransform
    >>> from paper_sku.margins import FixedMargin
    >>> from paper_sku.mining import BatchHardMiner
    >>> from paper_sku.reducers import SumReducer
    >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> labels = torch.tensor([0, 0, 1, 1])
    >>> TripletLoss(margin=0.2).compute(emb, labels)[1:]  # 4 triplets, none active
    (4, 0, 0.0)
    >>> round(float(TripletLoss(margin=0.2, miner=BatchHardMiner())(emb, labels)), 6)
    0.2
    >>> custom = TripletLossBase(
    ...     transform=FocalTransform(sigma=1.0), margin_rule=FixedMargin(0.5),
    ...     miner=BatchHardMiner(), reducer=SumReducer())
    >>> round(float(custom(emb, labels)), 6)  # 4 anchors x [e^2 - e^2 + 0.5]_+
    2.0
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn

from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from paper_sku.distances import (
    BaseDistance,
    Distance,
    DistanceTransform,
    EuclideanDistance,
    FocalTransform,
    IdentityTransform,
    _check_positive,
    pairwise_distance,
)
from paper_sku.margins import (
    ExtraLabels,
    FixedMargin,
    FlexibleMargin,
    MarginFn,
    MarginRule,
    difference_degree,
)
from paper_sku.mining import SemiHardMiner, TripletMiner, check_labels
from paper_sku.reducers import MeanActiveReducer, MeanReducer, TripletReducer

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


def _caller_stacklevel() -> int:
    """``stacklevel`` of the first frame outside this module (the user's constructor call)."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    return level - 1


def _default_reducer(miner: TripletMiner) -> TripletReducer:
    """The reducer of a loss built without one: the mean, or the miner's deprecated choice."""
    if inspect.getattr_static(type(miner), "reduction", None) is TripletMiner.__dict__["reduction"]:
        legacy = miner._legacy_reduction()
    else:  # a subclass that still declares ``reduction`` itself
        legacy = getattr(miner, "reduction", "mean")
    if legacy == "mean_nonzero":
        warnings.warn(
            f"{miner!r} no longer chooses the loss's reduction; the loss averages over the active "
            "triplets for it now, but will average over all mined triplets in a future version. "
            "Pass reducer=MeanActiveReducer() (paper_sku.reducers) to keep this behaviour, or "
            "reducer=MeanReducer() for the new default",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        return MeanActiveReducer()
    return MeanReducer()


class TripletLossBase(nn.Module):
    """The triplet loss composed of a distance, a transform, a margin rule, a miner and a reducer.

    ``compute`` validates the batch, computes ``phi(D)`` and the margins in float64, lets the
    miner pick triplets on ``phi(D)`` (without gradient), forms
    ``l = [phi(D_ap) - phi(D_an) + m(a, n)]_+`` and reduces the ``l`` with the reducer. See the
    module docstring of [`paper_sku.losses`][paper_sku.losses].

    Subclasses may still override [`phi`][paper_sku.losses.TripletLossBase.phi] and
    [`margin_matrix`][paper_sku.losses.TripletLossBase.margin_matrix] instead of injecting parts.

    Args:
        distance: ``"squared"``, ``"euclidean"`` or a
            [`BaseDistance`][paper_sku.distances.BaseDistance].
        miner: A [`TripletMiner`][paper_sku.mining.TripletMiner]; default
            [`SemiHardMiner`][paper_sku.mining.SemiHardMiner] with TensorFlow semantics.
        transform: The distance transform ``phi``; default
            [`IdentityTransform`][paper_sku.distances.IdentityTransform].
        margin_rule: The margins; default [`FixedMargin`][paper_sku.margins.FixedMargin] ``(0.2)``.
        reducer: The reducer; default [`MeanReducer`][paper_sku.reducers.MeanReducer]. A miner
            that still declares the deprecated ``reduction = "mean_nonzero"``, such as
            ``SemiHardMiner("pml")``, gets
            [`MeanActiveReducer`][paper_sku.reducers.MeanActiveReducer] instead, with a
            ``DeprecationWarning``; pass ``reducer=`` to choose.

    Raises:
        ConfigurationError: If ``distance`` is unknown or a part has the wrong type.

    Attributes:
        distance: The distance's name (``"squared"`` or ``"euclidean"`` for the built-in one).
        distance_fn: The [`BaseDistance`][paper_sku.distances.BaseDistance].
        transform: The [`DistanceTransform`][paper_sku.distances.DistanceTransform].
        margin_rule: The [`MarginRule`][paper_sku.margins.MarginRule].
        miner: The [`TripletMiner`][paper_sku.mining.TripletMiner].
        reducer: The [`TripletReducer`][paper_sku.reducers.TripletReducer].
    """

    def __init__(
        self,
        distance: Distance | BaseDistance = "squared",
        miner: TripletMiner | None = None,
        *,
        transform: DistanceTransform | None = None,
        margin_rule: MarginRule | None = None,
        reducer: TripletReducer | None = None,
    ) -> None:
        super().__init__()
        distance_fn = (
            distance
            if isinstance(distance, BaseDistance)
            else EuclideanDistance.from_name(distance)
        )
        miner = SemiHardMiner() if miner is None else miner
        parts = [
            ("miner", miner, TripletMiner),
            ("transform", transform, DistanceTransform),
            ("margin_rule", margin_rule, MarginRule),
            ("reducer", reducer, TripletReducer),
        ]
        for name, part, kind in parts:
            if part is not None and not isinstance(part, kind):
                raise ConfigurationError(
                    f"{name} must be a {kind.__name__}, got {type(part).__name__}"
                )
        self.distance_fn = distance_fn
        self.distance: str = distance_fn.name
        self.miner = miner
        self.transform = IdentityTransform() if transform is None else transform
        self.margin_rule = FixedMargin() if margin_rule is None else margin_rule
        self.reducer = _default_reducer(miner) if reducer is None else reducer

    def phi(self, dist: torch.Tensor) -> torch.Tensor:
        """Distance transform applied before the hinge: the injected ``transform``.

        Args:
            dist: ``(B, B)`` distances, float64.

        Returns:
            ``(B, B)`` transformed distances.
        """
        return self.transform(dist)

    def margin_matrix(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Margin of every (anchor, negative) pair of the batch: the injected ``margin_rule``.

        Args:
            labels: ``(B,)`` class labels.
            dtype: dtype of the result.

        Returns:
            ``(B, B)`` margins.

        Raises:
            EmbedcamValueError: If the margin rule cannot give a label a margin (a class missing
                from the flexible margin's table).
        """
        return self.margin_rule(labels, dtype)

    def compute(self, embeddings: torch.Tensor, labels: torch.Tensor) -> LossOutput:
        """Loss and mining statistics.

        Args:
            embeddings: ``(B, D)`` embeddings (L2-normalised for the documented distance ranges).
            labels: ``(B,)`` integer class labels; at least 2 classes and one positive pair.

        Returns:
            A [`LossOutput`][paper_sku.losses.LossOutput].

        Raises:
            ShapeError: If shapes are wrong.
            EmbedcamValueError: On NaN/inf embeddings, fewer than 2 classes, no positive pair, a
                class missing from the additional-labels table, or an overflowing focal loss.
        """
        _check_embeddings(embeddings, labels)
        labels = labels.to(embeddings.device)
        x = embeddings.to(torch.float64)
        transformed = self.phi(self.distance_fn(x))
        margins = self.margin_matrix(labels, torch.float64)
        with torch.no_grad():
            a, p, n = self.miner(transformed.detach(), labels, margins)
        losses = torch.relu(transformed[a, p] - transformed[a, n] + margins[a, n])
        num_triplets, num_active = int(losses.numel()), int((losses > 0).sum())
        loss = self.reducer(losses).to(embeddings.dtype)
        if not bool(torch.isfinite(loss)):
            raise EmbedcamValueError(
                f"the loss overflowed {embeddings.dtype} (max phi(D) = "
                f"{float(transformed.max()):.3g}); increase sigma or use float64 embeddings"
            )
        fraction = num_active / num_triplets if num_triplets else 0.0
        return LossOutput(loss, num_triplets, num_active, fraction)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss; see [`compute`][paper_sku.losses.TripletLossBase.compute].

        Args:
            embeddings: ``(B, D)`` embeddings.
            labels: ``(B,)`` integer class labels.

        Returns:
            Scalar loss tensor.
        """
        return self.compute(embeddings, labels).loss

    def extra_repr(self) -> str:
        """The injected parts, shown by ``repr``."""
        return (
            f"distance={self.distance_fn!r}, transform={self.transform!r}, "
            f"margin_rule={self.margin_rule!r}, miner={self.miner!r}, "
            f"reducer={self.reducer!r}"
        )


class TripletLoss(TripletLossBase):
    """Triplet loss ``[D_ap - D_an + margin]_+`` (Schroff et al., FaceNet, CVPR 2015).

    [`TripletLossBase`][paper_sku.losses.TripletLossBase] with the identity transform and a
    [`FixedMargin`][paper_sku.margins.FixedMargin].

    Args:
        margin: Margin on the distance's scale (FaceNet: 0.2 on squared distance).
        distance: ``"squared"`` (default), ``"euclidean"`` or a
            [`BaseDistance`][paper_sku.distances.BaseDistance].
        miner: Triplet miner; default TensorFlow-style
            [`SemiHardMiner`][paper_sku.mining.SemiHardMiner].
        reducer: Reducer; default [`MeanReducer`][paper_sku.reducers.MeanReducer] (see
            [`TripletLossBase`][paper_sku.losses.TripletLossBase] for a deprecated exception).

    Raises:
        ConfigurationError: If ``margin`` is not positive or ``distance`` is unknown.

    Attributes:
        margin: The margin as a float.
    """

    def __init__(
        self,
        margin: float = 0.2,
        distance: Distance | BaseDistance = "squared",
        miner: TripletMiner | None = None,
        *,
        reducer: TripletReducer | None = None,
    ) -> None:
        rule = FixedMargin(margin)
        super().__init__(distance, miner, margin_rule=rule, reducer=reducer)
        self.margin = rule.margin


class FocalTripletLoss(TripletLossBase):
    """Focal triplet loss ``[exp(D_ap / s) - exp(D_an / s) + margin]_+`` (Zhang et al. 2018).

    [`TripletLossBase`][paper_sku.losses.TripletLossBase] with the
    [`FocalTransform`][paper_sku.distances.FocalTransform] and a
    [`FixedMargin`][paper_sku.margins.FixedMargin]. The exponential kernel makes the gradient grow
    with the distance, so hard triplets weigh more. The margin lives in ``exp`` space: ``phi`` is 1
    at ``D = 0`` and ``exp(4 / sigma)`` at the largest squared distance of normalised embeddings.

    Args:
        margin: Margin on the ``exp(D / sigma)`` scale.
        sigma: Kernel width (> 0). 1.0 by default: 0.3, the value of public implementations,
            collapses the embedding on real photos (see the module docstring).
        distance: ``"squared"`` (default), ``"euclidean"`` or a
            [`BaseDistance`][paper_sku.distances.BaseDistance].
        miner: Triplet miner; default TensorFlow-style semi-hard.
        reducer: Reducer; default [`MeanReducer`][paper_sku.reducers.MeanReducer].

    Raises:
        ConfigurationError: If ``margin`` or ``sigma`` is not positive.

    Attributes:
        margin: The margin as a float.
        sigma: The kernel width as a float.

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
        distance: Distance | BaseDistance = "squared",
        miner: TripletMiner | None = None,
        *,
        reducer: TripletReducer | None = None,
    ) -> None:
        rule = FixedMargin(margin)
        transform = FocalTransform(sigma)
        super().__init__(distance, miner, transform=transform, margin_rule=rule, reducer=reducer)
        self.margin = rule.margin
        self.sigma = transform.sigma


class FlexibleMarginTripletLoss(TripletLossBase):
    """Triplet loss with a flexible, label-dependent margin (Petrova 2025) - a reconstruction.

    **The published formula could not be read; this is a reconstruction** from the method's
    description: the margin between an anchor and a negative grows with how different their
    classes are according to additional labels (e.g. category and group of a product class).

    [`TripletLossBase`][paper_sku.losses.TripletLossBase] with the
    [`FocalTransform`][paper_sku.distances.FocalTransform] (or the identity with ``focal=False``)
    and a [`FlexibleMargin`][paper_sku.margins.FlexibleMargin]:

    - Difference degree ``k(a, n) >= 1`` from
      [`difference_degree`][paper_sku.margins.difference_degree]; the default reading is
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

    With all additional labels equal the loss equals
    [`FocalTripletLoss`][paper_sku.losses.FocalTripletLoss] with the base margin.

    Args:
        base_margin: ``alpha``, the margin of classes that share all additional labels.
        margin_fn: ``"linear"``, ``"log"`` or a callable ``g(k)``.
        levels: Column indices of the table to use, coarsest first; default all, in order.
        focal: Use the focal ``exp(D / sigma)`` distance (default) or plain distances.
        sigma: Kernel width of the focal distance; 1.0 as for
            [`FocalTripletLoss`][paper_sku.losses.FocalTripletLoss]. Checked also with
            ``focal=False``.
        extra_labels: The class -> additional-labels table (keyword-only, required):
            ``{class_id: (category, group, ...)}``, a sequence of rows, or a ``(C, L)`` tensor.
            Labels may be any hashable values (names or ids).
        difference: ``"hierarchical"`` (default) or ``"count"``.
        distance: ``"squared"`` (default), ``"euclidean"`` or a
            [`BaseDistance`][paper_sku.distances.BaseDistance].
        miner: Triplet miner; default TensorFlow-style semi-hard.
        reducer: Reducer; default [`MeanReducer`][paper_sku.reducers.MeanReducer].

    Raises:
        ConfigurationError: On a non-positive margin or sigma, unknown ``margin_fn`` or
            ``difference``, or bad ``levels``.
        EmbedcamValueError: On a malformed table.

    Attributes:
        margin: ``base_margin`` as a float.
        sigma: The kernel width as a float.
        focal: Whether ``phi`` is the focal kernel.
        margin_fn: ``margin_fn`` as given.
        margin_table: ``(C, C)`` float64 margin of every ordered pair of classes (diagonal 0).
        table: ``(C, L)`` int64 integer-coded additional labels.
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
        margin_fn: MarginFn = "linear",
        levels: Sequence[int] | None = None,
        focal: bool = True,
        sigma: float = 1.0,
        *,
        extra_labels: ExtraLabels,
        difference: Literal["hierarchical", "count"] = "hierarchical",
        distance: Distance | BaseDistance = "squared",
        miner: TripletMiner | None = None,
        reducer: TripletReducer | None = None,
    ) -> None:
        _check_positive("margin", base_margin)
        focal_transform = FocalTransform(sigma)
        rule = FlexibleMargin(
            base_margin, margin_fn, levels, extra_labels=extra_labels, difference=difference
        )
        transform = focal_transform if focal else IdentityTransform()
        super().__init__(distance, miner, transform=transform, margin_rule=rule, reducer=reducer)
        self.margin = rule.margin
        self.sigma = focal_transform.sigma
        self.focal = bool(focal)
        self.margin_fn = margin_fn
        self.table = rule.table
        self.known = rule.known
        self.margin_table = rule.margin_table
