"""Background interventions keep object pixels where the mask says and change only the rest."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from embedcam import interventions as iv
from embedcam.datasets import ImageDataset, collate_boxes, generate_shelf
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError


def _batch(b: int = 6, h: int = 8, w: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g)
    masks = torch.zeros(b, h, w, dtype=torch.bool)
    for i in range(b):  # an off-centre rectangle per image, different for each
        masks[i, 1 + i % 3 : 5 + i % 3, 2 + i % 4 : 7 + i % 4] = True
    return images, masks


def test_only_bg_and_only_fg_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    m = torch.tensor([[[True, False], [False, True]]])
    assert iv.only_bg(x, m).tolist() == [[[[0.0, 2.0], [3.0, 0.0]]]]
    assert iv.only_fg(x, m).tolist() == [[[[1.0, 0.0], [0.0, 4.0]]]]
    assert iv.only_fg(x, m, fill=-1.0).tolist() == [[[[1.0, -1.0], [-1.0, 4.0]]]]
    assert x.tolist() == [[[[1.0, 2.0], [3.0, 4.0]]]]  # inputs untouched


def test_only_bg_only_fg_partition_the_image() -> None:
    images, masks = _batch()
    bg, fg = iv.only_bg(images, masks), iv.only_fg(images, masks)
    assert torch.equal(bg + fg, images)
    m = masks[:, None].expand_as(images)
    assert torch.equal(fg[m], images[m]) and bool((fg[~m] == 0).all())
    assert torch.equal(bg[~m], images[~m]) and bool((bg[m] == 0).all())


@pytest.mark.parametrize("fill", ["inpaint", "black", "keep"])
def test_mixing_keeps_object_pixels_and_takes_the_rest_from_the_donor(fill: str) -> None:
    images, masks = _batch()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for mixed, donors in (
        iv.mixed_same(images, masks, labels, generator=1, donor_fill=fill),
        iv.mixed_rand(images, masks, labels, generator=1, donor_fill=fill),
    ):
        for i in range(6):
            j = int(donors[i])
            m = masks[i]
            assert torch.equal(mixed[i][:, m], images[i][:, m])  # the object, exactly in place
            # outside both objects the donor's background shows through unchanged
            free = ~m & ~masks[j]
            assert torch.equal(mixed[i][:, free], images[j][:, free])
            if fill == "black":
                assert bool((mixed[i][:, ~m & masks[j]] == 0).all())
            if fill == "keep":
                assert torch.equal(mixed[i][:, ~m], images[j][:, ~m])


def test_mixed_donors_follow_the_labels_and_the_seed() -> None:
    labels = torch.tensor([3, 1, 3, 1, 3, 2, 2])
    same = iv.same_class_donors(labels, generator=7)
    assert bool((labels[same] == labels).all()) and bool((same != torch.arange(7)).all())
    other = iv.other_class_donors(labels, generator=7)
    assert bool((labels[other] != labels).all())
    assert torch.equal(same, iv.same_class_donors(labels, generator=7))
    picks = {tuple(iv.other_class_donors(labels, generator=s).tolist()) for s in range(10)}
    assert len(picks) > 1  # the seed matters


def test_same_class_donors_are_uniform_among_the_others() -> None:
    labels = torch.zeros(4, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(4, 4)
    for _ in range(3000):
        d = iv.same_class_donors(labels, generator=g)
        counts[torch.arange(4), d] += 1
    assert bool((counts.diagonal() == 0).all())
    off = counts[~torch.eye(4, dtype=torch.bool)] / 3000
    assert bool(((off - 1 / 3).abs() < 0.05).all())


def test_donor_errors_name_the_culprit() -> None:
    with pytest.raises(EmbedcamValueError, match=r"class 5 has a single image .*position 2"):
        iv.same_class_donors(torch.tensor([0, 0, 5]))
    with pytest.raises(EmbedcamValueError, match="every image in the batch has class 4"):
        iv.other_class_donors(torch.tensor([4, 4]))
    images, masks = _batch(2)
    with pytest.raises(EmbedcamValueError, match=r"donor_index values must be in \[0, 2\)"):
        iv.mix_backgrounds(images, masks, torch.tensor([0, 2]))
    with pytest.raises(ShapeError, match="donor_index has 3 entries"):
        iv.mix_backgrounds(images, masks, torch.tensor([0, 1, 1]))


def test_inpaint_fills_from_the_surroundings() -> None:
    images, masks = _batch()
    filled = iv.remove_objects(images, masks, "inpaint")
    m = masks[:, None].expand_as(images)
    assert torch.equal(filled[~m], images[~m])
    # every filled value is an average of background values: inside their range
    for i in range(6):
        known = images[i][:, ~masks[i]]
        inside = filled[i][:, masks[i]]
        assert bool((inside >= known.min(1, keepdim=True).values - 1e-6).all())
        assert bool((inside <= known.max(1, keepdim=True).values + 1e-6).all())
    # a constant background is filled with that constant
    flat = torch.full((1, 3, 8, 8), 0.25)
    flat[:, :, 2:6, 2:6] = 1.0
    hole = torch.zeros(1, 8, 8, dtype=torch.bool)
    hole[:, 2:6, 2:6] = True
    assert torch.allclose(iv.remove_objects(flat, hole), torch.full((1, 3, 8, 8), 0.25))
    whole = torch.ones(1, 8, 8, dtype=torch.bool)
    assert bool((iv.remove_objects(flat, whole) == 0).all())  # nothing to fill from: black


def test_region_noise_has_equal_energy_and_stays_in_its_region() -> None:
    images = torch.full((4, 3, 64, 64), 0.5)
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    masks[:, 8:24, 16:48] = True  # 1/8 of the image
    for region, sel in (("fg", masks), ("bg", ~masks)):
        noisy = iv.region_noise(images, masks, region, rms=0.05, generator=3, clamp=None)
        delta = noisy - images
        assert bool((delta[~sel[:, None].expand_as(delta)] == 0).all())
        rms = float(delta.pow(2).mean().sqrt())
        assert math.isclose(rms, 0.05, rel_tol=0.05), (region, rms)
    clamped = iv.region_noise(images, masks, "fg", rms=2.0, generator=3)
    assert float(clamped.min()) >= 0.0 and float(clamped.max()) <= 1.0
    with pytest.raises(ConfigurationError, match="region must be 'fg' or 'bg'"):
        iv.region_noise(images, masks, "object")  # type: ignore[arg-type]


def test_bg_gap_and_rfs_by_hand() -> None:
    assert math.isclose(iv.bg_gap(0.9, 0.6), 0.3)
    # a_fg = 0.2, a_bg = 0.6: mean 0.4, RFS = 0.4 / (2 * 0.4) = 0.5
    assert math.isclose(iv.relative_foreground_sensitivity(0.2, 0.6), 0.5)
    # a_fg = 0.9, a_bg = 0.7: mean 0.8, RFS = -0.2 / (2 * 0.2) = -0.5
    assert math.isclose(iv.relative_foreground_sensitivity(0.9, 0.7), -0.5)
    assert math.isnan(iv.relative_foreground_sensitivity(1.0, 1.0))
    t = iv.relative_foreground_sensitivity(torch.tensor([0.2, 0.0]), torch.tensor([0.6, 0.0]))
    assert math.isclose(float(t[0]), 0.5, rel_tol=1e-6) and math.isnan(float(t[1]))


def test_bad_shapes_and_dtypes() -> None:
    images, masks = _batch(2)
    with pytest.raises(ShapeError, match=r"masks \(2, 8, 9\) do not match images"):
        iv.only_bg(images, masks[..., :9])
    with pytest.raises(ShapeError, match=r"images must be a \(B, C, H, W\)"):
        iv.only_fg(images[0], masks)
    with pytest.raises(EmbedcamValueError, match="masks must be bool"):
        iv.only_bg(images, masks.float())
    with pytest.raises(ConfigurationError, match="unknown fill mode 'blur'"):
        iv.remove_objects(images, masks, "blur")  # type: ignore[arg-type]


def test_on_synthetic_data_with_exact_masks(tmp_path: Path) -> None:
    cfg = {"image_size": 32, "families": 2, "siblings": 2, "images_per_class": {"test": 2}}
    index = generate_shelf(tmp_path / "shelf", cfg)
    batch = collate_boxes([item for item in ImageDataset(index)])
    images, masks, labels = batch["image"], batch["mask"], batch["label"]
    mixed, donors = iv.mixed_rand(images, masks, labels, generator=0)
    m = masks[:, None].expand_as(images)
    assert torch.equal(mixed[m], images[m])
    assert bool((labels[donors] != labels).all())
