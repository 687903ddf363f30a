"""Degenerate explanations (a self-match: the score's gradient is noise) are flagged, not shown."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import embedcam as ec
from embedcam.cam import result as cam_result
from embedcam.cam.result import CamResult

BACKENDS = ["native", "grad-cam", "captum"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread while this module runs (the machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 6, bias=False),
    ).eval()


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def embeddings(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def rule_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The behaviour before the flag: no sensitivity threshold, no saturated cosine."""
    monkeypatch.setattr(cam_result, "DEGENERATE_SENSITIVITY", 0.0)
    monkeypatch.setattr(cam_result, "SATURATED_COSINE_EPS", -1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_match_is_degenerate_with_zero_maps(backend: str) -> None:
    model, x = make_model(), images()
    res = ec.EmbeddingCAM(model, "2", backend=backend)(x, ec.ReferenceTarget(embeddings(model, x)))
    assert res.degenerate.dtype == torch.bool
    assert res.degenerate.tolist() == [True] * 3
    assert res.empty.tolist() == [True] * 3
    assert torch.equal(res.maps, torch.zeros_like(res.maps))
    assert torch.equal(res.signed_maps(), torch.zeros_like(res.maps))
    assert "degenerate=3/3" in repr(res)


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_match_is_degenerate_by_sensitivity_alone(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the saturated-cosine rule, the S threshold alone flags a self-match."""
    monkeypatch.setattr(cam_result, "SATURATED_COSINE_EPS", -1.0)
    model, x = make_model(), images()
    res = ec.EmbeddingCAM(model, "2", backend=backend)(x, ec.ReferenceTarget(embeddings(model, x)))
    assert res.degenerate.all() and res.empty.all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_real_pair_is_not_degenerate_and_maps_unchanged(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = make_model(), images()
    target = ec.ReferenceTarget(embeddings(model, x).roll(1, 0))
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    res = cam(x, target)
    assert not res.degenerate.any()
    assert not res.empty.any()
    assert "degenerate" not in repr(res)
    with monkeypatch.context() as m:
        rule_off(m)
        before = cam(x, target)
    assert torch.equal(res.maps, before.maps)
    assert torch.equal(res.raw, before.raw)
    assert torch.equal(res.empty, before.empty)
    assert torch.equal(res.scores, before.scores)
    assert torch.equal(res.maps, cam_result.finish_maps(res.raw, res.size)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_batch_flags_exactly_the_self_matches(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = make_model(), images(4)
    e = embeddings(model, x)
    ref = e.roll(1, 0).clone()
    ref[[0, 2]] = e[[0, 2]]  # rows 0 and 2 are self-matches
    cam = ec.EmbeddingCAM(model, "2", backend=backend)
    res = cam(x, ec.ReferenceTarget(ref))
    assert res.degenerate.tolist() == [True, False, True, False]
    assert res.empty.tolist() == [True, False, True, False]
    assert torch.equal(res.maps[[0, 2]], torch.zeros_like(res.maps[[0, 2]]))
    with monkeypatch.context() as m:
        rule_off(m)
        before = cam(x, ec.ReferenceTarget(ref))
    assert not before.degenerate.any()
    assert torch.equal(res.maps[[1, 3]], before.maps[[1, 3]])
    assert "degenerate=2/4" in repr(res)


def test_flags_agree_across_backends() -> None:
    model, x = make_model(), images(4)
    e = embeddings(model, x)
    ref = e.roll(1, 0).clone()
    ref[1] = e[1]
    flags = [
        ec.EmbeddingCAM(model, "2", backend=b)(x, ec.ReferenceTarget(ref)).degenerate.tolist()
        for b in BACKENDS
    ]
    assert flags == [[False, True, False, False]] * 3


def test_centroid_of_one_image_is_degenerate() -> None:
    model, x = make_model(), images(2)
    e = embeddings(model, x)
    res = ec.EmbeddingCAM(model, "2")(x, ec.CentroidTarget(e, torch.tensor([0, 0])))
    assert res.degenerate.tolist() == [True, False]


def test_contrastive_uses_sensitivity_only() -> None:
    """The own-centroid gradient vanishes for a self-match, the rival's does not: not degenerate."""
    model, x = make_model(), images(2)
    e = embeddings(model, x)
    res = ec.EmbeddingCAM(model, "2")(x, ec.ContrastiveTarget(e, torch.tensor([0, 1])))
    assert not res.degenerate.any()


def test_constructor_defaults_to_not_degenerate() -> None:
    res = CamResult(
        maps=torch.zeros(2, 8, 8),
        raw=torch.zeros(2, 4, 4),
        scores=torch.zeros(2),
        empty=torch.tensor([True, False]),
    )
    assert res.degenerate.dtype == torch.bool and res.degenerate.tolist() == [False, False]
    assert "degenerate" not in repr(res)


def test_empty_batch_has_empty_flags() -> None:
    model = make_model()
    res = ec.EmbeddingCAM(model, "2", backend="grad-cam")(
        torch.zeros(0, 3, 16, 16), ec.ReferenceTarget(torch.ones(6))
    )
    assert res.degenerate.shape == (0,) and res.degenerate.dtype == torch.bool
