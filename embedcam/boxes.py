"""Bounding boxes: one internal convention, converters, geometric transforms and rasterisation.

embedcam stores every box as float ``[x0, y0, x1, y1]`` in continuous pixel coordinates with a
half-open extent: pixel ``(row r, col c)`` lies inside the box when ``x0 <= c + 0.5 < x1`` and
``y0 <= r + 0.5 < y1`` (pixel centres sit at ``+0.5``). ``x`` is the column (width) axis and ``y``
the row (height) axis, so a map ``s`` is indexed ``s[y, x]``. Image sizes are always ``(H, W)``
tuples.

The three annotation formats users bring map onto this convention as follows:

* COCO (Lin et al., *Microsoft COCO: Common Objects in Context*, ECCV 2014): ``[x, y, w, h]`` in
  pixels, ``-> [x, y, x + w, y + h]``.
* YOLO (Redmon et al., *You Only Look Once*, CVPR 2016; the Darknet/Ultralytics label files):
  ``[cx, cy, w, h]`` normalised by the image size, ``-> [(cx - w/2) W, (cy - h/2) H, ...]``.
* Pascal VOC (Everingham et al., *The PASCAL Visual Object Classes Challenge*, IJCV 2010):
  1-based inclusive pixel indices ``[xmin, ymin, xmax, ymax]`` ``-> [xmin - 1, ymin - 1, xmax,
  ymax]``.

All functions take and return torch tensors of shape ``(..., 4)`` (float32, or float64 when given
float64; lists and integer tensors are converted to float32), keep the input's device and never
modify their inputs.

Examples:
    >>> import torch
    >>> from embedcam import boxes
    >>> b = boxes.coco_to_xyxy(torch.tensor([[1.0, 0.0, 2.0, 1.0]]))
    >>> b
    tensor([[1., 0., 3., 1.]])
    >>> boxes.boxes_to_masks([b], size=(2, 4)).int()
    tensor([[[0, 1, 1, 0],
             [0, 0, 0, 0]]], dtype=torch.int32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from embedcam.errors import EmbedcamValueError, ShapeError

__all__ = [
    "as_boxes",
    "coco_to_xyxy",
    "xyxy_to_coco",
    "yolo_to_xyxy",
    "xyxy_to_yolo",
    "voc_to_xyxy",
    "xyxy_to_voc",
    "validate_boxes",
    "clip_boxes",
    "box_area",
    "box_iou",
    "resize_boxes",
    "crop_boxes",
    "letterbox_params",
    "letterbox_boxes",
    "boxes_to_masks",
]

BoxesLike = torch.Tensor | Sequence[float] | Sequence[Sequence[float]]


def _check_size(size: Sequence[int], name: str = "size") -> tuple[int, int]:
    """Return ``size`` as an ``(H, W)`` tuple of positive ints, or raise."""
    try:
        h, w = (int(v) for v in size)
        ok = all(float(v) == int(v) for v in size)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        ok = False
    if not ok or h <= 0 or w <= 0:
        raise EmbedcamValueError(
            f"{name} must be an (H, W) pair of positive integers, got {size!r}; "
            "pass e.g. size=(image.shape[-2], image.shape[-1])"
        )
    return h, w


def as_boxes(b: BoxesLike, name: str = "boxes") -> torch.Tensor:
    """Convert ``b`` to a floating box tensor of shape ``(..., 4)`` without modifying it.

    Args:
        b: A tensor, or a (nested) list of numbers, whose last dimension has size 4.
        name: What to call the argument in error messages.

    Returns:
        A new tensor of shape ``(..., 4)``: float64 if ``b`` was float64, float32 otherwise.

    Raises:
        ShapeError: If the last dimension is not 4 (or ``b`` is a 0-d tensor).
        EmbedcamValueError: If ``b`` is not numbers (a string, ``None``, ragged lists, bools).
    """
    if isinstance(b, torch.Tensor):
        t = b
    else:
        try:
            t = torch.as_tensor(b)
        except (TypeError, ValueError, RuntimeError) as err:
            raise EmbedcamValueError(
                f"{name} must be numbers, a (..., 4) tensor or nested lists of 4 coordinates "
                f"per box, got {type(b).__name__} {str(b)[:80]!r} ({err})"
            ) from None
    if t.is_complex() or t.dtype == torch.bool:
        raise EmbedcamValueError(f"{name} must be numbers, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if t.dim() == 0 or t.shape[-1] != 4:
        raise ShapeError(
            f"{name} must have shape (..., 4) ([x0, y0, x1, y1] per box), got {tuple(t.shape)}; "
            "for a single box pass a 4-element list or tensor"
        )
    return t.clone()


def coco_to_xyxy(b: BoxesLike) -> torch.Tensor:
    """Convert COCO ``[x, y, w, h]`` boxes to ``[x0, y0, x1, y1]``.

    Args:
        b: Boxes ``(..., 4)`` as ``[x, y, width, height]`` in pixels (COCO, Lin et al. 2014).

    Returns:
        Boxes ``(..., 4)`` as ``[x, y, x + w, y + h]``.

    Raises:
        ShapeError: If the last dimension is not 4.

    Examples:
        >>> coco_to_xyxy([10.0, 20.0, 5.0, 8.0])
        tensor([10., 20., 15., 28.])
    """
    t = as_boxes(b)
    return torch.cat([t[..., :2], t[..., :2] + t[..., 2:]], dim=-1)


def xyxy_to_coco(b: BoxesLike) -> torch.Tensor:
    """Convert ``[x0, y0, x1, y1]`` boxes to COCO ``[x, y, w, h]``.

    Args:
        b: Boxes ``(..., 4)`` in the internal convention.

    Returns:
        Boxes ``(..., 4)`` as ``[x0, y0, x1 - x0, y1 - y0]``.

    Raises:
        ShapeError: If the last dimension is not 4.
    """
    t = as_boxes(b)
    return torch.cat([t[..., :2], t[..., 2:] - t[..., :2]], dim=-1)


def yolo_to_xyxy(b: BoxesLike, size: Sequence[int]) -> torch.Tensor:
    """Convert YOLO normalised ``[cx, cy, w, h]`` boxes to pixel ``[x0, y0, x1, y1]``.

    Args:
        b: Boxes ``(..., 4)`` as centre and size, each divided by the image width (x, w) or
            height (y, h), as in YOLO label files (Redmon et al. 2016).
        size: The image size ``(H, W)`` in pixels.

    Returns:
        Boxes ``(..., 4)`` in pixels: ``[(cx - w/2) W, (cy - h/2) H, (cx + w/2) W, (cy + h/2) H]``.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If ``size`` is not a pair of positive integers.

    Examples:
        >>> yolo_to_xyxy([0.5, 0.25, 0.5, 0.5], size=(4, 8))
        tensor([2., 0., 6., 2.])
    """
    h, w = _check_size(size)
    t = as_boxes(b)
    scale = torch.tensor([w, h, w, h], dtype=t.dtype, device=t.device)
    half = t[..., 2:] / 2
    return torch.cat([t[..., :2] - half, t[..., :2] + half], dim=-1) * scale


def xyxy_to_yolo(b: BoxesLike, size: Sequence[int]) -> torch.Tensor:
    """Convert pixel ``[x0, y0, x1, y1]`` boxes to YOLO normalised ``[cx, cy, w, h]``.

    Args:
        b: Boxes ``(..., 4)`` in the internal convention.
        size: The image size ``(H, W)`` in pixels.

    Returns:
        Boxes ``(..., 4)`` as ``[cx / W, cy / H, w / W, h / H]``.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If ``size`` is not a pair of positive integers.
    """
    h, w = _check_size(size)
    t = as_boxes(b)
    scale = torch.tensor([w, h, w, h], dtype=t.dtype, device=t.device)
    centre = (t[..., :2] + t[..., 2:]) / 2
    extent = t[..., 2:] - t[..., :2]
    return torch.cat([centre, extent], dim=-1) / scale


def voc_to_xyxy(b: BoxesLike) -> torch.Tensor:
    """Convert Pascal VOC 1-based inclusive ``[xmin, ymin, xmax, ymax]`` to ``[x0, y0, x1, y1]``.

    In VOC (Everingham et al. 2010) the box ``[1, 1, 1, 1]`` is the single top-left pixel, which
    here is ``[0, 0, 1, 1]``.

    Args:
        b: Boxes ``(..., 4)`` in VOC pixel indices (floats are accepted, as some exporters write
            them).

    Returns:
        Boxes ``(..., 4)`` as ``[xmin - 1, ymin - 1, xmax, ymax]``.

    Raises:
        ShapeError: If the last dimension is not 4.

    Examples:
        >>> voc_to_xyxy([1, 1, 1, 1])
        tensor([0., 0., 1., 1.])
    """
    t = as_boxes(b)
    return torch.cat([t[..., :2] - 1, t[..., 2:]], dim=-1)


def xyxy_to_voc(b: BoxesLike) -> torch.Tensor:
    """Convert ``[x0, y0, x1, y1]`` boxes to Pascal VOC 1-based inclusive indices.

    Args:
        b: Boxes ``(..., 4)`` in the internal convention.

    Returns:
        Boxes ``(..., 4)`` as ``[x0 + 1, y0 + 1, x1, y1]`` (not rounded).

    Raises:
        ShapeError: If the last dimension is not 4.
    """
    t = as_boxes(b)
    return torch.cat([t[..., :2] + 1, t[..., 2:]], dim=-1)


def _box_label(flat_index: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return f"box {flat_index}"
    idx = []
    for dim in reversed(shape):
        idx.append(flat_index % dim)
        flat_index //= dim
    return f"box {tuple(reversed(idx))}"


def validate_boxes(
    b: BoxesLike, size: Sequence[int] | None = None, image_index: int | None = None
) -> None:
    """Check that boxes are well formed and, if ``size`` is given, touch the image.

    A box is invalid when any coordinate is NaN or infinite, when ``x1 <= x0`` or ``y1 <= y0``,
    or (with ``size``) when it lies entirely outside the image, i.e. its overlap with
    ``[0, W] x [0, H]`` has zero area. Partly outside boxes are valid (use
    [`clip_boxes`][embedcam.boxes.clip_boxes]).

    Args:
        b: Boxes ``(..., 4)`` as ``[x0, y0, x1, y1]``.
        size: Optional image size ``(H, W)``.
        image_index: Optional index of the image the boxes belong to, for the error message.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: For the first invalid box; the message names the box index (and the
            image index when given), the box and what is wrong.

    Examples:
        >>> validate_boxes([[0.0, 0.0, 2.0, 2.0]], size=(4, 4))
        >>> validate_boxes([[3.0, 0.0, 2.0, 2.0]], image_index=7)
        Traceback (most recent call last):
        ...
        embedcam.errors.EmbedcamValueError: box 0 of image 7 ([3.0, 0.0, 2.0, 2.0]) has x1 <= x0...
    """
    t = as_boxes(b)
    shape = tuple(t.shape[:-1])
    flat = t.reshape(-1, 4)
    if flat.shape[0] == 0:
        return
    x0, y0, x1, y1 = flat.unbind(-1)
    nonfinite = ~torch.isfinite(flat).all(-1)
    checks: list[tuple[torch.Tensor, str]] = [
        (nonfinite, "has a NaN or infinite coordinate; drop or fix the annotation"),
        (
            ~nonfinite & (x1 <= x0),
            "has x1 <= x0; boxes are [x0, y0, x1, y1] (convert COCO [x, y, w, h] with "
            "coco_to_xyxy, YOLO with yolo_to_xyxy)",
        ),
        (
            ~nonfinite & (y1 <= y0),
            "has y1 <= y0; boxes are [x0, y0, x1, y1] (convert COCO [x, y, w, h] with "
            "coco_to_xyxy, YOLO with yolo_to_xyxy)",
        ),
    ]
    if size is not None:
        h, w = _check_size(size)
        outside = (x1 <= 0) | (y1 <= 0) | (x0 >= w) | (y0 >= h)
        checks.append(
            (
                ~nonfinite & outside,
                f"lies entirely outside the image of size (H, W) = ({h}, {w}); check the "
                "image size and whether the box is in pixels (YOLO boxes need yolo_to_xyxy)",
            )
        )
    for bad, reason in checks:
        if bool(bad.any()):
            i = int(torch.nonzero(bad)[0, 0])
            where = _box_label(i, shape)
            if image_index is not None:
                where += f" of image {image_index}"
            raise EmbedcamValueError(f"{where} ({flat[i].tolist()}) {reason}")


def clip_boxes(b: BoxesLike, size: Sequence[int]) -> torch.Tensor:
    """Clip boxes to the image ``[0, W] x [0, H]``.

    A box entirely outside the image becomes degenerate (zero width or height); find such boxes
    with ``box_area(b) == 0``.

    Args:
        b: Boxes ``(..., 4)``.
        size: Image size ``(H, W)``.

    Returns:
        Clipped boxes ``(..., 4)``.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If ``size`` is not a pair of positive integers.

    Examples:
        >>> clip_boxes([-2.0, 1.0, 5.0, 9.0], size=(4, 3))
        tensor([0., 1., 3., 4.])
    """
    h, w = _check_size(size)
    t = as_boxes(b)
    xs = t[..., 0::2].clamp(0, w)
    ys = t[..., 1::2].clamp(0, h)
    return torch.stack([xs[..., 0], ys[..., 0], xs[..., 1], ys[..., 1]], dim=-1)


def box_area(b: BoxesLike) -> torch.Tensor:
    """Area ``(x1 - x0)(y1 - y0)`` of each box, zero for degenerate or inverted boxes.

    Args:
        b: Boxes ``(..., 4)``.

    Returns:
        Areas of shape ``(...)``.

    Raises:
        ShapeError: If the last dimension is not 4.
    """
    t = as_boxes(b)
    return (t[..., 2] - t[..., 0]).clamp(min=0) * (t[..., 3] - t[..., 1]).clamp(min=0)


def box_iou(a: BoxesLike, b: BoxesLike) -> torch.Tensor:
    """Element-wise intersection over union of two sets of boxes (continuous areas).

    Args:
        a: Boxes ``(..., 4)``.
        b: Boxes broadcastable against ``a``.

    Returns:
        IoU of shape ``(...)``; NaN where both boxes have zero area or a coordinate is NaN
        (check annotations with [`validate_boxes`][embedcam.boxes.validate_boxes]).

    Raises:
        ShapeError: If a last dimension is not 4.

    Examples:
        >>> box_iou([0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0])
        tensor(0.3333)
    """
    ta, tb = as_boxes(a, "a"), as_boxes(b, "b")
    lo = torch.maximum(ta[..., :2], tb[..., :2])
    hi = torch.minimum(ta[..., 2:], tb[..., 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    union = box_area(ta) + box_area(tb) - inter
    return inter / union


def resize_boxes(b: BoxesLike, from_size: Sequence[int], to_size: Sequence[int]) -> torch.Tensor:
    """Move boxes with an image resized from ``from_size`` to ``to_size`` (aspect may change).

    Pixel edges scale exactly: ``x -> x * W_to / W_from``, ``y -> y * H_to / H_from``, which is
    what ``torch.nn.functional.interpolate(..., align_corners=False)`` and PIL/torchvision resizes
    do to the image content.

    Args:
        b: Boxes ``(..., 4)`` in the ``from_size`` image.
        from_size: Original image size ``(H, W)``.
        to_size: New image size ``(H, W)``.

    Returns:
        Boxes ``(..., 4)`` in the resized image, clipped to it.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If a size is not a pair of positive integers.

    Examples:
        >>> resize_boxes([10.0, 10.0, 20.0, 40.0], from_size=(40, 20), to_size=(20, 40))
        tensor([20.,  5., 40., 20.])
    """
    h0, w0 = _check_size(from_size, "from_size")
    h1, w1 = _check_size(to_size, "to_size")
    t = as_boxes(b)
    scale = torch.tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0], dtype=t.dtype, device=t.device)
    return clip_boxes(t * scale, (h1, w1))


def crop_boxes(b: BoxesLike, top: float, left: float, size: Sequence[int]) -> torch.Tensor:
    """Move boxes with an image cropped to the window starting at ``(top, left)`` of ``size``.

    Args:
        b: Boxes ``(..., 4)`` in the original image.
        top: Row of the crop window's top edge in the original image.
        left: Column of the crop window's left edge in the original image.
        size: Crop size ``(H, W)``.

    Returns:
        Boxes ``(..., 4)`` in crop coordinates, clipped to the crop; boxes outside the window
        become degenerate (``box_area == 0``), so filter them before rasterising.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If ``size`` is not a pair of positive integers or ``top``/``left``
            is not a finite number.

    Examples:
        >>> crop_boxes([4.0, 2.0, 10.0, 6.0], top=1, left=5, size=(4, 4))
        tensor([0., 1., 4., 4.])
    """
    h, w = _check_size(size)
    try:
        ok = math.isfinite(float(top)) and math.isfinite(float(left))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EmbedcamValueError(
            f"top and left must be finite numbers (the crop window's corner), got top={top!r}, "
            f"left={left!r}"
        )
    t = as_boxes(b)
    shift = torch.tensor([left, top, left, top], dtype=t.dtype, device=t.device)
    return clip_boxes(t - shift, (h, w))


def letterbox_params(
    from_size: Sequence[int], to_size: Sequence[int]
) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Geometry of an aspect-preserving letterbox resize.

    The image is resized by ``scale = min(H_to / H_from, W_to / W_from)`` to
    ``(round(H_from * scale), round(W_from * scale))`` and padded, centred, to ``to_size``
    (``pad_top = (H_to - new_h) // 2``, ``pad_left = (W_to - new_w) // 2``, the remainder at the
    bottom/right). Image transforms that letterbox should use these numbers so that boxes move
    exactly with the pixels.

    Args:
        from_size: Original image size ``(H, W)``.
        to_size: Output image size ``(H, W)``.

    Returns:
        ``(scale, (new_h, new_w), (pad_top, pad_left))``.

    Raises:
        EmbedcamValueError: If a size is not a pair of positive integers.

    Examples:
        >>> letterbox_params((50, 100), (64, 64))
        (0.64, (32, 64), (16, 0))
    """
    h0, w0 = _check_size(from_size, "from_size")
    h1, w1 = _check_size(to_size, "to_size")
    scale = min(h1 / h0, w1 / w0)
    # round-half-up (not banker's rounding) so the size never depends on parity
    new_h = min(h1, max(1, int(math.floor(h0 * scale + 0.5))))
    new_w = min(w1, max(1, int(math.floor(w0 * scale + 0.5))))
    return scale, (new_h, new_w), ((h1 - new_h) // 2, (w1 - new_w) // 2)


def letterbox_boxes(
    b: BoxesLike, from_size: Sequence[int], to_size: Sequence[int]
) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Move boxes with an aspect-preserving letterbox resize (see `letterbox_params`).

    Boxes are scaled per axis by ``new_w / W_from`` and ``new_h / H_from`` (equal to ``scale`` up
    to the rounding of the resized size, so they follow the pixels exactly), shifted by the
    padding and clipped to ``to_size``.

    Args:
        b: Boxes ``(..., 4)`` in the original image.
        from_size: Original image size ``(H, W)``.
        to_size: Output image size ``(H, W)``.

    Returns:
        ``(boxes, scale, (pad_top, pad_left))``.

    Raises:
        ShapeError: If the last dimension is not 4.
        EmbedcamValueError: If a size is not a pair of positive integers.

    Examples:
        >>> out, scale, pad = letterbox_boxes([0.0, 0.0, 100.0, 50.0], (50, 100), (64, 64))
        >>> out, scale, pad
        (tensor([ 0., 16., 64., 48.]), 0.64, (16, 0))
    """
    h0, w0 = _check_size(from_size, "from_size")
    scale, (new_h, new_w), (pad_top, pad_left) = letterbox_params(from_size, to_size)
    t = as_boxes(b)
    sx, sy = new_w / w0, new_h / h0
    mul = torch.tensor([sx, sy, sx, sy], dtype=t.dtype, device=t.device)
    add = torch.tensor([pad_left, pad_top, pad_left, pad_top], dtype=t.dtype, device=t.device)
    return clip_boxes(t * mul + add, to_size), scale, (pad_top, pad_left)


def boxes_to_masks(
    boxes: Sequence[BoxesLike] | torch.Tensor,
    size: Sequence[int],
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Rasterise each image's boxes to a boolean mask: the union ``B`` of its boxes.

    Pixel ``(r, c)`` of image ``i`` is ``True`` when its centre ``(c + 0.5, r + 0.5)`` lies in at
    least one of the image's boxes (half-open: pixel ``(r, c)`` is inside when ``x0 <= c + 0.5 <
    x1`` and ``y0 <= r + 0.5 < y1``). Work is vectorised over
    images: one pass per box slot (the largest box count), not one per box.

    Variable box counts are given as a list, one ``(K_i, 4)`` tensor per image; ``K_i = 0`` (an
    image without a box of the target class) gives an all-``False`` mask, which the scores report
    as NaN. A ``(B, K, 4)`` tensor means exactly ``K`` boxes per image (no padding rows). A box that
    is valid but covers no pixel centre (thinner than a pixel between two centres) adds nothing.

    Args:
        boxes: A sequence of ``B`` tensors ``(K_i, 4)`` (or ``(4,)`` for one box) in the internal
            ``[x0, y0, x1, y1]`` convention, or a tensor ``(B, K, 4)``.
        size: Mask size ``(H, W)``.
        validate: Check every box with [`validate_boxes`][embedcam.boxes.validate_boxes] against
            ``size`` first (the error names the image and box index). Disable only for boxes you
            have already checked.

    Returns:
        Masks ``(B, H, W)`` bool, on the boxes' device.

    Raises:
        ShapeError: If ``boxes`` is a 2-D tensor (ambiguous) or a box tensor is not ``(K, 4)``.
        EmbedcamValueError: If a box is invalid (NaN, ``x1 <= x0``, ``y1 <= y0``, entirely outside
            the image) or ``size`` is not a pair of positive integers.

    Examples:
        >>> import torch
        >>> m = boxes_to_masks([torch.tensor([[0.0, 0.0, 1.0, 2.0], [2.0, 1.0, 3.0, 2.0]]),
        ...                     torch.zeros(0, 4)], size=(2, 3))
        >>> m.int()
        tensor([[[1, 0, 0],
                 [1, 0, 1]],
        <BLANKLINE>
                [[0, 0, 0],
                 [0, 0, 0]]], dtype=torch.int32)
    """
    h, w = _check_size(size)
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ShapeError(
                f"a boxes tensor must be (B, K, 4), got {tuple(boxes.shape)}; for one box per "
                "image use boxes.unsqueeze(1), for variable counts pass a list of (K_i, 4) tensors"
            )
        per_image: list[BoxesLike] = list(boxes.unbind(0))
    else:
        per_image = list(boxes)
    tensors: list[torch.Tensor] = []
    for i, b in enumerate(per_image):
        t = as_boxes(b, name=f"boxes of image {i}")
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2:
            raise ShapeError(
                f"boxes of image {i} must be (K, 4), got {tuple(t.shape)}; pass one (K_i, 4) "
                "tensor per image"
            )
        if validate:
            validate_boxes(t, size=(h, w), image_index=i)
        tensors.append(t)
    n_img = len(tensors)
    device = tensors[0].device if tensors else torch.device("cpu")
    masks = torch.zeros(n_img, h, w, dtype=torch.bool, device=device)
    if n_img == 0:
        return masks
    counts = [t.shape[0] for t in tensors]
    max_k = max(counts)
    if max_k == 0:
        return masks
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    padded = torch.full((n_img, max_k, 4), float("nan"), dtype=dtype, device=device)
    for i, t in enumerate(tensors):
        padded[i, : t.shape[0]] = t.to(device=device, dtype=dtype)
    count_t = torch.tensor(counts, device=device)
    cx = torch.arange(w, dtype=dtype, device=device) + 0.5
    cy = torch.arange(h, dtype=dtype, device=device) + 0.5
    for k in range(max_k):
        idx = torch.nonzero(count_t > k).squeeze(1)
        bk = padded[idx, k]
        in_x = (bk[:, 0:1] <= cx) & (cx < bk[:, 2:3])  # (n, W)
        in_y = (bk[:, 1:2] <= cy) & (cy < bk[:, 3:4])  # (n, H)
        masks[idx] |= in_y[:, :, None] & in_x[:, None, :]
    return masks
