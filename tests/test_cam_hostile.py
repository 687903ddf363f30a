"""Hostile inputs to EmbeddingCAM: one behaviour on every backend, and the model left untouched.

Tiny models (a convolution, pooling, a linear head) on 16 px images, so every expected value is
either a hand computation or the result of the same call made sequentially / in float32.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn

import embedcam as ec
from embedcam.errors import (
    ConfigurationError,
    EmbedcamValueError,
    ShapeError,
    UnsupportedError,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread while this module runs (the machine is shared); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


BACKENDS = ["native", "grad-cam", "captum"]


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> dropout -> global pool -> linear; the target layer is ``act``."""

    def __init__(self, seed: int = 0, pause: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 6)
        self.pause = pause  # sleeping inside forward lets other threads run mid-call
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        if self.pause:
            time.sleep(self.pause)
        return self.head(self.drop(y).mean(dim=(2, 3)))


def target(batch: int | None = None, seed: int = 1) -> ec.ReferenceTarget:
    torch.manual_seed(seed)
    return ec.ReferenceTarget(torch.randn(6) if batch is None else torch.randn(batch, 6))


def images(batch: int = 2, seed: int = 2, size: int = 16) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, 3, size, size)


def hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def snapshot(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [b.clone() for b in model.buffers()],
    )


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    modes, flags, grads, buffers = snapshot(model)
    assert hooks(model) == 0
    assert modes == before[0]
    assert flags == before[1]
    assert all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(grads, before[2])
    )
    assert all(torch.equal(a, b) for a, b in zip(buffers, before[3]))


def assert_same_result(a: ec.CamResult, b: ec.CamResult) -> None:
    assert torch.equal(a.maps, b.maps)
    assert torch.equal(a.raw, b.raw)
    assert torch.equal(a.scores, b.scores)
    assert torch.equal(a.empty, b.empty)


# --------------------------------------------------------------------------- 1. layer used twice


class TwiceConv(nn.Module):
    """The same convolution is applied twice in one forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(torch.relu(self.conv(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_called_twice_per_forward_raises_on_every_backend(backend):
    model = TwiceConv().train()
    before = snapshot(model)
    with pytest.raises(ConfigurationError, match=r"'conv' is called 2 times per forward"):
        ec.EmbeddingCAM(model, "conv", backend=backend)(images(), target())
    assert_unchanged(model, before)


# --------------------------------------------------------------------------- 2. threads


def _explain_in_threads(cam: ec.EmbeddingCAM, jobs: list[torch.Tensor]) -> list[object]:
    """Run ``cam`` on every batch of ``jobs`` from 4 threads; results (or errors) in job order."""
    out: list[object] = [None] * len(jobs)
    barrier = threading.Barrier(4)
    shared = target()  # built once: seeding the global RNG from several threads would race

    def work(worker: int) -> None:
        barrier.wait()
        for i in range(worker, len(jobs), 4):
            try:
                out[i] = cam(jobs[i], shared)
            except Exception as err:  # noqa: BLE001 - the test inspects it
                out[i] = err

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_give_sequential_maps_and_leave_the_model_unchanged(backend):
    model = Tiny(4, pause=0.002).train()
    model.bn.eval()  # mixed modes must come back exactly
    model.conv.bias.requires_grad_(False)
    before = snapshot(model)
    cam = ec.EmbeddingCAM(model, "act", backend=backend)
    jobs = [images(2, seed=10 + i) for i in range(12)]
    sequential = [cam(x, target()) for x in jobs]
    assert_unchanged(model, before)
    threaded = _explain_in_threads(cam, jobs)
    for res, ref in zip(threaded, sequential):
        assert isinstance(res, ec.CamResult), res
        assert_same_result(res, ref)
    assert_unchanged(model, before)


class FailsOnThree(Tiny):
    """Raises from inside its forward (after the target layer) for batches of three images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x)))
        time.sleep(0.002)
        if x.shape[0] == 3:
            raise RuntimeError("boom inside forward")
        return self.head(self.drop(y).mean(dim=(2, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_inside_forward_from_threads_restores_the_model(backend):
    model = FailsOnThree(5).train()
    model.head.weight.requires_grad_(False)
    model(images()).sum().backward()  # existing .grad tensors must survive
    before = snapshot(model)
    cam = ec.EmbeddingCAM(model, "act", backend=backend)
    jobs = [images(3 if i % 3 == 0 else 2, seed=20 + i) for i in range(8)]
    threaded = _explain_in_threads(cam, jobs)
    for x, res in zip(jobs, threaded):
        if x.shape[0] == 3:
            assert isinstance(res, RuntimeError) and "boom" in str(res)
        else:
            assert isinstance(res, ec.CamResult), res
            assert_same_result(res, cam(x, target()))
    assert_unchanged(model, before)


# --------------------------------------------------------------------------- 3. TorchScript


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("kind", ["script", "trace", "scripted-submodule"])
def test_torchscript_models_are_unsupported_up_front(kind):
    torch.manual_seed(6)
    eager = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6)
    )
    if kind == "script":
        model, layer = torch.jit.script(eager), "1"
    elif kind == "trace":
        model, layer = torch.jit.trace(eager, images()), "1"
    else:
        model, layer = nn.Sequential(torch.jit.script(eager)), "0.1"
    with pytest.raises(UnsupportedError, match="TorchScript.*eager"):
        ec.EmbeddingCAM(model, layer)


# --------------------------------------------------------------------------- 4. dtypes of images


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float_images_are_cast_to_the_model_dtype(backend, dtype):
    model = Tiny(7)
    x = images().to(dtype)
    cam = ec.EmbeddingCAM(model, "act", backend=backend)
    res = cam(x, target())
    assert_same_result(res, cam(x.float(), target()))
    assert x.dtype == dtype  # the caller's tensor is not converted in place


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_say_convert_to_float_and_normalise(backend, dtype):
    x = (images() > 0).to(dtype)
    with pytest.raises(ShapeError, match=rf"{dtype}.*float.*normalise"):
        ec.EmbeddingCAM(Tiny(8), "act", backend=backend)(x, target())


# --------------------------------------------------------------------------- 5/9. half models


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_give_float32_results_on_every_backend(dtype):
    model = Tiny(9).to(dtype)
    x = images(3)
    results = [ec.EmbeddingCAM(model, "act", backend=b)(x, target()) for b in BACKENDS]
    ref = ec.EmbeddingCAM(Tiny(9), "act")(x, target())  # the float32 model
    for res in results:
        assert (res.maps.dtype, res.raw.dtype, res.scores.dtype) == (torch.float32,) * 3
        assert res.empty.dtype == torch.bool
        tol = 0.1 if dtype == torch.bfloat16 else 0.02
        assert (res.maps - ref.maps).abs().max().item() <= tol
        assert (res.maps - results[0].maps).abs().max().item() <= tol


# --------------------------------------------------------------------------- 6. empty batch


@pytest.mark.parametrize(
    ("backend", "method"),
    [
        ("native", "gradcam"),
        ("grad-cam", "gradcam"),
        ("grad-cam", "scorecam"),
        ("captum", "hirescam"),
    ],
)
def test_empty_batch_gives_an_empty_result_like_native(backend, method):
    res = ec.EmbeddingCAM(Tiny(10), "act", method, backend)(images(0), target())
    assert tuple(res.maps.shape) == (0, 16, 16)
    assert tuple(res.raw.shape) == (0, 16, 16)
    assert tuple(res.scores.shape) == (0,)
    assert tuple(res.empty.shape) == (0,)
    assert (res.maps.dtype, res.raw.dtype, res.scores.dtype, res.empty.dtype) == (
        torch.float32,
        torch.float32,
        torch.float32,
        torch.bool,
    )
    assert len(res) == 0


# --------------------------------------------------------------------------- 7. 1x1 feature map


class OnePixel(nn.Module):
    """a = sum of the 4x4 single-channel image (1x1 map); embedding e = (a, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 4, bias=False)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.head.weight.copy_(torch.tensor([[1.0], [0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_by_one_feature_map_is_a_constant_positive_map(backend):
    # score = cos((a, 1), (1, 0)) = a / sqrt(a^2 + 1); d score / da = (a^2 + 1)^-1.5, so the
    # Grad-CAM raw map is the single value a * (a^2 + 1)^-1.5 > 0: no variation, all evidence.
    x = torch.full((2, 1, 4, 4), 0.125)
    x[1] = 0.25
    a = x.flatten(1).sum(1)
    res = ec.EmbeddingCAM(OnePixel(), "conv", backend=backend)(
        x, ec.ReferenceTarget(torch.tensor([1.0, 0.0]))
    )
    assert torch.allclose(res.raw.flatten(), a * (a**2 + 1) ** -1.5, atol=1e-6)
    assert not bool(res.empty.any())
    assert torch.equal(res.maps, torch.ones(2, 4, 4))


# --------------------------------------------------------------------------- 8. caller's tensor


class InPlaceInput(Tiny):
    """Starts with an in-place ReLU on its input, as some preprocessing blocks do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.relu_(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_callers_images_are_never_touched(backend, requires_grad):
    model = InPlaceInput(11)
    x = images().requires_grad_(requires_grad)
    before = x.detach().clone()
    res = ec.EmbeddingCAM(model, "act", backend=backend)(x, target())
    assert torch.equal(x.detach(), before)
    assert x.grad is None
    assert x.requires_grad is requires_grad
    ref = ec.EmbeddingCAM(model, "act")(before.clone(), target())
    assert (res.maps - ref.maps).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------- further hostile cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_mode_batchnorm_and_dropout_are_explained_in_eval(backend):
    model = Tiny(12).train()
    before = snapshot(model)
    x = images(3)
    res = ec.EmbeddingCAM(model, "act", backend=backend)(x, target())
    assert_unchanged(model, before)  # running statistics not updated, modes restored
    ref = ec.EmbeddingCAM(Tiny(12).eval(), "act")(x, target())
    assert (res.maps - ref.maps).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_meta_device_model_or_images_raise_clearly(backend):
    with torch.device("meta"):
        meta_model = Tiny(13)
    with pytest.raises(ConfigurationError, match="meta device.*to_empty"):
        ec.EmbeddingCAM(meta_model, "act", backend=backend)(images(), target())
    with pytest.raises(EmbedcamValueError, match="meta device"):
        ec.EmbeddingCAM(Tiny(13), "act", backend=backend)(images().to("meta"), target())


@pytest.mark.parametrize("backend", BACKENDS)
def test_embedding_fn_returning_a_non_tensor_names_embedding_fn(backend):
    cam = ec.EmbeddingCAM(Tiny(14), "act", backend=backend, embedding_fn=lambda out: out.tolist())
    with pytest.raises(ConfigurationError, match="embedding_fn returned list"):
        cam(images(), target())


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_images_raise_naming_the_images(backend):
    x = images(3)
    x[1, 0, 2, 2] = float("nan")
    x[2, 1, 0, 0] = float("inf")
    with pytest.raises(EmbedcamValueError, match=r"images contain NaN or infinite .* \[1, 2\]"):
        ec.EmbeddingCAM(Tiny(15), "act", backend=backend)(x, target())


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_batch_mismatch_on_every_backend(backend):
    model = Tiny(16)
    before = snapshot(model)
    with pytest.raises(ShapeError, match="built for 3 images but the batch has 2"):
        ec.EmbeddingCAM(model, "act", backend=backend)(images(2), target(batch=3))
    assert_unchanged(model, before)


class Stateless(nn.Module):
    """No parameters at all: a fixed feature extractor."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.act(x) ** 2).mean(dim=(2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_without_parameters_works_on_every_backend(backend):
    x = images(2, size=8)
    t = ec.ReferenceTarget(torch.tensor([1.0, 0.0, 0.0]))
    res = ec.EmbeddingCAM(Stateless(), "act", backend=backend)(x, t)
    ref = ec.EmbeddingCAM(Stateless(), "act")(x, t)
    assert (res.maps - ref.maps).abs().max().item() <= 1e-5


def test_embed_loader_casts_float64_images_to_the_model_dtype():
    model = Tiny(17).train()
    x = images(3)
    labels = torch.tensor([0, 1, 2])
    ref = ec.embed_loader(model, [(x, labels)]).embeddings
    got = ec.embed_loader(model, [(x.double(), labels)]).embeddings
    assert torch.equal(got, ref)
    assert all(m.training for m in model.modules())
