"""Tests of EmbeddingCAM: hand-computed maps, backend agreement, batching, state hygiene, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

import embedcam as ec
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError, UnsupportedError


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread while this module runs (the machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU x3 with pooling, then a linear head: a stand-in for a metric-learning CNN."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def make_small(seed: int = 0) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN()
    # Non-trivial running statistics, so eval-mode BatchNorm is not the identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


def make_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=32)


def centroid_target(
    model: nn.Module, images: torch.Tensor, scale: float = 1.0
) -> ec.CentroidTarget:
    torch.manual_seed(1)
    with torch.no_grad():
        dim = model.eval()(images[:1]).shape[1]
    cents = torch.randn(5, dim)
    labels = torch.arange(images.shape[0]) % 5
    return ec.CentroidTarget(cents, labels)


class ScaledTarget(ec.EmbeddingTarget):
    """A target scaled by a constant: same maps, gradients large enough to dwarf an epsilon."""

    def __init__(self, inner: ec.EmbeddingTarget, factor: float) -> None:
        self.inner, self.factor, self.batch_size = inner, factor, inner.batch_size

    @property
    def dim(self) -> int:
        return self.inner.dim

    def score(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.inner.score(embeddings) * self.factor

    def select(self, index: int) -> ScaledTarget:
        return ScaledTarget(self.inner.select(index), self.factor)


# --------------------------------------------------------------------------- hand-computed case


class HandModel(nn.Module):
    """1x1 conv with weights (+1, -1) -> A0 = x, A1 = -x; head picks A0[0,0] and A1[1,1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.head = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            w = torch.zeros(2, 8)
            w[0, 0] = 1.0  # A0 at (0, 0)
            w[1, 7] = 1.0  # A1 at (1, 1)
            self.head.weight.copy_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


X = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
# e = (A0[0,0], A1[1,1]) = (1, -4); centroid c = (1, 0); |e| = sqrt(17).
# dS/de = c/|e| - (e.c) e/|e|^3 = (16, 4) / 17^1.5,
# so dS/dA0[0,0] = 16/17^1.5 and dS/dA1[1,1] = 4/17^1.5.
K = 17**1.5


def test_hand_model_gradcam_matches_hand_computation():
    cam = ec.EmbeddingCAM(HandModel(), "conv", method="gradcam")
    res = cam(X, ec.CentroidTarget(torch.tensor([[1.0, 0.0]]), [0]))
    # Weights: w0 = mean(G0) = 4/K, w1 = 1/K; raw = w0*x + w1*(-x) = 3x/K.
    expected_raw = torch.tensor([[3.0, 6.0], [9.0, 12.0]]) / K
    assert torch.allclose(res.raw[0], expected_raw, atol=1e-7)
    assert res.scores[0].item() == pytest.approx(1 / math.sqrt(17), abs=1e-7)
    # Min-max of 3x/K over x = 1..4 is (x - 1) / 3.
    assert torch.allclose(res.maps[0], torch.tensor([[0.0, 1 / 3], [2 / 3, 1.0]]), atol=1e-6)
    assert not res.empty[0]


def test_hand_model_hirescam_and_gradcampp():
    target = ec.CentroidTarget(torch.tensor([[1.0, 0.0]]), [0])
    hires = ec.EmbeddingCAM(HandModel(), "conv", method="hirescam")(X, target)
    # G*A summed over channels: (0,0): 16/K * 1; (1,1): 4/K * (-4).
    assert torch.allclose(hires.raw[0], torch.tensor([[16.0, 0.0], [0.0, -16.0]]) / K, atol=1e-7)
    pp = ec.EmbeddingCAM(HandModel(), "conv", method="gradcam++")(X, target)
    # alpha = 1 / (2 + S_k g): S0 = 10, g0 = 16/K; S1 = -10, g1 = 4/K; w_k = alpha_k * g_k.
    g0, g1 = 16 / K, 4 / K
    w0 = g0 / (2 + 10 * g0)
    w1 = g1 / (2 - 10 * g1)
    expected = (w0 - w1) * torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.allclose(pp.raw[0], expected, atol=1e-7)


def test_empty_exactly_when_relu_map_is_zero():
    # Centroid (-1, 0) flips every weight: raw = -3x/K < 0 everywhere -> no positive evidence.
    images = torch.cat([X, X])
    cents = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    res = ec.EmbeddingCAM(HandModel(), "conv")(images, ec.CentroidTarget(cents, [0, 1]))
    assert res.empty.tolist() == [False, True]
    assert torch.equal(res.maps[1], torch.zeros(2, 2))
    assert torch.allclose(res.raw[1], -torch.tensor([[3.0, 6.0], [9.0, 12.0]]) / K, atol=1e-7)
    assert res.maps[0].max().item() == pytest.approx(1.0)


@pytest.mark.parametrize("backend", ["native", "grad-cam", "captum"])
def test_empty_flag_matches_raw_on_random_models(backend):
    model = make_small(3)
    images = torch.rand(6, 3, 20, 28)
    res = ec.EmbeddingCAM(model, "features.10", backend=backend)(
        images, centroid_target(model, images)
    )
    assert torch.equal(res.empty, res.raw.clamp_min(0).flatten(1).amax(1) == 0)
    assert bool((res.maps[res.empty] == 0).all())
    assert float(res.maps.min()) >= 0.0 and float(res.maps.max()) <= 1.0


# --------------------------------------------------------------------------- backend agreement


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_three_backends_agree_on_gradcam(arch, batch):
    if arch == "small":
        model, layer, size = make_small(), "features.10", (36, 52)
    else:
        model, layer, size = make_resnet(), "layer4", (72, 104)
    torch.manual_seed(2)
    images = torch.randn(batch, 3, *size)
    target = centroid_target(model, images)
    results = {
        b: ec.EmbeddingCAM(model, layer, method="gradcam", backend=b)(images, target)
        for b in ("native", "grad-cam", "captum")
    }
    ref = results["native"]
    assert ref.maps.shape == (batch, *size)
    assert not bool(ref.empty.all())
    for b in ("grad-cam", "captum"):
        assert (results[b].maps - ref.maps).abs().max().item() <= 1e-5, b
        assert torch.allclose(results[b].raw, ref.raw, rtol=1e-4, atol=1e-9), b
        assert torch.allclose(results[b].scores, ref.scores, atol=1e-6), b
        assert torch.equal(results[b].empty, ref.empty), b


@pytest.mark.parametrize("method", ["hirescam", "xgradcam", "layercam"])
def test_native_matches_gradcam_backend_for_other_methods(method):
    model = make_small(4)
    images = torch.randn(4, 3, 24, 40)
    target = ScaledTarget(centroid_target(model, images), 1e3)
    nat = ec.EmbeddingCAM(model, "features.10", method=method)(images, target)
    pgc = ec.EmbeddingCAM(model, "features.10", method=method, backend="grad-cam")(images, target)
    assert (nat.maps - pgc.maps).abs().max().item() <= 1e-5


def test_native_hirescam_matches_captum():
    model = make_small(5)
    images = torch.randn(3, 3, 24, 40)
    target = centroid_target(model, images)
    nat = ec.EmbeddingCAM(model, "features.10", method="hirescam")(images, target)
    cap = ec.EmbeddingCAM(model, "features.10", method="hirescam", backend="captum")(images, target)
    assert (nat.maps - cap.maps).abs().max().item() <= 1e-5


def test_gradcampp_equals_pytorch_grad_cam_when_epsilon_is_negligible():
    model = make_small(6)
    images = torch.randn(4, 3, 32, 48)
    # Scaling the score by 1e4 scales every gradient by 1e4: g^2 >> 1e-6, so the library's
    # absolute epsilon no longer matters and both implement the same closed form.
    target = ScaledTarget(centroid_target(model, images), 1e4)
    nat = ec.EmbeddingCAM(model, "features.10", method="gradcam++")(images, target)
    pgc = ec.EmbeddingCAM(model, "features.10", method="gradcam++", backend="grad-cam")(
        images, target
    )
    assert (nat.maps - pgc.maps).abs().max().item() <= 1e-4


def test_gradcampp_diverges_from_pytorch_grad_cam_on_plain_cosine():
    """Documents why the native closed form has no epsilon (REFERENCE.md section 6)."""
    model = make_small(6)
    images = torch.randn(4, 3, 32, 48)
    target = centroid_target(model, images)
    nat = ec.EmbeddingCAM(model, "features.10", method="gradcam++")(images, target)
    pgc = ec.EmbeddingCAM(model, "features.10", method="gradcam++", backend="grad-cam")(
        images, target
    )
    # The cosine's gradients are tiny: g^2 is of the order of the library's absolute 1e-6 ...
    from embedcam.cam.native import layer_activations_and_grads

    model.eval()
    _, grads, _ = layer_activations_and_grads(
        model, model.features[10], "features.10", images, target, None
    )
    assert (grads**2).median().item() < 1e-5
    # ... so the epsilon dominates alpha there, and the maps differ visibly.
    assert (nat.maps - pgc.maps).abs().max().item() > 0.05


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("method", ec.available_methods("native"))
def test_batched_equals_per_image(method):
    model = make_small(7).train()  # train mode: eval must be applied, or BatchNorm couples images
    images = torch.randn(5, 3, 28, 20)
    target = centroid_target(model, images)
    cam = ec.EmbeddingCAM(model, "features.6", method=method)
    batched = cam(images, target)
    for i in range(5):
        single = cam(images[i : i + 1], target.select(i))
        assert torch.allclose(batched.raw[i], single.raw[0], atol=1e-6, rtol=1e-4)
        assert (batched.maps[i] - single.maps[0]).abs().max().item() <= 1e-5
        assert batched.scores[i].item() == pytest.approx(single.scores[0].item(), abs=1e-6)


def test_contrastive_target_and_block_before_last():
    model = make_small(8)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        emb = model.eval()(images)
    cents = torch.randn(3, emb.shape[1])
    target = ec.ContrastiveTarget(cents, [0, 1, 2, 0])
    res = ec.EmbeddingCAM(model, "features.6", method="gradcam")(images, target)
    assert res.raw.shape == (4, 16, 16)
    unit = cents / cents.norm(dim=1, keepdim=True)
    cos = (emb / emb.norm(dim=1, keepdim=True)) @ unit.T
    labels = torch.tensor([0, 1, 2, 0])
    own = cos[torch.arange(4), labels]
    rival = cos.scatter(1, labels[:, None], -2.0).amax(1)
    assert torch.allclose(res.scores, own - rival, atol=1e-6)


# --------------------------------------------------------------------------- model state


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("backend", ["native", "grad-cam", "captum"])
def test_model_state_is_restored(backend):
    model = make_small(9).train()
    model.features[1].eval()  # mixed modes must come back exactly
    model.features[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    images = torch.randn(3, 3, 16, 16)
    target = centroid_target(model, images)
    model.train()
    model.features[1].eval()
    ec.EmbeddingCAM(model, "features.10", backend=backend)(images, target)
    assert _hooks(model) == 0
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("backend", ["native", "grad-cam", "captum"])
def test_model_state_restored_after_an_error(backend):
    model = make_small(10).train()
    images = torch.randn(2, 3, 16, 16)
    bad = ec.ReferenceTarget(torch.randn(2, 7))  # wrong embedding dimension: fails mid-forward
    with pytest.raises(ShapeError, match="dimension"):
        ec.EmbeddingCAM(model, "features.10", backend=backend)(images, bad)
    assert _hooks(model) == 0
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_existing_grads_are_kept():
    model = make_small(11)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    images = torch.randn(2, 3, 16, 16)
    for backend in ("native", "grad-cam", "captum"):
        ec.EmbeddingCAM(model, "features.10", backend=backend)(
            images, centroid_target(model, images)
        )
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


# --------------------------------------------------------------------------- bad inputs


def test_unknown_layer_name_lists_near_matches():
    with pytest.raises(ConfigurationError, match=r"Near matches: \['features.10'"):
        ec.EmbeddingCAM(make_small(), "features.100")


def test_layer_module_not_in_model():
    with pytest.raises(ConfigurationError, match="not a sub-module"):
        ec.EmbeddingCAM(make_small(), nn.ReLU())


def test_captum_gradcampp_is_unsupported_and_names_backends():
    with pytest.raises(UnsupportedError, match="'native' or 'grad-cam'"):
        ec.EmbeddingCAM(make_small(), "features.10", method="gradcam++", backend="captum")


def test_unknown_method_and_backend():
    with pytest.raises(ConfigurationError, match="unknown CAM method 'gradcam3'"):
        ec.EmbeddingCAM(make_small(), "features.10", method="gradcam3")
    with pytest.raises(ConfigurationError, match="unknown backend 'torchcam'"):
        ec.EmbeddingCAM(make_small(), "features.10", backend="torchcam")


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_small()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.net(x)
        return e, e.norm(dim=1)


@pytest.mark.parametrize("backend", ["native", "grad-cam", "captum"])
def test_tuple_output_needs_embedding_fn(backend):
    model = TupleModel()
    images = torch.randn(2, 3, 16, 16)
    target = ec.ReferenceTarget(torch.randn(2, 16))
    with pytest.raises(ConfigurationError, match="embedding_fn"):
        ec.EmbeddingCAM(model, "net.features.10", backend=backend)(images, target)
    res = ec.EmbeddingCAM(
        model, "net.features.10", backend=backend, embedding_fn=lambda out: out[0]
    )(images, target)
    assert res.maps.shape == (2, 16, 16)


def test_target_batch_mismatch():
    model = make_small()
    target = ec.CentroidTarget(torch.randn(3, 16), [0, 1, 2])
    with pytest.raises(ShapeError, match="built for 3 images but the batch has 2"):
        ec.EmbeddingCAM(model, "features.10")(torch.randn(2, 3, 16, 16), target)


def test_images_must_be_4d():
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        ec.EmbeddingCAM(make_small(), "features.10")(
            torch.randn(3, 16, 16), ec.ReferenceTarget(torch.randn(16))
        )


def test_layer_not_on_the_path():
    model = make_small()
    model.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ConfigurationError, match="did not run"):
        ec.EmbeddingCAM(model, "unused")(
            torch.randn(1, 3, 8, 8), ec.ReferenceTarget(torch.randn(16))
        )


def test_zero_embedding_raises():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    with pytest.raises(EmbedcamValueError, match="zero-norm image"):
        ec.EmbeddingCAM(model, "0")(torch.randn(1, 3, 4, 4), ec.ReferenceTarget(torch.ones(2)))


def test_non_map_layer_output_needs_reshape_transform():
    model = make_small()
    with pytest.raises(ShapeError, match="reshape_transform"):
        ec.EmbeddingCAM(model, "head")(torch.randn(1, 3, 8, 8), ec.ReferenceTarget(torch.ones(16)))


def test_available_methods():
    assert ec.available_methods("native")[:3] == ["gradcam", "gradcam++", "hirescam"]
    assert "gradcam++" not in ec.available_methods("captum")
    assert {"scorecam", "eigencam"} <= set(ec.available_methods("grad-cam"))


@pytest.mark.parametrize("method", ["scorecam", "eigencam", "eigengradcam", "gradcam-elementwise"])
def test_other_gradcam_backend_methods(method):
    model = make_small(12)
    images = torch.randn(2, 3, 16, 24)
    target = centroid_target(model, images)
    res = ec.EmbeddingCAM(model, "features.10", method=method, backend="grad-cam")(images, target)
    native = ec.EmbeddingCAM(model, "features.10")(images, target)
    assert res.maps.shape == (2, 16, 24) and res.raw.shape == (2, 4, 6)
    assert torch.allclose(res.scores, native.scores, atol=1e-6)
    assert torch.equal(res.empty, res.raw.clamp_min(0).flatten(1).amax(1) == 0)
    assert float(res.maps.min()) >= 0.0 and float(res.maps.max()) <= 1.0
    assert _hooks(model) == 0


def test_reshape_transform_for_token_outputs():
    """A layer that outputs tokens (B, N, K) is explained through reshape_transform."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 4, stride=4)
            self.mix = nn.Identity()
            self.head = nn.Linear(8, 6)

        def forward(self, x):
            t = self.mix(self.conv(x).flatten(2).transpose(1, 2))  # (B, N, K)
            return self.head(t.mean(1))

    torch.manual_seed(0)
    model = Tokens()
    images = torch.randn(2, 3, 16, 24)  # 4 x 6 tokens

    def to_map(t):
        return t.transpose(1, 2).reshape(t.shape[0], 8, 4, 6)

    target = ec.ReferenceTarget(torch.randn(2, 6))
    nat = ec.EmbeddingCAM(model, "mix", reshape_transform=to_map)(images, target)
    ref = ec.EmbeddingCAM(model, "conv")(images, target)  # the same features, as a map
    assert torch.allclose(nat.raw, ref.raw, atol=1e-6)
    pgc = ec.EmbeddingCAM(model, "mix", backend="grad-cam", reshape_transform=to_map)(
        images, target
    )
    assert (pgc.maps - nat.maps).abs().max().item() <= 1e-5
    with pytest.raises(UnsupportedError, match="reshape_transform"):
        ec.EmbeddingCAM(model, "mix", backend="captum", reshape_transform=to_map)


def test_frozen_model_works_with_every_backend():
    model = make_small(13)
    for p in model.parameters():
        p.requires_grad_(False)
    images = torch.randn(2, 3, 16, 24)
    target = centroid_target(model, images)
    maps = [
        ec.EmbeddingCAM(model, "features.10", backend=b)(images, target).maps
        for b in ("native", "grad-cam", "captum")
    ]
    assert all((m - maps[0]).abs().max().item() <= 1e-5 for m in maps[1:])
    assert not any(p.requires_grad or p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- grad-cam adapter cost


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam"])
def test_gradcam_backend_runs_one_forward_and_records_nothing_before_the_layer(method):
    """One model forward per call; the graph the library's backward walks starts at the layer."""
    model = make_small(14)
    images = torch.randn(3, 3, 16, 24, requires_grad=True)
    target = centroid_target(model, images.detach())
    forwards = []
    upstream = []
    handles = [
        model.register_forward_hook(lambda m, i, o: forwards.append(1)),
        model.features[5].register_forward_hook(lambda m, i, o: upstream.append(o.requires_grad)),
    ]
    try:
        res = ec.EmbeddingCAM(model, "features.10", method=method, backend="grad-cam")(
            images, target
        )
    finally:
        for h in handles:
            h.remove()
    assert len(forwards) == 1
    assert upstream == [False]  # no graph (and no backward) before the target layer
    assert images.grad is None  # the caller's tensor is left alone
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    native = ec.EmbeddingCAM(model, "features.10")(images.detach(), target)
    assert torch.allclose(res.scores, native.scores, atol=1e-6)


class SharedLayer(nn.Module):
    """The same ReLU module runs twice: it has no single output to explain."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(15)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y) + y)
        return self.head(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("backend", ["native", "grad-cam", "captum"])
def test_shared_layer_raises_the_same_error_on_every_backend(backend):
    model = SharedLayer().eval()
    images = torch.randn(3, 3, 12, 16)
    with pytest.raises(ConfigurationError, match=r"'act' is called 2 times per forward"):
        ec.EmbeddingCAM(model, "act", backend=backend)(images, ec.ReferenceTarget(torch.randn(12)))
    assert _hooks(model) == 0
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


class SideBranch(nn.Module):
    """A module that runs but does not feed the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_small(16)
        self.side = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.side(x)
        return self.net(x)


@pytest.mark.parametrize(("layer", "message"), [("unused", "did not run"), ("side", "not depend")])
def test_gradcam_backend_layer_off_the_path(layer, message):
    model = SideBranch()
    model.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(ConfigurationError, match=message):
        ec.EmbeddingCAM(model, layer, backend="grad-cam")(
            torch.randn(2, 3, 16, 16), ec.ReferenceTarget(torch.randn(16))
        )
    assert _hooks(model) == 0
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- method registry


def activation_sum(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """A plain activation map: the channel sum of the layer output (ignores the gradient)."""
    return acts.sum(dim=1)


def two_channel_net() -> nn.Module:
    """1x1 conv with weights (1, 2) and no bias, then global mean: A0 = x, A1 = 2x, e = mean(A)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1))
    return net


@pytest.fixture
def registered():
    """Register ``activation_sum`` as "act-sum" for one test; always removed afterwards."""
    ec.cam.register_method("act-sum", activation_sum)
    try:
        yield "act-sum"
    finally:
        if "act-sum" in ec.available_methods("native"):
            ec.cam.unregister_method("act-sum")


def test_a_registered_method_is_seen_everywhere(registered):
    net = two_channel_net()
    assert ec.available_methods("native")[-1] == "act-sum"
    assert "act-sum" not in ec.available_methods("grad-cam")
    ec.cam.check_method("act-sum", "native")
    assert ec.cam.FORMULAS["act-sum"] is activation_sum
    assert ec.cam.BACKENDS["native"][-1] == "act-sum"
    recipe = ec.Recipe(layer="0", method="act-sum")
    recipe.check()
    # x = [[1, 2], [3, 4]]: A0 = x and A1 = 2x, so raw = A0 + A1 = 3x = [[3, 6], [9, 12]], and the
    # min-max map is (raw - 3) / 9. e = (mean x, 2 mean x) = (2.5, 5): cos to (1, 1) = 3/sqrt(10).
    target = ec.ReferenceTarget(torch.ones(2))
    for cam in (ec.EmbeddingCAM(net, "0", method="act-sum"), recipe.cam(net)):
        res = cam(X, target)
        assert res.method == "act-sum" and res.backend == "native"
        assert torch.equal(res.raw, torch.tensor([[[3.0, 6.0], [9.0, 12.0]]]))
        torch.testing.assert_close(res.maps, torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))
        torch.testing.assert_close(res.scores, torch.tensor([3 / math.sqrt(10)]))
        assert res.empty.tolist() == [False]
    with pytest.raises(UnsupportedError, match="backend 'captum' does not implement 'act-sum'"):
        ec.EmbeddingCAM(net, "0", method="act-sum", backend="captum")


def test_a_registered_method_gets_the_gradients():
    model, images = make_small(3), torch.randn(2, 3, 16, 16)
    target = centroid_target(model, images)
    ec.cam.register_method("my-hirescam", lambda acts, grads: (grads * acts).sum(dim=1))
    try:
        mine = ec.EmbeddingCAM(model, "features.10", method="my-hirescam")(images, target)
    finally:
        ec.cam.unregister_method("my-hirescam")
    ref = ec.EmbeddingCAM(model, "features.10", method="hirescam")(images, target)
    assert torch.equal(mine.raw, ref.raw) and torch.equal(mine.maps, ref.maps)
    with pytest.raises(ConfigurationError, match="unknown CAM method 'my-hirescam'"):
        ec.EmbeddingCAM(model, "features.10", method="my-hirescam")


def test_registering_again_needs_overwrite(registered):
    net = two_channel_net()
    before = ec.EmbeddingCAM(net, "0", method="act-sum")
    with pytest.raises(ConfigurationError, match="'act-sum' is already registered"):
        ec.cam.register_method("act-sum", lambda a, g: -a.sum(1))
    ec.cam.register_method("act-sum", lambda a, g: -a.sum(1), overwrite=True)
    target = ec.ReferenceTarget(torch.ones(2))
    assert torch.equal(ec.EmbeddingCAM(net, "0", method="act-sum")(X, target).raw, -3 * X[:, 0])
    # A CAM keeps the formula it was built with.
    assert torch.equal(before(X, target).raw, 3 * X[:, 0])
    with pytest.raises(ConfigurationError, match="'scorecam' is already a method of backend"):
        ec.cam.register_method("scorecam", activation_sum)


def test_overwriting_a_builtin_and_restoring_it():
    with pytest.raises(ConfigurationError, match="built-in CAM method"):
        ec.cam.unregister_method("gradcam")
    ec.cam.register_method("gradcam", activation_sum, overwrite=True)
    try:
        raw = ec.EmbeddingCAM(two_channel_net(), "0")(X, ec.ReferenceTarget(torch.ones(2))).raw
    finally:
        ec.cam.unregister_method("gradcam")
    assert torch.equal(raw, 3 * X[:, 0])
    assert ec.cam.FORMULAS["gradcam"] is ec.cam.weights.gradcam
    with pytest.raises(ConfigurationError, match="'nope' is not a native CAM method"):
        ec.cam.unregister_method("nope")


@pytest.mark.parametrize(
    ("name", "fn", "message"),
    [
        ("", activation_sum, "method name must be"),
        ("My CAM", activation_sum, "method name must be"),
        ("a,b", activation_sum, "method name must be"),
        ("a/b", activation_sum, "method name must be"),
        (3, activation_sum, "method name must be"),
        ("ok-name", None, "fn must be a callable"),
        ("ok-name", "gradcam", "fn must be a callable"),
        ("ok-name", lambda acts: acts, r"cannot be called as fn\(acts, grads\)"),
        ("ok-name", lambda a, g, extra: a, r"cannot be called as fn\(acts, grads\)"),
    ],
)
def test_bad_registrations_raise(name, fn, message):
    with pytest.raises(ConfigurationError, match=message):
        ec.cam.register_method(name, fn)
    assert "ok-name" not in ec.available_methods("native")


def test_a_method_returning_the_wrong_shape_raises():
    ec.cam.register_method("wrong-shape", lambda acts, grads: acts)
    try:
        cam = ec.EmbeddingCAM(two_channel_net(), "0", method="wrong-shape")
        with pytest.raises(ShapeError, match=r"'wrong-shape' returned \(1, 2, 2, 2\), expected"):
            cam(X, ec.ReferenceTarget(torch.ones(2)))
    finally:
        ec.cam.unregister_method("wrong-shape")


def test_formulas_assignment_still_registers_but_warns():
    with pytest.warns(DeprecationWarning, match="register_method"):
        ec.cam.FORMULAS["old-style"] = activation_sum
    try:
        assert ec.available_methods("native")[-1] == "old-style"
        raw = ec.EmbeddingCAM(two_channel_net(), "0", method="old-style")(
            X, ec.ReferenceTarget(torch.ones(2))
        ).raw
        assert torch.equal(raw, 3 * X[:, 0])
    finally:
        with pytest.warns(DeprecationWarning, match="unregister_method"):
            del ec.cam.FORMULAS["old-style"]
    assert "old-style" not in ec.available_methods("native")
    assert list(ec.cam.FORMULAS) == ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam"]


def test_cam_module_doctests():
    import doctest

    from embedcam.cam import core, registry, result

    for module in (core, registry, result):
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.attempted > 0 and outcome.failed == 0, module
