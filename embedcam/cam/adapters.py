"""Adapters over pytorch-grad-cam (``grad-cam`` on PyPI) and Captum.

Both libraries are driven with embedding targets and with their pitfalls avoided:
pytorch-grad-cam always gets exactly one target per image (never its argmax default, never a short
list that ``zip`` would truncate), its hooks are released even on error and the model's state is
restored; Captum gets a forward that returns the per-image score. Both adapters return the signed
layer-resolution map and the scores (the grad-cam adapter also the layer's activations and
gradients, for the degenerate flag); [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM] turns every
backend's map into display maps with the same ReLU, bilinear upsampling, relative-epsilon
min-max and ``empty`` and ``degenerate`` flags ([`finish_maps`][embedcam.cam.result.finish_maps]),
in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embedcam._model import embed
from embedcam.cam._model import EmbeddingModel
from embedcam.errors import ConfigurationError, ShapeError
from embedcam.targets import EmbeddingTarget

#: embedcam method name -> pytorch-grad-cam class name.
GRADCAM_CLASSES: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "scorecam": "ScoreCAM",
}

#: embedcam method name -> Captum layer attribution class name.
CAPTUM_CLASSES: dict[str, str] = {
    "gradcam": "LayerGradCam",
    "hirescam": "LayerGradientXActivation",
}


@functools.cache
def _capturing_class(method: str) -> type:
    """pytorch-grad-cam's class for ``method``, keeping the signed map it computes before its ReLU.

    Built once per method (not per call).
    """
    import pytorch_grad_cam

    base = getattr(pytorch_grad_cam, GRADCAM_CLASSES[method])

    class _Capturing(base):  # type: ignore[misc, valid-type]
        raw_map: np.ndarray | None = None

        def compute_cam_per_layer(self, *args: Any, **kwargs: Any) -> Any:
            # The library converts the stored tensors with .numpy(), which has no bfloat16, and
            # would compute in the model's (half) precision: compute the map in float32.
            store = self.activations_and_grads
            store.activations = [a.float() for a in store.activations]
            store.gradients = [g.float() for g in store.gradients]
            return super().compute_cam_per_layer(*args, **kwargs)

        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            cam = super().get_cam_image(*args, **kwargs)
            self.raw_map = np.asarray(cam, dtype=np.float32)
            return cam

    _Capturing.__name__ = _Capturing.__qualname__ = f"Capturing{base.__name__}"
    return _Capturing


class _GraphCutModel(EmbeddingModel):
    """The embedding model as pytorch-grad-cam sees it, with the autograd graph cut at the layer.

    `run_gradcam` freezes the parameters and passes detached images, so nothing before the
    target layer is recorded; a forward hook on the layer (`cut`) turns the layer's output
    into a fresh leaf that requires grad, so the graph that the library's ``loss.backward()``
    walks starts there. The gradient with respect to the layer output - all the library uses -
    is unchanged; no backward through the layers before it and no weight gradients are computed,
    and the activations before the layer are freed as the forward goes.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        embedding_fn: Callable[[Any], Tensor] | None,
        images: Tensor,
    ) -> None:
        super().__init__(model, embedding_fn)
        self.__dict__["_layer"] = layer  # not a sub-module: it already is one of ``model``
        self.uses_gradients = True
        self._ran = False
        self._cut = False
        self.leaf: Tensor | None = None
        self._dtype = images.dtype
        if next(model.parameters(), None) is None:
            # The library takes its device from the first parameter: give a stateless model one.
            self.anchor = nn.Parameter(images.new_zeros(0), requires_grad=False)

    def cut(self, module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
        """Forward hook on the target layer: the first output of a recorded forward becomes a leaf.

        (A layer that runs twice per forward is rejected before its activations are used;
        forwards without gradient recording, ScoreCAM's masked images, are left alone.)
        """
        self._ran = True
        if self._cut or not torch.is_grad_enabled() or not isinstance(output, Tensor):
            return None
        if not output.dtype.is_floating_point:
            return None
        self._cut = True
        # Kept for the degenerate flag: the caller differentiates the score with respect to it.
        self.leaf = output.detach().requires_grad_(True)
        # A clone, so that an in-place op after the layer (ReLU(inplace=True)) sees a non-leaf,
        # as it would without the cut.
        return self.leaf.clone()

    def forward(self, x: Tensor) -> Tensor:
        self._ran = self._cut = False
        # ScoreCAM builds its masked images in float32, whatever the model's dtype.
        out = super().forward(x.to(self._dtype))
        if not torch.is_grad_enabled():
            return out
        if not self._ran:
            raise ConfigurationError(
                f"target layer {self._name()!r} did not run in the forward pass; pick a layer on "
                "the path from the image to the embedding"
            )
        if not self._cut:
            raise ConfigurationError(
                f"target layer {self._name()!r} does not return a float tensor; pick a layer "
                "whose output is a feature map"
            )
        if self.uses_gradients and not out.requires_grad:
            raise ConfigurationError(
                f"the explained score does not depend on layer {self._name()!r}; pick a layer "
                "on the path from the image to the embedding"
            )
        return out

    def _name(self) -> str:
        layer = self.__dict__["_layer"]
        return next((n for n, m in self.model.named_modules() if m is layer), "?")


def run_gradcam(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    target: EmbeddingTarget,
    method: str,
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Explain with pytorch-grad-cam; return ``(raw, scores, acts, grads)``.

    ``raw`` is the signed float32 map the library computed before its ReLU (its own display maps,
    min-max scaled with an absolute epsilon, are discarded: a constant map would come out all
    zero), ``scores`` the explained scores, ``acts`` the target layer's output and ``grads`` the
    gradient of each image's score with respect to it (for the degenerate flag: one
    ``torch.autograd.grad`` on the graph the library's forward recorded and its backward
    retained; no extra forward, also for the gradient-free methods). The caller holds the model's
    lock, puts it in eval mode and passes a private copy of the images.

    The library runs one forward and its ``loss.backward()`` on a graph cut at the target layer
    (see `_GraphCutModel`): same activations, same gradients, same maps, but neither the
    backward through the layers before the target layer nor weight gradients, and far less memory
    (on CPU, freeing the whole-network graph after each call and faulting it back in on the next
    one cost ~0.7 M page faults and over a second of system time per ResNet-50 batch of 16; see
    benchmarks/README.md). Parameters' ``requires_grad`` flags are restored afterwards.
    """
    wrapped = _GraphCutModel(model, layer, embedding_fn, images)
    targets = target.as_gradcam_targets(images.shape[0])
    if len(targets) != images.shape[0]:  # the library would silently truncate
        raise ShapeError(f"{len(targets)} targets for {images.shape[0]} images")
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    # Registered before the library's hooks and prepended: they see the cut output.
    handle = layer.register_forward_hook(wrapped.cut, prepend=True)
    try:
        for p in params:
            p.requires_grad_(False)
        cam = _capturing_class(method)(
            model=wrapped, target_layers=[layer], reshape_transform=reshape_transform
        )
        wrapped.uses_gradients = bool(cam.uses_gradients)
        try:
            cam(input_tensor=images.detach(), targets=targets)
            scores = target(embed(cam.outputs, None))
            leaf = wrapped.leaf
            if leaf is None:
                raise ConfigurationError(
                    f"pytorch-grad-cam recorded no forward through the target layer for {method!r}"
                )
            grads = None
            if scores.requires_grad:
                (grads,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
            acts = leaf.detach()
            grads = torch.zeros_like(acts) if grads is None else grads.detach()
            scores = scores.detach()
        finally:
            cam.activations_and_grads.release()
    finally:
        handle.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    if cam.raw_map is None:
        raise ConfigurationError(f"pytorch-grad-cam produced no map for method {method!r}")
    raw = torch.from_numpy(cam.raw_map).to(images.device)
    return raw, scores, acts, grads


def run_captum(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    target: EmbeddingTarget,
    method: str,
    embedding_fn: Callable[[Any], Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """Explain with Captum; return ``(raw, scores)``.

    Grad-CAM uses ``LayerGradCam`` (channel weights = spatial mean gradient); HiResCAM uses
    ``LayerGradientXActivation`` summed over channels. The forward returns the per-image score, so
    Captum needs no ``target`` index. ``LayerGradCam`` is called with ``relu_attributions=False``
    to keep the signed map as ``raw`` (float32 whatever the model's precision); the ReLU
    (identical to ``relu_attributions=True``) and the bilinear upsampling (not Captum's default,
    nearest) are applied by the caller, as for every backend.
    """
    import captum.attr as cattr

    captured: dict[str, Tensor] = {}

    def forward(x: Tensor) -> Tensor:
        scores = target(embed(model(x), embedding_fn))
        captured["scores"] = scores.detach()
        return scores

    algo = getattr(cattr, CAPTUM_CLASSES[method])(forward, layer)
    if method == "gradcam":
        attr = algo.attribute(images, relu_attributions=False)
        raw = attr[:, 0]
    else:
        attr = algo.attribute(images)
        raw = attr.sum(dim=1)
    if raw.dim() != 3:
        raise ShapeError(
            f"Captum returned a map of shape {tuple(raw.shape)}; the layer output must be a "
            "(B, K, h, w) feature map (use backend='native' with reshape_transform otherwise)"
        )
    return raw.detach().float(), captured["scores"]
