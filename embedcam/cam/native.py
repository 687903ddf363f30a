"""The native engine: Grad-CAM family maps with the autograd graph cut at the target layer.

Why it is fast and small: a plain ``loss.backward()`` (pytorch-grad-cam) builds and traverses the
graph of the whole network, creates parameter gradients and keeps everything alive with
``retain_graph``. Here

1. the part of the model before the target layer runs under ``torch.no_grad`` (no graph);
2. a forward hook turns the layer's output into a fresh leaf that requires grad and switches
   gradient recording on, so only the part after the layer is recorded;
3. parameters are temporarily frozen, so the recorded graph holds no weight-gradient nodes;
4. ``torch.autograd.grad`` differentiates the summed scores with respect to that leaf only.

Images in a batch do not interact in eval mode, so the gradient of the sum is the per-image
gradient. All operations are batched tensor operations on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from embedcam._model import embed
from embedcam.cam._model import used_repeatedly
from embedcam.errors import ConfigurationError, ShapeError
from embedcam.targets import EmbeddingTarget


def layer_activations_and_grads(
    model: nn.Module,
    layer: nn.Module,
    layer_name: str,
    images: Tensor,
    target: EmbeddingTarget,
    embedding_fn: Callable[[Any], Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the graph-cut forward and backward; return activations, gradients and scores.

    The caller puts the model in eval mode with frozen parameters (``explain_mode``) and holds
    its lock (``model_lock``). A target layer that runs more than once in the forward raises the
    ``used_repeatedly`` error, as on the other backends.

    Returns:
        ``(acts, grads, scores)``: the layer output and the gradient of each image's score with
        respect to it (same shape), and the ``(B,)`` scores (detached).
    """
    state: dict[str, Any] = {"calls": 0, "leaf": None}

    def hook(module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
        state["calls"] += 1
        if state["calls"] > 1:  # counted; reported after the forward, with the number of calls
            return None
        if not isinstance(output, Tensor):
            raise ConfigurationError(
                f"target layer {layer_name!r} returns {type(output).__name__}, not a tensor; "
                "pick a layer whose output is a feature map"
            )
        torch.set_grad_enabled(True)
        leaf = output.detach().requires_grad_(True)
        state["leaf"] = leaf
        # A clone, so that an in-place op after the layer (ReLU(inplace=True)) neither fails on
        # the leaf nor overwrites the activations we explain.
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            output = model(images)
            if state["calls"] > 1:
                raise used_repeatedly(layer_name, state["calls"])
            if state["leaf"] is None:
                raise ConfigurationError(
                    f"target layer {layer_name!r} did not run in the forward pass; pick a layer "
                    "on the path from the image to the embedding"
                )
            emb = embed(output, embedding_fn)
            scores = target(emb)
    finally:
        handle.remove()
    leaf: Tensor = state["leaf"]
    if scores.dim() != 1 or scores.shape[0] != images.shape[0]:
        raise ShapeError(
            f"the target returned shape {tuple(scores.shape)}, expected ({images.shape[0]},): "
            "one score per image"
        )
    if not scores.requires_grad:
        raise ConfigurationError(
            f"the explained score does not depend on layer {layer_name!r}; pick a layer on the "
            "path from the image to the embedding"
        )
    (grads,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
    if grads is None:
        raise ConfigurationError(
            f"the explained score does not depend on layer {layer_name!r}; pick a layer on the "
            "path from the image to the embedding"
        )
    return leaf.detach(), grads, scores.detach()
