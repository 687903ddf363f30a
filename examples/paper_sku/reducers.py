"""Reducers: how a triplet loss turns the mined triplets' losses into one number.

The reducer belongs to the loss, not to the miner (the pytorch-metric-learning design): a miner
only selects triplets, and any reducer works with any miner.

- [`MeanReducer`][paper_sku.reducers.MeanReducer]: the mean over all mined triplets, zeros
  included (TensorFlow Addons' ``triplet_semihard_loss``, FaceNet).
- [`MeanActiveReducer`][paper_sku.reducers.MeanActiveReducer]: the mean over the active triplets
  (loss > 0), as pytorch-metric-learning's ``AvgNonZeroReducer``, the default of its
  ``TripletMarginLoss``.
- [`SumReducer`][paper_sku.reducers.SumReducer]: the sum.

Every reducer returns a differentiable zero (connected to the graph, so ``backward()`` works) when
there is nothing to average.

Examples:
    >>> import torch
    >>> from paper_sku.reducers import MeanActiveReducer, MeanReducer, SumReducer
    >>> losses = torch.tensor([0.0, 0.5, 0.0, 1.0])
    >>> [float(r(losses)) for r in (MeanReducer(), MeanActiveReducer(), SumReducer())]
    [0.375, 0.75, 1.5]
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["TripletReducer", "MeanReducer", "MeanActiveReducer", "SumReducer"]


class TripletReducer(ABC):
    """Reduce the ``(T,)`` hinge losses of the mined triplets to a scalar."""

    @abstractmethod
    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """Reduce.

        Args:
            losses: ``(T,)`` non-negative triplet losses (``T`` may be 0).

        Returns:
            A scalar tensor, differentiable with respect to ``losses``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanReducer(TripletReducer):
    """Mean over all mined triplets, zeros included; 0 when nothing was mined.

    Examples:
        >>> import torch
        >>> float(MeanReducer()(torch.tensor([0.0, 0.5])))
        0.25
    """

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """The mean of ``losses``; see [`TripletReducer`][paper_sku.reducers.TripletReducer].

        Args:
            losses: ``(T,)`` triplet losses.

        Returns:
            Scalar mean (a graph-connected 0 for ``T = 0``).
        """
        if losses.numel() == 0:
            return losses.sum() * 0.0
        return losses.mean()


class MeanActiveReducer(TripletReducer):
    """Mean over the active triplets (loss > 0); 0 when none is active.

    Examples:
        >>> import torch
        >>> float(MeanActiveReducer()(torch.tensor([0.0, 0.5])))
        0.5
    """

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """The mean of the positive ``losses``.

        Args:
            losses: ``(T,)`` triplet losses.

        Returns:
            Scalar mean over ``losses > 0`` (a graph-connected 0 when there is none).
        """
        active = losses > 0
        if not bool(active.any()):
            return losses.sum() * 0.0
        return losses[active].mean()


class SumReducer(TripletReducer):
    """Sum over all mined triplets.

    Examples:
        >>> import torch
        >>> float(SumReducer()(torch.tensor([0.0, 0.25, 0.5])))
        0.75
    """

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """The sum of ``losses``; see [`TripletReducer`][paper_sku.reducers.TripletReducer].

        Args:
            losses: ``(T,)`` triplet losses.

        Returns:
            Scalar sum (0 for ``T = 0``).
        """
        return losses.sum()
