"""Private model helpers shared by the library: pick the embedding, find a model's device and dtype.

Not validation (that is ``embedcam._checks``): these read a model or its output.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from embedcam.errors import ConfigurationError, ShapeError


def embed(output: Any, embedding_fn: Callable[[Any], Tensor] | None) -> Tensor:
    """Pick the (B, D) embedding from a model output, with clear errors."""
    if embedding_fn is not None:
        output = embedding_fn(output)
        if not isinstance(output, Tensor):
            raise ConfigurationError(
                f"embedding_fn returned {type(output).__name__}, not a tensor; it must return the "
                "(B, D) embedding tensor picked from the model output (e.g. lambda out: out[0])"
            )
    if not isinstance(output, Tensor):
        raise ConfigurationError(
            f"the model returned {type(output).__name__}, not a tensor; pass embedding_fn= to "
            "pick the (B, D) embedding from it (e.g. embedding_fn=lambda out: out['embedding'])"
        )
    if output.dim() != 2:
        raise ShapeError(
            f"the embedding must be (B, D), got shape {tuple(output.shape)}; pass an "
            "embedding_fn that flattens or selects it"
        )
    return output


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def floating_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the first floating-point parameter (or buffer); ``None`` if there is none."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return None
