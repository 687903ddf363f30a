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


def test_centroids_and_cam_result_reprs():
    cents = ec.ClassCentroids.from_embeddings(torch.randn(1000, 64), torch.arange(1000) % 10)
    assert repr(cents) == "ClassCentroids(classes=10, dim=64, images=1000, normalized=False)"
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    res = ec.EmbeddingCAM(net, "1")(torch.rand(50, 3, 8, 8), ec.ReferenceTarget(torch.ones(4)))
    text = repr(res)
    assert text.startswith("CamResult(images=50, size=(8, 8), grid=(6, 6), empty=")
    assert len(text) < 200
