"""Tests of the embedding targets: hand-computed scores, per-sample callables, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

import embedcam as ec
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError


def test_centroid_target_hand_values():
    cents = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = ec.CentroidTarget(cents, [0, 1, 2])
    emb = torch.tensor([[3.0, 4.0], [3.0, 4.0], [1.0, 0.0]])
    # cos((3,4),(1,0)) = 0.6; cos((3,4),(0,2)) = 0.8; cos((1,0),(1,1)) = 1/sqrt(2)
    assert torch.allclose(t(emb), torch.tensor([0.6, 0.8, 1 / math.sqrt(2)]))


def test_reference_target_single_and_batched():
    single = ec.ReferenceTarget(torch.tensor([0.0, 2.0]))
    assert single.batch_size is None
    assert torch.allclose(
        single(torch.tensor([[1.0, 1.0], [0.0, -5.0]])), torch.tensor([2**-0.5, -1.0])
    )
    batched = ec.ReferenceTarget(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(
        batched(torch.tensor([[1.0, 1.0], [1.0, 1.0]])), torch.full((2,), 2**-0.5)
    )


def test_contrastive_target_hand_values():
    cents = torch.eye(3)
    t = ec.ContrastiveTarget(cents, [0, 2])
    emb = torch.tensor([[3.0, 0.0, 4.0], [1.0, 2.0, 2.0]])
    # image 0: own cos 0.6, rival is class 2 (0.8) -> -0.2
    # image 1 (|e| = 3): own cos 2/3, rivals 1/3 and 2/3 -> class 1 wins the tie-free max 2/3 -> 0
    assert torch.allclose(t(emb), torch.tensor([-0.2, 0.0]), atol=1e-6)
    assert t.competitors(emb).tolist() == [2, 1]


def test_contrastive_competitor_by_centroid_is_fixed():
    cents = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    t = ec.ContrastiveTarget(cents, [0, 0], competitor="centroid")
    emb = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert t.competitors(emb).tolist() == [1, 1]  # class 1 is nearest to centroid 0
    by_emb = ec.ContrastiveTarget(cents, [0, 0])
    assert by_emb.competitors(emb).tolist() == [2, 1]


def test_contrastive_skips_zero_centroids():
    cents = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    t = ec.ContrastiveTarget(cents, [0])
    assert t.competitors(torch.tensor([[0.0, -1.0]])).tolist() == [2]


def test_gradient_flows_through_targets():
    cents = torch.randn(4, 8)
    emb = torch.randn(3, 8, requires_grad=True)
    for t in (
        ec.CentroidTarget(cents, [0, 1, 2]),
        ec.ReferenceTarget(torch.randn(3, 8)),
        ec.ContrastiveTarget(cents, [0, 1, 3]),
    ):
        (g,) = torch.autograd.grad(t(emb).sum(), emb)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_as_gradcam_targets_one_per_image_and_equal_to_batched():
    cents = torch.randn(4, 8)
    emb = torch.randn(3, 8)
    for t in (ec.CentroidTarget(cents, [3, 1, 2]), ec.ContrastiveTarget(cents, [0, 1, 3])):
        per = t.as_gradcam_targets()
        assert len(per) == 3
        assert torch.allclose(torch.stack([f(e) for f, e in zip(per, emb)]), t(emb), atol=1e-6)
    single = ec.ReferenceTarget(torch.randn(8))
    assert len(single.as_gradcam_targets(batch_size=5)) == 5


def test_as_gradcam_targets_bad_counts():
    with pytest.raises(ConfigurationError, match="batch_size="):
        ec.ReferenceTarget(torch.randn(8)).as_gradcam_targets()
    with pytest.raises(ShapeError, match="built for 2 images"):
        ec.CentroidTarget(torch.randn(3, 8), [0, 1]).as_gradcam_targets(batch_size=3)


def test_label_outside_range():
    with pytest.raises(EmbedcamValueError, match=r"labels\[1\] = 3 is outside \[0, 3\)"):
        ec.CentroidTarget(torch.randn(3, 4), [0, 3])
    with pytest.raises(EmbedcamValueError, match="outside"):
        ec.ContrastiveTarget(torch.randn(3, 4), [-1])


def test_float_labels_rejected():
    with pytest.raises(EmbedcamValueError, match="integer"):
        ec.CentroidTarget(torch.randn(3, 4), torch.tensor([0.0, 1.0]))


def test_nan_and_zero_centroids():
    cents = torch.randn(3, 4)
    cents[1] = float("nan")
    with pytest.raises(EmbedcamValueError, match=r"NaN or infinite values in centroid\(s\) \[0\]"):
        ec.CentroidTarget(cents, [1])
    cents[1] = 0.0
    with pytest.raises(EmbedcamValueError, match="zero-norm centroid"):
        ec.CentroidTarget(cents, [1])
    ec.CentroidTarget(cents, [0, 2])  # an unused zero row is fine
    with pytest.raises(EmbedcamValueError, match="zero-norm reference"):
        ec.ReferenceTarget(torch.zeros(4))


def test_nan_and_zero_embeddings():
    t = ec.CentroidTarget(torch.eye(3), [0, 1])
    with pytest.raises(EmbedcamValueError, match=r"NaN or infinite values in image\(s\) \[1\]"):
        t(torch.tensor([[1.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]]))
    with pytest.raises(EmbedcamValueError, match=r"zero-norm image\(s\) \[0\]"):
        t(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))


def test_batch_and_dim_mismatch():
    t = ec.CentroidTarget(torch.eye(3), [0, 1])
    with pytest.raises(ShapeError, match="built for 2 images but the batch has 3"):
        t(torch.ones(3, 3))
    with pytest.raises(ShapeError, match="dimension 4"):
        t(torch.ones(2, 4))
    with pytest.raises(ShapeError, match=r"\(B, D\)"):
        t(torch.ones(3))


def test_contrastive_needs_two_classes():
    with pytest.raises(ConfigurationError, match="at least two"):
        ec.ContrastiveTarget(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), [0])


def test_half_precision_embeddings_with_large_norms():
    """float16 norms above 256 overflow their product; scores are computed in float32."""
    torch.manual_seed(0)
    e = torch.randn(4, 8) * 120  # norms ~340: |e| * |c| > 65504 in float16
    c = torch.randn(3, 8) * 120
    for t in (
        ec.CentroidTarget(c, [0, 1, 2, 0]),
        ec.ReferenceTarget(c[[0, 1, 2, 0]]),
        ec.ContrastiveTarget(c, [0, 1, 2, 0]),
    ):
        full = t(e)
        half = t(e.half())
        assert half.abs().min() > 0
        assert torch.allclose(half.float(), full, atol=2e-3)


def test_half_precision_model_gives_the_float32_maps():
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 6))
    with torch.no_grad():
        net[3].weight.mul_(3000)  # embedding norms ~350: |e| * |ref| overflows float16
    images = torch.rand(2, 3, 8, 8)
    target = ec.ReferenceTarget(torch.randn(2, 6) * 300)
    ref = ec.EmbeddingCAM(net, "1")(images, target)
    half = ec.EmbeddingCAM(net.half(), "1")(images.half(), target)
    assert not bool(half.empty.any())
    assert torch.allclose(half.scores.float(), ref.scores, atol=5e-3)
    assert (half.maps.float() - ref.maps).abs().max().item() < 0.05
