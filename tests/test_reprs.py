"""Reprs are short summaries, never every value (a 5,000-image index printed 1.4 MB)."""

from __future__ import annotations

import torch

import embedcam as ec
from embedcam.datasets import DatasetIndex, Sample


def test_dataset_index_repr_is_a_summary(tmp_path):
    samples = [
        Sample(
            path=tmp_path / f"{i}.jpg",
            split="train" if i % 5 else "test",
            label=i % 3,
            class_name="abc"[i % 3],
        )
        for i in range(5000)
    ]
    index = DatasetIndex.build(
        root=tmp_path, format="folder", classes=["a", "b", "c"], samples=samples, has_boxes=False
    )
    text = repr(index)
    assert len(text) < 300 and str(index) == text
    assert "samples=5000" in text and "'train': 4000" in text and "'test': 1000" in text


def test_centroids_repr_is_one_short_line():
    # Two classes of two 3-d embeddings each, one class without samples.
    small = ec.ClassCentroids.from_embeddings(
        torch.eye(3)[[0, 0, 1, 1]], torch.tensor([0, 0, 2, 2]), num_classes=3, allow_empty=True
    )
    assert repr(small) == (
        "ClassCentroids(centroids=(3, 3) float32 cpu, images=4, empty_classes=1, normalized=False)"
    )
    big = ec.ClassCentroids.from_embeddings(torch.randn(20_000, 512), torch.arange(20_000) % 1000)
    text = repr(big)
    assert text == (
        "ClassCentroids(centroids=(1000, 512) float32 cpu, images=20000, empty_classes=0, "
        "normalized=False)"
    )
    assert str(big) == text and "\n" not in text


def test_cam_result_repr_names_shapes_and_fields_not_values():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    with torch.no_grad():
        net[0].weight.fill_(0.1)
        net[0].bias.zero_()
    # Equal filters give four equal channels, so the embedding is parallel to (1, 1, 1, 1): the
    # cosine is at its maximum 1, its gradient is zero and both maps are empty (and degenerate).
    res = ec.EmbeddingCAM(net, "1")(torch.rand(2, 3, 8, 8), ec.ReferenceTarget(torch.ones(4)))
    assert repr(res) == (
        "CamResult(maps=(2, 8, 8) float32 cpu, raw=(2, 6, 6), layer='1', method='gradcam', "
        "backend='native', empty=2/2, degenerate=2/2)"
    )
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    big = ec.EmbeddingCAM(net, "1", method="hirescam")(
        torch.rand(64, 3, 96, 96), ec.ReferenceTarget(torch.randn(16))
    )
    text = repr(big)
    head = "CamResult(maps=(64, 96, 96) float32 cpu, raw=(64, 94, 94), layer='1', "
    assert text == head + f"method='hirescam', backend='native', empty={int(big.empty.sum())}/64)"
    assert str(big) == text and len(text) < 130


def test_trust_summary_prints_as_one_short_line():
    from embedcam.trust import TrustSummary

    s = TrustSummary(
        recipe="centroid/layer4/gradcam", images=8, steps=5, specificity_rho=0.73, specific=0.75,
        randomization_rho=0.63, unchanged=0.625, deletion_auc=0.99, random_deletion_auc=0.99,
        insertion_auc=0.99, random_insertion_auc=0.99, beats_random=0.125, empty=0.0,
    )  # fmt: skip
    want = (
        "TrustSummary('centroid/layer4/gradcam', images=8, specific=75%, unchanged=62%, "
        "beats_random=12%)"
    )
    assert repr(s) == want
    assert str(s) == "recipe='centroid/layer4/gradcam' images=8 specific=0.75 unchanged=0.625 " + (
        "beats_random=0.125"
    )
