"""The all-scores record: [`score_maps`][embedcam.scoring.score_maps] and its result.

The result is a [`MapScores`][embedcam.scoring.MapScores] of ``(B,)`` tensors.

Built on the same private kernels as the single scores of `embedcam.scoring.scores`, so a field
of the record and the matching function give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from embedcam.masks import RegionPolicy, evidence_region
from embedcam.scoring import _kernels as k
from embedcam.scoring.scores import TORCHRAY_TOLERANCE, Negatives

__all__ = ["MapScores", "score_maps"]


@dataclass(frozen=True)
class MapScores:
    """Every score of a batch, one ``(B,)`` tensor per field.

    Made by [`score_maps`][embedcam.scoring.score_maps].

    Attributes:
        energy_in_box: ``sum_B s / sum s``.
        energy_lift: ``E / A``.
        area_fraction: ``A = |B| / N`` (chance level).
        pointing_game: Strict pointing hit (1.0 / 0.0).
        pointing_game_tolerant: Pointing hit within the tolerance (TorchRay style).
        rank_accuracy: Share of the top ``|B|`` pixels in ``B``.
        pixel_auc: Pixel ROC-AUC (NaN when not computed).
        region_iou: IoU of the thresholded region with ``B``.
        region_precision: ``|R and B| / |R|``.
        region_recall: ``|R and B| / |B|``.
        wsol_box_iou: Best IoU of the largest component's box with a ground-truth box.
        positive_share: Share of the ``s > 0`` region on the object (the paper-faithful score).
        no_evidence: ``(B,)`` bool, maps without evidence (all zero after the transform).
    """

    energy_in_box: torch.Tensor
    energy_lift: torch.Tensor
    area_fraction: torch.Tensor
    pointing_game: torch.Tensor
    pointing_game_tolerant: torch.Tensor
    rank_accuracy: torch.Tensor
    pixel_auc: torch.Tensor
    region_iou: torch.Tensor
    region_precision: torch.Tensor
    region_recall: torch.Tensor
    wsol_box_iou: torch.Tensor
    positive_share: torch.Tensor
    no_evidence: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Return the fields as a ``{name: (B,) tensor}`` dict, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def nanmean(self) -> dict[str, float]:
        """Mean of each field over the batch, ignoring NaN (``no_evidence`` gives its rate)."""
        return {n: float(torch.nanmean(v.to(torch.float64))) for n, v in self.as_dict().items()}


def score_maps(
    maps: torch.Tensor,
    regions: torch.Tensor,
    *,
    theta: float = 0.15,
    policy: RegionPolicy = "relative",
    percent: float = 20.0,
    tolerance: float = TORCHRAY_TOLERANCE,
    negatives: Negatives = "clamp",
    auc: bool = True,
) -> MapScores:
    """Compute every score of [`embedcam.scoring`][embedcam.scoring] for a batch at once.

    Each field equals the single score's function called with the same settings, bit for bit
    (both run the same kernels); the shared pieces (the transformed map, the evidence region, the
    region's pixel count) are computed once.

    Args:
        maps: Maps ``(B, H, W)``.
        regions: Object regions ``(B, H, W)`` bool.
        theta: Relative threshold of the evidence region (region IoU/precision/recall, WSOL).
        policy: Evidence-region policy; see [`evidence_region`][embedcam.masks.evidence_region].
        percent: Share of pixels for the ``"topk"`` policy.
        tolerance: Pixel tolerance of ``pointing_game_tolerant`` only, default
            [`TORCHRAY_TOLERANCE`][embedcam.scoring.TORCHRAY_TOLERANCE] (15 px, TorchRay);
            ``pointing_game`` is always the strict game (``tolerance=0``).
        negatives: ``"clamp"`` or ``"abs"``.
        auc: Compute the pixel AUC (the slowest score; NaN-filled when ``False``).

    Returns:
        A [`MapScores`][embedcam.scoring.MapScores] record of ``(B,)`` tensors.

    Raises:
        ShapeError: If the shapes differ or are not ``(B, H, W)``.
        EmbedcamValueError: If a threshold is out of range, ``regions`` is not bool or ``maps``
            has NaN/inf values.
        ConfigurationError: If ``policy`` or ``negatives`` is unknown.

    Examples:
        >>> import torch
        >>> maps = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
        >>> regions = torch.tensor([[[False, True], [False, True]]])
        >>> s = score_maps(maps, regions)
        >>> float(s.energy_in_box[0]), float(s.pointing_game[0]), bool(s.no_evidence[0])
        (0.875, 1.0, False)
    """
    k.check_tolerance(tolerance)
    maps, regions = k.check_pair(maps, regions)
    s3 = k.transform(maps, negatives)
    s, r = s3.flatten(1), regions.flatten(1)
    # the pieces several scores share are computed once, then fed to the single scores' kernels
    n_b = k.count(r)
    evidence = evidence_region(s3, policy, theta=theta, percent=percent)
    counts = k.region_counts(evidence.flatten(1), r, n_b)
    e = k.energy(s, r, n_b)
    a = k.area(r, n_b)
    return MapScores(
        energy_in_box=e,
        energy_lift=e / a,
        area_fraction=a,
        pointing_game=k.pointing(s3, regions, 0.0),
        pointing_game_tolerant=k.pointing(s3, regions, tolerance),
        rank_accuracy=k.rank(s, r, n_b),
        pixel_auc=k.auc(s, r) if auc else k.nan_like(maps.shape[0], maps.device),
        region_iou=k.iou(*counts),
        region_precision=k.precision(*counts),
        region_recall=k.recall(*counts),
        wsol_box_iou=k.wsol(evidence, regions, None),
        positive_share=k.positive_share(maps, regions, n_b),
        no_evidence=k.no_evidence(s),
    )
