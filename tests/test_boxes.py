import pytest
import torch
import torch.nn.functional as F

import embedcam as ec
from embedcam import boxes as bx
from embedcam.errors import EmbedcamValueError, ShapeError

# A non-square image (H=6, W=10) with an off-centre box covering rows 1..3 and columns 2..6.
H, W = 6, 10
XYXY = torch.tensor([[2.0, 1.0, 7.0, 4.0]])
EXPECTED = torch.tensor(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    dtype=torch.bool,
)


def test_rasterise_off_centre_box_on_non_square_image():
    mask = ec.boxes_to_masks([XYXY], size=(H, W))
    assert mask.shape == (1, H, W)
    assert torch.equal(mask[0], EXPECTED)
    # reading the box with x and y swapped lights columns 1..3 of rows 2..5 instead
    swapped = ec.boxes_to_masks([XYXY[:, [1, 0, 3, 2]]], size=(H, W))
    assert swapped[0].sum() == 12 and not torch.equal(swapped[0], EXPECTED)


def test_coco_yolo_voc_rasterise_identically():
    coco = torch.tensor([[2.0, 1.0, 5.0, 3.0]])
    yolo = torch.tensor([[4.5 / 10, 2.5 / 6, 5.0 / 10, 3.0 / 6]])
    voc = torch.tensor([[3.0, 2.0, 7.0, 4.0]])
    masks = [
        ec.boxes_to_masks([bx.coco_to_xyxy(coco)], (H, W)),
        ec.boxes_to_masks([bx.yolo_to_xyxy(yolo, (H, W))], (H, W)),
        ec.boxes_to_masks([bx.voc_to_xyxy(voc)], (H, W)),
    ]
    for m in masks:
        assert torch.equal(m[0], EXPECTED)


def test_converters_round_trip_and_values():
    assert torch.allclose(bx.xyxy_to_coco(XYXY), torch.tensor([[2.0, 1.0, 5.0, 3.0]]))
    assert torch.allclose(bx.xyxy_to_voc(XYXY), torch.tensor([[3.0, 2.0, 7.0, 4.0]]))
    assert torch.allclose(bx.xyxy_to_yolo(XYXY, (H, W)), torch.tensor([[0.45, 2.5 / 6, 0.5, 0.5]]))
    assert torch.allclose(bx.coco_to_xyxy(bx.xyxy_to_coco(XYXY)), XYXY)
    assert torch.allclose(bx.voc_to_xyxy(bx.xyxy_to_voc(XYXY)), XYXY)
    assert torch.allclose(bx.yolo_to_xyxy(bx.xyxy_to_yolo(XYXY, (H, W)), (H, W)), XYXY)


def test_dtype_and_inputs_untouched():
    b64 = XYXY.double()
    before = b64.clone()
    out = bx.coco_to_xyxy(b64)
    assert out.dtype == torch.float64
    assert torch.equal(b64, before)
    assert bx.coco_to_xyxy([[1, 2, 3, 4]]).dtype == torch.float32
    out[0, 0] = 99.0
    assert torch.equal(b64, before)


def test_half_open_pixel_centres():
    # [0.5, 1.5) contains the centre 0.5 of column 0 but not 1.5 of column 1
    m = ec.boxes_to_masks([torch.tensor([0.5, 0.0, 1.5, 1.0])], size=(1, 3))
    assert m[0, 0].tolist() == [True, False, False]
    # a valid box between two centres covers no pixel
    m = ec.boxes_to_masks([torch.tensor([0.6, 0.0, 1.4, 1.0])], size=(1, 3))
    assert not m.any()


def test_union_variable_counts_and_tensor_input():
    per_image = [
        torch.tensor([[0.0, 0.0, 2.0, 1.0], [1.0, 1.0, 3.0, 2.0]]),
        torch.zeros(0, 4),
        torch.tensor([2.0, 0.0, 3.0, 2.0]),
    ]
    m = ec.boxes_to_masks(per_image, size=(2, 3))
    assert m.int().tolist() == [
        [[1, 1, 0], [0, 1, 1]],
        [[0, 0, 0], [0, 0, 0]],
        [[0, 0, 1], [0, 0, 1]],
    ]
    t = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[1.0, 1.0, 3.0, 2.0]]])
    assert ec.boxes_to_masks(t, size=(2, 3)).int().tolist() == [
        [[1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 1, 1]],
    ]
    assert ec.boxes_to_masks([], size=(2, 3)).shape == (0, 2, 3)


def test_vectorised_matches_per_box_loop():
    g = torch.Generator().manual_seed(0)
    per_image = []
    for i in range(20):
        k = i % 4
        xy = torch.rand(k, 2, generator=g) * torch.tensor([15.0, 9.0])
        wh = torch.rand(k, 2, generator=g) * 6 + 0.5
        per_image.append(torch.cat([xy, xy + wh], 1))
    masks = ec.boxes_to_masks(per_image, size=(12, 17))
    cy = torch.arange(12).float()[:, None] + 0.5
    cx = torch.arange(17).float()[None, :] + 0.5
    for i, bb in enumerate(per_image):
        ref = torch.zeros(12, 17, dtype=torch.bool)
        for x0, y0, x1, y1 in bb.tolist():
            ref |= (x0 <= cx) & (cx < x1) & (y0 <= cy) & (cy < y1)
        assert torch.equal(masks[i], ref)


def test_clip_resize_crop_hand_values():
    assert bx.clip_boxes([-2.0, 1.0, 5.0, 9.0], size=(4, 3)).tolist() == [0, 1, 3, 4]
    out = bx.resize_boxes(XYXY, from_size=(6, 10), to_size=(12, 5))
    assert out.tolist() == [[1.0, 2.0, 3.5, 8.0]]
    out = bx.crop_boxes(XYXY, top=2, left=4, size=(3, 5))
    assert out.tolist() == [[0.0, 0.0, 3.0, 2.0]]
    assert bx.box_area(bx.crop_boxes(XYXY, top=5, left=0, size=(1, 10))).item() == 0


def test_resize_moves_boxes_with_the_pixels():
    mask = ec.boxes_to_masks([XYXY], (H, W)).float()
    up = F.interpolate(mask[None], scale_factor=(2, 3), mode="nearest")[0].bool()
    moved = bx.resize_boxes(XYXY, (H, W), (2 * H, 3 * W))
    assert torch.equal(ec.boxes_to_masks([moved], (2 * H, 3 * W)), up)


def test_letterbox_hand_values_and_pixels():
    out, scale, pad = bx.letterbox_boxes([[0.0, 0.0, 100.0, 50.0]], (50, 100), (64, 64))
    assert scale == pytest.approx(0.64)
    assert pad == (16, 0)
    assert out.tolist() == [[0.0, 16.0, 64.0, 48.0]]
    # integer-scale case: rasterise, scale the mask by 2, pad two rows on top -> same mask
    box = torch.tensor([[1.0, 0.0, 3.0, 1.0]])
    small = ec.boxes_to_masks([box], (2, 4))[0]
    lb, scale, (top, left) = bx.letterbox_boxes(box, (2, 4), (8, 8))
    assert (scale, top, left) == (2.0, 2, 0)
    big = small.repeat_interleave(2, 0).repeat_interleave(2, 1)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[top : top + 4, left : left + 8] = big
    assert torch.equal(ec.boxes_to_masks([lb], (8, 8))[0], expected)


def test_box_iou_hand_value():
    assert bx.box_iou([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]).item() == pytest.approx(1 / 7)


@pytest.mark.parametrize(
    "box, match",
    [
        ([float("nan"), 0.0, 1.0, 1.0], r"box 1 of image 0 .*NaN"),
        ([3.0, 0.0, 2.0, 1.0], r"box 1 of image 0 .*x1 <= x0"),
        ([0.0, 2.0, 1.0, 2.0], r"box 1 of image 0 .*y1 <= y0"),
        ([10.0, 0.0, 12.0, 2.0], r"box 1 of image 0 .*entirely outside"),
    ],
)
def test_invalid_boxes_raise_naming_box_and_image(box, match):
    good = [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(EmbedcamValueError, match=match):
        ec.boxes_to_masks([torch.tensor([good, box])], size=(H, W))


def test_invalid_box_names_later_image():
    with pytest.raises(EmbedcamValueError, match=r"box 0 of image 2 "):
        ec.boxes_to_masks([XYXY, XYXY, torch.tensor([[5.0, 5.0, 1.0, 6.0]])], size=(H, W))


def test_validate_boxes_without_size_accepts_outside():
    bx.validate_boxes([[100.0, 100.0, 200.0, 200.0]])
    with pytest.raises(EmbedcamValueError, match="box 0 "):
        bx.validate_boxes([[100.0, 100.0, 200.0, 200.0]], size=(10, 10))


def test_bad_shapes_and_sizes():
    with pytest.raises(ShapeError, match=r"\(\.\.\., 4\)"):
        bx.coco_to_xyxy([1.0, 2.0, 3.0])
    with pytest.raises(ShapeError, match=r"\(B, K, 4\)"):
        ec.boxes_to_masks(torch.zeros(3, 4), size=(H, W))
    with pytest.raises(ShapeError, match=r"image 0 must be \(K, 4\)"):
        ec.boxes_to_masks([torch.zeros(2, 2, 4)], size=(H, W))
    with pytest.raises(EmbedcamValueError, match=r"size must be an \(H, W\)"):
        ec.boxes_to_masks([XYXY], size=(0, 5))
    with pytest.raises(EmbedcamValueError, match=r"to_size must be"):
        bx.resize_boxes(XYXY, (6, 10), (6.5, 10))
