"""A preview grid of dataset samples with their boxes, for a person to look at.

[`preview_grid`][embedcam.datasets.preview.preview_grid] draws samples with their boxes and mask
outlines, [`intervention_grid`][embedcam.datasets.preview.intervention_grid] the background
interventions of masked samples; [`save_preview`][embedcam.datasets.preview.save_preview] and
[`save_intervention_grid`][embedcam.datasets.preview.save_intervention_grid] write them as PNG
files. The pixel drawing (outlines, tile grids) is shared with `embedcam.report.figures`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedcam import boxes as _boxes
from embedcam.datasets._io import atomic_write_bytes, encode_image, read_mask, read_rgb
from embedcam.datasets.index import DatasetIndex
from embedcam.errors import ConfigurationError, DataError
from embedcam.report.figures import _outline_boxes, _outline_mask, _tile_grid

__all__ = ["preview_grid", "save_preview", "intervention_grid", "save_intervention_grid"]

_BOX_RGB = (0, 230, 0)
_MASK_RGB = (255, 0, 255)


def _pick(index: DatasetIndex, n: int, split: str | None, per_class: bool) -> list[int]:
    pool = [i for i, s in enumerate(index.samples) if split is None or s.split == split]
    if not pool:
        raise DataError(f"no samples in split {split!r}; present: {index.splits}")
    if not per_class:
        return pool[:n]
    # round-robin over classes so every class shows up before any repeats
    by_class: dict[int, list[int]] = {}
    for i in pool:
        by_class.setdefault(index.samples[i].label, []).append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(v) for v in by_class.values()):
        for label in sorted(by_class):
            if depth < len(by_class[label]) and len(picked) < n:
                picked.append(by_class[label][depth])
        depth += 1
    return picked


def preview_grid(
    index: DatasetIndex,
    n: int = 16,
    *,
    cols: int = 8,
    tile: int = 96,
    split: str | None = "train",
    per_class: bool = True,
    show_masks: bool = True,
) -> np.ndarray:
    """Draw a grid of samples with their boxes (green) and mask outlines (magenta).

    Args:
        index: The dataset index.
        n: Number of samples.
        cols: Tiles per row.
        tile: Tile side in pixels (images are resized to ``tile x tile``).
        split: Which split to draw from (``None``: all).
        per_class: Take samples class by class (round robin) rather than in index order.
        show_masks: Outline the exact object mask when the sample has one.

    Returns:
        uint8 ``(rows * (tile + 2) + 2, cols * (tile + 2) + 2, 3)`` RGB image.

    Raises:
        ConfigurationError: If ``n``, ``cols`` or ``tile`` is not positive.
        DataError: If the split has no samples or an image cannot be read.
    """
    if n < 1 or cols < 1 or tile < 8:
        raise ConfigurationError(f"need n >= 1, cols >= 1, tile >= 8; got {n}, {cols}, {tile}")
    picked = _pick(index, n, split, per_class)
    tiles = []
    for i in picked:
        s = index.samples[i]
        img = torch.from_numpy(read_rgb(s.path)).permute(2, 0, 1).float()[None]
        src = (int(img.shape[-2]), int(img.shape[-1]))
        img = F.interpolate(img, size=(tile, tile), mode="bilinear", antialias=True)[0]
        out = img.clamp(0, 255).round().byte().permute(1, 2, 0).numpy().copy()
        if show_masks and s.mask_path is not None:
            m = torch.from_numpy(read_mask(s.mask_path))[None, None].float()
            mask = F.interpolate(m, size=(tile, tile), mode="nearest")[0, 0].numpy() > 0.5
            _outline_mask(out, mask, _MASK_RGB)
        if s.boxes:
            b = _boxes.resize_boxes(s.box_tensor(), src, (tile, tile))
            _outline_boxes(out, b.round().long().tolist(), _BOX_RGB)
        tiles.append(out)
    return _tile_grid(tiles, min(cols, len(tiles)))


def intervention_grid(
    index: DatasetIndex, n: int = 4, *, tile: int = 96, split: str = "train", seed: int = 0
) -> np.ndarray:
    """Draw rows of (original, Only-BG-B, Only-FG, Mixed-Same, Mixed-Rand) for masked samples.

    Uses [`embedcam.interventions`][embedcam.interventions] with the samples' exact masks (synthetic
    exports).

    Args:
        index: A dataset index whose samples have masks, at least two per class in ``split``.
        n: Number of rows (one class each).
        tile: Tile side in pixels.
        split: Which split to draw from.
        seed: Seed of the donor choice.

    Returns:
        uint8 ``(n * (tile + 2) + 2, 5 * (tile + 2) + 2, 3)`` RGB image.

    Raises:
        DataError: If the split has fewer than ``n`` classes with two masked samples each.
    """
    from embedcam import interventions as iv
    from embedcam.datasets.torch_dataset import ImageDataset, collate_boxes

    part = index.split(split)
    by_class: dict[int, list[int]] = {}
    for i, s in enumerate(part.samples):
        if s.mask_path is not None:
            by_class.setdefault(s.label, []).append(i)
    pairs = [v[:2] for _, v in sorted(by_class.items()) if len(v) >= 2][:n]
    if len(pairs) < n:
        raise DataError(
            f"need {n} classes with two masked samples in split {split!r}, found {len(pairs)}"
        )
    # the second image of each class is only there as a Mixed-Same donor
    order = [p[0] for p in pairs] + [p[1] for p in pairs]
    sub = part.model_copy(update={"samples": [part.samples[i] for i in order]})
    data = ImageDataset(sub, size=(tile, tile), with_masks=True)
    batch = collate_boxes([data[i] for i in range(len(data))])
    x, m, y = batch["image"], batch["mask"], batch["label"]
    columns = [
        x,
        iv.only_bg(x, m),
        iv.only_fg(x, m),
        iv.mixed_same(x, m, y, generator=seed)[0],
        iv.mixed_rand(x, m, y, generator=seed)[0],
    ]
    tiles = [
        (col[r].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        for r in range(n)
        for col in columns
    ]
    return _tile_grid(tiles, len(columns))


def save_preview(index: DatasetIndex, path: str | Path, **kwargs: object) -> Path:
    """Write [`preview_grid`][embedcam.datasets.preview.preview_grid] as a PNG file (atomically).

    Args:
        index: The dataset index.
        path: Destination ``.png``.
        **kwargs: Passed to [`preview_grid`][embedcam.datasets.preview.preview_grid].

    Returns:
        The path written.
    """
    p = Path(path)
    atomic_write_bytes(p, encode_image(preview_grid(index, **kwargs), "png"))  # type: ignore[arg-type]
    return p


def save_intervention_grid(index: DatasetIndex, path: str | Path, **kwargs: object) -> Path:
    """Write [`intervention_grid`][embedcam.datasets.preview.intervention_grid] as a PNG file.

    The file is written atomically (a temporary file in the same folder, then a rename).

    Args:
        index: A dataset index whose samples have masks (see
            [`intervention_grid`][embedcam.datasets.preview.intervention_grid]).
        path: Destination ``.png``.
        **kwargs: Passed to [`intervention_grid`][embedcam.datasets.preview.intervention_grid].

    Returns:
        The path written.

    Raises:
        DataError: If the split has too few masked samples, or the file cannot be written.
    """
    p = Path(path)
    grid = intervention_grid(index, **kwargs)  # type: ignore[arg-type]
    atomic_write_bytes(p, encode_image(grid, "png"))
    return p
