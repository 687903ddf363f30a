"""Figure grids: images with titles, coloured verdict borders, boxes and heat-map overlays.

A grid is a list of rows of [`GridCell`][embedcam.report.figures.GridCell] (or ``None`` for a blank
cell). It is drawn with matplotlib's object-oriented API on an Agg canvas - no ``pyplot`` state, no
window, nothing left open after the call - and written atomically as a PNG. This is how the paper's
Figures 1-4 are laid out: one row per image, one column per model, the verdict in the title and the
border colour.

The heat-map overlay follows the usual Grad-CAM display (Selvaraju et al., "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017): a colour-mapped map
blended semi-transparently over the image.

Examples:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from embedcam.report import GridCell, image_grid
    >>> img = torch.rand(3, 32, 32)
    >>> cells = [[GridCell(img, title="original"), GridCell(img, title="ok", border="green")]]
    >>> with tempfile.TemporaryDirectory() as d:
    ...     out = image_grid(cells, Path(d) / "grid.png", cell_size=1.0, dpi=50)
    ...     out.name, out.stat().st_size > 0
    ('grid.png', True)
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from embedcam.atomic import atomic_write_bytes
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.text import Text

__all__ = ["GridCell", "image_grid"]

# floats a hair outside [0, 1] come from resampling and blending; larger excursions are a bug
_RANGE_TOL = 1e-4


def _image_to_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """Return ``image`` as a float ``(H, W, 3)`` numpy array in ``[0, 1]``, validating it."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ShapeError(
                f"a torch image must be (3, H, W) (or (1, H, W) for grey), got shape "
                f"{tuple(image.shape)}; pick one image from the batch with images[i]"
            )
        arr = image.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ShapeError(
                f"a numpy image must be (H, W, 3) or (H, W), got shape {image.shape}; "
                "numpy images are channels-last"
            )
        if image.dtype == np.uint8:
            arr = image.astype(np.float32) / 255.0
        elif np.issubdtype(image.dtype, np.floating) or image.dtype == np.bool_:
            arr = image.astype(np.float32)
        else:
            raise EmbedcamValueError(
                f"a numpy image must be uint8 or float in [0, 1], got dtype {image.dtype}"
            )
    else:
        raise EmbedcamValueError(
            f"image must be a torch.Tensor (3, H, W) or a numpy array (H, W, 3), got "
            f"{type(image).__name__}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ShapeError(f"image has an empty side: (H, W) = {arr.shape[:2]}")
    if not np.isfinite(arr).all():
        raise EmbedcamValueError("image has NaN or infinite values; check the input pipeline")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise EmbedcamValueError(
            f"image values must be in [0, 1], got [{lo:.4g}, {hi:.4g}]; undo the input "
            "normalisation (x * std + mean) before drawing"
        )
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.clip(arr, 0.0, 1.0)


def _map_to_hw(map_: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Return the heat map as a float ``(H, W)`` numpy array, validating shape and range."""
    if not isinstance(map_, Tensor):
        raise EmbedcamValueError(f"map must be a torch.Tensor (H, W), got {type(map_).__name__}")
    if map_.dim() != 2 or tuple(map_.shape) != size:
        raise ShapeError(
            f"map must be (H, W) = {size} to match the image, got shape {tuple(map_.shape)}; "
            "use CamResult.maps[i], which is at input resolution"
        )
    arr = map_.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise EmbedcamValueError("map has NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise EmbedcamValueError(
            f"map values must be in [0, 1], got [{lo:.4g}, {hi:.4g}]; pass a normalised map "
            "such as CamResult.maps"
        )
    return np.clip(arr, 0.0, 1.0)


def _boxes_to_numpy(boxes: Tensor) -> np.ndarray:
    """Return boxes as a float ``(K, 4)`` numpy array, validating shape and ordering."""
    if not isinstance(boxes, Tensor):
        raise EmbedcamValueError(f"boxes must be a torch.Tensor (K, 4), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ShapeError(
            f"boxes must be (K, 4) xyxy, got shape {tuple(boxes.shape)}; use boxes[i] for the "
            "i-th image and boxes.view(-1, 4) for a single box"
        )
    arr = boxes.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(arr).all():
        raise EmbedcamValueError("boxes have NaN or infinite coordinates")
    bad = np.nonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))[0]
    if bad.size:
        k = int(bad[0])
        raise EmbedcamValueError(
            f"box {k} = {arr[k].tolist()} has x1 <= x0 or y1 <= y0; boxes are xyxy with "
            "half-open pixel coordinates"
        )
    return arr


# -- pixel primitives: uint8 (H, W, 3) arrays drawn in place, no matplotlib -----------------------
# (the dataset previews of `embedcam.datasets` draw with these; `image_grid` below uses matplotlib)


def _outline_mask(tile: np.ndarray, mask: np.ndarray, rgb: tuple[int, int, int]) -> None:
    """Paint the one-pixel boundary of ``mask`` (``(H, W)`` bool) onto ``tile`` in ``rgb``.

    A pixel is on the boundary when it is in the mask and one of its 4-neighbours is not (pixels
    on the image border count as boundary).
    """
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    tile[mask & ~inner] = rgb


def _outline_boxes(
    tile: np.ndarray, boxes: Sequence[Sequence[int]], rgb: tuple[int, int, int]
) -> None:
    """Paint one-pixel outlines of integer xyxy boxes (half-open) onto ``tile`` in ``rgb``.

    The outline runs on the box's outermost pixels: columns ``x0`` and ``x1 - 1``, rows ``y0``
    and ``y1 - 1`` (a box one pixel wide is one line).
    """
    for x0, y0, x1, y1 in boxes:
        x1, y1 = max(x1 - 1, x0), max(y1 - 1, y0)
        tile[y0, x0 : x1 + 1] = rgb
        tile[y1, x0 : x1 + 1] = rgb
        tile[y0 : y1 + 1, x0] = rgb
        tile[y0 : y1 + 1, x1] = rgb


def _tile_grid(tiles: Sequence[np.ndarray], cols: int, *, pad: int = 2) -> np.ndarray:
    """Lay equal-sized uint8 ``(t, t, 3)`` tiles out row by row on white, ``pad`` pixels apart.

    Returns:
        uint8 ``(rows * (t + pad) + pad, cols * (t + pad) + pad, 3)``, ``rows = ceil(n / cols)``;
        cells after the last tile stay white.
    """
    t = int(tiles[0].shape[0])
    rows = -(-len(tiles) // cols)
    grid = np.full((rows * (t + pad) + pad, cols * (t + pad) + pad, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        top, left = pad + r * (t + pad), pad + c * (t + pad)
        grid[top : top + t, left : left + t] = tile
    return grid


@dataclass(frozen=True)
class GridCell:
    """One panel of an `image_grid`: an image with optional verdict, boxes and heat map.

    The inputs are validated when the cell is made, so a bad panel fails where it is built rather
    than deep inside a long figure loop.

    Attributes:
        image: A torch image ``(3, H, W)`` (or ``(1, H, W)``) of floats in ``[0, 1]``, or a numpy
            image ``(H, W, 3)`` (or ``(H, W)``) of floats in ``[0, 1]`` or ``uint8``.
        title: Text above the image (e.g. the model name or the verdict).
        subtitle: Smaller text below the image (e.g. scores).
        border: A matplotlib colour name (``"green"``, ``"red"``, ``"orange"``, ``"#1f77b4"``) for
            a thick frame around the image, e.g. to encode the verdict; ``None`` for no frame.
        boxes: Boxes ``(K, 4)`` xyxy in half-open pixel coordinates (pixel ``x`` is inside when
            ``x0 <= x < x1``), drawn as outlines on the pixel edges.
        map: A heat map ``(H, W)`` in ``[0, 1]`` at the image resolution, drawn as a
            semi-transparent colour overlay.

    Raises:
        ShapeError: If the image, map or boxes have the wrong shape, or the map's ``(H, W)``
            differs from the image's.
        EmbedcamValueError: If values are non-finite or outside ``[0, 1]``, or a box is empty.
        ConfigurationError: If ``border`` is not a colour matplotlib knows.

    Examples:
        >>> import torch
        >>> cell = GridCell(torch.zeros(3, 8, 8), title="a", boxes=torch.tensor([[1, 1, 4, 5]]))
        >>> cell.title
        'a'
    """

    image: Tensor | np.ndarray
    title: str = ""
    subtitle: str = ""
    border: str | None = None
    boxes: Tensor | None = None
    map: Tensor | None = None

    def __post_init__(self) -> None:
        hwc = _image_to_hwc(self.image)
        if self.map is not None:
            _map_to_hw(self.map, (hwc.shape[0], hwc.shape[1]))
        if self.boxes is not None:
            _boxes_to_numpy(self.boxes)
        if self.border is not None:
            from matplotlib.colors import is_color_like

            if not is_color_like(self.border):
                raise ConfigurationError(
                    f"border {self.border!r} is not a matplotlib colour; use a name such as "
                    "'green', 'red', 'orange' or a hex code like '#2ca02c'"
                )


def _check_grid(
    cells: Sequence[Sequence[GridCell | None]],
    row_titles: Sequence[str] | None,
    col_titles: Sequence[str] | None,
    cell_size: float,
    dpi: float,
) -> tuple[int, int]:
    """Validate the grid arguments and return ``(rows, cols)``."""
    if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence):
        raise EmbedcamValueError(
            f"cells must be a list of rows (lists of GridCell or None), got {type(cells).__name__}"
        )
    n_rows = len(cells)
    if n_rows == 0:
        raise ShapeError("cells is empty; pass at least one row with one cell")
    for i, row in enumerate(cells):
        if isinstance(row, (GridCell, str, bytes)) or not isinstance(row, Sequence):
            raise EmbedcamValueError(
                f"cells[{i}] must be a row (a list of GridCell or None), got "
                f"{type(row).__name__}; wrap a single row as [[cell, ...]]"
            )
    n_cols = len(cells[0])
    if n_cols == 0:
        raise ShapeError("cells[0] is empty; every row needs at least one cell")
    for i, row in enumerate(cells):
        if len(row) != n_cols:
            raise ShapeError(
                f"row {i} has {len(row)} cells but row 0 has {n_cols}; pad short rows with None "
                "(a blank cell)"
            )
        for j, cell in enumerate(row):
            if cell is not None and not isinstance(cell, GridCell):
                raise EmbedcamValueError(
                    f"cells[{i}][{j}] must be a GridCell or None, got {type(cell).__name__}"
                )
    if row_titles is not None and len(row_titles) != n_rows:
        raise ShapeError(f"row_titles has {len(row_titles)} entries for {n_rows} rows")
    if col_titles is not None and len(col_titles) != n_cols:
        raise ShapeError(f"col_titles has {len(col_titles)} entries for {n_cols} columns")
    if not (math.isfinite(cell_size) and cell_size > 0):
        raise EmbedcamValueError(f"cell_size must be a positive number of inches, got {cell_size}")
    if not (math.isfinite(dpi) and dpi > 0):
        raise EmbedcamValueError(f"dpi must be positive, got {dpi}")
    return n_rows, n_cols


def _wrap_to_width(text: Text, max_width: float) -> None:
    """Break ``text`` into lines at word boundaries until it is at most ``max_width`` pixels wide.

    matplotlib neither wraps nor shrinks a title that is wider than its figure or panel: it is
    centred and cut off at both edges. Words longer than a line are broken.
    """
    content = text.get_text()
    if not content:
        return
    fig = text.get_figure()
    assert fig is not None
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    width = text.get_window_extent(renderer).width
    if width <= max_width:
        return
    paragraphs = content.split("\n")
    chars = max(len(p) for p in paragraphs)
    while chars > 1:
        # shrink in proportion to the overshoot, at least one character per step
        chars = max(1, min(chars - 1, int(chars * max_width / width)))
        text.set_text("\n".join(textwrap.fill(p, chars) if p else p for p in paragraphs))
        width = text.get_window_extent(renderer).width
        if width <= max_width:
            return


def _draw_cell(
    ax: Axes,
    cell: GridCell,
    *,
    font: float,
    map_alpha: float,
    map_cmap: str,
    box_color: str,
    panel: float = math.inf,
) -> None:
    """Draw one cell into ``ax``: image, overlay, boxes, border and texts.

    Titles and subtitles wider than ``panel`` pixels are wrapped onto several lines.
    """
    from matplotlib.patches import Rectangle

    img = _image_to_hwc(cell.image)
    h, w = img.shape[:2]
    ax.imshow(img, interpolation="nearest", vmin=0.0, vmax=1.0)
    if cell.map is not None:
        heat = _map_to_hw(cell.map, (h, w))
        ax.imshow(heat, cmap=map_cmap, vmin=0.0, vmax=1.0, alpha=map_alpha, interpolation="nearest")
    if cell.boxes is not None:
        # imshow puts pixel i's centre at i, so its edges are i - 0.5 and i + 0.5
        for x0, y0, x1, y1 in _boxes_to_numpy(cell.boxes):
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor=box_color,
                    linewidth=max(1.5, font / 4),
                )
            )
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    for spine in ax.spines.values():
        spine.set_visible(cell.border is not None)
        if cell.border is not None:
            spine.set_edgecolor(cell.border)
            spine.set_linewidth(max(2.0, font / 2.5))
    if cell.title:
        _wrap_to_width(ax.set_title(cell.title, fontsize=font), panel)
    if cell.subtitle:
        _wrap_to_width(ax.set_xlabel(cell.subtitle, fontsize=font * 0.85), panel)


def image_grid(
    cells: Sequence[Sequence[GridCell | None]],
    path: str | Path,
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: float = 2.0,
    dpi: float = 100,
    map_alpha: float = 0.5,
    map_cmap: str = "jet",
    box_color: str = "yellow",
    font_size: float | None = None,
) -> Path:
    """Draw a grid of image panels and write it atomically as a PNG.

    The figure is exactly ``cols * cell_size`` by ``rows * cell_size`` inches, so the PNG is
    ``round(cols * cell_size * dpi)`` by ``round(rows * cell_size * dpi)`` pixels; titles take
    room from the panels rather than growing the figure. Column titles are drawn in bold above the
    top row (above its cell titles), row titles in bold to the left of the first column, and
    ``title`` above everything. A title wider than the figure (a column or cell title wider than
    its panel) is wrapped onto several lines at word boundaries instead of being cut off. ``None``
    cells are left blank. The figure is built without ``pyplot`` and released after writing, so
    hundreds of calls do not accumulate memory.

    Args:
        cells: Rows of panels, all rows of equal length; ``None`` for a blank panel.
        path: Output PNG path; its folder is created when missing.
        row_titles: One label per row (e.g. the image id), or ``None``.
        col_titles: One label per column (e.g. ``"original"``, then each model), or ``None``.
        title: A title over the whole figure, or ``None``.
        cell_size: Size of one panel in inches (panels are square).
        dpi: Pixels per inch of the PNG.
        map_alpha: Opacity of the heat-map overlay in ``[0, 1]``.
        map_cmap: A matplotlib colour map name for the overlay.
        box_color: A matplotlib colour for the box outlines.
        font_size: Title font size in points; by default ``4 * cell_size`` clipped to ``[6, 12]``.

    Returns:
        The path written, as a `Path`.

    Raises:
        ShapeError: If there are no cells, rows differ in length (the message names the row), or
            ``row_titles``/``col_titles`` do not match the grid.
        EmbedcamValueError: If a cell is not a [`GridCell`][embedcam.report.figures.GridCell] or
            ``None``, ``cell_size``, ``dpi`` or ``map_alpha`` are out of range.
        ConfigurationError: If ``map_cmap`` or ``box_color`` is unknown to matplotlib.

    Examples:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> cells = [[GridCell(torch.rand(3, 16, 16)), None, None]]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = image_grid(cells, Path(d) / "g.png", cell_size=1.0, dpi=40)
        ...     Image.open(out).size
        (120, 40)
    """
    n_rows, n_cols = _check_grid(cells, row_titles, col_titles, cell_size, dpi)
    cell_px = cell_size * dpi  # a panel's width in pixels; titles longer than it are wrapped
    if not 0 <= map_alpha <= 1:
        raise EmbedcamValueError(f"map_alpha must be in [0, 1], got {map_alpha}")
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import is_color_like
    from matplotlib.figure import Figure

    if map_cmap not in matplotlib.colormaps:
        raise ConfigurationError(
            f"map_cmap {map_cmap!r} is not a matplotlib colour map; try 'jet', 'viridis' or 'hot'"
        )
    if not is_color_like(box_color):
        raise ConfigurationError(f"box_color {box_color!r} is not a matplotlib colour")
    font = float(font_size) if font_size is not None else min(12.0, max(6.0, 4.0 * cell_size))
    path = Path(path)

    fig = Figure(figsize=(n_cols * cell_size, n_rows * cell_size), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells[i][j]
            if cell is None:
                # keep the axes (not set_axis_off) so a row title on a blank first cell still shows
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.patch.set_visible(False)
            else:
                _draw_cell(
                    ax,
                    cell,
                    font=font,
                    map_alpha=map_alpha,
                    map_cmap=map_cmap,
                    box_color=box_color,
                    panel=cell_px,
                )
            if j == 0 and row_titles is not None and row_titles[i]:
                ax.set_ylabel(row_titles[i], fontsize=font, fontweight="bold")
    if col_titles is not None:
        for j, label in enumerate(col_titles):
            if not label:
                continue
            ax = axes[0][j]
            if ax.get_title():
                # stacked above the cell title; an axes child, so constrained layout makes room
                note = ax.annotate(
                    label,
                    xy=(0.5, 1.0),
                    xycoords=ax.title,
                    xytext=(0, font * 0.3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=font,
                    fontweight="bold",
                )
                _wrap_to_width(note, cell_px)
            else:
                _wrap_to_width(ax.set_title(label, fontsize=font, fontweight="bold"), cell_px)
    if title:
        # wrapped to the figure's width (less a margin): the canvas never grows for a title
        sup = fig.suptitle(title, fontsize=font * 1.25, fontweight="bold")
        _wrap_to_width(sup, fig.bbox.width - 2 * font * dpi / 72)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        fig.clear()
    atomic_write_bytes(path, buf.getvalue())
    return path
