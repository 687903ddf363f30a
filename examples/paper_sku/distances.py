"""Distances and distance transforms, the first two parts a triplet loss is composed of.

A [`TripletLossBase`][paper_sku.losses.TripletLossBase] computes the ``(B, B)`` distances of a
batch with a [`BaseDistance`][paper_sku.distances.BaseDistance], maps them through a
[`DistanceTransform`][paper_sku.distances.DistanceTransform] ``phi`` and compares
``phi(D_ap) - phi(D_an)`` with a margin. The transform decides which loss it is:

- [`IdentityTransform`][paper_sku.distances.IdentityTransform]: ``phi(D) = D``, the plain triplet
  loss (FaceNet).
- [`FocalTransform`][paper_sku.distances.FocalTransform]: ``phi(D) = exp(D / sigma)``, the focal
  kernel of Zhang et al. 2018, which up-weights hard triplets.

Distances are on L2-normalised embeddings (the model normalises them; the loss does not):

- [`EuclideanDistance`][paper_sku.distances.EuclideanDistance] with ``squared=True`` (the default,
  as FaceNet): ``D = ||u - v||^2 = 2 - 2 cos(u, v)``, in ``[0, 4]``.
- ``squared=False``: ``D = ||u - v||``, in ``[0, 2]``.

Examples:
    Two orthogonal unit vectors are at squared distance 2; the focal kernel with ``sigma = 2``
    maps that to ``e``.

    >>> import torch
    >>> from paper_sku.distances import EuclideanDistance, FocalTransform
    >>> d = EuclideanDistance()(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    >>> d.tolist()
    [[0.0, 2.0], [2.0, 0.0]]
    >>> round(float(FocalTransform(sigma=2.0)(d)[0, 1]), 6)
    2.718282
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch

from embedcam.errors import ConfigurationError

__all__ = [
    "Distance",
    "pairwise_distance",
    "BaseDistance",
    "EuclideanDistance",
    "DistanceTransform",
    "IdentityTransform",
    "FocalTransform",
]

#: The names of the built-in distances: squared or plain Euclidean.
Distance = Literal["squared", "euclidean"]


def pairwise_distance(x: torch.Tensor, distance: Distance = "squared") -> torch.Tensor:
    """All pairwise distances of a batch of embeddings.

    Args:
        x: ``(B, D)`` embeddings.
        distance: ``"squared"`` Euclidean or plain ``"euclidean"``.

    Returns:
        ``(B, B)`` distances with an exact zero diagonal.

    Raises:
        ConfigurationError: If ``distance`` is unknown.

    Examples:
        >>> import torch
        >>> pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), "euclidean").tolist()
        [[0.0, 5.0], [5.0, 0.0]]
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


def _check_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0.

    Args:
        name: The argument's name, for the error message.
        value: The value to check.

    Returns:
        ``float(value)``.

    Raises:
        ConfigurationError: If ``value`` is not a finite number > 0.
    """
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class BaseDistance(ABC):
    """A pairwise distance of a batch of embeddings (larger = farther).

    Attributes:
        name: Short name, shown in error messages and stored as the loss's ``distance``.
    """

    name: str = "distance"

    @abstractmethod
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """All pairwise distances.

        Args:
            x: ``(B, D)`` embeddings (the loss passes float64).

        Returns:
            ``(B, B)`` distances, zero on the diagonal.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EuclideanDistance(BaseDistance):
    """Squared (default) or plain Euclidean distance.

    See [`pairwise_distance`][paper_sku.distances.pairwise_distance].

    Args:
        squared: ``D = ||u - v||^2`` (FaceNet) if True, else ``D = ||u - v||``.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> EuclideanDistance()(x)[0, 1].item(), EuclideanDistance(squared=False)(x)[0, 1].item()
        (25.0, 5.0)
    """

    def __init__(self, squared: bool = True) -> None:
        self.squared = bool(squared)
        self.name: Distance = "squared" if self.squared else "euclidean"

    @classmethod
    def from_name(cls, name: Distance) -> EuclideanDistance:
        """The distance a name describes.

        Args:
            name: ``"squared"`` or ``"euclidean"``.

        Returns:
            The distance.

        Raises:
            ConfigurationError: If ``name`` is unknown.
        """
        if name not in ("squared", "euclidean"):
            raise ConfigurationError(f"unknown distance {name!r}; use 'squared' or 'euclidean'")
        return cls(squared=name == "squared")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Pairwise distances; see [`BaseDistance`][paper_sku.distances.BaseDistance].

        Args:
            x: ``(B, D)`` embeddings.

        Returns:
            ``(B, B)`` distances with an exact zero diagonal.
        """
        return pairwise_distance(x, self.name)

    def __repr__(self) -> str:
        return f"EuclideanDistance(squared={self.squared})"


class DistanceTransform(ABC):
    """``phi``, applied to the distances before the hinge ``[phi(D_ap) - phi(D_an) + m]_+``.

    ``phi`` must be increasing, so that the miners' "farther" still means farther. The margin
    lives on the scale of ``phi(D)``.
    """

    @abstractmethod
    def __call__(self, dist: torch.Tensor) -> torch.Tensor:
        """Transform distances.

        Args:
            dist: ``(B, B)`` distances (float64 in the loss).

        Returns:
            ``(B, B)`` transformed distances.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityTransform(DistanceTransform):
    """``phi(D) = D``: the plain triplet loss.

    Examples:
        >>> import torch
        >>> IdentityTransform()(torch.tensor([0.5, 2.0])).tolist()
        [0.5, 2.0]
    """

    def __call__(self, dist: torch.Tensor) -> torch.Tensor:
        """Return ``dist`` unchanged.

        Args:
            dist: Distances.

        Returns:
            The same tensor.
        """
        return dist


class FocalTransform(DistanceTransform):
    """The focal kernel ``phi(D) = exp(D / sigma)`` (Zhang et al., IEEE Access 2018).

    The kernel's gradient grows with the distance, so hard triplets weigh more. ``phi`` is 1 at
    ``D = 0`` and ``exp(4 / sigma)`` at the largest squared distance of normalised embeddings.
    See [`FocalTripletLoss`][paper_sku.losses.FocalTripletLoss] and the module docstring of
    [`paper_sku.losses`][paper_sku.losses] for why ``sigma = 1.0`` and not 0.3.

    Args:
        sigma: Kernel width (> 0).

    Raises:
        ConfigurationError: If ``sigma`` is not a finite number > 0.

    Examples:
        >>> import torch
        >>> FocalTransform(sigma=0.5)(torch.tensor([0.0, 0.5], dtype=torch.float64)).tolist()
        [1.0, 2.718281828459045]
    """

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _check_positive("sigma", sigma)

    def __call__(self, dist: torch.Tensor) -> torch.Tensor:
        """``exp(dist / sigma)``.

        Args:
            dist: Distances.

        Returns:
            Transformed distances, same shape.
        """
        return torch.exp(dist / self.sigma)

    def __repr__(self) -> str:
        return f"FocalTransform(sigma={self.sigma})"
