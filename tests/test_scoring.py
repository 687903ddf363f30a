import importlib.util
import math
import subprocess
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import embedcam as ec
from embedcam import scoring as sc
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from embedcam.scoring import _kernels as kernels
from embedcam.scoring import judge, records, scores

nan = float("nan")

# Hand-computed case on a non-square image (H=3, W=5) with an off-centre box [3, 1, 5, 3]
# (columns 3-4, rows 1-2). Swapping x and y would put the box at columns 1-2, rows 3-4.
MAP = torch.tensor(
    [
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 4.0],
            [0.0, 0.0, 2.0, 1.0, 3.0],
        ]
    ]
)
BOX = torch.tensor([[3.0, 1.0, 5.0, 3.0]])
REGION = ec.boxes_to_masks([BOX], size=(3, 5))


def close(t: torch.Tensor, expected: list[float]) -> bool:
    return torch.allclose(t.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_region_is_where_the_box_is():
    assert REGION[0].int().tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1],
        [0, 0, 0, 1, 1],
    ]


def test_hand_computed_scores():
    # box values 0 + 4 + 1 + 3 = 8 of a total 11; |B| = 4 of N = 15
    assert close(sc.area_fraction(MAP, REGION), [4 / 15])
    assert close(sc.energy_in_box(MAP, REGION), [8 / 11])
    assert close(sc.energy_lift(MAP, REGION), [(8 / 11) / (4 / 15)])
    # the maximum 4 is at (row 1, col 4), inside the box
    assert close(sc.pointing_game(MAP, REGION), [1.0])
    # top 4 of 4,3,2,1,1: 4 and 3 in B, then one of the two tied 1s (half of them in B)
    assert close(sc.rank_accuracy(MAP, REGION), [(2 + 0.5) / 4])
    # pairs (pos, neg): 4 and 3 beat all 11; 1 beats nine 0s, ties one 1; 0 ties nine 0s
    assert close(sc.pixel_auc(MAP, REGION), [(11 + 11 + 9.5 + 4.5) / 44])
    # R = {s >= 0.6}: 5 pixels, 3 of them in B
    assert close(sc.region_iou(MAP, REGION), [3 / (5 + 4 - 3)])
    assert close(sc.region_precision(MAP, REGION), [3 / 5])
    assert close(sc.region_recall(MAP, REGION), [3 / 4])
    # R is one 8-connected component with box [1, 1, 5, 3] (area 8), the box has area 4
    assert close(sc.wsol_box_iou(MAP, REGION), [4 / 8])
    # s > 0 on 5 pixels, 3 on the object
    assert close(sc.positive_evidence_share(MAP, REGION), [3 / 5])


def test_score_maps_record_matches_single_functions():
    maps = torch.cat([MAP, MAP.flip(-1), torch.zeros_like(MAP)])
    regions = REGION.expand(3, -1, -1).clone()
    rec = sc.score_maps(maps, regions, tolerance=2.0)
    assert isinstance(rec, sc.MapScores)
    singles = {
        "energy_in_box": sc.energy_in_box(maps, regions),
        "energy_lift": sc.energy_lift(maps, regions),
        "area_fraction": sc.area_fraction(maps, regions),
        "pointing_game": sc.pointing_game(maps, regions),
        "pointing_game_tolerant": sc.pointing_game(maps, regions, tolerance=2.0),
        "rank_accuracy": sc.rank_accuracy(maps, regions),
        "pixel_auc": sc.pixel_auc(maps, regions),
        "region_iou": sc.region_iou(maps, regions),
        "region_precision": sc.region_precision(maps, regions),
        "region_recall": sc.region_recall(maps, regions),
        "wsol_box_iou": sc.wsol_box_iou(maps, regions),
        "positive_share": sc.positive_evidence_share(maps, regions),
        "no_evidence": sc.no_evidence(maps),
    }
    got = rec.as_dict()
    assert list(got) == list(singles)
    for name, value in singles.items():
        assert got[name].shape == (3,), name
        assert torch.equal(got[name].isnan(), value.isnan()), name
        assert torch.equal(got[name].nan_to_num(-1), value.nan_to_num(-1)), name
    assert rec.no_evidence.tolist() == [False, False, True]
    no_auc = sc.score_maps(maps, regions, auc=False)
    assert no_auc.pixel_auc.isnan().all()
    with pytest.raises(Exception, match="cannot assign|frozen"):
        rec.energy_in_box = rec.area_fraction  # type: ignore[misc]


def test_flipped_map_scores():
    # mirrored left-right the rows are [0,0,0,0,0], [4,0,0,1,0], [3,1,2,0,0]: the box holds
    # only the 1 at (row 1, col 3), and the maximum 4 sits at (row 1, col 0)
    flipped = MAP.flip(-1)
    assert close(sc.energy_in_box(flipped, REGION), [1 / 11])
    assert close(sc.pointing_game(flipped, REGION), [0.0])


def test_pointing_tolerance_is_strict():
    maps = torch.zeros(1, 5, 5)
    maps[0, 0, 0] = 1.0
    regions = torch.zeros(1, 5, 5, dtype=torch.bool)
    regions[0, 0, 3] = True  # distance 3 from the maximum
    assert close(sc.pointing_game(maps, regions), [0.0])
    assert close(sc.pointing_game(maps, regions, tolerance=3.0), [0.0])
    assert close(sc.pointing_game(maps, regions, tolerance=3.01), [1.0])
    regions[0, 0, 3] = False
    regions[0, 2, 2] = True  # distance sqrt(8) = 2.83
    assert close(sc.pointing_game(maps, regions, tolerance=2.8), [0.0])
    assert close(sc.pointing_game(maps, regions, tolerance=2.9), [1.0])


def test_empty_region_gives_nan():
    regions = torch.zeros(1, 3, 5, dtype=torch.bool)
    rec = sc.score_maps(MAP, regions)
    assert rec.area_fraction.tolist() == [0.0]
    for name, value in rec.as_dict().items():
        if name not in ("area_fraction", "no_evidence"):
            assert math.isnan(value.item()), name
    assert not sc.judge_features(MAP, regions, ["paper", "energy", "pointing"], combine="any")


def test_all_zero_map_is_no_evidence_never_a_hit():
    maps = torch.zeros(1, 3, 5)
    rec = sc.score_maps(maps, REGION)
    assert rec.no_evidence.tolist() == [True]
    assert rec.pointing_game.tolist() == [0.0]  # Quantus 0.6 would call this a hit
    assert rec.pointing_game_tolerant.tolist() == [0.0]
    for name in ("energy_in_box", "energy_lift", "rank_accuracy", "pixel_auc"):
        assert math.isnan(getattr(rec, name).item()), name
    assert rec.region_iou.tolist() == [0.0]
    assert math.isnan(rec.region_precision.item())
    assert rec.region_recall.tolist() == [0.0]
    assert rec.wsol_box_iou.tolist() == [0.0]
    for criterion in sc.CRITERIA:
        assert not sc.judge_features(
            maps, REGION, criterion, positive_share=0.0, energy=0.0, region_iou=0.0
        )


def test_whole_image_region():
    regions = torch.ones(1, 3, 5, dtype=torch.bool)
    assert close(sc.energy_in_box(MAP, regions), [1.0])
    assert math.isnan(sc.pixel_auc(MAP, regions).item())
    assert close(sc.pointing_game(MAP, regions), [1.0])


def test_negatives_clamp_and_abs():
    maps = torch.tensor([[[-4.0, 1.0, 3.0]]])
    regions = torch.tensor([[[True, True, False]]])
    assert close(sc.energy_in_box(maps, regions), [1 / 4])
    assert close(sc.energy_in_box(maps, regions, negatives="abs"), [5 / 8])
    assert close(sc.pointing_game(maps, regions, negatives="abs"), [1.0])
    assert close(sc.positive_evidence_share(maps, regions), [1 / 2])
    with pytest.raises(ConfigurationError, match="negatives must be 'clamp' or 'abs'"):
        sc.energy_in_box(maps, regions, negatives="signed")  # type: ignore[arg-type]


def test_gt_boxes_option_for_wsol():
    maps = torch.zeros(1, 4, 8)
    maps[0, 0:2, 0:2] = 1.0
    regions = ec.boxes_to_masks(
        [torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]])], (4, 8)
    )
    # the two touching boxes merge into one component [0, 0, 4, 2]: IoU 0.5
    assert close(sc.wsol_box_iou(maps, regions), [0.5])
    gt = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]])]
    assert close(sc.wsol_box_iou(maps, regions, gt_boxes=gt), [1.0])
    with pytest.raises(ShapeError, match="one \\(K, 4\\) tensor per image"):
        sc.wsol_box_iou(maps, regions, gt_boxes=gt * 2)


def test_box_map_ceiling_hand_case():
    regions = torch.zeros(1, 8, 8, dtype=torch.bool)
    regions[0, :4, :4] = True
    # cell map [[1, 0], [0, 0]] upsampled x4: per-axis weights 1, 1, .875, .625, .375, .125, 0, 0
    # (sum 4, of which 3.5 inside the box), so E = 3.5^2 / 4^2
    assert close(sc.box_map_ceiling(regions, grid=(2, 2)), [3.5**2 / 16])
    # a single cell is also the best grid map here
    assert close(sc.box_map_ceiling(regions, grid=(2, 2), kind="best_cell"), [3.5**2 / 16])
    # full-resolution grid reproduces the box exactly
    assert close(sc.box_map_ceiling(regions, grid=(8, 8)), [1.0])


def test_box_map_ceiling_orders_and_errors():
    g = torch.Generator().manual_seed(1)
    boxes = []
    for _ in range(16):
        x0, y0 = (torch.rand(2, generator=g) * 30).tolist()
        boxes.append(torch.tensor([[x0, y0, x0 + 25, y0 + 30]]))
    regions = ec.boxes_to_masks(boxes, (64, 64))
    c4 = sc.box_map_ceiling(regions, (4, 4))
    c8 = sc.box_map_ceiling(regions, (8, 8))
    best4 = sc.box_map_ceiling(regions, (4, 4), kind="best_cell")
    assert (c8 > c4).all() and (best4 >= c4 - 1e-6).all()
    assert (c4 < 1).all()
    with pytest.raises(EmbedcamValueError, match="grid must be"):
        sc.box_map_ceiling(regions, (0, 4))
    with pytest.raises(ConfigurationError, match="kind must be"):
        sc.box_map_ceiling(regions, (4, 4), kind="max")  # type: ignore[arg-type]
    assert math.isnan(sc.box_map_ceiling(torch.zeros(1, 8, 8, dtype=torch.bool), (2, 2)).item())


# --- the judge -------------------------------------------------------------------------------


def test_judge_criteria_on_hand_case():
    # positive share 0.6, energy 8/11 = 0.727, pointing hit, region IoU 0.5, WSOL IoU 0.5
    assert sc.judge_features(MAP, REGION, "paper").tolist() == [True]  # share 0.6 >= 0.5
    assert sc.judge_features(MAP, REGION, "paper", positive_share=0.61).tolist() == [False]
    assert sc.judge_features(MAP, REGION).tolist() == [True]  # default: energy 0.727 >= 0.5
    assert sc.judge_features(MAP, REGION, energy=0.73).tolist() == [False]
    assert sc.judge_features(MAP, REGION, "energy", energy=0.72).tolist() == [True]
    assert sc.judge_features(MAP, REGION, "energy", energy=0.73).tolist() == [False]
    assert sc.judge_features(MAP, REGION, "pointing").tolist() == [True]
    assert sc.judge_features(MAP.flip(-1), REGION, "pointing").tolist() == [False]
    assert sc.judge_features(MAP, REGION, "region_iou", region_iou=0.5).tolist() == [True]
    assert sc.judge_features(MAP, REGION, "region_iou", region_iou=0.51).tolist() == [False]
    assert sc.judge_features(MAP, REGION, "wsol").tolist() == [True]
    assert sc.judge_features(MAP, REGION, "wsol", wsol_box_iou=0.6).tolist() == [False]


def test_judge_combinations():
    both = ["paper", "energy"]
    assert sc.judge_features(MAP, REGION, both, positive_share=0.7).tolist() == [False]
    assert sc.judge_features(MAP, REGION, both, positive_share=0.7, combine="any").tolist() == [
        True
    ]
    assert ec.judge_features(MAP, REGION, both).tolist() == [True]


def test_judge_errors():
    with pytest.raises(ConfigurationError, match="unknown criterion 'iou'"):
        sc.judge_features(MAP, REGION, "iou")
    with pytest.raises(ConfigurationError, match="at least one"):
        sc.judge_features(MAP, REGION, [])
    with pytest.raises(ConfigurationError, match="combine must be"):
        sc.judge_features(MAP, REGION, "paper", combine="most")  # type: ignore[arg-type]
    with pytest.raises(EmbedcamValueError, match="positive_share must be in"):
        sc.judge_features(MAP, REGION, positive_share=1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'shares'"):
        sc.judge_features(MAP, REGION, shares=0.5)


def test_criterion_type_lists_the_criteria():
    assert typing.get_args(sc.Criterion) == sc.CRITERIA
    assert sc.CRITERIA == ("paper", "energy", "pointing", "region_iou", "wsol")
    hints = typing.get_type_hints(sc.judge_features)
    assert hints["criterion"] == sc.Criterion | Sequence[sc.Criterion]


@pytest.mark.parametrize(
    ("criterion", "old", "new", "value", "verdict"),
    [
        # hand case: positive share 0.6, region IoU 0.5, WSOL IoU 0.5
        ("paper", "share", "positive_share", 0.61, False),
        ("paper", "share", "positive_share", 0.6, True),
        ("region_iou", "iou", "region_iou", 0.51, False),
        ("wsol", "box_iou", "wsol_box_iou", 0.6, False),
    ],
)
def test_judge_features_old_threshold_names_warn_and_work(criterion, old, new, value, verdict):
    with pytest.warns(DeprecationWarning, match=rf"\({old}=...\) is deprecated; use {new}="):
        got = sc.judge_features(MAP, REGION, criterion, **{old: value})
    assert got.tolist() == [verdict]
    assert sc.judge_features(MAP, REGION, criterion, **{new: value}).tolist() == [verdict]
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match=f"pass {new}= only"),
    ):
        sc.judge_features(MAP, REGION, criterion, **{old: value, new: 0.2})


def test_judge_old_field_names_warn_and_map_to_the_new_ones():
    with pytest.warns(DeprecationWarning, match=r"Judge\(share=...\) is deprecated"):
        j = ec.Judge(criterion="paper", share=0.61)
    assert j == ec.Judge(criterion="paper", positive_share=0.61)
    assert j.model_dump()["positive_share"] == 0.61 and "share" not in j.model_dump()
    assert j(MAP, REGION).tolist() == [False]  # positive share 0.6 < 0.61
    with pytest.warns(DeprecationWarning, match="region_iou"):
        assert ec.Judge(iou=0.3).region_iou == 0.3
    with pytest.warns(DeprecationWarning, match="wsol_box_iou"):
        assert ec.Judge(box_iou=0.4).wsol_box_iou == 0.4
    new = ec.Judge(positive_share=0.2, region_iou=0.3, wsol_box_iou=0.4)
    for old, value in (("share", 0.2), ("iou", 0.3), ("box_iou", 0.4)):
        with pytest.warns(DeprecationWarning, match=f"Judge.{old} is deprecated"):
            assert getattr(new, old) == value
    with pytest.raises(ConfigurationError, match="pass positive_share only"):
        ec.Judge(share=0.2, positive_share=0.3)
    with pytest.raises(ConfigurationError, match="unknown criterion 'iou'"):
        ec.Judge(criterion="iou")


def test_judge_and_single_pointing_game_default_to_strict():
    # the hand case's maximum (4.0 at row 1, col 4) is on the object; flipped, it lies at
    # column 0, three columns from the box: a miss when strict, a hit within 15 px
    flipped = MAP.flip(-1)
    assert sc.TORCHRAY_TOLERANCE == 15.0
    assert sc.pointing_game(flipped, REGION).tolist() == [0.0]
    assert ec.Judge(criterion="pointing")(flipped, REGION).tolist() == [False]
    assert sc.judge_features(flipped, REGION, "pointing").tolist() == [False]
    rec = sc.score_maps(flipped, REGION)
    assert (rec.pointing_game.tolist(), rec.pointing_game_tolerant.tolist()) == ([0.0], [1.0])
    tolerant = ec.Judge(criterion="pointing", tolerance=sc.TORCHRAY_TOLERANCE)
    assert tolerant(flipped, REGION).tolist() == [True]
    assert tolerant.from_scores({k: v.numpy() for k, v in rec.as_dict().items()}).tolist() == [True]


# --- bad inputs ------------------------------------------------------------------------------


def test_shape_mismatch():
    with pytest.raises(ShapeError, match="same \\(B, H, W\\) shape"):
        sc.energy_in_box(MAP, torch.zeros(1, 5, 3, dtype=torch.bool))


def test_maps_must_be_3d():
    with pytest.raises(ShapeError, match="must have shape \\(B, H, W\\)"):
        sc.energy_in_box(MAP[0], REGION[0])


def test_regions_must_be_bool():
    with pytest.raises(EmbedcamValueError, match="must be a bool tensor"):
        sc.rank_accuracy(MAP, REGION.float())


def test_nan_maps_rejected():
    bad = MAP.clone()
    bad[0, 0, 0] = nan
    with pytest.raises(EmbedcamValueError, match=r"maps\[0\] contains NaN"):
        sc.score_maps(bad, REGION)


def test_negative_tolerance_rejected():
    with pytest.raises(EmbedcamValueError, match="tolerance must be >= 0"):
        sc.pointing_game(MAP, REGION, tolerance=-1)


def test_bad_theta_rejected():
    with pytest.raises(EmbedcamValueError, match="theta must be in"):
        sc.region_iou(MAP, REGION, theta=0.0)


# --- agreement with Quantus 0.6 --------------------------------------------------------------


def _random_batch(seed: int, b: int = 12, h: int = 12, w: int = 16):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(b, h, w, generator=g) + 1e-3
    boxes = []
    for _ in range(b):
        x0 = float(torch.randint(0, w - 3, (1,), generator=g))
        y0 = float(torch.randint(0, h - 3, (1,), generator=g))
        bw = float(torch.randint(2, w - int(x0) + 1, (1,), generator=g))
        bh = float(torch.randint(2, h - int(y0) + 1, (1,), generator=g))
        boxes.append(torch.tensor([[x0, y0, x0 + bw, y0 + bh]]))
    return maps, ec.boxes_to_masks(boxes, (h, w))


def test_agreement_with_quantus():
    import quantus  # dev dependency, pinned to 0.6.0

    maps, regions = _random_batch(0)
    b = maps.shape[0]
    a = maps[:, None].numpy()
    s = regions[:, None].float().numpy()
    x = np.zeros((b, 3) + maps.shape[1:], dtype=np.float32)
    y = np.zeros(b, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = [
            (quantus.RelevanceMassAccuracy, sc.energy_in_box),
            (quantus.RelevanceRankAccuracy, sc.rank_accuracy),
            (quantus.AUC, sc.pixel_auc),
        ]
        for metric, ours in pairs:
            ref = metric(disable_warnings=True, abs=False, normalise=False)(
                model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=s
            )
            np.testing.assert_allclose(ours(maps, regions).numpy(), np.asarray(ref), atol=1e-5)


# --- properties ------------------------------------------------------------------------------

shapes = st.tuples(st.integers(2, 9), st.integers(2, 9))


@st.composite
def map_and_region(draw):
    h, w = draw(shapes)
    seed = draw(st.integers(0, 10_000))
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(1, h, w, generator=g)
    x0 = draw(st.integers(0, w - 1))
    y0 = draw(st.integers(0, h - 1))
    x1 = draw(st.integers(x0 + 1, w))
    y1 = draw(st.integers(y0 + 1, h))
    regions = ec.boxes_to_masks([torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)], (h, w))
    return maps, regions


@settings(max_examples=40, deadline=None)
@given(map_and_region(), st.floats(1e-3, 1e3))
def test_scores_invariant_to_positive_scaling(mr, c):
    maps, regions = mr
    a = sc.score_maps(maps, regions, tolerance=2.0).as_dict()
    b = sc.score_maps(maps * c, regions, tolerance=2.0).as_dict()
    for name in a:
        assert torch.allclose(
            a[name].double().nan_to_num(-7), b[name].double().nan_to_num(-7), atol=1e-5
        ), name


@settings(max_examples=40, deadline=None)
@given(map_and_region(), st.floats(1e-3, 1e3))
def test_uniform_map_scores_chance(mr, c):
    _, regions = mr
    maps = torch.full(regions.shape, c)
    area = sc.area_fraction(maps, regions)
    assert torch.allclose(sc.energy_in_box(maps, regions), area, atol=1e-6)
    assert torch.allclose(sc.rank_accuracy(maps, regions), area, atol=1e-6)
    auc = sc.pixel_auc(maps, regions)
    if bool(area < 1):
        assert torch.allclose(auc, torch.tensor([0.5]))
    else:
        assert auc.isnan().all()


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 10_000))
def test_whole_image_box_gives_energy_one(hw, seed):
    h, w = hw
    maps = torch.rand(1, h, w, generator=torch.Generator().manual_seed(seed))
    regions = ec.boxes_to_masks([torch.tensor([[0.0, 0.0, w, h]])], (h, w))
    assert torch.allclose(sc.energy_in_box(maps, regions), torch.ones(1))


# --- throughput smoke test -------------------------------------------------------------------


def test_benchmark_script_smoke(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scoring_speed.py"
    assert importlib.util.spec_from_file_location("scoring_speed", script) is not None
    out = subprocess.run(
        [sys.executable, str(script), "--n", "64", "--batch", "32", "--size", "32"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "maps/s" in out.stdout


# --- fast paths against the original straightforward implementations ------------------------
# The references below are the first implementations of these scores (a full sort or top-k,
# a per-image scikit-image labelling, a dense distance field), kept to pin the fast paths.


def _ref_rank(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    n_b = r.sum(1)
    desc = s.sort(dim=1, descending=True).values
    kth = desc.gather(1, (n_b - 1).clamp(min=0)[:, None])
    greater, tied = s > kth, s == kth
    n_greater = greater.sum(1).double()
    in_greater = (greater & r).sum(1).double()
    n_tied = tied.sum(1).double()
    in_tied = (tied & r).sum(1).double()
    k = n_b.double()
    acc = (in_greater + (k - n_greater) * in_tied / n_tied) / k
    acc[(n_b == 0) | (s.sum(1) == 0)] = nan
    return acc.float()


def _ref_auc(s: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    b, n = s.shape
    vals, order = s.sort(dim=1)
    pos = r.gather(1, order)
    idx = torch.arange(n).expand(b, n)
    starts = torch.ones(b, n, dtype=torch.bool)
    starts[:, 1:] = vals[:, 1:] != vals[:, :-1]
    ends = torch.ones(b, n, dtype=torch.bool)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, idx, 0).cummax(1).values
    last = torch.where(ends, idx, n - 1).flip(1).cummin(1).values.flip(1)
    midrank = (first + last).double() / 2 + 1
    n_pos = pos.sum(1).double()
    n_neg = n - n_pos
    auc = ((midrank * pos).sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0) | (s.sum(1) == 0)] = nan
    return auc.float()


def _ref_pointing(s3: torch.Tensor, regions: torch.Tensor, tolerance: float) -> torch.Tensor:
    b, h, w = s3.shape
    s, r = s3.flatten(1), regions.flatten(1)
    idx = s.argmax(1)
    py, px = (idx // w).float(), (idx % w).float()
    dy2 = (torch.arange(h).float()[None, :] - py[:, None]) ** 2
    dx2 = (torch.arange(w).float()[None, :] - px[:, None]) ** 2
    near = (dy2[:, :, None] + dx2[:, None, :]) < tolerance**2
    out = (near & regions).flatten(1).any(1).float()
    out[s.sum(1) == 0] = 0.0
    out[r.sum(1) == 0] = nan
    return out


def _ref_wsol(evidence: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    from scipy.ndimage import find_objects
    from skimage.measure import label

    from embedcam.boxes import box_iou

    out = torch.full((evidence.shape[0],), nan, dtype=torch.float64)
    for i, (e, reg) in enumerate(zip(evidence.numpy(), regions.numpy())):
        if not reg.any():
            continue
        lab = label(reg, connectivity=1)
        gt = torch.tensor(
            [[sx.start, sy.start, sx.stop, sy.stop] for sy, sx in find_objects(lab)],
            dtype=torch.float64,
        )
        lab = label(e, connectivity=2)
        if lab.max() == 0:
            out[i] = 0.0
            continue
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        comp = lab == counts.argmax()
        rows, cols = np.flatnonzero(comp.any(1)), np.flatnonzero(comp.any(0))
        pred = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float64)
        out[i] = box_iou(pred.expand_as(gt), gt).max()
    return out.float()


def _tricky_batch(seed: int, b: int = 40, h: int = 13, w: int = 17, dtype=torch.float32):
    """Maps with plateaus, exact ties, zero and negative areas; boxes and ragged masks."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(b, h, w, generator=g, dtype=dtype)
    maps[: b // 4] = maps[: b // 4].mul(2).round() / 2  # a few distinct values: many ties
    maps[b // 4 : b // 2] = maps[b // 4 : b // 2].clamp(min=0)  # zero plateaus
    maps[-1] = 0.0  # no evidence
    maps[-2] = 0.7  # uniform
    maps[-3, 0, 0] = -0.0
    regions = torch.rand(b, h, w, generator=g) < 0.3  # ragged masks, many components
    for i in range(b // 2):
        x0, y0 = (
            int(torch.randint(0, w - 1, (1,), generator=g)),
            int(torch.randint(0, h - 1, (1,), generator=g)),
        )
        regions[i] = False
        regions[i, y0 : y0 + 1 + i % 6, x0 : x0 + 2 + i % 5] = True
    regions[-4] = False  # empty region
    regions[-5] = True  # whole image
    return maps, regions


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(-7), b.nan_to_num(-7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("negatives", ["clamp", "abs"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_paths_equal_reference(seed, negatives, dtype):
    maps, regions = _tricky_batch(seed, dtype=dtype)
    s3 = maps.clamp(min=0) if negatives == "clamp" else maps.abs()
    s, r = s3.flatten(1), regions.flatten(1)
    assert _same(sc.rank_accuracy(maps, regions, negatives=negatives), _ref_rank(s, r))
    assert _same(sc.pixel_auc(maps, regions, negatives=negatives), _ref_auc(s, r))
    for tol in (0.5, 1.0, 2.0, 3.3, 15.0, 100.0):
        got = sc.pointing_game(maps, regions, tolerance=tol, negatives=negatives)
        assert _same(got, _ref_pointing(s3, regions, tol)), tol
    for theta in (0.15, 0.6):
        evidence = ec.masks.relative_region(s3, theta)
        got = sc.wsol_box_iou(maps, regions, theta=theta, negatives=negatives)
        assert _same(got, _ref_wsol(evidence, regions)), theta
    rec = sc.score_maps(maps, regions, negatives=negatives)
    assert _same(rec.rank_accuracy, _ref_rank(s, r))
    assert _same(rec.pixel_auc, _ref_auc(s, r))
    inside = torch.where(r, s, 0).sum(1).double()
    energy = inside / s.sum(1).double()
    energy[(r.sum(1) == 0) | (s.sum(1) == 0)] = nan
    assert _same(rec.energy_in_box, energy.float())


def test_auc_torch_path_equals_numpy_path():
    # the sort-with-mid-ranks path serves tensors on accelerators
    maps, regions = _tricky_batch(3)
    s, r = maps.clamp(min=0).flatten(1), regions.flatten(1)
    fast = torch.from_numpy(kernels.auc_pairs(s.numpy(), r.numpy()))
    assert torch.equal(fast, kernels.auc_pairs_torch(s, r))


# --- package layout ------------------------------------------------------------------------


def test_scoring_and_masks_import_no_other_modules_private_names():
    # private modules (embedcam._regions, embedcam.scoring._kernels) are fine; their names are
    # not underscored, so no module reaches into another module's privates
    import ast

    root = Path(sc.__file__).parent.parent
    files = [*sorted((root / "scoring").glob("*.py")), root / "masks.py", root / "_regions.py"]
    assert len(files) == 8
    private = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embedcam"):
                private += [
                    f"{path.name}: {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                    and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                ]
    assert private == []


def test_package_reexports_the_public_names():
    assert sc.__all__ == [
        *("Negatives", "Criterion", "MapScores", "area_fraction", "energy_in_box"),
        *("energy_lift", "pointing_game", "rank_accuracy", "pixel_auc", "region_iou"),
        *("region_precision", "region_recall", "wsol_box_iou", "positive_evidence_share"),
        *("no_evidence", "box_map_ceiling", "baseline_scores", "Baselines"),
        *("centred_gaussian_maps", "GAUSSIAN_SIGMA", "score_maps", "judge_features", "CRITERIA"),
        "TORCHRAY_TOLERANCE",
    ]
    assert sc.score_maps is records.score_maps and sc.judge_features is judge.judge_features
    assert sc.energy_in_box is scores.energy_in_box and ec.judge_features is judge.judge_features


def test_importing_scoring_and_masks_loads_neither_scipy_nor_skimage():
    code = (
        "import sys, embedcam.scoring, embedcam.masks; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scipy', 'skimage'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
