"""Margin rules: the margin of every (anchor, negative) pair of a batch.

A [`TripletLossBase`][paper_sku.losses.TripletLossBase] asks its
[`MarginRule`][paper_sku.margins.MarginRule] for a ``(B, B)`` matrix ``m[a, n]`` and uses it in
the hinge ``[phi(D_ap) - phi(D_an) + m[a, n]]_+``; the miners get the same matrix. The margin lives
on the scale of ``phi(D)`` (see [`paper_sku.distances`][paper_sku.distances]).

- [`FixedMargin`][paper_sku.margins.FixedMargin]: one margin for every pair (FaceNet's
  ``alpha = 0.2`` on squared distances).
- [`FlexibleMargin`][paper_sku.margins.FlexibleMargin]: ``m(a, n) = alpha * g(k(a, n))``, growing
  with how different the two classes are by their additional labels (Petrova 2025, a
  reconstruction; see [`FlexibleMarginTripletLoss`][paper_sku.losses.FlexibleMarginTripletLoss]).

Examples:
    >>> import torch
    >>> from paper_sku.margins import FixedMargin, FlexibleMargin
    >>> labels = torch.tensor([0, 1, 2])
    >>> FixedMargin(0.5)(labels, torch.float64).tolist()
    [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]
    >>> table = {0: ("dairy", "milk"), 1: ("dairy", "yogurt"), 2: ("snacks", "chips")}
    >>> FlexibleMargin(0.25, extra_labels=table)(labels, torch.float64).tolist()
    [[0.0, 0.5, 0.75], [0.5, 0.0, 0.75], [0.75, 0.75, 0.0]]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Literal

import torch

from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from paper_sku.distances import _check_positive

__all__ = [
    "ExtraLabels",
    "MarginFn",
    "MarginRule",
    "FixedMargin",
    "FlexibleMargin",
    "difference_degree",
]

#: A class -> additional-labels table: ``{class_id: (category, group, ...)}``, a sequence whose
#: row ``c`` holds class ``c``'s labels, or an integer tensor ``(C, L)``.
ExtraLabels = Mapping[int, Sequence[Hashable]] | Sequence[Sequence[Hashable]] | torch.Tensor
#: How the flexible margin grows with the difference degree ``k``: a name or a callable ``g(k)``.
MarginFn = Literal["linear", "log"] | Callable[[torch.Tensor], torch.Tensor]


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


class MarginRule(ABC):
    """The margin of every (anchor, negative) pair of a batch."""

    @abstractmethod
    def __call__(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Margins of a batch.

        Args:
            labels: ``(B,)`` class labels.
            dtype: dtype of the result (the loss asks for float64).

        Returns:
            ``(B, B)`` margins ``m[a, n]``, on the device of ``labels``.
        """


class FixedMargin(MarginRule):
    """The same margin for every pair.

    Args:
        margin: The margin (> 0), on the scale of the loss's ``phi(D)``.

    Raises:
        ConfigurationError: If ``margin`` is not a finite number > 0.

    Examples:
        >>> import torch
        >>> FixedMargin(0.2)(torch.tensor([0, 1]), torch.float64).tolist()
        [[0.2, 0.2], [0.2, 0.2]]
    """

    def __init__(self, margin: float = 0.2) -> None:
        self.margin = _check_positive("margin", margin)

    def __call__(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A ``(B, B)`` matrix filled with ``margin``.

        Args:
            labels: ``(B,)`` class labels (only their number and device are used).
            dtype: dtype of the result.

        Returns:
            ``(B, B)`` margins.
        """
        b = labels.shape[0]
        return torch.full((b, b), self.margin, dtype=dtype, device=labels.device)

    def __repr__(self) -> str:
        return f"FixedMargin({self.margin})"


class FlexibleMargin(MarginRule):
    """Margin ``m(a, n) = base_margin * g(k(a, n))`` from the classes' additional labels.

    ``k >= 1`` is the [`difference_degree`][paper_sku.margins.difference_degree] of the anchor's and
    the negative's classes; ``g(k) = k`` (``"linear"``) or ``g(k) = ln(1 + k) / ln 2``
    (``"log"``), or any callable on a float64 tensor of ``k``. Both built-in ``g`` give
    ``g(1) = 1``, so classes that share all additional labels get ``base_margin``.

    Args:
        base_margin: ``alpha``, the margin of classes that share all additional labels.
        margin_fn: ``"linear"``, ``"log"`` or a callable ``g(k)``.
        levels: Column indices of the table to use, coarsest first; default all, in order.
        extra_labels: The class -> additional-labels table (keyword-only, required):
            ``{class_id: (category, group, ...)}``, a sequence of rows, or a ``(C, L)`` tensor.
            Labels may be any hashable values (names or ids).
        difference: ``"hierarchical"`` (default) or ``"count"``.

    Raises:
        ConfigurationError: On a non-positive margin, unknown ``margin_fn`` or ``difference``,
            bad ``levels``, or a ``margin_fn`` giving negative or non-finite margins.
        EmbedcamValueError: On a malformed table.

    Attributes:
        margin: ``base_margin`` as a float.
        margin_table: ``(C, C)`` float64 margin of every ordered pair of classes (diagonal 0).
        table: ``(C, L)`` int64 integer-coded additional labels.
        known: ``(C,)`` bool, which class ids the table covers.

    Examples:
        >>> table = {0: ("dairy", "milk"), 1: ("dairy", "yogurt"), 2: ("snacks", "chips")}
        >>> row = FlexibleMargin(0.25, "log", extra_labels=table).margin_table[0]
        >>> [round(v, 4) for v in row.tolist()]  # 0.25 * log2(1 + k) for k = 0, 2, 3
        [0.0, 0.3962, 0.5]
    """

    def __init__(
        self,
        base_margin: float = 0.2,
        margin_fn: MarginFn = "linear",
        levels: Sequence[int] | None = None,
        *,
        extra_labels: ExtraLabels,
        difference: Literal["hierarchical", "count"] = "hierarchical",
    ) -> None:
        self.margin = _check_positive("margin", base_margin)
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

    def __call__(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-pair margins looked up from [`margin_table`][paper_sku.margins.FlexibleMargin].

        Args:
            labels: ``(B,)`` class labels.
            dtype: dtype of the result.

        Returns:
            ``(B, B)`` margins ``margin_table[labels[a], labels[n]]``.

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

    def __repr__(self) -> str:
        return (
            f"FlexibleMargin({self.margin}, margin_fn={self.margin_fn!r}, "
            f"classes={self.known.shape[0]})"
        )
