"""Private helpers: resolve a target layer, wrap a model's output, guard the model's state.

Every explanation of a model runs inside `model_lock` (calls on the same modules from
several threads are serialised), `explain_mode` (eval mode, restored flags and ``.grad``)
and `single_use_guard` (the target layer must run once per forward), so that every backend
sees the model in the same state and leaves it as it found it.
"""

from __future__ import annotations

import difflib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from embedcam._checks import all_finite, check_float_images
from embedcam._model import embed, floating_dtype
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[nn.Module, str]:
    """Return the module and its dotted name; a bad name lists near matches."""
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layer, nn.Module):
        if id(layer) not in names:
            raise ConfigurationError(
                f"target_layer {type(layer).__name__} is not a sub-module of the model; pass a "
                "module of this model (e.g. model.layer4) or its dotted name"
            )
        return layer, names[id(layer)] or "<model>"
    if not isinstance(layer, str):
        raise ConfigurationError(
            f"target_layer must be an nn.Module or a dotted name, got {type(layer).__name__}"
        )
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return modules[layer], layer
    candidates = [n for n in modules if n]
    near = difflib.get_close_matches(layer, candidates, n=5, cutoff=0.5)
    if not near:
        near = [n for n in candidates if layer.split(".")[-1] in n][:5]
    hint = f" Near matches: {near}." if near else ""
    raise ConfigurationError(
        f"target_layer {layer!r} is not in the model.{hint} List the names with "
        "[n for n, _ in model.named_modules()]"
    )


def used_repeatedly(layer_name: str, calls: int) -> ConfigurationError:
    """The error for a target layer that runs more than once in one forward pass."""
    return ConfigurationError(
        f"target layer {layer_name!r} is called {calls} times per forward (a shared module or a "
        "block applied repeatedly), so it has no single output to explain. Pick a layer that is "
        "called once per forward, or wrap the use you want to explain in its own module (e.g. an "
        "nn.Identity() applied right after it) and pass that module"
    )


@contextmanager
def single_use_guard(model: nn.Module, layer: nn.Module, layer_name: str) -> Iterator[None]:
    """Count the target layer's calls in every forward of ``model``; raise if more than one.

    The check runs at the end of each model forward (before any backend uses the activations),
    so every backend raises the same `used_repeatedly` error.
    """
    calls = [0]

    def reset(module: nn.Module, args: Any) -> None:
        calls[0] = 0

    def count(module: nn.Module, args: Any, output: Any) -> None:
        calls[0] += 1

    def check(module: nn.Module, args: Any, output: Any) -> None:
        if calls[0] > 1:
            raise used_repeatedly(layer_name, calls[0])

    handles = [
        model.register_forward_pre_hook(reset),
        layer.register_forward_hook(count),
        model.register_forward_hook(check),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


@contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    """Hold a re-entrant lock on every module of ``model`` for the duration.

    Explaining switches the model to eval mode, freezes parameters and registers hooks; two
    threads doing that on the same modules at once would see each other's hooks and restore each
    other's half-changed state. One lock per module (not per model) also serialises two models
    that share a sub-module (a shared backbone); the locks are taken in a fixed order (by ``id``),
    so concurrent calls cannot deadlock. Calls on disjoint models still run in parallel.
    """
    modules = sorted(model.modules(), key=id)
    with _LOCKS_GUARD:
        locks = [_LOCKS.setdefault(m, threading.RLock()) for m in modules]
    with ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def prepare_images(images: Any, model: nn.Module) -> Tensor:
    """Validate a ``(B, C, H, W)`` batch and return a private copy on the model's device and dtype.

    The copy is detached and owned by embedcam: the caller's tensor is never modified (not even
    by an in-place operation at the start of the model), never gets a ``.grad`` and keeps its
    ``requires_grad`` flag. Float images of another precision (float64 from NumPy, float16) are
    cast to the dtype of the model's floating-point parameters. Called outside inference mode
    (``EmbeddingCAM`` runs under ``torch.inference_mode(False)``), the copy is a normal tensor
    that autograd may record, also for images made under ``torch.inference_mode()``.

    Raises:
        ShapeError: not a 4-D tensor, or not a floating-point dtype.
        EmbedcamValueError: images on the meta device, or NaN/inf values (after the cast).
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ShapeError(
            f"images must be a (B, C, H, W) tensor, got {shape}; add a batch dimension with "
            "images.unsqueeze(0) for a single image"
        )
    if images.is_meta:
        raise EmbedcamValueError(
            "images are on the meta device and hold no data; pass real image tensors"
        )
    check_float_images(images)
    dtype = floating_dtype(model) or images.dtype
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = first.device if first is not None else images.device  # a stateless model: keep
    out = images.detach().to(device=device, dtype=dtype, copy=True)
    if not all_finite(out):
        bad = (~torch.isfinite(out).flatten(1).all(dim=1)).nonzero().flatten().tolist()
        cast = "" if dtype == images.dtype else f" (after the cast to the model's {dtype})"
        raise EmbedcamValueError(
            f"images contain NaN or infinite values{cast} in image(s) {bad[:10]}; fix the "
            "loading or normalisation of those images, or drop them from the batch"
        )
    return out


class EmbeddingModel(nn.Module):
    """The model followed by ``embedding_fn``: a module whose output is the (B, D) embedding."""

    def __init__(self, model: nn.Module, embedding_fn: Callable[[Any], Tensor] | None) -> None:
        super().__init__()
        self.model = model
        self.embedding_fn = embedding_fn

    def forward(self, x: Tensor) -> Tensor:
        return embed(self.model(x), self.embedding_fn)


@contextmanager
def explain_mode(model: nn.Module, *, freeze: bool) -> Iterator[None]:
    """Eval mode for the duration; restore every module's mode, requires_grad flags and .grad.

    Existing ``.grad`` tensors are set aside (so a backend that calls ``backward`` cannot add to
    them) and put back afterwards; new ones are discarded. Not thread-safe by itself: callers
    hold `model_lock`.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        model.eval()
        if freeze:
            for p in params:
                p.requires_grad_(False)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag, g in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = g
