"""Baselines beside the box scores: centred Gaussian, box-area chance, grid ceiling, by hand."""

from __future__ import annotations

import math

import pytest
import torch

import embedcam as ec
from embedcam.errors import EmbedcamValueError, ShapeError
from embedcam.scoring import baseline_scores, box_map_ceiling, centred_gaussian_maps


def test_centred_gaussian_by_hand():
    g = centred_gaussian_maps(2, (3, 5), sigma=0.5)
    assert g.shape == (2, 3, 5) and g[1, 1, 2] == 1.0
    # one row from the centre: (1 / (0.5 * 3))^2; two columns: (2 / (0.5 * 5))^2
    assert g[0, 0, 2].item() == pytest.approx(math.exp(-0.5 * (1 / 1.5) ** 2))
    assert g[0, 1, 0].item() == pytest.approx(math.exp(-0.5 * (2 / 2.5) ** 2))
    assert g[0, 0, 0].item() == pytest.approx(math.exp(-0.5 * ((1 / 1.5) ** 2 + (2 / 2.5) ** 2)))
    torch.testing.assert_close(g, g.flip(1).flip(2))  # symmetric about the centre
    with pytest.raises(EmbedcamValueError):
        centred_gaussian_maps(1, (0, 4))
    with pytest.raises(EmbedcamValueError):
        centred_gaussian_maps(1, (4, 4), sigma=0)


def test_baselines_by_hand():
    regions = torch.zeros(4, 4, 4, dtype=torch.bool)
    regions[0, :, :2] = True  # the left half: the symmetric Gaussian puts exactly half its mass
    regions[1, 0, 0] = True  # a corner pixel: not the peak, a tiny share
    regions[2] = True  # everything
    b = baseline_scores(regions, grid=(4, 4))
    assert b.chance[:3].tolist() == [0.5, 1 / 16, 1.0]
    assert math.isnan(b.chance[3]) and math.isnan(b.gaussian_energy_in_box[3])
    assert b.gaussian_energy_in_box[0].item() == pytest.approx(0.5, abs=1e-6)
    assert b.gaussian_energy_in_box[2].item() == pytest.approx(1.0, abs=1e-6)
    g = centred_gaussian_maps(1, (4, 4))[0]
    assert b.gaussian_energy_in_box[1].item() == pytest.approx(float(g[0, 0] / g.sum()), abs=1e-6)
    # the Gaussian's maximum of a 4 x 4 grid is a tie of the 4 centre pixels: the first in
    # raster order, (1, 1), is in the left half and not the corner
    assert b.gaussian_pointing_game[:3].tolist() == [1.0, 0.0, 1.0]
    # at the image's own resolution the box map is the box: ceiling 1, IoU 1
    assert b.ceiling is not None and b.ceiling_region_iou is not None
    assert b.ceiling[:3].tolist() == [1.0, 1.0, 1.0]
    assert b.ceiling_region_iou[:3].tolist() == [1.0, 1.0, 1.0]
    coarse = baseline_scores(regions, grid=(2, 2))
    torch.testing.assert_close(
        coarse.ceiling, box_map_ceiling(regions, grid=(2, 2)), equal_nan=True
    )
    assert baseline_scores(regions).ceiling is None
    with pytest.raises(EmbedcamValueError):
        baseline_scores(regions, grid=(5, 5))
    with pytest.raises(ShapeError):
        baseline_scores(regions[0])


def test_records_hold_the_baselines():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()
    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 0])
    boxes = [
        torch.tensor([[0.0, 0.0, 4.0, 8.0]]),
        torch.tensor([[2.0, 2.0, 6.0, 6.0]]),
        torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
    ]
    cents = ec.ClassCentroids.fit(net, [(images, labels)], progress=False)
    recipe = ec.Recipe(layer="1")
    recs = ec.explain_dataset(net, [(images, labels, boxes)], cents, recipe, progress=False)
    b = baseline_scores(ec.boxes_to_masks(boxes, size=(8, 8)), grid=(8, 8))
    for col in ec.pipeline.BASELINE_COLUMNS:
        torch.testing.assert_close(recs.column(col, recipe), getattr(b, col), equal_nan=True)
    assert recs.column("gaussian_pointing_game", recipe).tolist() == [1.0, 1.0, 0.0]
