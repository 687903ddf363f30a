"""Gradient contexts and inference tensors: a CAM works whatever the caller's autograd context.

Gallery embeddings and centroids are usually computed under ``torch.inference_mode()``, and CAM
calls often sit inside an evaluation loop under ``torch.no_grad()`` or ``torch.inference_mode()``.
Every backend enables what it needs locally, gives the maps of a plain call, and leaves the
caller's context (grad mode, inference mode) and the model as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import embedcam as ec

BACKENDS = ("native", "grad-cam", "captum")
CONTEXTS: dict[str, Callable[[], contextlib.AbstractContextManager[object]]] = {
    "none": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread while this module runs (the machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def make_images(n: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def model_state(net: nn.Module) -> tuple[object, ...]:
    params = list(net.parameters())
    hooks = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in net.modules()
    )
    return (
        tuple(m.training for m in net.modules()),
        tuple(p.requires_grad for p in params),
        tuple(p.grad is None for p in params),
        hooks,
    )


def context_flags() -> tuple[bool, bool]:
    return torch.is_grad_enabled(), torch.is_inference_mode_enabled()


def plain_maps(net: nn.Module, images: torch.Tensor, backend: str, target: ec.EmbeddingTarget):
    return ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)(images, target)


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_reference_target_from_inference_mode(backend: str, context: str) -> None:
    net = tiny_net()
    images = make_images()
    refs = make_images(seed=2)
    with torch.no_grad():
        expected = plain_maps(net, images, backend, ec.ReferenceTarget(net(refs)))
    # The usual way: gallery embeddings and images made under inference mode.
    with torch.inference_mode():
        gallery = net(refs)
        inf_images = images.clone()
    assert gallery.is_inference() and inf_images.is_inference()
    target = ec.ReferenceTarget(gallery)
    cam = ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)
    state = model_state(net)
    with CONTEXTS[context]():
        before = context_flags()
        res = cam(inf_images, target)
        assert context_flags() == before
    assert model_state(net) == state
    assert not res.maps.is_inference()
    torch.testing.assert_close(res.maps, expected.maps, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.raw, expected.raw, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.scores, expected.scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_centroid_targets_from_inference_mode(backend: str, context: str) -> None:
    net = tiny_net()
    images = make_images()
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        cents = net(make_images(n=3, seed=3))
    expected = {
        kind: plain_maps(net, images, backend, cls(cents, labels))
        for kind, cls in (("centroid", ec.CentroidTarget), ("contrastive", ec.ContrastiveTarget))
    }
    with torch.inference_mode():
        inf_cents = cents.clone()
        inf_labels = labels.clone()
        inf_images = images.clone()
    for kind, cls in (("centroid", ec.CentroidTarget), ("contrastive", ec.ContrastiveTarget)):
        # Built inside the caller's context too (an evaluation loop builds it there).
        with CONTEXTS[context]():
            before = context_flags()
            target = cls(inf_cents, inf_labels)
            res = ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)(inf_images, target)
            assert context_flags() == before
        torch.testing.assert_close(res.maps, expected[kind].maps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_centroids_fit_in_inference_mode(backend: str) -> None:
    net = tiny_net()
    images = make_images(n=6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    loader = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    fitted = ec.ClassCentroids.fit(net, loader, progress=False)
    cam = ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)
    expected = cam(images, ec.CentroidTarget(fitted.centroids.clone(), labels))
    with torch.inference_mode():
        res = cam(images, ec.CentroidTarget(fitted.centroids, labels))
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(res.maps, expected.maps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_embed_loader_output_as_reference(backend: str) -> None:
    net = tiny_net()
    images = make_images(n=4)
    labels = torch.tensor([0, 1, 2, 0])
    embedded = ec.embed_loader(net, [(make_images(n=4, seed=5), labels)])
    with torch.no_grad():
        plain_refs = net(make_images(n=4, seed=5))
    cam = ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)
    expected = cam(images, ec.ReferenceTarget(plain_refs))
    with torch.inference_mode():
        res = cam(images, ec.ReferenceTarget(embedded.embeddings))
        assert torch.is_inference_mode_enabled()
    torch.testing.assert_close(res.maps, expected.maps, rtol=0, atol=1e-6)
    # The embedding's labels index centroids in a target as well.
    cents = net(make_images(n=3, seed=3)).detach()
    expected = cam(images, ec.CentroidTarget(cents, labels))
    with torch.no_grad():
        res = cam(images, ec.CentroidTarget(cents, embedded.labels))
    torch.testing.assert_close(res.maps, expected.maps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
def test_explain_dataset_inside_context(context: str) -> None:
    net = tiny_net()
    images = make_images(n=6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    loader = [(images[:3], labels[:3]), (images[3:], labels[3:])]
    cents = ec.ClassCentroids.fit(net, loader, progress=False)
    recipes = [
        ec.Recipe(layer="2", target="centroid", method="gradcam"),
        ec.Recipe(layer="2", target="reference", method="gradcam"),
    ]
    with torch.inference_mode():
        refs = net(make_images(n=6, seed=7))[0]
    plain = ec.explain_dataset(net, loader, cents, recipes, references=refs, progress=False)
    with CONTEXTS[context]():
        before = context_flags()
        recs = ec.explain_dataset(net, loader, cents, recipes, references=refs, progress=False)
        assert context_flags() == before
    for recipe in recipes:
        torch.testing.assert_close(
            recs.column("score", recipe), plain.column("score", recipe), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_then_success_inside_inference_mode(backend: str) -> None:
    """An error raised during the forward restores the context; the next call still works."""
    net = tiny_net()
    images = make_images(n=3)
    expected = plain_maps(net, images, backend, ec.ReferenceTarget(torch.ones(5)))
    cam = ec.EmbeddingCAM(net, "2", method="gradcam", backend=backend)
    state = model_state(net)
    with torch.inference_mode():
        before = context_flags()
        with pytest.raises(ec.errors.ShapeError, match="dimension"):
            cam(images, ec.ReferenceTarget(torch.ones(4)))
        assert context_flags() == before
        assert model_state(net) == state
        res = cam(images, ec.ReferenceTarget(torch.ones(5)))
        assert context_flags() == before
    assert model_state(net) == state
    torch.testing.assert_close(res.maps, expected.maps, rtol=0, atol=1e-6)
