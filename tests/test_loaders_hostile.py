"""Hostile batches from a user's loader: a clear embedcam error naming the batch, never a silent
reshape, threshold or truncation and never a raw torch error."""

from __future__ import annotations

import pytest
import torch

from embedcam._loaders import parse_batch
from embedcam.errors import DataError, EmbedcamError, EmbedcamValueError, ShapeError

IMAGES = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # global RNG untouched
LABELS = torch.tensor([0, 1])


def _dict(**extra: object) -> dict[str, object]:
    return {"image": IMAGES, "label": LABELS, **extra}


def test_boxes_with_a_fifth_column_are_refused_not_reshaped() -> None:
    # Four (x0, y0, x1, y1, class) rows hold 20 numbers: reshape(-1, 4) made five wrong boxes.
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0, 1.0]] * 4), torch.zeros(0, 4)]
    with pytest.raises(
        ShapeError, match=r"batch 3: the boxes of image 0 must be \(K, 4\).*\(4, 5\)"
    ):
        parse_batch((IMAGES, LABELS, boxes), 3)


def test_three_numbers_are_not_a_box() -> None:
    with pytest.raises(ShapeError, match=r"image 1 .*got shape \(3,\)"):
        parse_batch((IMAGES, LABELS, [torch.zeros(0, 4), torch.tensor([1.0, 2.0, 3.0])]), 0)


def test_single_box_and_empty_boxes_are_accepted() -> None:
    batch = parse_batch((IMAGES, LABELS, [[1, 2, 5, 6], []]), 0)
    assert batch.boxes is not None
    assert batch.boxes[0].tolist() == [[1.0, 2.0, 5.0, 6.0]]
    assert batch.boxes[1].shape == (0, 4)


@pytest.mark.parametrize(
    ("boxes", "error", "match"),
    [
        ([[["a", "b", "c", "d"]], []], DataError, "boxes of image 0 must be numeric"),
        ([[[0.0, 0.0, float("nan"), 3.0]], []], DataError, "boxes of image 0 hold NaN"),
        ([[], [[0.0, float("inf"), 2.0, 3.0]]], DataError, "boxes of image 1 hold NaN"),
    ],
)
def test_bad_box_values(boxes: list[object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_batch((IMAGES, LABELS, boxes), 0)


def test_soft_masks_are_refused_not_thresholded() -> None:
    # 0.3 everywhere used to become an all-True object mask.
    with pytest.raises(DataError, match=r"masks of dtype torch.float32 must be binary.*0\.3"):
        parse_batch(_dict(mask=torch.full((2, 8, 8), 0.3)), 0)


def test_binary_numeric_masks_become_bool() -> None:
    m = torch.zeros(2, 8, 8)
    m[0, 2:4, 2:4] = 1.0
    assert int(parse_batch(_dict(mask=m), 0).masks.sum()) == 4  # type: ignore[union-attr]
    u = (m * 255).to(torch.uint8)
    assert int(parse_batch(_dict(mask=u), 0).masks.sum()) == 4  # type: ignore[union-attr]
    with pytest.raises(DataError, match="must be binary"):
        parse_batch(_dict(mask=m * 255), 0)  # 255 is a uint8 convention only


def test_fractional_index_is_refused_not_truncated() -> None:
    with pytest.raises(DataError, match="'index' must hold integer dataset positions"):
        parse_batch(_dict(index=[0.5, 1.7]), 0)
    with pytest.raises(DataError, match="negative positions"):
        parse_batch(_dict(index=[-1, 0]), 0)
    assert parse_batch(_dict(index=[4, 5]), 0).index.tolist() == [4, 5]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("mask", "x", "masks must be numeric"),
        ("reference", "abc", "'reference' must be numeric"),
        (
            "reference",
            torch.full((2, 4), float("nan")),
            r"8 NaN or infinite values at batch positions \[0, 1\]",
        ),
        ("reference", torch.ones(2, 4, dtype=torch.int64), "'reference' must be a floating"),
        ("index", ["a", "b"], "'index' must be numeric"),
        ("id", 5, "'id' must be a sequence of 2 ids"),
        ("id", "ab", "'id' must be a sequence of 2 ids"),
    ],
)
def test_bad_optional_fields(field: str, value: object, match: str) -> None:
    with pytest.raises(EmbedcamError, match=match):
        parse_batch(_dict(**{field: value}), 7)


def test_non_finite_images_name_the_positions() -> None:
    images = IMAGES.clone()
    images[1, 0, 0, 0] = float("nan")
    with pytest.raises(
        DataError, match=r"batch 2: images: 1 NaN or infinite values at batch positions \[1\]"
    ):
        parse_batch((images, LABELS), 2)


def test_integer_images_are_refused() -> None:
    with pytest.raises(DataError, match=r"images must be a floating tensor, got torch.uint8"):
        parse_batch((torch.zeros(2, 3, 8, 8, dtype=torch.uint8), LABELS), 0)


def test_label_errors_name_the_batch() -> None:
    with pytest.raises(EmbedcamValueError, match="batch 4: labels must be"):
        parse_batch((IMAGES, ["a", "b"]), 4)


def test_tuple_masks_follow_the_same_rules_as_dict_masks() -> None:
    m = torch.zeros(2, 8, 8, dtype=torch.uint8)
    m[:, 2:4, 2:5] = 255
    batch = parse_batch((IMAGES, LABELS, m), 0)
    assert batch.boxes is None and int(batch.masks.sum()) == 12  # type: ignore[union-attr]
    assert int(parse_batch((IMAGES, LABELS, (m > 0).float()), 0).masks.sum()) == 12  # type: ignore[union-attr]
    with pytest.raises(DataError, match="must be binary"):
        parse_batch((IMAGES, LABELS, torch.full((2, 8, 8), 0.3)), 0)


def test_a_box_tensor_in_a_tuple_is_one_box_list_per_image() -> None:
    boxes = torch.tensor([[[1.0, 1.0, 4.0, 4.0]], [[0.0, 0.0, 2.0, 3.0]]])  # (B, K, 4)
    batch = parse_batch((IMAGES, LABELS, boxes), 0)
    assert [b.tolist() for b in batch.boxes] == [[[1, 1, 4, 4]], [[0, 0, 2, 3]]]  # type: ignore[union-attr]
    with pytest.raises(DataError, match=r"got a torch.float32 tensor of shape \(2, 1, 5\)"):
        parse_batch((IMAGES, LABELS, torch.zeros(2, 1, 5)), 0)
