"""The torch Dataset: boxes and masks move with the image; collation of variable box counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_datasets import write_export
from torch.utils.data import DataLoader

from embedcam import boxes_to_masks
from embedcam.boxes import box_area
from embedcam.datasets import (
    Compose,
    ImageDataset,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    collate_boxes,
    generate_shelf,
    load_roboflow,
)
from embedcam.errors import ConfigurationError, DataError, ShapeError


@pytest.fixture(scope="module")
def coco_index(tmp_path_factory: pytest.TempPathFactory):
    return load_roboflow(write_export(tmp_path_factory.mktemp("c") / "coco", "coco"))


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory):
    cfg = {
        "image_size": 32,
        "families": 2,
        "siblings": 2,
        "images_per_class": {"train": 3},
        "occlusion": 0.5,
        "distractors": 1,
    }
    return generate_shelf(tmp_path_factory.mktemp("s") / "shelf", cfg)


def test_resized_boxes_equal_hand_scaled(coco_index) -> None:
    # images are 32 x 64 (H, W); to (16, 16) x scales by 1/4, y by 1/2
    ds = ImageDataset(coco_index, size=(16, 16))
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["label"] == 0 and item["index"] == 0
    assert torch.equal(item["boxes"], torch.tensor([[1.0, 1.0, 4.0, 5.0]]))  # [4, 2, 16, 10]
    two = ds[1]["boxes"]  # [2, 2, 10, 10] and [20, 4, 30, 12]
    assert torch.equal(two, torch.tensor([[0.5, 1.0, 2.5, 5.0], [5.0, 2.0, 7.5, 6.0]]))
    edge = ds[5]["boxes"]  # [40, 16, 64, 32] -> touches the bottom-right corner
    assert torch.equal(edge, torch.tensor([[10.0, 8.0, 16.0, 16.0]]))


def test_flip_moves_boxes_and_pixels(coco_index) -> None:
    plain = ImageDataset(coco_index)[0]
    flipped = ImageDataset(coco_index, transform=RandomHorizontalFlip(p=1.0))[0]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    # W = 64: [4, 2, 16, 10] -> [64 - 16, 2, 64 - 4, 10]
    assert torch.equal(flipped["boxes"], torch.tensor([[48.0, 2.0, 60.0, 10.0]]))


def test_random_crop_keeps_box_and_image_aligned(coco_index) -> None:
    # the rasterised box of the crop equals the crop of the rasterised box (integer windows)
    full = ImageDataset(coco_index)[2]
    full_region = boxes_to_masks([full["boxes"]], size=(32, 64))[0]
    ds = ImageDataset(coco_index, transform=RandomCrop(scale=(0.3, 0.6)))
    for epoch in range(5):
        ds.set_epoch(epoch)
        item = ds[2]
        h, w = item["image"].shape[-2:]
        region = boxes_to_masks([item["boxes"]], size=(h, w))[0]
        # locate the crop window by matching pixels
        found = False
        for top in range(32 - h + 1):
            for left in range(64 - w + 1):
                window = full["image"][:, top : top + h, left : left + w]
                if torch.equal(window, item["image"]):
                    assert torch.equal(region, full_region[top : top + h, left : left + w])
                    found = True
        assert found


def test_augmentation_is_deterministic_per_seed_and_epoch(coco_index) -> None:
    aug = Compose([RandomCrop((0.5, 0.9)), RandomHorizontalFlip(0.5)])
    a, b = ImageDataset(coco_index, 16, transform=aug), ImageDataset(coco_index, 16, transform=aug)
    assert torch.equal(a[1]["boxes"], b[1]["boxes"])
    changed = False
    for epoch in range(1, 6):
        b.set_epoch(epoch)
        changed |= not torch.equal(a[1]["image"], b[1]["image"])
    assert changed


def test_masks_move_with_the_image(shelf) -> None:
    plain = ImageDataset(shelf)
    flipped = ImageDataset(shelf, transform=RandomHorizontalFlip(p=1.0))
    for i in range(len(shelf)):
        p, f = plain[i], flipped[i]
        assert torch.equal(f["mask"], p["mask"].flip(-1))
        # boxes are tight around the exact mask before and after the flip
        for item in (p, f):
            rows, cols = torch.nonzero(item["mask"], as_tuple=True)
            tight = torch.tensor(
                [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32
            )
            assert torch.equal(item["boxes"], tight)
    resized = ImageDataset(shelf, size=(64, 64))[0]
    assert resized["mask"].shape == (64, 64) and resized["mask"].dtype == torch.bool


def test_collate_variable_box_counts(coco_index) -> None:
    ds = ImageDataset(coco_index, size=(16, 32))
    loader = DataLoader(ds, batch_size=3, collate_fn=collate_boxes)
    batch = next(iter(loader))
    assert batch["image"].shape == (3, 3, 16, 32)
    assert batch["label"].tolist() == [0, 0, 1]
    assert batch["index"].tolist() == [0, 1, 2]
    assert [tuple(b.shape) for b in batch["boxes"]] == [(1, 4), (2, 4), (1, 4)]
    assert "mask" not in batch


def test_collate_rejects_mixed_sizes(coco_index) -> None:
    items = [ImageDataset(coco_index, size=8)[0], ImageDataset(coco_index, size=16)[1]]
    with pytest.raises(ShapeError, match="pass size=\\(H, W\\)"):
        collate_boxes(items)
    with pytest.raises(ShapeError, match="empty batch"):
        collate_boxes([])


def test_classification_export_items_have_no_boxes(tmp_path: Path) -> None:
    index = load_roboflow(write_export(tmp_path / "folder", "folder"))
    item = ImageDataset(index, size=8)[0]
    assert set(item) == {"image", "label", "index"}
    with pytest.raises(DataError, match="has no object mask"):
        index.samples[0].load_mask()
    with pytest.raises(DataError, match="samples have no object mask"):
        ImageDataset(index, with_masks=True)


def test_normalisation_and_bad_options(coco_index) -> None:
    ds = ImageDataset(coco_index, size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    raw = ImageDataset(coco_index, size=8)
    assert torch.allclose(ds[0]["image"], (raw[0]["image"] - 0.5) / 0.25)
    with pytest.raises(ConfigurationError, match="both mean and std"):
        ImageDataset(coco_index, mean=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigurationError, match="size must be"):
        ImageDataset(coco_index, size=(0, 4))
    with pytest.raises(ConfigurationError, match="flip probability"):
        RandomHorizontalFlip(1.5)


def test_resize_transform_scales_boxes_by_hand() -> None:
    img = torch.rand(3, 10, 20)
    out, b, m = Resize((5, 40))(
        img, torch.tensor([[2.0, 4.0, 6.0, 10.0]]), torch.ones(10, 20, dtype=torch.bool), None
    )
    assert out.shape == (3, 5, 40) and m is not None and m.shape == (5, 40)
    assert torch.equal(b, torch.tensor([[4.0, 2.0, 12.0, 5.0]]))


def test_corrupt_image_at_load_time_names_the_file(coco_index, tmp_path: Path) -> None:
    index = load_roboflow(write_export(tmp_path / "coco", "coco"), verify_images=False)
    index.samples[0].path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"a1_jpg\.rf\.0a1b2c\.jpg' is corrupt"):
        ImageDataset(index)[0]


@settings(max_examples=60, deadline=None)
@given(
    x0=st.integers(0, 18),
    y0=st.integers(0, 10),
    w=st.integers(1, 20),
    h=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_crop_and_flip_move_boxes_like_the_pixels(
    x0: int, y0: int, w: int, h: int, seed: int
) -> None:
    # the mask carried through the transforms equals the rasterised transformed box
    size = (12, 20)
    box = torch.tensor([[x0, y0, min(x0 + w, 20), min(y0 + h, 12)]], dtype=torch.float32)
    region = boxes_to_masks([box], size=size)[0]
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(seed))
    aug = Compose([RandomCrop((0.2, 1.0)), RandomHorizontalFlip(0.5)])
    out, moved, mask = aug(image, box, region, torch.Generator().manual_seed(seed))
    assert mask is not None and mask.shape == out.shape[-2:]
    if float(box_area(moved).sum()) > 0:
        assert torch.equal(boxes_to_masks([moved], size=tuple(out.shape[-2:]))[0], mask)
    else:
        assert not bool(mask.any())


def test_boxes_past_the_edge_are_clipped_without_a_resize(tmp_path: Path) -> None:
    """A YOLO box running past the right edge is clipped, also when the image is not resized."""
    from PIL import Image

    root = tmp_path / "yolo"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [thing]\nnc: 1\n")
    Image.new("RGB", (40, 20)).save(root / "train" / "images" / "a.png")  # W = 40, H = 20
    # centre x = 0.95 * 40 = 38, width 8 -> [34, 42]; centre y = 10, height 10 -> [5, 15]
    (root / "train" / "labels" / "a.txt").write_text("0 0.95 0.5 0.2 0.5\n")
    index = load_roboflow(root)
    assert ImageDataset(index)[0]["boxes"].tolist() == [[34.0, 5.0, 40.0, 15.0]]
    assert ImageDataset(index, size=(20, 40))[0]["boxes"].tolist() == [[34.0, 5.0, 40.0, 15.0]]
    assert ImageDataset(index, size=(10, 10))[0]["boxes"].tolist() == [[8.5, 2.5, 10.0, 7.5]]
