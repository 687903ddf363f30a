"""Evidence regions from CAM maps, connected components, darkening and colour overlays.

A CAM map ``s`` of shape ``(B, H, W)`` becomes a boolean evidence region ``R`` by one of four
policies ([`evidence_region`][embedcam.masks.evidence_region]):

* ``"positive"``: ``R = {s > 0}``, the region the paper leaves un-darkened after the ReLU
  (Volnova & Suschinskiy 2026, step 4: darken what does not raise the similarity).
* ``"relative"``: ``R = {s >= theta * max s}``, with ``theta = 0.15`` in Grad-CAM
  (Selvaraju et al., *Grad-CAM*, ICCV 2017) and ``0.20`` in CAM (Zhou et al., *Learning Deep
  Features for Discriminative Localization*, CVPR 2016).
* ``"otsu"``: ``R = {s > t}`` with Otsu's threshold ``t`` (Otsu, *A Threshold Selection Method from
  Gray-Level Histograms*, IEEE SMC 1979), computed by scikit-image.
* ``"topk"``: the ``percent`` % highest-valued pixels.

A map with no positive value (``max s <= 0``, e.g. an all-zero CAM of an image with no evidence)
gives an empty region under every policy.

scipy and scikit-image are imported by the functions that use them (labelling, Otsu), so that
importing `embedcam` does not load them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from embedcam import _regions
from embedcam._checks import (  # noqa: F401 (check_maps, check_finite_images: public here)
    all_finite,
    check_finite_images,
    check_maps,
    count_non_finite,
)
from embedcam._regions import check_regions, label_batch
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

__all__ = [
    "RegionPolicy",
    "positive_region",
    "relative_region",
    "otsu_region",
    "topk_region",
    "evidence_region",
    "largest_component",
    "largest_component_box",
    "darken",
    "overlay",
]

RegionPolicy = Literal["positive", "relative", "otsu", "topk"]


def positive_region(maps: torch.Tensor) -> torch.Tensor:
    """The positive-evidence region ``s > 0`` (the paper's un-darkened region).

    Args:
        maps: Maps ``(B, H, W)``, possibly signed.

    Returns:
        Regions ``(B, H, W)`` bool.

    Raises:
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``maps`` contains NaN or infinite values.
    """
    return check_maps(maps) > 0


def relative_region(maps: torch.Tensor, theta: float = 0.15) -> torch.Tensor:
    """The region ``s >= theta * max s`` of each map (Grad-CAM: 0.15, CAM: 0.20).

    Args:
        maps: Maps ``(B, H, W)``.
        theta: Relative threshold in ``(0, 1]``.

    Returns:
        Regions ``(B, H, W)`` bool; empty for a map whose maximum is ``<= 0``.

    Raises:
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``theta`` is outside ``(0, 1]`` or ``maps`` has NaN/inf.

    Examples:
        >>> import torch
        >>> relative_region(torch.tensor([[[0.0, 0.1, 0.2, 1.0]]]), theta=0.15).int()
        tensor([[[0, 0, 1, 1]]], dtype=torch.int32)
    """
    maps = check_maps(maps)
    if not 0 < theta <= 1:
        raise EmbedcamValueError(f"theta must be in (0, 1], got {theta}; Grad-CAM uses 0.15")
    peak = maps.flatten(1).amax(1) if maps.numel() else maps.new_zeros(maps.shape[0])
    peak = peak.view(-1, 1, 1)
    return (maps >= theta * peak) & (peak > 0)


def otsu_region(maps: torch.Tensor, nbins: int = 256) -> torch.Tensor:
    """The region above Otsu's threshold of each map (scikit-image ``threshold_otsu``).

    Runs per image on the CPU. A constant map, or one without positive values, gives an empty
    region (there is nothing to separate).

    Args:
        maps: Maps ``(B, H, W)``.
        nbins: Histogram bins for Otsu's method.

    Returns:
        Regions ``(B, H, W)`` bool (``s > t`` and ``s > 0``), on the maps' device.

    Raises:
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``maps`` contains NaN or infinite values.
    """
    from skimage.filters import threshold_otsu

    maps = check_maps(maps)
    arr = maps.detach().cpu().numpy()
    out = np.zeros(arr.shape, dtype=bool)
    for i, m in enumerate(arr):
        if m.max() <= 0 or m.max() == m.min():
            continue
        # Otsu's threshold scales with the map, so divide by the largest magnitude first: the
        # histogram range max - min of a map near the float maximum would overflow
        m = m.astype(np.float64) / float(np.abs(m).max())
        t = threshold_otsu(m, nbins=nbins)
        out[i] = (m > t) & (m > 0)
    return torch.from_numpy(out).to(maps.device)


def topk_region(maps: torch.Tensor, percent: float = 20.0) -> torch.Tensor:
    """The ``percent`` % highest-valued pixels of each map.

    ``k = ceil(percent / 100 * H * W)``; the region is ``s >= v_k`` where ``v_k`` is the k-th
    largest value, so pixels tied with it are all included (the region may exceed ``k`` pixels on
    plateaus). Only positive pixels qualify.

    Args:
        maps: Maps ``(B, H, W)``.
        percent: Share of pixels to keep, in ``(0, 100]``.

    Returns:
        Regions ``(B, H, W)`` bool.

    Raises:
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``percent`` is outside ``(0, 100]`` or ``maps`` has NaN/inf.

    Examples:
        >>> import torch
        >>> topk_region(torch.tensor([[[0.3, 0.9, 0.1, 0.5]]]), percent=50).int()
        tensor([[[0, 1, 0, 1]]], dtype=torch.int32)
    """
    maps = check_maps(maps)
    if not 0 < percent <= 100:
        raise EmbedcamValueError(f"percent must be in (0, 100], got {percent}")
    b, h, w = maps.shape
    if maps.numel() == 0:
        return torch.zeros(maps.shape, dtype=torch.bool, device=maps.device)
    k = max(1, math.ceil(percent / 100 * h * w - 1e-9))
    kth = maps.flatten(1).topk(k, dim=1).values[:, -1].view(-1, 1, 1)
    return (maps >= kth) & (maps > 0)


def evidence_region(
    maps: torch.Tensor,
    policy: RegionPolicy = "relative",
    *,
    theta: float = 0.15,
    percent: float = 20.0,
) -> torch.Tensor:
    """Turn maps into evidence regions with one of the policies of this module.

    Args:
        maps: Maps ``(B, H, W)``.
        policy: ``"positive"`` (``s > 0``), ``"relative"`` (``s >= theta * max s``), ``"otsu"``
            or ``"topk"`` (the top ``percent`` % of pixels).
        theta: Relative threshold for ``"relative"``.
        percent: Share of pixels for ``"topk"``.

    Returns:
        Regions ``(B, H, W)`` bool.

    Raises:
        ConfigurationError: If ``policy`` is unknown.
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If a threshold is out of range or ``maps`` has NaN/inf.
    """
    if policy == "positive":
        return positive_region(maps)
    if policy == "relative":
        return relative_region(maps, theta)
    if policy == "otsu":
        return otsu_region(maps)
    if policy == "topk":
        return topk_region(maps, percent)
    raise ConfigurationError(
        f"unknown region policy {policy!r}; use 'positive', 'relative', 'otsu' or 'topk'"
    )


def _largest_labels(arr: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Label image ``(B, H, W)`` and the label of each image's largest component (0 if none).

    Ties in size go to the lowest label, i.e. the component met first in raster order (the
    labels of ``ndimage.label`` and ``skimage.measure.label`` agree).
    """
    b = arr.shape[0]
    lab, n = label_batch(arr, connectivity)
    best = np.zeros(b, dtype=np.int64)
    if n == 0:
        return lab, best
    sizes = np.bincount(lab.ravel(), minlength=n + 1).astype(np.int64)
    labels = np.arange(n + 1, dtype=np.int64)
    # one key orders by size, then by lower label
    key = sizes * (n + 1) - labels
    last = lab.reshape(b, -1).max(1).astype(np.int64)
    has = last > 0
    first = np.concatenate([[0], np.maximum.accumulate(last)[:-1]]) + 1
    best_key = np.maximum.reduceat(key, first[has])
    best[has] = (n + 1) - best_key % (n + 1)
    return lab, best


def _largest_chunks(
    regions: torch.Tensor, connectivity: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(lo, hi, mask)`` with the largest-component masks of images ``lo:hi``."""
    arr = regions.detach().cpu().numpy()
    b, h, w = arr.shape
    step = max(1, _regions.LABEL_CHUNK_PIXELS // max(1, h * w))
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        lab, best = _largest_labels(arr[lo:hi], connectivity)
        mask = (lab == best[:, None, None]) & (best > 0)[:, None, None]
        yield lo, hi, mask


def largest_component(regions: torch.Tensor, connectivity: int = 2) -> torch.Tensor:
    """Keep only the largest connected component of each region.

    The batch is labelled with ``scipy.ndimage.label`` in a few calls (same labels as
    scikit-image's ``label``).

    Ties in size go to the component whose first pixel comes first in raster order.

    Args:
        regions: Regions ``(B, H, W)`` bool.
        connectivity: 1 for 4-connectivity, 2 for 8-connectivity (the default, as in the CAM
            paper's bounding-box step).

    Returns:
        Regions ``(B, H, W)`` bool; an empty region stays empty.

    Raises:
        ShapeError: If ``regions`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``connectivity`` is not 1 or 2.
    """
    regions = check_regions(regions)
    if connectivity not in (1, 2):
        raise EmbedcamValueError(f"connectivity must be 1 or 2, got {connectivity}")
    out = np.zeros(tuple(regions.shape), dtype=bool)
    for lo, hi, mask in _largest_chunks(regions, connectivity):
        out[lo:hi] = mask
    return torch.from_numpy(out).to(regions.device)


def largest_component_box(regions: torch.Tensor, connectivity: int = 2) -> torch.Tensor:
    """The box around the largest connected component of each region.

    This is the localisation step of CAM (Zhou et al. 2016) and of the WSOL evaluation
    (Choe et al., *Evaluating Weakly Supervised Object Localization Methods Right*, CVPR 2020).

    Args:
        regions: Regions ``(B, H, W)`` bool.
        connectivity: 1 (4-connectivity) or 2 (8-connectivity).

    Returns:
        Boxes ``(B, 4)`` float32 in the ``[x0, y0, x1, y1]`` convention of `embedcam.boxes`
        (a component spanning columns ``c0..c1`` gives ``x0 = c0``, ``x1 = c1 + 1``); NaN rows for
        empty regions.

    Raises:
        ShapeError: If ``regions`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``connectivity`` is not 1 or 2.

    Examples:
        >>> import torch
        >>> r = torch.zeros(1, 4, 6, dtype=torch.bool)
        >>> r[0, 1:3, 2:5] = True
        >>> r[0, 0, 0] = True
        >>> largest_component_box(r)
        tensor([[2., 1., 5., 3.]])
    """
    regions = check_regions(regions)
    if connectivity not in (1, 2):
        raise EmbedcamValueError(f"connectivity must be 1 or 2, got {connectivity}")
    b, h, w = regions.shape
    out = np.full((b, 4), np.nan, dtype=np.float32)
    for lo, hi, mask in _largest_chunks(regions, connectivity):
        out[lo:hi] = _mask_boxes(mask)
    return torch.from_numpy(out).to(regions.device)


def _mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(B, 4)`` xyxy float32 of ``(B, H, W)`` masks; NaN rows for empty masks."""
    b, h, w = mask.shape
    out = np.full((b, 4), np.nan, dtype=np.float32)
    if h == 0 or w == 0:
        return out
    rows: np.ndarray = np.any(mask, axis=2)
    cols: np.ndarray = np.any(mask, axis=1)
    has: np.ndarray = np.any(rows, axis=1)
    out[has, 0] = cols[has].argmax(1)
    out[has, 1] = rows[has].argmax(1)
    out[has, 2] = w - cols[has, ::-1].argmax(1)
    out[has, 3] = h - rows[has, ::-1].argmax(1)
    return out


def _check_images_maps(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    maps = check_maps(maps)
    check_finite_images(images)
    if images.shape[0] != maps.shape[0] or images.shape[-2:] != maps.shape[-2:]:
        raise ShapeError(
            f"images {tuple(images.shape)} and maps {tuple(maps.shape)} must share B, H and W; "
            "upsample the maps to the image size first (CamResult.maps already is)"
        )
    return maps


def darken(
    images: torch.Tensor,
    maps: torch.Tensor,
    factor: float = 0.25,
    *,
    threshold: float = 0.0,
    soft: bool = False,
) -> torch.Tensor:
    """The paper's step 4: darken the image regions that do not raise the explained score.

    Volnova & Suschinskiy (2026) darken, in each image, the pixels whose Grad-CAM value shows no
    positive evidence for the true class; what stays visible is what the model took as evidence.
    Here a pixel is kept when ``s > threshold * max s`` (``threshold = 0`` is exactly the paper's
    ``s > 0`` after the ReLU) and multiplied by ``factor`` otherwise. With ``soft=True`` every
    pixel is instead scaled by ``factor + (1 - factor) * s / max s`` (negatives clamped to 0), a
    graded version for display.

    Args:
        images: Images ``(B, C, H, W)``, floating and finite (any range; the darkening is
            multiplicative).
        maps: Maps ``(B, H, W)`` at the image resolution.
        factor: Brightness kept in darkened pixels, in ``[0, 1]`` (0 = black).
        threshold: Relative threshold in ``[0, 1)`` below which a pixel is darkened.
        soft: Graded darkening instead of a binary mask.

    Returns:
        Darkened images ``(B, C, H, W)``, same dtype as ``images``; a map without positive evidence
        darkens its whole image.

    Raises:
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``factor`` or ``threshold`` is out of range, ``images`` is not
            floating (an integer image would be truncated by the gain), or ``images`` or ``maps``
            has NaN/inf values (the message counts them).

    Examples:
        >>> import torch
        >>> img = torch.ones(1, 1, 1, 3)
        >>> darken(img, torch.tensor([[[0.0, 0.5, 1.0]]]), factor=0.2)
        tensor([[[[0.2000, 1.0000, 1.0000]]]])
    """
    maps = _check_images_maps(images, maps)
    if not 0 <= factor <= 1:
        raise EmbedcamValueError(f"factor must be in [0, 1], got {factor}")
    if not 0 <= threshold < 1:
        raise EmbedcamValueError(f"threshold must be in [0, 1), got {threshold}")
    pos = maps.clamp(min=0)
    peak = pos.flatten(1).amax(1).view(-1, 1, 1)
    if soft:
        rel = torch.where(peak > 0, pos / peak.clamp(min=torch.finfo(pos.dtype).tiny), 0.0)
        gain = factor + (1 - factor) * rel
    else:
        keep = (pos > threshold * peak) & (peak > 0)
        gain = torch.where(keep, 1.0, factor)
    return images * gain.unsqueeze(1).to(images.dtype)


def _colormap(x: torch.Tensor, cmap: str) -> torch.Tensor:
    """Map values in [0, 1] to RGB with an analytic colour map; returns (..., 3)."""
    if cmap == "jet":
        # piecewise-linear jet: each channel is a clipped tent centred at 0.25/0.5/0.75 in 4x units
        r = (1.5 - (4 * x - 3).abs()).clamp(0, 1)
        g = (1.5 - (4 * x - 2).abs()).clamp(0, 1)
        b = (1.5 - (4 * x - 1).abs()).clamp(0, 1)
    elif cmap == "hot":
        r = (3 * x).clamp(0, 1)
        g = (3 * x - 1).clamp(0, 1)
        b = (3 * x - 2).clamp(0, 1)
    elif cmap == "gray":
        r = g = b = x
    else:
        raise ConfigurationError(f"unknown colour map {cmap!r}; use 'jet', 'hot' or 'gray'")
    return torch.stack([r, g, b], dim=-1)


def overlay(
    images: torch.Tensor, maps: torch.Tensor, alpha: float = 0.5, cmap: str = "jet"
) -> torch.Tensor:
    """Blend a colour-mapped heat map over images, for display.

    Each map is clamped at 0 and divided by its maximum (an all-zero map stays zero), coloured
    with ``cmap`` and blended: ``(1 - alpha) * image + alpha * colour``.

    Args:
        images: RGB images ``(B, 3, H, W)`` in ``[0, 1]`` (a single channel is repeated).
        maps: Maps ``(B, H, W)`` at the image resolution.
        alpha: Weight of the heat map in ``[0, 1]``.
        cmap: ``"jet"``, ``"hot"`` or ``"gray"``.

    Returns:
        Images ``(B, 3, H, W)`` in ``[0, 1]``.

    Raises:
        ShapeError: If the shapes do not match or images have neither 1 nor 3 channels.
        EmbedcamValueError: If ``alpha`` is outside ``[0, 1]``, or ``images`` is not floating or
            has NaN/inf values.
        ConfigurationError: If ``cmap`` is unknown.
    """
    maps = _check_images_maps(images, maps)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ShapeError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if not 0 <= alpha <= 1:
        raise EmbedcamValueError(f"alpha must be in [0, 1], got {alpha}")
    pos = maps.clamp(min=0)
    peak = pos.flatten(1).amax(1).view(-1, 1, 1)
    rel = torch.where(peak > 0, pos / peak.clamp(min=torch.finfo(pos.dtype).tiny), 0.0)
    colour = _colormap(rel, cmap).permute(0, 3, 1, 2).to(images.dtype)
    return ((1 - alpha) * images + alpha * colour).clamp(0, 1)
