import numpy as np
import pytest
import torch

import embedcam as ec
from embedcam import _regions
from embedcam import masks as mk
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

MAP = torch.tensor([[[0.0, 0.1, 0.2, 1.0], [-0.5, 0.15, 0.6, 0.4]]])


def test_positive_and_relative_regions():
    assert mk.positive_region(MAP).int().tolist() == [[[0, 1, 1, 1], [0, 1, 1, 1]]]
    # Grad-CAM's 0.15 of max 1.0: 0.15 is included (>=), 0.1 is not
    assert mk.relative_region(MAP, 0.15).int().tolist() == [[[0, 0, 1, 1], [0, 1, 1, 1]]]
    # CAM's 0.20
    assert mk.relative_region(MAP, 0.20).int().tolist() == [[[0, 0, 1, 1], [0, 0, 1, 1]]]
    assert not mk.relative_region(-MAP.abs(), 0.15).any()


def test_topk_region_with_ties():
    maps = torch.tensor([[[0.5, 0.5, 0.2, 0.9]]])
    # 25 % of 4 pixels = 1 pixel
    assert mk.topk_region(maps, 25).int().tolist() == [[[0, 0, 0, 1]]]
    # 50 % = 2 pixels; the 2nd largest (0.5) is tied, so both 0.5 pixels are kept
    assert mk.topk_region(maps, 50).int().tolist() == [[[1, 1, 0, 1]]]


def test_otsu_region_bimodal_and_constant():
    maps = torch.tensor([[[0.1, 0.12, 0.11, 0.9, 0.92, 0.88]], [[0.3] * 6]])
    assert mk.otsu_region(maps).int().tolist() == [[[0, 0, 0, 1, 1, 1]], [[0] * 6]]


def test_evidence_region_dispatch():
    assert torch.equal(mk.evidence_region(MAP, "positive"), mk.positive_region(MAP))
    assert torch.equal(mk.evidence_region(MAP, "relative", theta=0.2), mk.relative_region(MAP, 0.2))
    assert torch.equal(mk.evidence_region(MAP, "topk", percent=25), mk.topk_region(MAP, 25))
    assert torch.equal(mk.evidence_region(MAP, "otsu"), mk.otsu_region(MAP))
    with pytest.raises(ConfigurationError, match="unknown region policy 'median'"):
        mk.evidence_region(MAP, "median")  # type: ignore[arg-type]


def test_largest_component_and_box():
    r = torch.zeros(2, 4, 6, dtype=torch.bool)
    r[0, 0, 0] = True
    r[0, 2:4, 3:6] = True
    r[0, 1, 2] = True  # touches (2, 3) diagonally: 8-connected to the big block
    assert mk.largest_component(r)[0].sum() == 7
    assert mk.largest_component(r, connectivity=1)[0].sum() == 6
    boxes = mk.largest_component_box(r)
    assert boxes[0].tolist() == [2.0, 1.0, 6.0, 4.0]
    assert boxes[1].isnan().all()
    assert mk.largest_component_box(r, connectivity=1)[0].tolist() == [3.0, 2.0, 6.0, 4.0]
    with pytest.raises(EmbedcamValueError, match="connectivity must be 1 or 2"):
        mk.largest_component(r, connectivity=3)


def test_darken_binary_soft_and_threshold():
    img = torch.full((1, 3, 2, 4), 2.0)
    out = ec.darken(img, MAP, factor=0.25)
    expected = torch.tensor([[0.5, 2.0, 2.0, 2.0], [0.5, 2.0, 2.0, 2.0]])
    assert torch.allclose(out[0, 0], expected) and torch.equal(out[0, 0], out[0, 2])
    out = ec.darken(img, MAP, factor=0.0, threshold=0.5)
    assert (out[0, 0] > 0).int().tolist() == [[0, 0, 0, 1], [0, 0, 1, 0]]
    soft = ec.darken(img, MAP, factor=0.5, soft=True)
    # gain 0.5 + 0.5 * s / max s: s = 0.2 -> 0.6, s = -0.5 -> 0.5
    assert soft[0, 0, 0, 2].item() == pytest.approx(2 * 0.6)
    assert soft[0, 0, 1, 0].item() == pytest.approx(2 * 0.5)
    # an all-zero map darkens the whole image
    assert torch.allclose(ec.darken(img, torch.zeros(1, 2, 4), 0.1), img * 0.1)
    assert torch.equal(img, torch.full((1, 3, 2, 4), 2.0))


def test_overlay_colours():
    img = torch.zeros(1, 1, 1, 2)
    out = mk.overlay(img, torch.tensor([[[0.0, 1.0]]]), alpha=1.0, cmap="jet")
    # jet: 0 -> dark blue (0, 0, 0.5), 1 -> dark red (0.5, 0, 0)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.0, 0.0, 0.5]))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([0.5, 0.0, 0.0]))
    out = mk.overlay(img, torch.tensor([[[0.0, 2.0]]]), alpha=0.5, cmap="gray")
    assert torch.allclose(out[0, :, 0, 1], torch.full((3,), 0.5))
    assert out.shape == (1, 3, 1, 2)


def test_bad_inputs():
    img = torch.zeros(1, 3, 2, 4)
    with pytest.raises(ShapeError, match="must share B, H and W"):
        ec.darken(img, torch.zeros(1, 4, 4))
    with pytest.raises(EmbedcamValueError, match="factor must be in"):
        ec.darken(img, MAP, factor=1.5)
    with pytest.raises(EmbedcamValueError, match="threshold must be in"):
        ec.darken(img, MAP, threshold=1.0)
    with pytest.raises(ShapeError, match=r"images must be a \(B, C, H, W\)"):
        ec.darken(img[0], MAP)
    with pytest.raises(ConfigurationError, match="unknown colour map 'rainbow'"):
        mk.overlay(img, MAP, cmap="rainbow")
    with pytest.raises(EmbedcamValueError, match="alpha must be in"):
        mk.overlay(img, MAP, alpha=2.0)
    with pytest.raises(ShapeError, match="1 or 3 channels"):
        mk.overlay(torch.zeros(1, 2, 2, 4), MAP)
    with pytest.raises(EmbedcamValueError, match="percent must be in"):
        mk.topk_region(MAP, 0)
    with pytest.raises(EmbedcamValueError, match=r"maps\[0\] contains NaN"):
        mk.positive_region(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ShapeError, match=r"must have shape \(B, H, W\)"):
        mk.positive_region(torch.zeros(2, 2))
    with pytest.raises(EmbedcamValueError, match="must be a bool tensor"):
        mk.largest_component(torch.zeros(1, 2, 2))


def _ref_largest_box(regions: torch.Tensor, connectivity: int) -> torch.Tensor:
    # the first implementation: scikit-image label per image
    from skimage.measure import label

    out = torch.full((regions.shape[0], 4), float("nan"))
    for i, r in enumerate(regions.numpy()):
        lab = label(r, connectivity=connectivity)
        if lab.max() == 0:
            continue
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        comp = lab == counts.argmax()
        rows, cols = np.flatnonzero(comp.any(1)), np.flatnonzero(comp.any(0))
        out[i] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
    return out


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunk", [1 << 22, 40])
def test_batched_labelling_equals_per_image_skimage(monkeypatch, connectivity, chunk):
    # equal-sized components (ties) in a sparse random field, empty and full images; a tiny
    # chunk forces several ndimage.label calls per batch
    monkeypatch.setattr(_regions, "LABEL_CHUNK_PIXELS", chunk)
    g = torch.Generator().manual_seed(connectivity)
    regions = torch.rand(30, 7, 9, generator=g) < 0.35
    regions[3] = False
    regions[4] = True
    regions[5] = False
    regions[5, 0, 0] = regions[5, 0, 2] = regions[5, 6, 8] = True  # three single-pixel ties
    got = mk.largest_component_box(regions, connectivity=connectivity)
    ref = _ref_largest_box(regions, connectivity)
    assert torch.equal(got.isnan(), ref.isnan())
    assert torch.equal(got.nan_to_num(-1), ref.nan_to_num(-1))
    assert got[5].tolist() == [0.0, 0.0, 1.0, 1.0]  # the first in raster order wins the tie
    comp = mk.largest_component(regions, connectivity=connectivity)
    assert (comp <= regions).all() and not comp[3].any() and comp[4].all()
    # the kept component is one component with the same box
    again = mk.largest_component_box(comp, connectivity=connectivity)
    assert torch.equal(again.nan_to_num(-1), got.nan_to_num(-1))
    assert torch.equal(mk.largest_component(comp, connectivity=connectivity), comp)
