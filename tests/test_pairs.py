"""Pair explanations, rank lists and point-to-point maps: hand-checked cases and invariants."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import embedcam as ec
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from embedcam.pairs import _InBatchPairTarget

BACKENDS = ["native", "grad-cam", "captum"]

# Random networks on random images embed everything close together: rank_list rightly warns that
# such a gallery looks collapsed (tested on its own below).
pytestmark = pytest.mark.filterwarnings("ignore:the gallery embeddings look collapsed")


def _pool_model(head: nn.Module | None = None) -> nn.Sequential:
    """Layer "0" sees the input itself: the "image" is the (K, h, w) feature map."""
    mods: list[nn.Module] = [nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if head is not None:
        mods.append(head)
    return nn.Sequential(*mods).eval()


# query: channel 0 = [1, 3], channel 1 = [2, 0]  -> e_q = (2, 1)
# gallery: channel 0 = [0, 2], channel 1 = [4, 2] -> e_g = (1, 3); cos = 5 / sqrt(50) = 1/sqrt(2)
Q = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
G = torch.tensor([[[[0.0, 2.0]], [[4.0, 2.0]]]])
S2 = math.sqrt(2.0)


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 6),
    ).eval()


# ---------------------------------------------------------------------------------------------
# explain_pair


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_both_sides_by_hand(backend: str) -> None:
    # d cos(e, g) / d e = (g_hat - cos e_hat) / |e|; each of the N = 2 locations gets 1/N of it.
    # Query: (-0.14142, 0.28284) / 2 -> Grad-CAM weights (-0.0707107, 0.1414214),
    #   raw = -0.0707107 * [1, 3] + 0.1414214 * [2, 0] = [0.3, -0.3] / sqrt(2).
    # Gallery: (0.212132, -0.0707107) / 2 -> weights (0.1060660, -0.0353553),
    #   raw = 0.1060660 * [0, 2] - 0.0353553 * [4, 2] = [-0.2, 0.2] / sqrt(2).
    cam = ec.EmbeddingCAM(_pool_model(), "0", backend=backend)
    pairs = ec.explain_pair(cam, Q, G)
    assert pairs.similarity.item() == pytest.approx(1 / S2, abs=1e-6)
    assert pairs.gallery.scores.item() == pytest.approx(1 / S2, abs=1e-6)
    torch.testing.assert_close(pairs.query.raw, torch.tensor([[[0.3, -0.3]]]) / S2)
    torch.testing.assert_close(pairs.gallery.raw, torch.tensor([[[-0.2, 0.2]]]) / S2)
    assert pairs.query.maps.tolist() == [[[1.0, 0.0]]]
    assert pairs.gallery.maps.tolist() == [[[0.0, 1.0]]]
    assert not pairs.degenerate.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pair_equals_two_single_sided_calls(backend: str) -> None:
    model = _cnn()
    torch.manual_seed(1)
    q, g = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    pairs = ec.explain_pair(cam, q, g)
    with torch.no_grad():
        eq, eg = model(q), model(g)
    alone_q = cam(q, ec.ReferenceTarget(eg))
    alone_g = cam(g, ec.ReferenceTarget(eq))
    assert (pairs.query.maps - alone_q.maps).abs().max() <= 1e-5
    assert (pairs.gallery.maps - alone_g.maps).abs().max() <= 1e-5
    torch.testing.assert_close(pairs.query.raw, alone_q.raw, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(pairs.gallery.raw, alone_g.raw, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(pairs.similarity, alone_q.scores)
    assert pairs.query.layer == "2" and pairs.query.backend == backend


def test_pair_backends_agree_and_sizes_may_differ() -> None:
    model = _cnn()
    torch.manual_seed(2)
    q, g = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 24, 20)
    out = {b: ec.explain_pair(ec.EmbeddingCAM(model, "2", backend=b), q, g) for b in BACKENDS}
    assert out["native"].gallery.maps.shape == (2, 24, 20)
    for b in ("grad-cam", "captum"):
        assert (out[b].query.maps - out["native"].query.maps).abs().max() <= 1e-5
        assert (out[b].gallery.maps - out["native"].gallery.maps).abs().max() <= 1e-5


def test_one_query_against_many() -> None:
    model = _cnn()
    torch.manual_seed(3)
    q, g = torch.rand(1, 3, 16, 16), torch.rand(4, 3, 16, 16)
    cam = ec.EmbeddingCAM(model, "2")
    pairs = ec.explain_pair(cam, q, g)
    assert len(pairs) == 4
    each = ec.explain_pair(cam, q.expand(4, -1, -1, -1), g)
    torch.testing.assert_close(pairs.query.maps, each.query.maps)
    # the query's four maps differ: each explains the match with another image
    assert (pairs.query.maps[0] - pairs.query.maps[1]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_match_is_degenerate_a_real_pair_is_not(backend: str) -> None:
    model = _cnn()
    torch.manual_seed(4)
    x = torch.rand(2, 3, 16, 16)
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    same = ec.explain_pair(cam, x, x.clone())
    assert same.degenerate.all() and same.query.empty.all() and same.gallery.empty.all()
    assert same.query.maps.abs().max() == 0
    real = ec.explain_pair(cam, x, x.flip(0))
    assert not real.degenerate.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pairs_inside_inference_mode(backend: str) -> None:
    model = _cnn()
    torch.manual_seed(5)
    q, g = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    plain = ec.explain_pair(cam, q, g)
    with torch.inference_mode():
        qi, gi = q.clone(), g.clone()
        inside = ec.explain_pair(cam, qi, gi)
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(inside.query.maps, plain.query.maps)
    torch.testing.assert_close(inside.gallery.maps, plain.gallery.maps)


def test_pair_chunks_give_the_same_maps_and_empty_batches_work() -> None:
    model = _cnn()
    torch.manual_seed(10)
    q, g = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    cam = ec.EmbeddingCAM(model, "2")
    whole = ec.explain_pair(cam, q, g, batch_size=10)
    for size in (1, 2, 3, None):
        part = ec.explain_pair(cam, q, g, batch_size=size)
        torch.testing.assert_close(part.query.maps, whole.query.maps)
        torch.testing.assert_close(part.gallery.raw, whole.gallery.raw)
        torch.testing.assert_close(part.similarity, whole.similarity)
    for backend in BACKENDS:
        empty = ec.explain_pair(ec.EmbeddingCAM(model, "2", backend=backend), q[:0], g[:0])
        assert len(empty) == 0 and empty.query.maps.shape == (0, 16, 16)
    with pytest.raises(ConfigurationError, match="batch_size"):
        ec.explain_pair(cam, q, g, batch_size=0)


def test_pair_bad_inputs() -> None:
    cam = ec.EmbeddingCAM(_cnn(), "2")
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ShapeError, match="2 queries but 3 gallery"):
        ec.explain_pair(cam, x, torch.rand(3, 3, 16, 16))
    with pytest.raises(ShapeError, match="queries must be a"):
        ec.explain_pair(cam, x[0], x)
    with pytest.raises(ShapeError, match="channels"):
        ec.explain_pair(cam, x, torch.rand(2, 1, 16, 16))
    with pytest.raises(ConfigurationError, match="EmbeddingCAM"):
        ec.explain_pair(_cnn(), x, x)  # type: ignore[arg-type]
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(EmbedcamValueError, match="NaN"):
        ec.explain_pair(cam, x, bad)


def test_in_batch_target_refuses_per_sample_use() -> None:
    with pytest.raises(ec.errors.UnsupportedError):
        _InBatchPairTarget(2).as_gradcam_targets()


# ---------------------------------------------------------------------------------------------
# ContrastivePairTarget


def test_contrastive_pair_target_by_hand() -> None:
    # cos((3, 4), (1, 0)) = 0.6, cos((3, 4), (0, 1)) = 0.8
    t = ec.ContrastivePairTarget(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert t(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(-0.2)
    swapped = ec.ContrastivePairTarget(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    assert swapped(torch.tensor([[3.0, 4.0]])).item() == pytest.approx(0.2)
    assert swapped.batch_size is None and t.batch_size == 1
    assert not t.is_cosine
    with pytest.raises(ShapeError, match="dimension"):
        ec.ContrastivePairTarget(torch.ones(2), torch.ones(3))
    with pytest.raises(ShapeError, match="references"):
        ec.ContrastivePairTarget(torch.ones(2, 4), torch.ones(3, 4))
    with pytest.raises(EmbedcamValueError):
        ec.ContrastivePairTarget(torch.zeros(4), torch.ones(4))


def test_contrastive_pair_target_per_sample_and_inference_tensors() -> None:
    with torch.inference_mode():
        toward, away = torch.rand(3, 6) + 0.1, torch.rand(6) + 0.1
    t = ec.ContrastivePairTarget(toward, away)
    e = torch.rand(3, 6)
    whole = t(e)
    per = torch.stack([f(e[i]) for i, f in enumerate(t.as_gradcam_targets())])
    torch.testing.assert_close(per, whole)
    model = _cnn()
    x = torch.rand(3, 3, 16, 16)
    maps = [ec.EmbeddingCAM(model, "2", backend=b)(x, t).maps for b in BACKENDS]
    assert max(float((m - maps[0]).abs().max()) for m in maps) <= 1e-5


# ---------------------------------------------------------------------------------------------
# rank_list


def _gallery(n: int = 12, seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.rand(n, 3, 16, 16), torch.arange(n) % 4


def test_rank_list_order_labels_and_contrast() -> None:
    model = _cnn()
    images, labels = _gallery()
    cam = ec.EmbeddingCAM(model, "2")
    with torch.no_grad():
        emb = model(images)
    cos = nn.functional.cosine_similarity(emb[0:1], emb)
    cos[0] = -2
    expected = torch.argsort(cos, descending=True)
    rl = ec.rank_list(cam, images[0], images, k=5, query_label=0, gallery_labels=labels, exclude=0)
    assert rl.indices.tolist() == expected[:5].tolist()
    torch.testing.assert_close(rl.similarities, cos[expected[:5]])
    torch.testing.assert_close(rl.pairs.similarity, rl.similarities, rtol=1e-5, atol=1e-6)
    assert rl.correct is not None and rl.labels is not None
    assert rl.correct.tolist() == (labels[expected[:5]] == 0).tolist()
    # the right match: the best-ranked other image of class 0, wherever it ranks
    rank_of = {int(i): r for r, i in enumerate(expected[:-1])}
    right = min((rank_of[i] for i in (4, 8)), default=None)
    assert rl.right_rank == right and rl.right_index == int(expected[right])
    assert rl.right_similarity == pytest.approx(float(cos[rl.right_index]), abs=1e-6)
    assert rl.right_image is not None
    torch.testing.assert_close(rl.right_image, images[rl.right_index])
    # every wrong neighbour above the right match gets a contrast map; its score is positive
    # (it did win) and equals cos(q, wrong) - cos(q, right)
    n_wrong = min(5, right)
    if n_wrong:
        assert rl.contrast is not None and rl.contrast_ranks is not None
        assert rl.contrast_ranks.tolist() == list(range(n_wrong))
        want = rl.similarities[:n_wrong] - rl.right_similarity
        torch.testing.assert_close(rl.contrast.scores, want, rtol=1e-5, atol=1e-6)
        assert (rl.contrast.scores > 0).all()
    else:
        assert rl.contrast is None
    assert "RankList(k=5" in repr(rl)


def test_rank_list_contrast_when_the_right_match_is_first() -> None:
    model = _cnn()
    images, _ = _gallery()
    cam = ec.EmbeddingCAM(model, "2")
    query = images[3] + 0.01 * torch.rand(3, 16, 16)  # a near-duplicate of gallery image 3
    labels = torch.zeros(12, dtype=torch.int64)
    labels[3] = 1
    rl = ec.rank_list(cam, query, images, k=3, query_label=1, gallery_labels=labels)
    assert rl.indices[0] == 3 and rl.right_rank == 0 and rl.contrast is None
    assert rl.correct is not None and rl.correct.tolist() == [True, False, False]


def test_rank_list_without_the_class_in_the_gallery() -> None:
    images, labels = _gallery()
    rl = ec.rank_list(
        ec.EmbeddingCAM(_cnn(), "2"), images[0], images, k=2, query_label=9, gallery_labels=labels
    )
    assert rl.right_index is None and rl.contrast is None
    assert rl.correct is not None and not rl.correct.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_list_with_inference_mode_gallery_embeddings(backend: str) -> None:
    model = _cnn()
    images, labels = _gallery()
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    with torch.inference_mode():
        emb = model(images)
    rl = ec.rank_list(
        cam,
        images[1],
        images,
        k=4,
        gallery_embeddings=emb,
        query_label=1,
        gallery_labels=labels,
        exclude=[1],
    )
    plain = ec.rank_list(
        ec.EmbeddingCAM(model, "2"),
        images[1],
        images,
        k=4,
        query_label=1,
        gallery_labels=labels,
        exclude=[1],
    )
    assert rl.indices.tolist() == plain.indices.tolist()
    assert (rl.pairs.query.maps - plain.pairs.query.maps).abs().max() <= 1e-5


def test_rank_list_dataset_and_loader_galleries() -> None:
    images, labels = _gallery()

    class Items(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 12

        def __getitem__(self, i: int) -> dict[str, object]:
            return {"image": images[i], "label": int(labels[i]), "index": i}

    cam = ec.EmbeddingCAM(_cnn(), "2")
    want = ec.rank_list(cam, images[2], images, k=3, query_label=2, gallery_labels=labels)
    ds = ec.rank_list(cam, images[2], Items(), k=3, query_label=2, batch_size=5)
    loader = torch.utils.data.DataLoader(Items(), batch_size=4, shuffle=False)
    dl = ec.rank_list(cam, images[2], loader, k=3, query_label=2)
    for got in (ds, dl):
        assert got.indices.tolist() == want.indices.tolist()
        assert got.correct is not None and want.correct is not None
        assert got.correct.tolist() == want.correct.tolist()
        torch.testing.assert_close(got.images, want.images)
        torch.testing.assert_close(got.pairs.gallery.maps, want.pairs.gallery.maps)


def test_rank_list_bad_inputs() -> None:
    images, labels = _gallery()
    cam = ec.EmbeddingCAM(_cnn(), "2")
    with pytest.raises(ConfigurationError, match="k=13"):
        ec.rank_list(cam, images[0], images, k=13)
    with pytest.raises(ConfigurationError, match="k=12 .* 11 images left"):
        ec.rank_list(cam, images[0], images, k=12, exclude=0)
    with pytest.raises(ConfigurationError, match="positive int"):
        ec.rank_list(cam, images[0], images, k=0)
    with pytest.raises(ConfigurationError, match="outside the gallery"):
        ec.rank_list(cam, images[0], images, exclude=[12])
    with pytest.raises(ShapeError, match="one image"):
        ec.rank_list(cam, images[:2], images)
    with pytest.raises(ConfigurationError, match="gallery_labels"):
        ec.rank_list(cam, images[0], images, query_label=0)
    with pytest.raises(ShapeError, match="11 rows"):
        ec.rank_list(cam, images[0], images, gallery_embeddings=torch.rand(11, 6))
    with pytest.raises(ShapeError, match="gallery_labels hold 3"):
        ec.rank_list(cam, images[0], images, query_label=0, gallery_labels=[0, 1, 2])
    nan = torch.rand(12, 6)
    nan[5, 0] = float("nan")
    with pytest.raises(EmbedcamValueError):
        ec.rank_list(cam, images[0], images, gallery_embeddings=nan)
    with pytest.raises(ConfigurationError, match="map-style Dataset"):
        ec.rank_list(cam, images[0], iter([images]))  # type: ignore[arg-type]


def test_rank_list_warns_on_foreign_gallery_embeddings() -> None:
    images, _ = _gallery()
    cam = ec.EmbeddingCAM(_cnn(), "2")
    with torch.no_grad():
        other = _cnn(seed=9)(images)
    with pytest.warns(UserWarning, match="disagree with the model"):
        ec.rank_list(cam, images[0], images, k=2, gallery_embeddings=other)
    with torch.no_grad():
        own = _cnn()(images)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="gallery_embeddings disagree")
        ec.rank_list(cam, images[0], images, k=2, gallery_embeddings=own)


def test_rank_list_warns_on_a_collapsed_gallery() -> None:
    images, _ = _gallery()
    cam = ec.EmbeddingCAM(_cnn(), "2")
    torch.manual_seed(11)
    collapsed = torch.ones(12, 6) + 1e-3 * torch.randn(12, 6)
    with pytest.warns(UserWarning, match="look collapsed"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="gallery_embeddings disagree")
            ec.rank_list(cam, images[0], images, k=2, gallery_embeddings=collapsed)


def test_rank_list_figure(tmp_path: object) -> None:
    from pathlib import Path

    from PIL import Image

    from embedcam.report import rank_list_figure

    images, labels = _gallery()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normed = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    cam = ec.EmbeddingCAM(_cnn(), "2")
    rl = ec.rank_list(cam, normed[0], normed, k=4, query_label=0, gallery_labels=labels)
    out = Path(str(tmp_path)) / "fig" / "ranks.png"
    assert rank_list_figure(rl, out, mean=mean, std=std, dpi=40, cell_size=1.0) == out
    rows = 4 if rl.contrast is not None else 3
    assert Image.open(out).size == (5 * 40, rows * 40)
    with pytest.raises(ConfigurationError, match="outside \\[0, 1\\]"):
        rank_list_figure(rl, out)
    with pytest.raises(ConfigurationError, match="both mean and std"):
        rank_list_figure(rl, out, mean=mean)


# ---------------------------------------------------------------------------------------------
# point_to_point

# head W = [[1, 0], [1, 1]], b = (0, 1). Query locations a1 = (1, 2), a2 = (3, 0): parts
# z = (W a + b) / 2 = (0.5, 2), (1.5, 2); e_q = (2, 4). Gallery b1 = (0, 4), b2 = (2, 2):
# z = (0, 2.5), (1, 2.5); e_g = (1, 5). Dot products [[5, 5.5], [5, 6.5]], sum 22 = e_q . e_g,
# divided by |e_q| |e_g| = sqrt(20 * 26) = sqrt(520); cos = 22 / sqrt(520).


def _affine_head() -> nn.Linear:
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        head.bias.copy_(torch.tensor([0.0, 1.0]))
    return head


def test_point_to_point_by_hand() -> None:
    head = _affine_head()
    model = _pool_model(head)
    p2p = ec.point_to_point(model, "0", Q, G, head=head)
    r = math.sqrt(520.0)
    torch.testing.assert_close(p2p.matrix, torch.tensor([[[5.0, 5.5], [5.0, 6.5]]]) / r)
    assert p2p.similarity.item() == pytest.approx(22 / r, abs=1e-6)
    assert p2p.matrix.sum().item() == pytest.approx(22 / r, abs=1e-6)
    torch.testing.assert_close(p2p.query.raw, torch.tensor([[[10.5, 11.5]]]) / r)
    torch.testing.assert_close(p2p.gallery.raw, torch.tensor([[[10.0, 12.0]]]) / r)
    assert p2p.exact and p2p.query_grid == (1, 2) and p2p.gallery_grid == (1, 2)
    assert not p2p.query.degenerate.any() and p2p.query.method == "point-to-point"
    # the gallery location that matches query location 1 best is gallery location 1
    corr = p2p.correspondence(0, 0, 1)
    assert corr.shape == (1, 2) and corr.argmax().item() == 1


def test_point_to_point_parts_sum_to_the_model_cosine() -> None:
    model = _cnn()
    torch.manual_seed(7)
    q, g = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 20, 12)
    p2p = ec.point_to_point(model, "3", q, g, head=model[6])
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(model(q), model(g))
    torch.testing.assert_close(p2p.similarity, cos, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p2p.matrix.sum(dim=(1, 2)), cos, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(p2p.query.raw.sum(dim=(1, 2)), cos, rtol=1e-4, atol=1e-5)
    assert p2p.query_grid == (8, 8) and p2p.gallery_grid == (10, 6)
    assert p2p.matrix.shape == (3, 64, 60) and p2p.exact
    assert p2p.gallery.maps.shape == (3, 20, 12)
    for size in (1, 2, 4):  # chunks of pairs give the same result
        part = ec.point_to_point(model, "3", q, g, head=model[6], batch_size=size)
        torch.testing.assert_close(part.matrix, p2p.matrix)
        torch.testing.assert_close(part.query.maps, p2p.query.maps)
        assert part.exact and part.gallery_grid == (10, 6)
    with pytest.raises(ConfigurationError, match="batch_size"):
        ec.point_to_point(model, "3", q, g, head=model[6], batch_size=0)
    none = ec.point_to_point(model, "3", q[:0], g[:0], head=model[6])
    assert none.matrix.shape == (0, 64, 60) and len(none) == 0 and none.query.maps.shape[0] == 0


def test_point_to_point_self_match_stays_informative() -> None:
    model = _cnn()
    torch.manual_seed(8)
    x = torch.rand(1, 3, 16, 16)
    p2p = ec.point_to_point(model, "3", x, x.clone(), head=model[6])
    assert p2p.similarity.item() == pytest.approx(1.0, abs=1e-6)
    assert p2p.matrix.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert not p2p.query.empty.any() and p2p.query.maps.max() == 1.0
    # symmetric: the query map and the gallery map of a self-match are the same
    torch.testing.assert_close(p2p.query.raw, p2p.gallery.raw)


def test_point_to_point_first_order_head() -> None:
    torch.manual_seed(9)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 5))
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), mlp
    ).eval()
    q, g = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    p2p = ec.point_to_point(model, "1", q, g, head=mlp)
    assert not p2p.exact
    with torch.no_grad():
        cos = nn.functional.cosine_similarity(model(q), model(g))
    torch.testing.assert_close(p2p.matrix.sum(dim=(1, 2)), cos, rtol=1e-4, atol=1e-5)


def test_point_to_point_first_order_equals_exact_for_an_unrecognised_affine_head() -> None:
    # A plain function is not known to be affine, so it takes the first-order (jvp) path; for an
    # affine function the first-order parts are the exact ones.
    head = _affine_head()
    model = _pool_model(head)
    exact = ec.point_to_point(model, "0", Q, G, head=head)
    fo = ec.point_to_point(model, "0", Q, G, head=lambda f: head(f))
    assert exact.exact and not fo.exact
    torch.testing.assert_close(fo.matrix, exact.matrix)


def test_point_to_point_l2_normalised_model_and_inference_mode() -> None:
    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = _cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.normalize(self.body(x), dim=1)

    model = Normed().eval()
    q, g = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    plain = ec.point_to_point(model, "body.3", q, g, head=model.body[6])
    with torch.inference_mode():
        inside = ec.point_to_point(model, "body.3", q.clone(), g.clone(), head=model.body[6])
    torch.testing.assert_close(inside.matrix, plain.matrix)
    with torch.no_grad():
        cos = (model(q) * model(g)).sum(dim=1)
    torch.testing.assert_close(plain.matrix.sum(dim=(1, 2)), cos, rtol=1e-4, atol=1e-5)


def test_point_to_point_refuses_a_wrong_head_or_pooling() -> None:
    model = _cnn()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ConfigurationError, match="head maps the pooled .B, 8. features"):
        ec.point_to_point(model, "3", x, x)  # the Linear head is missing
    with pytest.raises(ConfigurationError, match="head= the modules after the pooling"):
        ec.point_to_point(model, "3", x, x, head=nn.Linear(8, 6))  # not the model's head
    maxpool = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()
    ).eval()
    with pytest.raises(ConfigurationError, match="average pooling"):
        ec.point_to_point(maxpool, "1", x, torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigurationError, match="side must be"):
        ec.point_to_point(model, "3", x, x, head=model[6]).correspondence(0, 0, 0, side="both")
    with pytest.raises(ConfigurationError, match="outside"):
        ec.point_to_point(model, "3", x, x, head=model[6]).correspondence(0, 16, 0)


def test_point_to_point_leaves_the_model_as_it_was() -> None:
    model = _cnn().train()
    model[0].weight.requires_grad_(False)
    before = [(m.training) for m in model.modules()]
    ec.point_to_point(model, "3", torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), head=model[6])
    assert [m.training for m in model.modules()] == before
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not model[3]._forward_hooks
