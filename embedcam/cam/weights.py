"""Native CAM formulas: from layer activations and gradients to a signed map.

Each method is one small function ``(A, G) -> raw`` on activations ``A`` and gradients ``G`` of
shape ``(B, K, h, w)``, returning the signed map ``(B, h, w)`` before the ReLU. Adding a method is
one call, [`register_method`][embedcam.cam.registry.register_method]``(name, fn)``; the functions
below are registered under ``"gradcam"``, ``"gradcam++"``, ``"hirescam"``, ``"xgradcam"`` and
``"layercam"``.

References:
    * Grad-CAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
      Gradient-based Localization", ICCV 2017.
    * Grad-CAM++: Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based Visual
      Explanations for Deep Convolutional Networks", WACV 2018 (closed form, eq. 19).
    * HiResCAM: Draelos and Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
      convolutional neural networks", 2020.
    * XGrad-CAM: Fu et al., "Axiom-based Grad-CAM", BMVC 2020.
    * LayerCAM: Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
      Localization", IEEE TIP 2021.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["gradcam", "gradcam_pp", "hirescam", "xgradcam", "layercam"]


def gradcam(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM: channel weights are the spatial mean of the gradient.

    ``raw = sum_k mean_ij(G_kij) * A_k``.

    Args:
        acts: ``(B, K, h, w)`` activations.
        grads: ``(B, K, h, w)`` gradients of the score with respect to ``acts``.

    Returns:
        ``(B, h, w)`` signed map.
    """
    weights = grads.mean(dim=(2, 3))
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def gradcam_pp(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM++ in its closed form (Chattopadhyay et al. 2018, eq. 19), without an epsilon.

    ``alpha_kij = g^2 / (2 g^2 + S_k g^3)`` with ``g = G_kij`` and ``S_k = sum_ab A_kab``, and
    channel weights ``w_k = sum_ij alpha_kij relu(G_kij)``. For ``g != 0`` the fraction is
    evaluated as ``1 / (2 + S_k g)``, which is exact and does not underflow for the small
    gradients of cosine targets; ``alpha = 0`` where ``g == 0`` (the 0/0 case) or where the
    denominator vanishes. pytorch-grad-cam adds an absolute ``1e-6`` to the denominator instead,
    which dominates when ``g^2 << 1e-6`` and distorts the weights.

    The closed form is derived for a score that is the exponential of a linear function of the
    activations; for a cosine similarity it is a heuristic, not an exact higher-order weighting.

    Args:
        acts: ``(B, K, h, w)`` activations.
        grads: ``(B, K, h, w)`` gradients.

    Returns:
        ``(B, h, w)`` signed map.
    """
    sums = acts.sum(dim=(2, 3), keepdim=True)
    denom = 2.0 + sums * grads
    valid = (grads != 0) & (denom != 0)
    alpha = torch.where(valid, 1.0 / torch.where(valid, denom, torch.ones_like(denom)), 0.0)
    weights = (alpha * grads.clamp_min(0)).sum(dim=(2, 3))
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def hirescam(acts: Tensor, grads: Tensor) -> Tensor:
    """HiResCAM: element-wise gradient times activation, summed over channels.

    Faithful to the score for any head (the map sums to the first-order change of the score).

    Args:
        acts: ``(B, K, h, w)`` activations.
        grads: ``(B, K, h, w)`` gradients.

    Returns:
        ``(B, h, w)`` signed map.
    """
    return (grads * acts).sum(dim=1)


def xgradcam(acts: Tensor, grads: Tensor) -> Tensor:
    """XGrad-CAM: weights ``sum_ij(G A) / sum_ij(A)``; a channel with zero activation sum weighs 0.

    Args:
        acts: ``(B, K, h, w)`` activations.
        grads: ``(B, K, h, w)`` gradients.

    Returns:
        ``(B, h, w)`` signed map.
    """
    num = (grads * acts).sum(dim=(2, 3))
    den = acts.sum(dim=(2, 3))
    ok = den != 0
    weights = torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), 0.0)
    return torch.einsum("bk,bkhw->bhw", weights, acts)


def layercam(acts: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM: positive gradients times activations, summed over channels.

    Args:
        acts: ``(B, K, h, w)`` activations.
        grads: ``(B, K, h, w)`` gradients.

    Returns:
        ``(B, h, w)`` signed map.
    """
    return (grads.clamp_min(0) * acts).sum(dim=1)


def __getattr__(name: str) -> Any:
    # ``FORMULAS`` used to be a dict here; it is now a live view of the method registry.
    if name == "FORMULAS":
        from embedcam.cam.registry import FORMULAS

        return FORMULAS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
