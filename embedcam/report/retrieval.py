"""Rank-list figures: a query, its nearest gallery images, and the maps of every match.

The layout re-identification papers use for rank lists (the query first, then the k neighbours
in rank order, correct ones framed green and wrong ones red), with the maps of
[`rank_list`][embedcam.pairs.rank_list] below the images:

* row 1 - the images; each neighbour's subtitle gives its rank and cosine to the query;
* row 2 - each neighbour's map: what in the gallery image matched the query;
* row 3 - the query's map for each neighbour: what in the query matched that image;
* row 4 (when a wrong neighbour outranked the best correct match) - the query's map of
  ``cos(q, g_wrong) - cos(q, g_right)`` under each such wrong neighbour: what made it win. The
  first column then shows the best correct match ``g_right``, with its rank.

A degenerate map (a self-match) is drawn as the bare image with ``degenerate`` in its subtitle,
an empty one with ``no evidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from embedcam.errors import ConfigurationError, ShapeError
from embedcam.report.figures import GridCell, image_grid

if TYPE_CHECKING:
    from embedcam.cam.result import CamResult
    from embedcam.pairs import RankList

__all__ = ["rank_list_figure"]


def _displayable(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Tensor:
    """Model-input images back in ``[0, 1]`` for drawing (undo ``Normalize(mean, std)``)."""
    x = images.detach().to("cpu", torch.float32)
    if (mean is None) != (std is None):
        raise ConfigurationError("pass both mean and std (the input normalisation), or neither")
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        if m.numel() != x.shape[-3] or s.numel() != x.shape[-3]:
            raise ShapeError(
                f"mean and std need one value per channel ({x.shape[-3]}), got {len(list(mean))} "
                f"and {len(list(std))}"
            )
        x = x * s + m
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ConfigurationError(
            f"images hold values in [{lo:.3g}, {hi:.3g}], outside [0, 1]: pass the mean and std "
            "of the input normalisation (e.g. mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, "
            "0.225) for ImageNet) so the figure can undo it"
        )
    return x.clamp(0.0, 1.0)


def _map_cell(image: Tensor, res: CamResult, i: int, title: str = "") -> GridCell:
    if bool(res.degenerate[i]):
        return GridCell(image, title=title, subtitle="degenerate (self-match?)")
    if bool(res.empty[i]):
        return GridCell(image, title=title, subtitle="no evidence")
    return GridCell(image, title=title, map=res.maps[i].cpu())


def rank_list_figure(
    ranks: RankList,
    path: str | Path,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    title: str | None = None,
    names: Sequence[str] | None = None,
    cell_size: float = 1.8,
    dpi: float = 100,
) -> Path:
    """Draw a [`RankList`][embedcam.pairs.RankList] as a PNG: images, then the maps of each match.

    Args:
        ranks: the result of [`rank_list`][embedcam.pairs.rank_list].
        path: output PNG (written atomically; its folder is created).
        mean: per-channel mean of the input normalisation, to undo it for drawing.
        std: per-channel standard deviation of the input normalisation.
        title: a title over the figure.
        names: class names, indexed by label, for the titles.
        cell_size: panel size in inches.
        dpi: pixels per inch.

    Returns:
        The path written.

    Raises:
        ConfigurationError: the images are not in ``[0, 1]`` and no ``mean``/``std`` undo the
            normalisation, or only one of them is given.
        ShapeError: ``mean``/``std`` do not have one value per channel.

    Examples:
        >>> import tempfile, torch, embedcam as ec
        >>> from pathlib import Path
        >>> from embedcam.report import rank_list_figure
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.Flatten())
        >>> gallery = torch.rand(5, 3, 16, 16)   # images in [0, 1]: nothing to undo
        >>> rl = ec.rank_list(ec.EmbeddingCAM(net, "0"), gallery[0], gallery, k=3,
        ...                   query_label=0, gallery_labels=[0, 1, 0, 1, 2], exclude=0)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     rank_list_figure(rl, Path(d) / "ranks.png", dpi=30).name
        'ranks.png'
    """

    def name(label: int | None) -> str:
        if label is None:
            return ""
        return names[label] if names is not None and 0 <= label < len(names) else f"class {label}"

    query = _displayable(ranks.query_image[None], mean, std)[0]
    images = _displayable(ranks.images, mean, std)
    k = len(ranks)
    top: list[GridCell | None] = [
        GridCell(query, title="query", subtitle=name(ranks.query_label), border="#1f77b4")
    ]
    for i in range(k):
        border = None
        if ranks.correct is not None:
            border = "#2ca02c" if bool(ranks.correct[i]) else "#d62728"
        label = None if ranks.labels is None else int(ranks.labels[i])
        top.append(
            GridCell(
                images[i],
                title=f"#{i + 1}  cos {float(ranks.similarities[i]):.3f}",
                subtitle=name(label),
                border=border,
            )
        )
    gallery_row: list[GridCell | None] = [None]
    query_row: list[GridCell | None] = [None]
    for i in range(k):
        gallery_row.append(_map_cell(images[i], ranks.pairs.gallery, i))
        query_row.append(_map_cell(query, ranks.pairs.query, i))
    rows = [top, gallery_row, query_row]
    row_titles = ["rank list", "neighbour: what matched", "query: what matched"]
    if ranks.contrast is not None and ranks.contrast_ranks is not None:
        first: GridCell | None = None
        if ranks.right_image is not None and ranks.right_rank is not None:
            first = GridCell(
                _displayable(ranks.right_image[None], mean, std)[0],
                border="#2ca02c",
                title=f"right match: #{ranks.right_rank + 1}",
                subtitle=f"cos {float(ranks.right_similarity or 0.0):.3f}",
            )
        contrast_row: list[GridCell | None] = [first] + [None] * k
        for row, rank in enumerate(ranks.contrast_ranks.tolist()):
            contrast_row[rank + 1] = _map_cell(query, ranks.contrast, row)
        rows.append(contrast_row)
        row_titles.append("query: wrong over right")
    return image_grid(rows, path, row_titles=row_titles, title=title, cell_size=cell_size, dpi=dpi)
