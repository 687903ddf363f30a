"""Hostile values: empty batches, float extremes, NaN/inf, malformed files and configs.

Every case gets either a defined, hand-checked result or an embedcam error whose message names
the argument (or file) and what is wrong; never a raw numpy/torch/pydantic exception or a silent
NaN.
"""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
import torch
from torch import nn

import embedcam as ec
from embedcam import boxes as bx
from embedcam import classify as cl
from embedcam import interventions as iv
from embedcam import masks as mk
from embedcam import scoring as sc
from embedcam import stats as st
from embedcam.audit import AuditResult, Classification, PerImage, RecipeSummary
from embedcam.embedding import EmbeddingHealth
from embedcam.errors import (
    ConfigurationError,
    DataError,
    EmbedcamValueError,
    ShapeError,
)
from embedcam.pipeline import DatasetRecords, as_recipes

# ---------------------------------------------------------------- scoring: empty batches


def test_score_maps_empty_batch_returns_empty_record():
    maps = torch.zeros(0, 4, 5)
    regions = torch.zeros(0, 4, 5, dtype=torch.bool)
    for policy in ("positive", "relative", "otsu", "topk"):
        rec = sc.score_maps(maps, regions, policy=policy)
        for name, value in rec.as_dict().items():
            assert value.shape == (0,), name
        assert rec.no_evidence.dtype == torch.bool
        assert rec.energy_in_box.dtype == torch.float32
    assert sc.wsol_box_iou(maps, regions).shape == (0,)
    assert sc.wsol_box_iou(maps, regions, gt_boxes=[]).shape == (0,)
    verdict = sc.judge_features(maps, regions, list(sc.CRITERIA), combine="any")
    assert verdict.shape == (0,) and verdict.dtype == torch.bool
    for fn in (sc.energy_in_box, sc.pointing_game, sc.rank_accuracy, sc.region_iou):
        assert fn(maps, regions).shape == (0,)


def test_zero_pixel_maps_score_like_an_empty_region():
    maps = torch.zeros(2, 0, 3)
    regions = torch.zeros(2, 0, 3, dtype=torch.bool)
    assert torch.isnan(sc.wsol_box_iou(maps, regions)).all()
    rec = sc.score_maps(maps, regions)
    assert torch.isnan(rec.energy_in_box).all() and torch.isnan(rec.wsol_box_iou).all()
    assert rec.area_fraction.tolist() == [0.0, 0.0]
    assert mk.largest_component_box(regions).isnan().all()


# ---------------------------------------------------------------- scoring: float extremes


def test_energy_in_box_does_not_overflow_near_float32_max():
    small = torch.tensor([[[1.0, 3.0], [0.0, 4.0]]])
    one = torch.tensor([[[False, True], [False, False]]])
    big = small * (3e38 / 4)  # finite float32, but the map's sum overflows float32
    assert torch.isfinite(big).all()
    # hand-computed: 3 / (1 + 3 + 0 + 4)
    assert sc.energy_in_box(small, one).item() == pytest.approx(0.375)
    assert sc.energy_in_box(big, one).item() == pytest.approx(0.375)
    assert sc.score_maps(big, one).energy_in_box.item() == pytest.approx(0.375)
    assert sc.energy_lift(big, one).item() == pytest.approx(1.5)
    # two cells of a constant 3e38 map: inside and total both overflow (inf / inf)
    flat = torch.full((1, 2, 2), 3e38)
    two = torch.tensor([[[True, True], [False, False]]])
    assert sc.energy_in_box(flat, two).item() == pytest.approx(0.5)
    assert sc.judge_features(flat, two).tolist() == [True]
    # float64 maps near their own maximum, and the signed variant
    huge = torch.full((1, 2, 2), 1e308, dtype=torch.float64)
    assert sc.energy_in_box(huge, one).item() == pytest.approx(0.25)
    assert sc.energy_in_box(-big, one, negatives="abs").item() == pytest.approx(0.375)


def test_otsu_region_of_a_huge_range_equals_the_scaled_map():
    small = torch.tensor([[[-3.0, 3.0, 0.5, 2.0]]])
    big = small * 1e38
    expected = mk.otsu_region(small)
    # Otsu splits the outlier -3 from {0.5, 2, 3}: between-class variance 0.25 * 0.75 * (29/6)^2
    # beats the split {-3, 0.5} | {2, 3} with 0.25 * 3.75^2
    assert expected.tolist() == [[[False, True, True, True]]]
    assert torch.equal(mk.otsu_region(big), expected)


def test_nan_maps_and_bad_regions_are_named():
    maps = torch.rand(3, 2, 2)
    maps[1, 0, 0] = float("nan")
    maps[1, 1, 1] = float("inf")
    regions = torch.ones(3, 2, 2, dtype=torch.bool)
    with pytest.raises(EmbedcamValueError, match=r"maps\[1\] .*1 NaN and 1 infinite"):
        sc.energy_in_box(maps, regions)
    with pytest.raises(EmbedcamValueError, match="regions must be a bool"):
        sc.score_maps(torch.rand(1, 2, 2), torch.full((1, 2, 2), 0.5))
    with pytest.raises(ShapeError, match="same"):
        sc.pointing_game(torch.rand(2, 2, 2), torch.ones(3, 2, 2, dtype=torch.bool))


def test_wsol_rejects_nan_ground_truth_boxes():
    maps = torch.zeros(1, 4, 4)
    maps[0, :2, :2] = 1.0
    regions = torch.zeros(1, 4, 4, dtype=torch.bool)
    regions[0, :2, :4] = True
    assert sc.wsol_box_iou(maps, regions, gt_boxes=[torch.tensor([[0.0, 0, 4, 2]])]).item() == 0.5
    with pytest.raises(EmbedcamValueError, match=r"gt_boxes\[0\].*NaN"):
        sc.wsol_box_iou(maps, regions, gt_boxes=[torch.tensor([[0.0, float("nan"), 4, 2]])])


# ---------------------------------------------------------------- masks and interventions


def _images_with_bad_values() -> torch.Tensor:
    x = torch.rand(2, 3, 2, 2)
    x[0, 0, 0, 0] = float("nan")
    x[1, 2, 1, 1] = float("nan")
    x[1, 1, 0, 1] = float("-inf")
    return x


def test_darken_and_overlay_reject_non_finite_images():
    maps = torch.tensor([[[0.0, 1.0], [0.5, 0.0]]] * 2)
    with pytest.raises(EmbedcamValueError, match=r"images contains 2 NaN and 1 infinite"):
        mk.darken(_images_with_bad_values(), maps)
    with pytest.raises(EmbedcamValueError, match=r"images contains 2 NaN and 1 infinite"):
        mk.overlay(_images_with_bad_values(), maps)
    # an integer image would be truncated to 0 by the 0.25 gain: refused, not silently black
    with pytest.raises(EmbedcamValueError, match="images must be a float tensor"):
        mk.darken(torch.full((1, 1, 1, 2), 200, dtype=torch.uint8), torch.tensor([[[0.0, 1.0]]]))
    out = mk.darken(torch.full((1, 1, 1, 2), 200.0), torch.tensor([[[0.0, 1.0]]]), factor=0.25)
    assert out.tolist() == [[[[50.0, 200.0]]]]


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, m: iv.only_bg(x, m),
        lambda x, m: iv.only_fg(x, m),
        lambda x, m: iv.remove_objects(x, m),
        lambda x, m: iv.paste_objects(x, m, torch.zeros_like(x)),
        lambda x, m: iv.mix_backgrounds(x, m, torch.tensor([1, 0])),
        lambda x, m: iv.region_noise(x, m, "bg"),
        lambda x, m: iv.mixed_rand(x, m, torch.tensor([0, 1]))[0],
    ],
)
def test_interventions_reject_non_finite_images(fn):
    masks = torch.zeros(2, 2, 2, dtype=torch.bool)
    masks[:, 0, 0] = True
    with pytest.raises(EmbedcamValueError, match=r"images contains 2 NaN and 1 infinite"):
        fn(_images_with_bad_values(), masks)


def test_intervention_arguments():
    x = torch.rand(2, 1, 2, 2)
    m = torch.zeros(2, 2, 2, dtype=torch.bool)
    m[:, 0, 0] = True
    bad_bg = torch.zeros_like(x)
    bad_bg[0, 0, 1, 1] = float("nan")
    with pytest.raises(EmbedcamValueError, match="backgrounds contains 1 NaN"):
        iv.paste_objects(x, m, bad_bg)
    with pytest.raises(ShapeError, match="backgrounds must be a"):
        iv.paste_objects(x, m, [1.0, 2.0])
    with pytest.raises(ConfigurationError, match="rms must be a finite number >= 0"):
        iv.region_noise(x, m, "fg", rms=float("nan"))
    with pytest.raises(EmbedcamValueError, match="fill must be a finite number"):
        iv.only_bg(x, m, fill=float("nan"))
    with pytest.raises(EmbedcamValueError, match="masks must be bool"):
        iv.only_fg(x, m.float() * 0.5)
    assert iv.only_bg(x, m)[:, 0, 0, 0].tolist() == [0.0, 0.0]


# ---------------------------------------------------------------- stats


def test_bootstrap_rejects_infinite_and_non_numeric_values():
    with pytest.raises(EmbedcamValueError, match=r"values_a.*1 infinite"):
        st.paired_bootstrap_interval([1.0, math.inf, 0.0], [0.0, 0.0, 1.0])
    with pytest.raises(EmbedcamValueError, match=r"values_b.*1 NaN"):
        st.paired_bootstrap_interval([1.0, 0.0], [math.nan, 0.0])
    with pytest.raises(EmbedcamValueError, match="must hold numbers"):
        st.paired_bootstrap_interval(["a", "b"], ["c", "d"])
    with pytest.raises(EmbedcamValueError, match="n_resamples"):
        st.paired_bootstrap_interval([1.0, 0.0], [0.0, 0.0], n_resamples=math.nan)
    est, lo, hi = st.paired_bootstrap_interval([1.0, 1.0], [0.0, 0.0], n_resamples=100)
    assert (est, lo, hi) == (1.0, 1.0, 1.0)


def test_stats_counts_and_p_values_that_are_not_numbers():
    for k, n in [(math.nan, 3), (1, math.inf), ("a", 3), (None, 3)]:
        with pytest.raises(EmbedcamValueError, match="integer counts"):
            st.wilson_interval(k, n)
        with pytest.raises(EmbedcamValueError, match="integer counts"):
            st.clopper_pearson_interval(k, n)
    with pytest.raises(EmbedcamValueError, match="non-negative integers"):
        st.mcnemar_exact(math.nan, 1)
    with pytest.raises(EmbedcamValueError, match="confidence must be a number"):
        st.wilson_interval(1, 2, confidence="high")
    with pytest.raises(EmbedcamValueError, match="p-values must be numbers"):
        st.holm_correction(["a", 0.1])
    with pytest.raises(ShapeError, match="1-D"):
        st.holm_correction([[0.1, 0.2]])
    with pytest.raises(EmbedcamValueError, match=r"p-values must be in \[0, 1\]"):
        st.holm_correction([0.1, math.nan])


def test_stats_documented_edge_values():
    with pytest.raises(EmbedcamValueError, match="n > 0"):
        st.wilson_interval(0, 0)
    with pytest.raises(EmbedcamValueError, match="empty"):
        st.mcnemar([], [])
    with pytest.raises(EmbedcamValueError, match="empty"):
        st.cohen_kappa([], [])
    with pytest.raises(EmbedcamValueError, match="empty"):
        st.cochran_q(np.zeros((0, 3), dtype=bool))
    assert st.mcnemar_exact(0, 0).p_value == 1.0
    assert st.holm_correction([]) == []
    assert st.cochran_q([[1, 1, 1], [0, 0, 0]]) == (0.0, 2, 1.0)
    agree = st.cohen_kappa([1, 1, 1], [1, 1, 1])  # both raters constant: kappa undefined
    assert math.isnan(agree.kappa) and agree.sensitivity == 1.0 and math.isnan(agree.specificity)
    assert st.cohen_kappa([1, 1, 0], [1, 1, 1]).kappa == 0.0  # one constant rater: p_e < 1


# ---------------------------------------------------------------- centroid files


def _payload(**changes):
    p = {
        "format": "embedcam.ClassCentroids/1",
        "centroids": torch.eye(3),
        "counts": torch.ones(3, dtype=torch.int64),
        "normalized": False,
        "num_classes": 3,
        "dim": 3,
        "metadata": {},
    }
    for k, v in changes.items():
        if v is ...:
            del p[k]
        else:
            p[k] = v
    return p


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"counts": ...}, r"missing key\(s\) \['counts'\]"),
        ({"centroids": "abc"}, "centroids must be a tensor, got str"),
        ({"centroids": torch.zeros(3, 3, 1)}, r"centroids must be 2-D \(C, D\), got \(3, 3, 1\)"),
        (
            {"centroids": torch.full((3, 3), math.nan)},
            r"centroids have NaN or infinite.*\[0, 1, 2\]",
        ),
        ({"centroids": torch.eye(3, dtype=torch.int64)}, "centroids must be floating"),
        ({"counts": torch.ones(2, dtype=torch.int64)}, r"counts must be \(3,\)"),
        ({"counts": torch.ones(3)}, "counts must be integer"),
        ({"counts": torch.tensor([1, -1, 1])}, "negative"),
        ({"num_classes": "3"}, "num_classes must be an int"),
        ({"normalized": "no"}, "normalized must be a bool"),
        ({"metadata": [1, 2]}, "metadata must be a dict"),
    ],
)
def test_malformed_centroid_files(tmp_path, changes, match):
    path = tmp_path / "c.pt"
    torch.save(_payload(**changes), path)
    with pytest.raises(DataError, match=match) as info:
        ec.ClassCentroids.load(path)
    assert str(path) in str(info.value)


def test_unreadable_centroid_files(tmp_path):
    good = tmp_path / "good.pt"
    ec.ClassCentroids(torch.eye(3), torch.ones(3, dtype=torch.int64)).save(good)
    data = good.read_bytes()
    cases = {
        "empty.pt": (b"", r"is empty \(0 bytes\)"),
        "text.pt": (b"hello, not a tensor file", "not a torch file"),
        "cut.pt": (data[: len(data) // 2], "truncated or corrupt"),
    }
    for name, (content, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(DataError, match=match) as info:
            ec.ClassCentroids.load(p)
        assert str(p) in str(info.value)
    # weights_only loading refuses arbitrary pickled objects
    evil = tmp_path / "evil.pt"
    torch.save({"format": "embedcam.ClassCentroids/1", "obj": fractions.Fraction(1, 3)}, evil)
    with pytest.raises(DataError, match="weights_only"):
        ec.ClassCentroids.load(evil)
    assert ec.ClassCentroids.load(good).centroids.equal(torch.eye(3))


# ---------------------------------------------------------------- recipes, judge, configs


def test_recipe_lists_and_judge_settings():
    with pytest.raises(ConfigurationError, match="recipes is empty"):
        as_recipes([])
    with pytest.raises(ConfigurationError, match="recipes must be a Recipe or a list"):
        as_recipes(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="recipes must be a Recipe or a list"):
        as_recipes("centroid/layer4/gradcam")  # type: ignore[arg-type]
    r = ec.Recipe(layer="1")
    with pytest.raises(ConfigurationError, match=r"repeated: \['centroid/1/gradcam'\]"):
        as_recipes([r, ec.Recipe(layer="1")])
    with pytest.raises(ConfigurationError, match="Recipe.parse needs a string"):
        ec.Recipe.parse(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="energy"):
        ec.Judge(energy=2.0)
    with pytest.raises(ConfigurationError, match="unknown criterion 'bogus'"):
        ec.Judge(criterion="bogus")
    with pytest.raises(ConfigurationError, match="at least one"):
        ec.Judge(criterion=())
    with pytest.raises(DataError, match="no column 'energy_in_box'"):
        ec.Judge().from_scores({"no_evidence": np.zeros(2)})
    scores = {"energy_in_box": np.array([0.6, 0.4, np.nan]), "no_evidence": np.zeros(3)}
    assert ec.Judge().from_scores(scores).tolist() == [True, False, False]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.parametrize(
    "content, match",
    [
        (b"\xff\xfe\x00{", "cannot read"),
        (b"[" * 100_000, "cannot read"),
        (b'{"schema": "embedcam.records/1", "key": ', "cannot read"),
        (b"[1, 2, 3]", "not a records manifest"),
    ],
)
def test_corrupt_records_manifest_is_a_data_error(tmp_path, content, match):
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    (tmp_path / "_manifest.json").write_bytes(content)
    cents = ec.ClassCentroids.fit(_net(), [(images, labels)], progress=False)
    with pytest.raises(DataError, match=match) as info:
        ec.explain_dataset(
            _net(), [(images, labels)], cents, ec.Recipe(layer="1"), out=tmp_path, progress=False
        )
    assert "_manifest.json" in str(info.value)


def test_corrupt_records_part_names_the_file(tmp_path):
    (tmp_path / "part-000000.parquet").write_bytes(b"PAR1 truncated")
    recs = DatasetRecords(tmp_path, [ec.Recipe(layer="1")], 1, 1)
    with pytest.raises(DataError, match="part-000000.parquet"):
        recs.table()


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00\x01", b"[" * 100_000, b'{"name": "x", ', b'{"name": 3}', b""],
)
def test_corrupt_audit_results_are_data_errors(tmp_path, content):
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read audit results") as info:
        AuditResult.load_json(path)
    assert str(path) in str(info.value)


def _fake(name: str, recipes: bool = True) -> AuditResult:
    return AuditResult(
        name=name,
        classes=["a", "b"],
        classification=Classification(
            classifier="knn", k=1, images=2, macro_f1=1.0, accuracy=1.0, errors=0
        ),
        health=EmbeddingHealth(
            images=2, dim=2, effective_rank=2.0, mean_pairwise_cosine=0.0, collapsed=False
        ),
        recipes=[
            RecipeSummary(
                recipe=ec.Recipe(layer="x", name="r"), images=2, mean_score=0.5, empty_rate=0.0
            )
        ]
        if recipes
        else [],
        judge=ec.Judge(),
        per_image=PerImage(ids=["0", "1"], labels=[0, 1], pred=[0, 0], verdict={"r": [True] * 2}),
    )


def test_compare_hostile_results():
    with pytest.raises(ConfigurationError, match="no recipes"):
        ec.compare([_fake("a", recipes=False), _fake("b", recipes=False)])
    with pytest.raises(ConfigurationError, match="AuditResult"):
        ec.compare([_fake("a"), "b"])  # type: ignore[list-item]
    short = _fake("b")
    short.per_image.pred = [0]
    with pytest.raises(DataError, match="audit 'b' is inconsistent"):
        ec.compare([_fake("a"), short])
    assert ec.compare([_fake("a"), _fake("b")]).hard_images == [1]


def test_audit_class_names_must_cover_the_classes():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 2])
    data = [(images, labels)]
    with pytest.raises(ConfigurationError, match=r"class_names has 2 names but .*\(3 classes\)"):
        ec.audit(
            _net(), data, data, ec.Recipe(layer="1"), class_names=["a", "b"], k=1, progress=False
        )
    with pytest.raises(ConfigurationError, match="class_names must be a list"):
        ec.audit(_net(), data, data, ec.Recipe(layer="1"), class_names="abc", k=1, progress=False)


# ---------------------------------------------------------------- classify and boxes


def test_classify_hostile_inputs():
    gallery, glabels = torch.eye(2), torch.tensor([0, 1])
    assert cl.knn_predict(torch.zeros(0, 2), gallery, glabels, k=1).tolist() == []
    assert cl.knn_predict(torch.zeros(0, 2), gallery, glabels, k=1).dtype == torch.int64
    assert cl.nearest_centroid_predict(torch.zeros(0, 2), gallery).shape == (0,)
    # a tiny but non-zero embedding is a direction, not a zero vector
    assert cl.knn_predict(torch.tensor([[1e-30, 0.0]]), gallery, glabels, k=1).tolist() == [0]
    assert cl.nearest_centroid_predict(torch.tensor([[0.0, 1e-30]]), gallery).tolist() == [1]
    with pytest.raises(EmbedcamValueError, match="chunk_size"):
        cl.knn_predict(gallery, gallery, glabels, k=1, chunk_size=0)
    with pytest.raises(ShapeError, match="gallery_labels must be a"):
        cl.knn_predict(gallery, gallery, [0, 1], k=1)  # type: ignore[arg-type]
    with pytest.raises(EmbedcamValueError, match="pred must hold integer"):
        cl.evaluate(torch.tensor([0.5, 1.7]), torch.tensor([0, 1]), 2)


def test_boxes_hostile_inputs():
    with pytest.raises(EmbedcamValueError, match="size must be an"):
        bx.boxes_to_masks([[0.0, 0.0, 1.0, 1.0]], size=(math.inf, 3))
    for bad in ("abcd", [[1, 2, 3, 4], [1, 2]], None):
        with pytest.raises(EmbedcamValueError, match="boxes must be numbers"):
            bx.as_boxes(bad)  # type: ignore[arg-type]
    with pytest.raises(EmbedcamValueError, match="top and left must be finite"):
        bx.crop_boxes([0.0, 0.0, 2.0, 2.0], top=math.nan, left=0, size=(4, 4))
    with pytest.raises(EmbedcamValueError, match=r"box 0 of image 0 .*NaN"):
        bx.boxes_to_masks([[math.nan, 0.0, 1.0, 1.0]], size=(2, 2))
    assert bx.crop_boxes([4.0, 2.0, 10.0, 6.0], top=1, left=5, size=(4, 4)).tolist() == [
        0.0,
        1.0,
        4.0,
        4.0,
    ]
