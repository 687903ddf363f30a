"""Adapters over pytorch-grad-cam (``grad-cam`` on PyPI) and Captum.

Both libraries are driven with embedding targets and with their pitfalls avoided (see the project
REFERENCE, section 6): pytorch-grad-cam always gets exactly one target per image (never its argmax
default, never a short list that ``zip`` would truncate), its hooks are released even on error and
the model's state is restored; Captum gets a forward that returns the per-image score, and its
maps are upsampled bilinearly (its default is nearest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embedcam.cam._model import EmbeddingModel, embed
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


def run_gradcam(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    target: EmbeddingTarget,
    method: str,
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Explain with pytorch-grad-cam; return ``(maps, raw, scores)``.

    ``maps`` are pytorch-grad-cam's own output (its ReLU, per-image scaling and OpenCV resize),
    ``raw`` is the signed map it computed before its ReLU, ``scores`` the explained scores.
    """
    import pytorch_grad_cam

    base = getattr(pytorch_grad_cam, GRADCAM_CLASSES[method])

    class _Capturing(base):  # type: ignore[misc, valid-type]
        """Keeps the signed map that the library computes before its ReLU."""

        raw_map: np.ndarray | None = None

        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            cam = super().get_cam_image(*args, **kwargs)
            self.raw_map = np.asarray(cam, dtype=np.float32)
            return cam

    wrapped = EmbeddingModel(model, embedding_fn)
    targets = target.as_gradcam_targets(images.shape[0])
    if len(targets) != images.shape[0]:  # the library would silently truncate
        raise ShapeError(f"{len(targets)} targets for {images.shape[0]} images")
    cam = _Capturing(model=wrapped, target_layers=[layer], reshape_transform=reshape_transform)
    try:
        # The library captures gradients with tensor hooks, which need a graph: when every
        # parameter is frozen, an input that requires grad provides one.
        inputs = images
        if not any(p.requires_grad for p in model.parameters()):
            inputs = images.detach().clone().requires_grad_(True)
        maps_np = cam(input_tensor=inputs, targets=targets)
        with torch.no_grad():
            scores = target(embed(cam.outputs, None)).detach()
    finally:
        cam.activations_and_grads.release()
    if cam.raw_map is None:
        raise ConfigurationError(f"pytorch-grad-cam produced no map for method {method!r}")
    device = images.device
    maps = torch.from_numpy(np.ascontiguousarray(maps_np, dtype=np.float32)).to(device)
    raw = torch.from_numpy(cam.raw_map).to(device)
    return maps, raw, scores


def run_captum(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    target: EmbeddingTarget,
    method: str,
    embedding_fn: Callable[[Any], Tensor] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Explain with Captum; return ``(upsampled_relu_maps, raw, scores)``.

    Grad-CAM uses ``LayerGradCam`` (channel weights = spatial mean gradient); HiResCAM uses
    ``LayerGradientXActivation`` summed over channels. The forward returns the per-image score, so
    Captum needs no ``target`` index. ``LayerGradCam`` is called with ``relu_attributions=False``
    to keep the signed map as ``raw``; the ReLU (identical to ``relu_attributions=True``) and the
    bilinear ``LayerAttribution.interpolate`` are then applied here.
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
    relu = torch.relu(raw.detach())[:, None]
    up = cattr.LayerAttribution.interpolate(
        relu, tuple(images.shape[-2:]), interpolate_mode="bilinear"
    )[:, 0]
    return up, raw.detach(), captured["scores"]
