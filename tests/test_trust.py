"""Trust checks: deletion/insertion by hand, map similarity, randomisation and specificity."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import embedcam as ec
from embedcam import trust
from embedcam.cam import register_method, unregister_method
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError


def _linear_net() -> nn.Sequential:
    # e = (x0 + 1, x1 + 1) for a 1-channel 1 x 2 image
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(2))
        net[1].bias.fill_(1.0)
    return net.eval()


X = torch.tensor([[[[3.0, 4.0]]]])
REF = ec.ReferenceTarget(torch.tensor([1.0, 0.0]))
MAP = torch.tensor([[[0.0, 1.0]]])  # pixel 1 first


def test_deletion_and_insertion_by_hand():
    # deletion, black: (3, 4) -> (3, 0) -> (0, 0); e = x + 1; score = e0 / |e|
    # 4/sqrt(41) = 0.62470, 4/sqrt(17) = 0.97014, 1/sqrt(2) = 0.70711
    # insertion: (0, 0) -> (0, 4) -> (3, 4): 0.70711, 1/sqrt(26) = 0.19612, 0.62470
    f = trust.deletion_insertion(
        _linear_net(), X, MAP, REF, steps=2, imputation="black", random_baseline=False
    )
    d = [4 / math.sqrt(41), 4 / math.sqrt(17), 1 / math.sqrt(2)]
    i = [1 / math.sqrt(2), 1 / math.sqrt(26), 4 / math.sqrt(41)]
    torch.testing.assert_close(f.deletion, torch.tensor([d]))
    torch.testing.assert_close(f.insertion, torch.tensor([i]))
    torch.testing.assert_close(f.fractions, torch.tensor([0.0, 0.5, 1.0]))
    # trapezoid over [0, 1]: ((d0 + d1) / 2 + (d1 + d2) / 2) / 2
    assert f.deletion_auc.item() == pytest.approx((d[0] + 2 * d[1] + d[2]) / 4, abs=1e-6)
    assert f.insertion_auc.item() == pytest.approx((i[0] + 2 * i[1] + i[2]) / 4, abs=1e-6)
    assert f.random_deletion_auc is None and "Faithfulness(images=1" in repr(f)


def test_the_other_order_and_the_random_baseline():
    # pixel 0 first: deletion (3, 4) -> (0, 4) -> (0, 0): 0.62470, 1/sqrt(26), 0.70711
    f = trust.deletion_insertion(
        _linear_net(), X, 1 - MAP, REF, steps=2, imputation="black", random_baseline=True
    )
    torch.testing.assert_close(
        f.deletion, torch.tensor([[4 / math.sqrt(41), 1 / math.sqrt(26), 1 / math.sqrt(2)]])
    )
    # the random order is one of the two orders: its AUC is one of the two AUCs
    aucs = {round(float(f.deletion_auc), 5), 0.81804}
    assert round(float(f.random_deletion_auc), 5) in aucs


def test_a_faithful_map_beats_random_and_packing_does_not_matter():
    # the embedding reads only the left half of the image: a map of the left half is faithful
    torch.manual_seed(0)

    class LeftHalf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left = x[..., : x.shape[-1] // 2].mean(dim=(2, 3))
            return torch.cat([left, torch.ones(x.shape[0], 1)], dim=1)

    images = torch.rand(6, 3, 8, 8) + 0.5
    maps = torch.zeros(6, 8, 8)
    maps[..., :4] = torch.rand(6, 8, 4) + 1.0
    with torch.no_grad():
        target = ec.ReferenceTarget(LeftHalf()(images))
    f = trust.deletion_insertion(LeftHalf(), images, maps, target, steps=8, imputation="black")
    assert (f.deletion_auc < f.random_deletion_auc).all()
    assert (f.insertion_auc > f.random_insertion_auc).all()
    for size in (1, 6, 13):
        g = trust.deletion_insertion(
            LeftHalf(), images, maps, target, steps=8, imputation="black", batch_size=size
        )
        torch.testing.assert_close(g.deletion, f.deletion)
        torch.testing.assert_close(g.insertion, f.insertion)
        torch.testing.assert_close(g.random_insertion_auc, f.random_insertion_auc)


def test_imputation_by_hand():
    x = torch.tensor([[[[1.0, 3.0, 5.0, 7.0]]]])
    removed = torch.tensor([[[False, True, False, False]]])
    # mean: the image mean 4; black: fill; kept pixels unchanged
    assert trust.impute(x, removed, "mean").tolist() == [[[[1.0, 4.0, 5.0, 7.0]]]]
    assert trust.impute(x, removed, "black", fill=-2.0).tolist() == [[[[1.0, -2.0, 5.0, 7.0]]]]
    # neighbours: the Gaussian-weighted mean of the kept pixels; with a tiny sigma only the two
    # direct neighbours count, equally: (1 + 5) / 2
    n = trust.impute(x, removed, "neighbours", sigma=0.3)
    assert n[0, 0, 0, 1].item() == pytest.approx(3.0, abs=1e-4)
    # a blur keeps a constant image constant
    const = torch.full((2, 3, 5, 6), 0.25)
    full = torch.ones(2, 5, 6, dtype=torch.bool)
    torch.testing.assert_close(trust.impute(const, full, "blur", sigma=2.0), const)
    torch.testing.assert_close(trust.impute(const, full, "neighbours", sigma=2.0), const)
    with pytest.raises(ConfigurationError, match="imputation"):
        trust.impute(x, removed, "zeros")  # type: ignore[arg-type]
    with pytest.raises(ShapeError):
        trust.impute(x, removed[0], "mean")


def test_deletion_bad_inputs():
    with pytest.raises(ShapeError, match="input resolution"):
        trust.deletion_insertion(_linear_net(), X, torch.zeros(1, 2, 2), REF)
    with pytest.raises(ConfigurationError, match="steps"):
        trust.deletion_insertion(_linear_net(), X, MAP, REF, steps=0)
    with pytest.raises(ConfigurationError, match="imputation"):
        trust.deletion_insertion(_linear_net(), X, MAP, REF, imputation="grey")  # type: ignore
    with pytest.raises(ShapeError, match="built for 2 images"):
        trust.deletion_insertion(
            _linear_net(), X, MAP, ec.ReferenceTarget(torch.ones(2, 2)), steps=2
        )


def test_rank_correlation_agrees_with_scipy_and_top_overlap():
    from scipy.stats import spearmanr

    torch.manual_seed(1)
    a, b = torch.randn(5, 7, 7), torch.randn(5, 7, 7)
    b[2] = a[2] * 3 + 1
    ours = trust.rank_correlation(a, b)
    for i in range(5):
        ref = spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert ours[2].item() == pytest.approx(1.0)
    assert torch.isnan(trust.rank_correlation(torch.ones(1, 4), torch.rand(1, 4))).all()
    assert trust.top_overlap(a, a).tolist() == [1.0] * 5
    with pytest.raises(ShapeError):
        trust.rank_correlation(a, b[:2])


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    ).eval()


def test_a_map_independent_of_the_weights_fails_randomisation():
    # the "map" is the sum of the input channels: no weight can change it
    register_method("input-sum", lambda acts, grads: acts.sum(dim=1))
    try:
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Identity(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        ).eval()
        cam = ec.EmbeddingCAM(net, "0", method="input-sum")
        r = trust.randomization_check(
            cam, torch.rand(3, 3, 8, 8), ec.ReferenceTarget(torch.ones(4))
        )
        assert r.layers == ["1"]
        assert r.unchanged.all()
        torch.testing.assert_close(r.rank_correlation, torch.ones(1, 3))
    finally:
        unregister_method("input-sum")


def test_gradcam_changes_under_cascading_randomisation_and_the_model_is_untouched(cnn):
    cnn.train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    images = torch.rand(4, 3, 12, 12)
    cam = ec.EmbeddingCAM(cnn, "3")
    r = trust.randomization_check(cam, images, ec.ReferenceTarget(torch.randn(6)))
    assert r.layers == ["6", "2", "0"] and r.rank_correlation.shape == (3, 4)
    assert r.cascading and "Randomization(layers=3" in repr(r)
    # randomising the whole network leaves little of the map (measured: |rho| ~ 0.1-0.4)
    assert float(r.rank_correlation[-1].abs().mean()) < 0.6
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert cnn.training and not cnn[0]._forward_hooks
    single = trust.randomization_check(
        cam, images, ec.ReferenceTarget(torch.randn(6)), cascading=False, layers=["0"]
    )
    assert single.layers == ["0"] and not single.cascading
    with pytest.raises(ConfigurationError, match="not modules"):
        trust.randomization_check(cam, images, ec.ReferenceTarget(torch.randn(6)), layers=["9"])
    with pytest.raises(ConfigurationError, match="threshold"):
        trust.randomization_check(cam, images, ec.ReferenceTarget(torch.randn(6)), threshold=0)


def test_identical_own_and_impostor_maps_are_not_class_specific(cnn):
    # centroid 1 = 2 x centroid 0: the cosine ignores the scale, so both maps are the same
    images = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        c0 = cnn(images).mean(dim=0)  # every image has a positive cosine to it
    centroids = torch.stack([c0, 2 * c0, -c0])
    s = trust.class_specificity(ec.EmbeddingCAM(cnn, "3"), images, centroids, [0, 0, 0])
    assert s.other_labels.tolist() == [1, 1, 1]  # the impostor: the most similar other centroid
    torch.testing.assert_close(s.rank_correlation, torch.ones(3))
    assert not s.specific.any()
    torch.testing.assert_close(s.own, s.other)


def test_impostor_choice_by_hand_and_random_classes(cnn):
    images = torch.rand(4, 3, 12, 12)
    with torch.no_grad():
        emb = cnn(images)
    centroids = torch.randn(5, 6)
    labels = torch.tensor([0, 1, 2, 3])
    s = trust.class_specificity(ec.EmbeddingCAM(cnn, "3"), images, centroids, labels)
    cos = nn.functional.cosine_similarity(emb[:, None], centroids[None], dim=2)
    cos[torch.arange(4), labels] = -2
    assert s.other_labels.tolist() == cos.argmax(dim=1).tolist()
    r = trust.class_specificity(
        ec.EmbeddingCAM(cnn, "3"), images, centroids, labels, against="random", seed=4
    )
    assert (r.other_labels != labels).all() and "Specificity(images=4" in repr(r)
    # the maps are the CAM's own maps of the two targets
    res = ec.EmbeddingCAM(cnn, "3")(images, ec.CentroidTarget(centroids, r.other_labels))
    torch.testing.assert_close(r.other, res.raw)
    with pytest.raises(ConfigurationError, match="C >= 2"):
        trust.class_specificity(ec.EmbeddingCAM(cnn, "3"), images, centroids[:1], [0, 0, 0, 0])
    with pytest.raises(ConfigurationError, match="against"):
        trust.class_specificity(
            ec.EmbeddingCAM(cnn, "3"),
            images,
            centroids,
            labels,
            against="all",  # type: ignore
        )


def test_evidence_region_by_threshold_and_by_area():
    m = torch.tensor([[[0.0, 0.2, 0.9, 0.5]], [[0.3, 0.3, 0.3, 0.3]], [[-1.0, 0.0, -0.5, 0.0]]])
    by_thr = trust.evidence_region(m, threshold=0.5)
    assert by_thr.int().tolist() == [[[0, 0, 1, 1]], [[1, 1, 1, 1]], [[0, 0, 0, 0]]]
    # half the pixels: ties keep the first positions; a map with no positive evidence has none
    half = trust.evidence_region(m, area=0.5)
    assert half.int().tolist() == [[[0, 0, 1, 1]], [[1, 1, 0, 0]], [[0, 0, 0, 0]]]
    assert trust.evidence_region(m, area=1.0)[:2].all()
    assert trust.evidence_region(m, area=0.01).sum(dim=(1, 2)).tolist() == [1, 1, 0]
    with pytest.raises(EmbedcamValueError, match="area"):
        trust.evidence_region(m, area=0.0)
    with pytest.raises(EmbedcamValueError, match="threshold"):
        trust.evidence_region(m, threshold=1.0)
    with pytest.raises(EmbedcamValueError, match="NaN"):
        trust.evidence_region(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ShapeError, match="B, H, W"):
        trust.evidence_region(m[0])


def test_evidence_kept_on_a_model_that_reads_the_left_half():
    class LeftHalf(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            left = x[..., : x.shape[-1] // 2].mean(dim=(2, 3))
            return torch.cat([left, torch.full((x.shape[0], 1), 0.5)], dim=1)

    torch.manual_seed(2)
    # two classes: bright or dark left half (in every channel)
    bright = torch.rand(4, 3, 6, 6) * 0.2 + 0.8
    dark = torch.rand(4, 3, 6, 6) * 0.2
    images = torch.cat([bright, dark])
    labels = torch.tensor([0] * 4 + [1] * 4)
    with torch.no_grad():
        gallery = LeftHalf()(images)
    left, right = torch.zeros(8, 6, 6), torch.zeros(8, 6, 6)
    left[..., :3], right[..., 3:] = 1.0, 1.0
    on_left = trust.evidence_kept(LeftHalf(), images, left, gallery, labels, k=1, factor=0.0)
    assert on_left.kept.all() and on_left.predicted.tolist() == labels.tolist()
    torch.testing.assert_close(on_left.similarity_kept, torch.ones(8))
    # evidence on the right: the left half goes black, every bright image now looks dark
    on_right = trust.evidence_kept(LeftHalf(), images, right, gallery, labels, k=1, factor=0.0)
    assert on_right.kept.tolist() == [False] * 4 + [True] * 4
    assert on_right.predicted_darkened.tolist() == [1] * 8
    assert "kept=4/8" in repr(on_right)
    # darkening the evidence itself: the left half decides, so only the left-half region is
    # necessary, and only for the bright images (a black left half still looks dark)
    assert on_left.lost.tolist() == [True] * 4 + [False] * 4
    assert on_left.predicted_removed.tolist() == [1] * 8
    assert on_left.decisive.tolist() == [True] * 4 + [False] * 4
    assert not on_right.lost.any() and on_right.predicted_removed.tolist() == labels.tolist()
    torch.testing.assert_close(on_right.similarity_removed, torch.ones(8))
    torch.testing.assert_close(on_left.area, torch.full((8,), 0.5))
    # area=: the top sixth of a left-to-right ramp is the last column
    ramp = torch.arange(6.0).repeat(8, 6, 1)
    top = trust.evidence_kept(LeftHalf(), images, ramp, gallery, labels, k=1, area=1 / 6)
    torch.testing.assert_close(top.area, torch.full((8,), 1 / 6))
    assert top.kept.tolist() == [False] * 4 + [True] * 4 and not top.lost.any()
    with pytest.raises(ShapeError, match="maps must be"):
        trust.evidence_kept(LeftHalf(), images, left[:, :3], gallery, labels)
