"""The result of an explanation and the shared map post-processing (ReLU, upsampling, min-max)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from embedcam._repr import tensor_summary

__all__ = [
    "CamResult",
    "upsample",
    "normalize_maps",
    "finish_maps",
    "DEGENERATE_SENSITIVITY",
    "SATURATED_COSINE_EPS",
]

#: Relative epsilon of the per-image min-max: a map whose range is at most this fraction of its
#: maximum is treated as constant. Relative, not absolute, because similarity targets give raw
#: maxima of 1e-6 and below, where an absolute 1e-7 (pytorch-grad-cam) changes the map by 10%.
REL_EPS = 1e-6

#: First-order sensitivity ``S = sum |d score / d A * A|`` (score units, summed over the layer
#: output) below which an explanation is degenerate (see
#: [`CamResult`][embedcam.cam.result.CamResult]): self-matches measure 1e-9..1e-7, real pairs
#: 0.1 and more (random ResNet-18, layer4).
DEGENERATE_SENSITIVITY = 1e-5

#: A cosine target's score with ``|score| >= 1 - SATURATED_COSINE_EPS`` is saturated: the image
#: is explained against (a copy of) its own embedding, the gradient vanishes.
SATURATED_COSINE_EPS = 1e-6


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample ``(B, h, w)`` maps to ``size = (H, W)`` (``align_corners=False``).

    Args:
        maps: ``(B, h, w)`` maps at the layer's resolution.
        size: ``(H, W)`` output size, usually the input image size.

    Returns:
        ``(B, H, W)`` float maps.
    """
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize_maps(maps: Tensor, rel_eps: float = REL_EPS, zero: Tensor | None = None) -> Tensor:
    """Per-image min-max scaling of non-negative maps to ``[0, 1]`` with a relative epsilon.

    A map whose range is at most ``rel_eps`` times its maximum is constant: it becomes all ones
    if positive (every pixel is equally evidence) and all zeros if it is zero.

    Args:
        maps: ``(B, H, W)`` non-negative maps.
        rel_eps: relative tolerance for a constant map.
        zero: optional ``(B,)`` bool; those maps are returned as zeros.

    Returns:
        ``(B, H, W)`` maps in ``[0, 1]``.
    """
    lo, hi = torch.aminmax(maps.flatten(1), dim=1)
    rng = hi - lo
    varying = rng > rel_eps * hi
    # One fused pass, out = maps * a + b per image: (m - lo) / rng for a varying map, the
    # constant 1 (positive) or 0 (zero) otherwise.
    a = torch.where(varying, 1.0 / torch.where(varying, rng, torch.ones_like(rng)), 0.0)
    b = torch.where(varying, -lo * a, (hi > 0).to(maps.dtype))
    if zero is not None:
        a = a.masked_fill(zero, 0.0)
        b = b.masked_fill(zero, 0.0)
    return torch.addcmul(b[:, None, None], maps, a[:, None, None]).clamp_(0.0, 1.0)


def finish_maps(
    raw: Tensor, size: tuple[int, int], degenerate: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Turn signed layer-resolution maps into display maps: ReLU, upsample, min-max.

    Args:
        raw: ``(B, h, w)`` signed maps.
        size: ``(H, W)`` input size.
        degenerate: optional ``(B,)`` bool of degenerate explanations (see
            [`CamResult`][embedcam.cam.result.CamResult]); those maps are never min-max scaled:
            they are all zeros and count as empty.

    Returns:
        ``(maps, empty)``: ``(B, H, W)`` maps in ``[0, 1]`` (zeros where empty) and the ``(B,)``
        bool mask of maps with no positive evidence (or a degenerate explanation).
    """
    pos = raw.float().clamp_min(0)
    empty = pos.flatten(1).amax(dim=1) <= 0
    if degenerate is not None:
        empty = empty | degenerate.to(empty.device)
    return normalize_maps(upsample(pos, size), zero=empty), empty


@dataclass(frozen=True)
class CamResult:
    """Maps explaining a batch of images, with the scores they explain.

    Attributes:
        maps: ``(B, H, W)`` in ``[0, 1]`` at input resolution: ReLU of the raw map, bilinearly
            upsampled, per-image min-max scaled (relative epsilon). All zeros where ``empty``.
        raw: ``(B, h, w)`` signed map at the layer's resolution, before ReLU and normalisation.
        scores: ``(B,)`` the explained score of each image (e.g. cosine to its centroid).
        empty: ``(B,)`` bool, true exactly when the ReLU'd raw map is all zero or the explanation
            is ``degenerate``: the model found no positive evidence for the target (never a
            normal-looking min-max of noise).
        degenerate: ``(B,)`` bool, true where the explained score is (almost) insensitive to the
            layer, so the map is numerical noise; such maps are all zeros and ``empty`` (see
            below). All false when not given.
        method: the CAM method that produced the maps.
        backend: the backend that produced them.
        layer: dotted name of the explained layer (empty when unknown).

    Degenerate explanations: explaining an image against its own embedding (a self-match, a
    near-duplicate, a class centroid made from that one image) gives a score at its maximum,
    where the gradient is ~1e-10 instead of ~1e-3; min-max scaling would stretch that noise to
    full contrast. [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM] flags an image as
    degenerate, on every backend, when the first-order sensitivity of its score at the layer,
    ``S = sum_(k,i,j) |d score / d A_kij * A_kij|`` (in score units), is below
    [`DEGENERATE_SENSITIVITY`][embedcam.cam.result.DEGENERATE_SENSITIVITY], or when a cosine
    target's score is saturated (``|score| >= 1 - 1e-6``; the difference of cosines of
    [`ContrastiveTarget`][embedcam.targets.ContrastiveTarget] and custom targets use the ``S``
    rule only). ``raw`` keeps the layer's signed values;
    [`signed_maps`][embedcam.cam.result.CamResult.signed_maps] is zero there too.

    The repr is one short line with shapes, dtype and device, never the values; it names the
    count of degenerate maps only when there is one.

    Examples:
        >>> import torch
        >>> res = CamResult(maps=torch.zeros(2, 8, 8), raw=torch.zeros(2, 4, 4),
        ...                 scores=torch.zeros(2), empty=torch.tensor([True, False]), layer="4")
        >>> res
        CamResult(maps=(2, 8, 8) float32 cpu, raw=(2, 4, 4), layer='4', method=... empty=1/2)
        >>> len(res), res.size
        (2, (8, 8))
    """

    maps: Tensor
    raw: Tensor
    scores: Tensor
    empty: Tensor
    method: str = "gradcam"
    backend: str = "native"
    layer: str = ""
    degenerate: Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.degenerate is None:
            flags = torch.zeros(self.empty.shape, dtype=torch.bool, device=self.empty.device)
            object.__setattr__(self, "degenerate", flags)

    def __repr__(self) -> str:
        layer = f"layer={self.layer!r}, " if self.layer else ""
        k = int(self.degenerate.sum())
        degenerate = f", degenerate={k}/{self.degenerate.numel()}" if k else ""
        return (
            f"CamResult(maps={tensor_summary(self.maps)}, raw={tuple(self.raw.shape)}, {layer}"
            f"method={self.method!r}, backend={self.backend!r}, "
            f"empty={int(self.empty.sum())}/{self.empty.numel()}{degenerate})"
        )

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """Input resolution ``(H, W)`` of ``maps``."""
        return int(self.maps.shape[-2]), int(self.maps.shape[-1])

    def signed_maps(self) -> Tensor:
        """The raw signed maps upsampled to input resolution and scaled to ``[-1, 1]``.

        Each map is divided by its largest absolute value, so the sign (evidence for or against
        the target) and the relative strength survive. Use these when the ReLU would hide where
        the model looked: e.g. on a foreign background, which counts as evidence *against* the
        class and vanishes after the ReLU.

        Returns:
            ``(B, H, W)`` maps in ``[-1, 1]``; all-zero raw maps stay zero, and so do the maps of
            ``degenerate`` explanations (noise, never scaled to full contrast).
        """
        up = upsample(self.raw.float(), self.size)
        peak = up.abs().flatten(1).amax(dim=1)[:, None, None]
        out = up / torch.where(peak > 0, peak, torch.ones_like(peak))
        return out.masked_fill(self.degenerate.to(out.device)[:, None, None], 0.0)
