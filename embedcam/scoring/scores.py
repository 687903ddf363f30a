"""The public per-map scores: one function per score, ``(B, H, W)`` maps and regions -> ``(B,)``.

See [`embedcam.scoring`][embedcam.scoring] for the conventions every score shares (negative map
values, degenerate cases, hostile values). Each function checks its inputs once and calls one
kernel of the private ``_kernels`` module, the same kernel
[`score_maps`][embedcam.scoring.score_maps] uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from embedcam._regions import check_regions
from embedcam.boxes import as_boxes, validate_boxes
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from embedcam.masks import RegionPolicy, check_maps
from embedcam.scoring import _kernels as k

__all__ = [
    "Negatives",
    "TORCHRAY_TOLERANCE",
    "area_fraction",
    "energy_in_box",
    "energy_lift",
    "pointing_game",
    "rank_accuracy",
    "pixel_auc",
    "region_iou",
    "region_precision",
    "region_recall",
    "wsol_box_iou",
    "positive_evidence_share",
    "no_evidence",
    "box_map_ceiling",
]

Negatives = Literal["clamp", "abs"]
"""How negative map values are read: ``"clamp"`` uses ``max(s, 0)``, ``"abs"`` uses ``|s|``."""

TORCHRAY_TOLERANCE: float = 15.0
"""The pointing tolerance of TorchRay (Fong et al. 2019), in pixels.

The tolerance of ``pointing_game_tolerant`` in [`MapScores`][embedcam.scoring.MapScores] (the
default of [`score_maps`][embedcam.scoring.score_maps]'s ``tolerance``). Every single pointing
game ([`pointing_game`][embedcam.scoring.pointing_game],
[`judge_features`][embedcam.scoring.judge_features], [`Judge`][embedcam.pipeline.Judge]) is strict
by default (``tolerance=0``).
"""


def _region_counts(
    maps: torch.Tensor,
    regions: torch.Tensor,
    policy: RegionPolicy,
    theta: float,
    percent: float,
    negatives: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    maps, regions = k.check_pair(maps, regions)
    evidence = k.evidence(maps, policy, theta, percent, negatives)
    return k.region_counts(evidence.flatten(1), regions.flatten(1))


def area_fraction(maps: torch.Tensor | None, regions: torch.Tensor) -> torch.Tensor:
    """Area fraction ``A = |B| / (H W)`` of each region, the chance level of most scores.

    Args:
        maps: Maps ``(B, H, W)``, only checked for a matching shape; may be ``None``.
        regions: Object regions ``(B, H, W)`` bool.

    Returns:
        ``(B,)`` float32 in ``[0, 1]`` (0 for an empty region).

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool.

    Examples:
        >>> import torch
        >>> r = torch.zeros(1, 2, 4, dtype=torch.bool)
        >>> r[0, :, 1] = True
        >>> area_fraction(None, r)
        tensor([0.2500])
    """
    if maps is not None:
        k.check_pair(maps, regions)
    return k.area(check_regions(regions).flatten(1))


def no_evidence(maps: torch.Tensor, negatives: Negatives = "clamp") -> torch.Tensor:
    """Which maps carry no evidence: the transformed map sums to 0 (e.g. all-zero CAMs).

    Args:
        maps: Maps ``(B, H, W)``.
        negatives: ``"clamp"`` or ``"abs"`` (see the module docstring).

    Returns:
        ``(B,)`` bool.

    Raises:
        ShapeError: If ``maps`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``maps`` contains NaN or infinite values.
        ConfigurationError: If ``negatives`` is unknown.
    """
    return k.no_evidence(k.transform(check_maps(maps), negatives).flatten(1))


def energy_in_box(
    maps: torch.Tensor, regions: torch.Tensor, *, negatives: Negatives = "clamp"
) -> torch.Tensor:
    """Energy in box ``E = sum_B s / sum s``: the share of the map's mass on the object.

    The energy-based pointing game of Score-CAM (Wang et al., *Score-CAM*, CVPR-W 2020) and
    Quantus' Relevance Mass Accuracy (Arras et al., *CLEVR-XAI*, Information Fusion 2022). Chance
    level is ``A``.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        negatives: ``"clamp"`` (use ``max(s, 0)``) or ``"abs"`` (use ``|s|``).

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN for an empty region or a map without evidence.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``maps`` has NaN/inf values.
        ConfigurationError: If ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> regions = torch.tensor([[[False, True], [False, False]]])
        >>> energy_in_box(maps, regions)
        tensor([0.3750])
    """
    s, r = k.prepare(maps, regions, negatives)
    return k.energy(s, r)


def energy_lift(
    maps: torch.Tensor, regions: torch.Tensor, *, negatives: Negatives = "clamp"
) -> torch.Tensor:
    """Energy lift ``E / A``: energy in box relative to its chance level (1 = chance).

    The area-weighted relevance mass of Kohlbrenner et al. (*Towards Best Practice in Explaining
    Neural Network Decisions with LRP*, IJCNN 2020), their weighted ``mu``.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32 in ``[0, 1 / A]``; NaN for an empty region or no evidence.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``maps`` has NaN/inf values.
        ConfigurationError: If ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> regions = torch.tensor([[[False, True], [False, False]]])
        >>> energy_lift(maps, regions)
        tensor([1.5000])
    """
    e = energy_in_box(maps, regions, negatives=negatives)
    return e / area_fraction(maps, regions)


def pointing_game(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    tolerance: float = 0.0,
    negatives: Negatives = "clamp",
) -> torch.Tensor:
    """Pointing game: does the map's maximum fall on the object?

    Zhang et al. (*Top-down Neural Attention by Excitation Backprop*, ECCV 2016). The maximum is
    the first maximal pixel in raster order (``torch.argmax``). With ``tolerance = 0`` (strict) it
    is a hit when that pixel is in the region; with ``tolerance > 0`` (the TorchRay variant, Fong
    et al. 2019, which uses 15 px) it is a hit when some region pixel lies at Euclidean distance
    (between pixel centres) strictly less than ``tolerance``.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        tolerance: Distance tolerance in pixels, ``>= 0``; 0 (the default) is the strict game.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32: 1.0 hit, 0.0 miss (also for a map without evidence, which is never a
        hit), NaN for an empty region.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``tolerance < 0``, ``regions`` is not bool or ``maps`` has NaN/inf.
        ConfigurationError: If ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.zeros(1, 2, 3)
        >>> maps[0, 0, 2] = 1.0
        >>> regions = torch.zeros(1, 2, 3, dtype=torch.bool)
        >>> regions[0, 1, 2] = True
        >>> pointing_game(maps, regions), pointing_game(maps, regions, tolerance=1.5)
        (tensor([0.]), tensor([1.]))
    """
    k.check_tolerance(tolerance)
    maps, regions = k.check_pair(maps, regions)
    return k.pointing(k.transform(maps, negatives), regions, tolerance)


def rank_accuracy(
    maps: torch.Tensor, regions: torch.Tensor, *, negatives: Negatives = "clamp"
) -> torch.Tensor:
    """Rank accuracy: the share of the ``|B|`` highest-valued pixels that lie in the region.

    Arras et al. (*CLEVR-XAI*, 2022), Quantus' Relevance Rank Accuracy. Ties at the ``|B|``-th
    value are resolved by their expectation under random tie-breaking: of the tied pixels, the
    number needed to fill the top ``|B|`` is credited with the tied pixels' share in the region.
    A uniform map therefore scores exactly ``A`` (the chance level), and the score is
    deterministic.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN for an empty region or a map without evidence.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``maps`` has NaN/inf values.
        ConfigurationError: If ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[0.9, 0.1, 0.8, 0.2]]])
        >>> regions = torch.tensor([[[True, True, False, False]]])
        >>> rank_accuracy(maps, regions)
        tensor([0.5000])
    """
    s, r = k.prepare(maps, regions, negatives)
    return k.rank(s, r)


def pixel_auc(
    maps: torch.Tensor, regions: torch.Tensor, *, negatives: Negatives = "clamp"
) -> torch.Tensor:
    """Pixel ROC-AUC of the map as a detector of the region.

    The area under the ROC curve of ``s`` as a score for "pixel in B", computed exactly as the
    Mann-Whitney statistic with mid-ranks for ties (Hanley & McNeil, *The meaning and use of the
    area under a ROC curve*, Radiology 1982), which equals the trapezoidal ROC area. Chance is 0.5.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN for an empty region, a region covering the whole
        image, or a map without evidence.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``maps`` has NaN/inf values.
        ConfigurationError: If ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[0.9, 0.1, 0.8, 0.2]]])
        >>> regions = torch.tensor([[[True, True, False, False]]])
        >>> pixel_auc(maps, regions)
        tensor([0.5000])
    """
    s, r = k.prepare(maps, regions, negatives)
    return k.auc(s, r)


def region_iou(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    theta: float = 0.15,
    policy: RegionPolicy = "relative",
    percent: float = 20.0,
    negatives: Negatives = "clamp",
) -> torch.Tensor:
    """IoU of the evidence region ``R`` (default ``s >= 0.15 max s``, Grad-CAM) with the region.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        theta: Relative threshold (0.15 in Grad-CAM, Selvaraju et al. 2017; 0.20 in CAM, Zhou et
            al. 2016).
        policy: How ``R`` is made; see [`evidence_region`][embedcam.masks.evidence_region].
        percent: Share of pixels for the ``"topk"`` policy.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32 ``|R and B| / |R or B|``; NaN for an empty region ``B``, 0 when ``R`` is
        empty (no evidence).

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If a threshold is out of range, ``regions`` is not bool or ``maps``
            has NaN/inf values.
        ConfigurationError: If ``policy`` or ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 0.5, 0.1, 0.0]]])
        >>> regions = torch.tensor([[[False, True, True, False]]])
        >>> region_iou(maps, regions)
        tensor([0.3333])
    """
    inter, n_r, n_b = _region_counts(maps, regions, policy, theta, percent, negatives)
    return k.iou(inter, n_r, n_b)


def region_precision(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    theta: float = 0.15,
    policy: RegionPolicy = "relative",
    percent: float = 20.0,
    negatives: Negatives = "clamp",
) -> torch.Tensor:
    """Precision ``|R and B| / |R|`` of the evidence region.

    ``R`` is the evidence region of [`region_iou`][embedcam.scoring.region_iou].

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        theta: Relative threshold.
        policy: How ``R`` is made; see [`evidence_region`][embedcam.masks.evidence_region].
        percent: Share of pixels for the ``"topk"`` policy.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32; NaN for an empty region ``B`` or an empty evidence region ``R``.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If a threshold is out of range, ``regions`` is not bool or ``maps``
            has NaN/inf values.
        ConfigurationError: If ``policy`` or ``negatives`` is unknown.
    """
    inter, n_r, n_b = _region_counts(maps, regions, policy, theta, percent, negatives)
    return k.precision(inter, n_r, n_b)


def region_recall(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    theta: float = 0.15,
    policy: RegionPolicy = "relative",
    percent: float = 20.0,
    negatives: Negatives = "clamp",
) -> torch.Tensor:
    """Recall ``|R and B| / |B|`` of the evidence region.

    ``R`` is the evidence region of [`region_iou`][embedcam.scoring.region_iou].

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        theta: Relative threshold.
        policy: How ``R`` is made; see [`evidence_region`][embedcam.masks.evidence_region].
        percent: Share of pixels for the ``"topk"`` policy.
        negatives: ``"clamp"`` or ``"abs"``.

    Returns:
        ``(B,)`` float32; NaN for an empty region ``B``, 0 when ``R`` is empty.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If a threshold is out of range, ``regions`` is not bool or ``maps``
            has NaN/inf values.
        ConfigurationError: If ``policy`` or ``negatives`` is unknown.
    """
    inter, n_r, n_b = _region_counts(maps, regions, policy, theta, percent, negatives)
    return k.recall(inter, n_r, n_b)


def wsol_box_iou(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    theta: float = 0.15,
    policy: RegionPolicy = "relative",
    percent: float = 20.0,
    negatives: Negatives = "clamp",
    gt_boxes: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """WSOL box IoU: the box around the largest component of ``R`` against the object's boxes.

    The localisation protocol of CAM (Zhou et al. 2016) as fixed by Choe et al. (*Evaluating Weakly
    Supervised Object Localization Methods Right*, CVPR 2020): threshold the map
    ([`region_iou`][embedcam.scoring.region_iou]'s ``R``), take the bounding box of its largest
    8-connected component, and report the best IoU with a ground-truth box (correct localisation
    when ``>= 0.5``). Without ``gt_boxes``, the ground-truth boxes are the bounding boxes of the
    4-connected components of ``regions`` (the original boxes when they do not touch each other).
    IoU is computed on continuous box areas.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        theta: Relative threshold for ``R``.
        policy: How ``R`` is made; see [`evidence_region`][embedcam.masks.evidence_region].
        percent: Share of pixels for the ``"topk"`` policy.
        negatives: ``"clamp"`` or ``"abs"``.
        gt_boxes: Optional list of ``B`` tensors ``(K_i, 4)`` xyxy: the ground-truth boxes to
            compare against instead of the boxes recovered from ``regions``.

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN for an empty region (or no ground-truth box), 0 when
        ``R`` is empty.

    Raises:
        ShapeError: If the shapes differ, or ``gt_boxes`` does not have ``B`` entries of ``(K, 4)``.
        EmbedcamValueError: If a threshold is out of range, ``regions`` is not bool, ``maps``
            has NaN/inf values, or a ground-truth box is invalid (NaN/inf, ``x1 <= x0``).
        ConfigurationError: If ``policy`` or ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.zeros(1, 4, 4)
        >>> maps[0, 0:2, 0:2] = 1.0
        >>> regions = torch.zeros(1, 4, 4, dtype=torch.bool)
        >>> regions[0, 0:2, 0:4] = True
        >>> wsol_box_iou(maps, regions)
        tensor([0.5000])
    """
    maps, regions = k.check_pair(maps, regions)
    b = maps.shape[0]
    if gt_boxes is not None and len(gt_boxes) != b:
        raise ShapeError(
            f"gt_boxes must have one (K, 4) tensor per image ({b}), got {len(gt_boxes)}"
        )
    if gt_boxes is not None:
        for i, gt in enumerate(gt_boxes):
            t = as_boxes(gt, name=f"gt_boxes[{i}]")
            try:
                validate_boxes(t)
            except EmbedcamValueError as err:
                raise EmbedcamValueError(f"gt_boxes[{i}]: {err}") from None
    return k.wsol(k.evidence(maps, policy, theta, percent, negatives), regions, gt_boxes)


def positive_evidence_share(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The paper-faithful score: share of the positive-evidence region ``s > 0`` on the object.

    Volnova & Suschinskiy (2026) darken the pixels without positive Grad-CAM evidence and judge by
    eye whether the un-darkened area matches the object. This is ``|{s > 0} and B| / |{s > 0}|``,
    computed on the map as given (negatives are never evidence here).

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.

    Returns:
        ``(B,)`` float32 in ``[0, 1]``; NaN for an empty region or a map with no positive pixel.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``maps`` has NaN/inf values.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[0.0, 0.2, 0.7, 0.0]]])
        >>> regions = torch.tensor([[[False, False, True, True]]])
        >>> positive_evidence_share(maps, regions)
        tensor([0.5000])
    """
    maps, regions = k.check_pair(maps, regions)
    return k.positive_share(maps, regions)


def box_map_on_grid(regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The region drawn on a CAM grid and upsampled like a CAM (validated regions and grid).

    Each grid cell holds the share of its pixels in the region (``adaptive_avg_pool2d``); the
    grid is upsampled bilinearly (``align_corners=False``) to the regions' size.
    """
    h_img, w_img = regions.shape[-2:]
    cov = F.adaptive_avg_pool2d(regions.to(torch.float32)[:, None], grid)
    return F.interpolate(cov, size=(h_img, w_img), mode="bilinear", align_corners=False)[:, 0]


def box_map_ceiling(
    regions: torch.Tensor,
    grid: tuple[int, int],
    *,
    kind: Literal["coverage", "best_cell"] = "coverage",
) -> torch.Tensor:
    """The energy in box a box-shaped map reaches when it lives on a coarse CAM grid.

    A CAM of resolution ``(h, w)`` is upsampled to the image size ``(H, W)`` with
    ``F.interpolate(mode="bilinear", align_corners=False)``, which spreads mass past the object's
    edges, so even a perfect map cannot reach ``E = 1``. Report this ceiling beside energy in box
    (measured on the synthetic shelf: about 0.66 at 4 x 4, 0.82 at 8 x 8 for typical boxes).

    * ``kind="coverage"`` (the default): the box-shaped map on the grid is the coverage of each grid
      cell by the region, ``c = adaptive_avg_pool2d(regions, (h, w))`` (cell ``(i, j)`` holds the
      fraction of its pixels that are in ``B``; cells are equal blocks when ``h`` divides ``H`` and
      ``w`` divides ``W``); it is upsampled bilinearly to ``(H, W)`` and scored with
      [`energy_in_box`][embedcam.scoring.energy_in_box] against ``regions``.
    * ``kind="best_cell"``: the largest energy in box any non-negative grid map can reach. Energy in
      box is a ratio of two linear functions of the grid values, so its maximum is attained by a
      map with a single non-zero cell; this returns the best such cell's score (>= coverage).

    Args:
        regions: Object regions ``(B, H, W)`` bool.
        grid: The CAM resolution ``(h, w)``, with ``1 <= h <= H`` and ``1 <= w <= W``.
        kind: ``"coverage"`` or ``"best_cell"``.

    Returns:
        ``(B,)`` float32; NaN for an empty region.

    Raises:
        ShapeError: If ``regions`` is not ``(B, H, W)``.
        EmbedcamValueError: If ``regions`` is not bool or ``grid`` is not a valid ``(h, w)``.
        ConfigurationError: If ``kind`` is unknown.

    Examples:
        >>> import torch
        >>> regions = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> regions[0, :4, :4] = True
        >>> box_map_ceiling(regions, grid=(2, 2))  # (3.5 * 3.5) / (4 * 4)
        tensor([0.7656])
    """
    regions = check_regions(regions)
    b, h_img, w_img = regions.shape
    try:
        gh, gw = (int(v) for v in grid)
    except (TypeError, ValueError):
        gh = gw = 0
    if not (1 <= gh <= h_img and 1 <= gw <= w_img):
        raise EmbedcamValueError(
            f"grid must be (h, w) with 1 <= h <= {h_img} and 1 <= w <= {w_img}, got {grid!r}"
        )
    x = regions.to(torch.float32)
    if kind == "coverage":
        return energy_in_box(box_map_on_grid(regions, (gh, gw)), regions)
    if kind == "best_cell":
        eye = torch.eye(gh * gw, dtype=torch.float32, device=regions.device).view(-1, 1, gh, gw)
        kernels = F.interpolate(eye, size=(h_img, w_img), mode="bilinear", align_corners=False)
        kernels = kernels.flatten(1)
        inside = x.flatten(1) @ kernels.T
        best = (inside / kernels.sum(1)).amax(1)
        best[regions.flatten(1).sum(1) == 0] = float("nan")
        return best
    raise ConfigurationError(f"kind must be 'coverage' or 'best_cell', got {kind!r}")
