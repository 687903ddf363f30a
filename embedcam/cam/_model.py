"""Private helpers: resolve a target layer, wrap a model's output, guard the model's state."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from embedcam._checks import embed, model_device  # noqa: F401 (used by the CAM modules)
from embedcam.errors import ConfigurationError


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
    them) and put back afterwards; new ones are discarded.
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
