"""Baselines beside the box scores: what a map that knows nothing, or everything, would score.

Box scores mean little alone: on CUB, a centred Gaussian that ignores the image reaches 59.7
MaxBoxAccV2 against CAM's 61.1 (Choe et al., "Evaluating Weakly Supervised Object Localization
Methods Right", CVPR 2020). Every score of a recipe is therefore reported with

* the **box-area chance** ``A = |B| / (H W)`` ([`area_fraction`][embedcam.scoring.area_fraction]):
  the energy in box and the pointing hit rate of a map that ignores the object;
* the **centred Gaussian**: the same scores of a map that only knows that products tend to sit in
  the middle of the photo ([`centred_gaussian_maps`][embedcam.scoring.centred_gaussian_maps]);
* the **grid ceiling**: the scores of the box itself drawn on the CAM's grid and upsampled like a
  CAM ([`box_map_ceiling`][embedcam.scoring.box_map_ceiling]), the best a map on that grid can
  show.

[`baseline_scores`][embedcam.scoring.baseline_scores] computes all of them for a batch of regions;
`explain_dataset` stores them in every record and `audit` prints them beside the recipe's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from embedcam._regions import check_regions
from embedcam.errors import EmbedcamValueError
from embedcam.scoring.scores import (
    area_fraction,
    box_map_ceiling,
    box_map_on_grid,
    energy_in_box,
    pointing_game,
    region_iou,
)

__all__ = ["GAUSSIAN_SIGMA", "centred_gaussian_maps", "Baselines", "baseline_scores"]

#: Standard deviation of the centred Gaussian, as a fraction of the image's height and width.
GAUSSIAN_SIGMA = 0.25


def centred_gaussian_maps(
    batch: int,
    size: tuple[int, int],
    *,
    sigma: float = GAUSSIAN_SIGMA,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(B, H, W)`` copies of a Gaussian centred on the image, peak 1.

    ``g(y, x) = exp(-((y - c_y) / s_y)^2 / 2 - ((x - c_x) / s_x)^2 / 2)`` with the centre
    ``c = ((H - 1) / 2, (W - 1) / 2)`` between pixel centres and ``s = sigma * (H, W)``.

    Args:
        batch: number of copies ``B``.
        size: ``(H, W)``.
        sigma: standard deviation as a fraction of each side.
        device: device of the result.

    Returns:
        ``(B, H, W)`` float32 in ``(0, 1]``.

    Raises:
        EmbedcamValueError: a negative batch, an empty side or a non-positive ``sigma``.

    Examples:
        >>> g = centred_gaussian_maps(1, (3, 3), sigma=0.5)
        >>> g[0, 1, 1].item(), round(g[0, 0, 1].item(), 4)      # exp(-(1 / 1.5)^2 / 2)
        (1.0, 0.8007)
    """
    h, w = int(size[0]), int(size[1])
    if batch < 0 or h < 1 or w < 1 or not sigma > 0:
        raise EmbedcamValueError(
            f"need batch >= 0, (H, W) >= 1 and sigma > 0, got batch={batch}, size={size}, "
            f"sigma={sigma}"
        )
    y = (torch.arange(h, dtype=torch.float32, device=device) - (h - 1) / 2) / (sigma * h)
    x = (torch.arange(w, dtype=torch.float32, device=device) - (w - 1) / 2) / (sigma * w)
    g = torch.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))
    return g.expand(batch, h, w).contiguous()


@dataclass(frozen=True)
class Baselines:
    """Baseline scores of a batch of regions, each ``(B,)`` float32 (NaN for an empty region).

    Attributes:
        chance: box-area fraction ``A``: energy in box and pointing rate of an object-blind map.
        gaussian_energy_in_box: energy in box of the centred Gaussian.
        gaussian_pointing_game: strict pointing hit of the centred Gaussian (its peak is the
            centre pixel).
        gaussian_region_iou: region IoU of the centred Gaussian (Grad-CAM's 15% threshold).
        ceiling: energy in box of the box drawn on the CAM grid (``None`` without a grid).
        ceiling_region_iou: region IoU of that box map (``None`` without a grid).
    """

    chance: torch.Tensor
    gaussian_energy_in_box: torch.Tensor
    gaussian_pointing_game: torch.Tensor
    gaussian_region_iou: torch.Tensor
    ceiling: torch.Tensor | None = None
    ceiling_region_iou: torch.Tensor | None = None


def baseline_scores(
    regions: torch.Tensor, grid: tuple[int, int] | None = None, *, sigma: float = GAUSSIAN_SIGMA
) -> Baselines:
    """The box-area chance, the centred-Gaussian scores and the grid ceiling of each region.

    Args:
        regions: ``(B, H, W)`` bool object regions.
        grid: the CAM resolution ``(h, w)``; ``None`` leaves the ceilings out.
        sigma: the centred Gaussian's width (see
            [`centred_gaussian_maps`][embedcam.scoring.centred_gaussian_maps]).

    Returns:
        The [`Baselines`][embedcam.scoring.Baselines].

    Raises:
        ShapeError: ``regions`` is not ``(B, H, W)``.
        EmbedcamValueError: ``regions`` is not bool, or ``grid`` is not a valid ``(h, w)``.

    Examples:
        >>> import torch
        >>> regions = torch.zeros(1, 5, 5, dtype=torch.bool)
        >>> regions[0, 1:4, 1:4] = True                     # a centred 3 x 3 box
        >>> b = baseline_scores(regions, grid=(5, 5))
        >>> round(b.chance.item(), 4), b.gaussian_pointing_game.item(), b.ceiling.item()
        (0.36, 1.0, 1.0)
    """
    regions = check_regions(regions)
    b, h, w = regions.shape
    gauss = centred_gaussian_maps(b, (h, w), sigma=sigma, device=regions.device)
    ceiling = ceiling_iou = None
    if grid is not None:
        ceiling = box_map_ceiling(regions, grid)  # validates the grid
        ceiling_iou = region_iou(box_map_on_grid(regions, (int(grid[0]), int(grid[1]))), regions)
    empty = regions.flatten(1).sum(1) == 0
    chance = area_fraction(None, regions).masked_fill(empty, float("nan"))
    return Baselines(
        chance=chance,
        gaussian_energy_in_box=energy_in_box(gauss, regions),
        gaussian_pointing_game=pointing_game(gauss, regions),
        gaussian_region_iou=region_iou(gauss, regions),
        ceiling=ceiling,
        ceiling_region_iou=ceiling_iou,
    )
