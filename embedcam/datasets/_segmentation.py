"""COCO ``segmentation`` values: validation, RLE decoding and encoding, polygon rasterisation.

A COCO annotation's ``segmentation`` is one of (Lin et al., *Microsoft COCO*, ECCV 2014):

* **polygons**: a list of lists ``[x1, y1, x2, y2, ...]`` (at least 3 points each) in pixel
  coordinates, where pixel ``(x, y)`` covers ``[x, x + 1) x [y, y + 1)``; the object is the
  union of the polygons. A pixel belongs to the mask when its centre ``(x + 0.5, y + 0.5)`` lies
  inside a polygon (the rule `mask_to_polygons` is built for, so the round trip is exact for
  masks without holes).
* **uncompressed RLE**: ``{"counts": [n0, n1, ...], "size": [h, w]}``, alternating run lengths
  of 0s and 1s (starting with 0s) over the mask in column-major (Fortran) order.
* **compressed RLE**: the same with ``counts`` a string: each run length (from the fourth on,
  as the difference to the run two before) written in 5-bit groups, least significant first,
  each group as the character ``48 + bits`` with bit 5 set while more groups follow and bit 4 of
  the last group the sign (the encoding of the COCO API, ``rleToString`` / ``rleFrString``).

Parsing is strict: anything else raises [`DataError`][embedcam.errors.DataError] with the caller's
``where`` text (annotation file and image) in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embedcam.errors import DataError

__all__ = [
    "check_segmentation",
    "rasterize_segmentations",
    "decode_rle",
    "rle_counts_from_string",
    "rle_counts_to_string",
    "encode_rle",
    "mask_to_polygons",
]


def rle_counts_from_string(s: str, where: str = "RLE") -> np.ndarray:
    """Decode a compressed COCO RLE ``counts`` string into run lengths (int64).

    Args:
        s: The compressed string.
        where: Text naming the source, used in error messages.

    Returns:
        The run lengths.

    Raises:
        DataError: If a character is outside the alphabet (``0`` to ``o``), the string ends in
            the middle of a number, or a decoded run is negative.

    Examples:
        >>> rle_counts_from_string("0232").tolist()
        [0, 2, 3, 4]
    """
    if not isinstance(s, str):
        raise DataError(f"{where}: compressed RLE counts must be a string, got {type(s).__name__}")
    if not s.isascii():
        bad = next(c for c in s if not c.isascii())
        raise DataError(
            f"{where}: compressed RLE counts hold the character {bad!r}, not in '0'..'o'"
        )
    raw = np.frombuffer(s.encode("ascii", errors="replace"), dtype=np.uint8).astype(np.int64) - 48
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    if bool(((raw < 0) | (raw > 63)).any()):
        bad = s[int(np.argmax((raw < 0) | (raw > 63)))]
        raise DataError(
            f"{where}: compressed RLE counts hold the character {bad!r}, not in '0'..'o'"
        )
    more = (raw & 0x20) != 0
    if bool(more[-1]):
        raise DataError(f"{where}: compressed RLE counts end in the middle of a number")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(raw.size) - starts[group]
    if int(k.max()) > 11:
        raise DataError(f"{where}: compressed RLE counts hold a number of more than 12 groups")
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, group, (raw & 0x1F) << (5 * k))
    nbits = 5 * (ends - starts + 1)
    negative = (raw[ends] & 0x10) != 0
    values[negative] -= np.left_shift(np.int64(1), nbits[negative])
    counts = values.copy()
    # from the fourth on, each run is stored as the difference to the run two before
    if counts.size > 3:
        odd = counts[1::2].copy()
        odd[1:] = np.cumsum(odd[1:]) + odd[0]
        counts[1::2] = odd
        even = counts[2::2].copy()
        counts[2::2] = np.cumsum(even)
    if bool((counts < 0).any()):
        raise DataError(f"{where}: compressed RLE counts decode to a negative run length")
    return counts


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Encode run lengths as a compressed COCO RLE ``counts`` string.

    Args:
        counts: Non-negative run lengths, 0s first.

    Returns:
        The compressed string (what the COCO API writes).

    Examples:
        >>> rle_counts_to_string([0, 2, 3, 4]), rle_counts_to_string([40])
        ('0232', 'X1')
    """
    out: list[str] = []
    cnts = [int(c) for c in counts]
    for i, c in enumerate(cnts):
        x = c - cnts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def decode_rle(counts: Sequence[int] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Expand run lengths (0s first, column-major) into a bool mask of ``size`` ``(H, W)``.

    Raises:
        DataError: If the runs do not add up to ``H * W``.

    Examples:
        >>> decode_rle([1, 2, 3], (2, 3)).astype(int).tolist()
        [[0, 1, 0], [1, 0, 0]]
    """
    h, w = size
    c = np.asarray(counts, dtype=np.int64)
    if int(c.sum()) != h * w:
        raise DataError(f"RLE runs add up to {int(c.sum())} pixels, the size {[h, w]} has {h * w}")
    values = np.arange(c.size) % 2 == 1
    flat = np.repeat(values, c)
    return flat.reshape(w, h).T.copy()


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE of a bool mask ``(H, W)``: ``{"counts": [...], "size": [H, W]}``."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"counts": [int(r) for r in runs], "size": [int(h), int(w)]}


def _polygons(seg: list[Any], where: str) -> list[np.ndarray]:
    out = []
    for j, poly in enumerate(seg):
        if not isinstance(poly, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly
        ):
            raise DataError(f"{where}: polygon {j} must be a list of numbers [x1, y1, x2, y2, ...]")
        if len(poly) < 6 or len(poly) % 2:
            raise DataError(
                f"{where}: polygon {j} has {len(poly)} coordinates; a polygon needs an even "
                "number, at least 6 (3 points)"
            )
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if not bool(np.isfinite(pts).all()):
            raise DataError(f"{where}: polygon {j} has a NaN or infinite coordinate")
        out.append(pts)
    return out


def _rle_counts(seg: dict[str, Any], size: tuple[int, int], where: str) -> np.ndarray:
    if set(seg) - {"counts", "size"} or "counts" not in seg or "size" not in seg:
        raise DataError(f"{where}: an RLE segmentation needs exactly 'counts' and 'size'")
    sz = seg["size"]
    if (
        not isinstance(sz, (list, tuple))
        or len(sz) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in sz)
    ):
        raise DataError(f"{where}: RLE 'size' must be [height, width], got {sz!r}")
    if tuple(sz) != tuple(size):
        raise DataError(f"{where}: RLE 'size' {list(sz)} differs from the image size {list(size)}")
    counts = seg["counts"]
    h, w = size
    if isinstance(counts, str):
        c = rle_counts_from_string(counts, where)
    elif isinstance(counts, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts
    ):
        # checked before the int64 conversion, which would overflow on a huge run
        if sum(counts) > h * w:
            raise DataError(
                f"{where}: RLE runs add up to more than the {h} x {w} = {h * w} pixels of the image"
            )
        c = np.asarray(counts, dtype=np.int64)
    else:
        raise DataError(
            f"{where}: RLE 'counts' must be a list of non-negative integers or a compressed string"
        )
    if int(c.sum()) != h * w:
        raise DataError(
            f"{where}: RLE runs add up to {int(c.sum())} pixels, the image has {h} x {w} = {h * w}"
        )
    return c


def check_segmentation(seg: Any, size: tuple[int, int], where: str) -> bool:
    """Validate one annotation's ``segmentation``; return whether it holds any shape.

    Args:
        seg: The JSON value.
        size: The image size ``(H, W)`` (an RLE must have this size).
        where: Text naming the annotation file and image, used in error messages.

    Returns:
        ``False`` for an absent or empty segmentation (``None``, ``[]``), ``True`` otherwise.

    Raises:
        DataError: If the value is neither polygons nor an RLE, or is malformed.
    """
    if seg is None or (isinstance(seg, (list, tuple)) and len(seg) == 0):
        return False
    if isinstance(seg, dict):
        _rle_counts(seg, size, where)
        return True
    if isinstance(seg, (list, tuple)):
        _polygons(list(seg), where)
        return True
    raise DataError(
        f"{where}: segmentation must be polygons (a list of [x1, y1, ...] lists) or an RLE "
        f"object, got {type(seg).__name__}"
    )


def _fill_polygon(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from skimage.draw import polygon

    h, w = size
    out = np.zeros((h, w), dtype=bool)
    # pixel (x, y) is in the mask when its centre (x + 0.5, y + 0.5) is inside the polygon
    rr, cc = polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape=(h, w))
    out[rr, cc] = True
    return out


def rasterize_segmentations(segs: Sequence[Any], size: tuple[int, int], where: str) -> np.ndarray:
    """The union of COCO segmentations as a bool mask ``(H, W)``.

    Args:
        segs: One ``segmentation`` value per annotation (polygons or RLE, see the module).
        size: The image size ``(H, W)``.
        where: Text naming the source, used in error messages.

    Returns:
        The bool mask.

    Raises:
        DataError: If a segmentation is malformed.

    Examples:
        >>> m = rasterize_segmentations([[[1, 1, 4, 1, 4, 3, 1, 3]]], (4, 5), "example")
        >>> m.astype(int).tolist()
        [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 0, 0]]
    """
    out = np.zeros(size, dtype=bool)
    for seg in segs:
        if not check_segmentation(seg, size, where):
            continue
        if isinstance(seg, dict):
            out |= decode_rle(_rle_counts(seg, size, where), size)
        else:
            for pts in _polygons(list(seg), where):
                out |= _fill_polygon(pts, size)
    return out


def mask_to_polygons(mask: np.ndarray, tolerance: float = 0.0) -> list[list[float]]:
    """COCO polygons of a bool mask: the outer outline of each connected component.

    Outlines run through the midpoints between object and background pixel centres (marching
    squares at level 0.5), so rasterising them with the pixel-centre rule of
    `rasterize_segmentations` gives the mask back exactly when it has no holes (COCO
    polygons cannot express holes; they are filled).

    Args:
        mask: Bool ``(H, W)``.
        tolerance: Douglas-Peucker simplification in pixels (0: only collinear points dropped).

    Returns:
        One ``[x1, y1, x2, y2, ...]`` list per component (components too small for 3 points are
        left out).
    """
    from scipy import ndimage
    from skimage.measure import approximate_polygon, find_contours

    m = np.asarray(mask, dtype=bool)
    # objects 4-connected, background 8-connected: the convention of find_contours' default
    labels, _ = ndimage.label(m)
    polys: list[list[float]] = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = ndimage.binary_fill_holes(labels[sl] == k, structure=np.ones((3, 3), dtype=bool))
        padded = np.pad(comp, 1).astype(np.float64)
        contours = find_contours(padded, 0.5)
        if not contours:
            continue
        c = max(contours, key=len)
        if tolerance > 0:
            c = approximate_polygon(c, tolerance=tolerance)
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        c = _drop_collinear(c)
        if len(c) < 3:
            continue
        y = c[:, 0] - 1 + sl[0].start + 0.5
        x = c[:, 1] - 1 + sl[1].start + 0.5
        polys.append([round(float(v), 3) for xy in zip(x, y) for v in xy])
    return polys


def _drop_collinear(c: np.ndarray) -> np.ndarray:
    if len(c) < 4:
        return c
    prev, nxt = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
    cross = (c[:, 0] - prev[:, 0]) * (nxt[:, 1] - c[:, 1]) - (c[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - c[:, 0]
    )
    keep = ~np.isclose(cross, 0.0)
    return c[keep] if keep.sum() >= 3 else c
