"""Can a map be trusted? Faithfulness, weight randomisation and class specificity.

Three checks, each batched and on the model's device:

* [`deletion_insertion`][embedcam.trust.deletion_insertion] - faithfulness for similarity
  targets: the explained score (a cosine to a centroid or reference) as the pixels are removed
  in map order (deletion; a faithful map makes it fall fast, low AUC) and as they are added back
  to an uninformative image (insertion; it should rise fast, high AUC), after Petsiuk et al.
  ("RISE", BMVC 2018). Removed pixels are imputed, not only blacked out: a blurred copy, the
  image mean, or a fill from the neighbouring kept pixels (in the spirit of ROAD, Rong et al.,
  ICML 2022: a black hole is itself a strong signal the model reacts to). Every curve also has
  a random-order baseline.
* [`randomization_check`][embedcam.trust.randomization_check] - the model-parameter
  randomisation test of Adebayo et al. ("Sanity checks for saliency maps", NeurIPS 2018):
  re-initialise the layers from the head down, one by one (cascading), on a deep copy of the
  model, and measure how much the maps change. A map that survives the randomisation of the
  whole network does not depend on what the model learned.
* [`class_specificity`][embedcam.trust.class_specificity] - the map for the image's own
  centroid against the map for its nearest impostor centroid (or a random other class): a
  class-specific explanation differs between the two.
* [`evidence_kept`][embedcam.trust.evidence_kept] - the paper's step 4 made measurable: darken
  everything outside the map's evidence and classify again (the prediction survives when the
  evidence held what the decision needed), and darken the evidence itself (the prediction
  changes when the decision needed it).

[`check_recipe`][embedcam.trust.check_recipe] runs the first three on one recipe and summarises
them ([`TrustSummary`][embedcam.trust.TrustSummary]); [`audit`][embedcam.audit.audit] does so with
``trust_images``.

Map similarity throughout is Spearman's rank correlation over the map's pixels (at the layer's
resolution, signed), the measure Adebayo et al. report, and the overlap of the top 10% pixels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from embedcam._model import embed as pick_embedding
from embedcam.cam._model import explain_mode, model_lock, prepare_images
from embedcam.cam.core import EmbeddingCAM
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError
from embedcam.targets import CentroidTarget, EmbeddingTarget

__all__ = [
    "Faithfulness",
    "deletion_insertion",
    "impute",
    "rank_correlation",
    "top_overlap",
    "Randomization",
    "randomization_check",
    "Specificity",
    "class_specificity",
    "EvidenceCheck",
    "evidence_kept",
    "evidence_region",
    "TrustSummary",
    "check_recipe",
    "RANDOMIZATION_THRESHOLD",
    "SPECIFICITY_THRESHOLD",
]

Imputation = Literal["blur", "neighbours", "mean", "black"]

#: A map is "unchanged" by a randomisation when its rank correlation with the original map stays
#: at or above this (|rho|, as Adebayo et al. compare absolute correlations).
RANDOMIZATION_THRESHOLD = 0.5

#: Own and impostor maps with a rank correlation at or above this are "not class-specific".
SPECIFICITY_THRESHOLD = 0.9


# ------------------------------------------------------------------------------------------------
# map similarity


def _ranks(x: Tensor) -> Tensor:
    """Per-row ranks (0..n-1, ties broken by position) of a ``(B, n)`` tensor, as float."""
    order = x.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(x.shape[1], device=x.device).expand_as(order))
    return ranks.to(torch.float32)


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of two batches of maps, per image.

    Args:
        a: ``(B, ...)`` maps (any resolution; flattened per image).
        b: ``(B, ...)`` maps of the same shape.

    Returns:
        ``(B,)`` correlations in ``[-1, 1]``; NaN where a map is constant (no ranking).

    Raises:
        ShapeError: the shapes differ or a batch is not at least 2-D.

    Examples:
        >>> import torch
        >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> rank_correlation(a, a ** 3), rank_correlation(a, -a)
        (tensor([1.]), tensor([-1.]))
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ShapeError(
            f"maps must have one shape (B, ...), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    x, y = a.detach().flatten(1).float(), b.detach().flatten(1).float()
    const = (x.amax(1) == x.amin(1)) | (y.amax(1) == y.amin(1))
    rx, ry = _ranks(x), _ranks(y)
    rx = rx - rx.mean(dim=1, keepdim=True)
    ry = ry - ry.mean(dim=1, keepdim=True)
    rho = (rx * ry).sum(1) / (rx.norm(dim=1) * ry.norm(dim=1)).clamp_min(1e-12)
    return rho.masked_fill(const, float("nan"))


def top_overlap(a: Tensor, b: Tensor, fraction: float = 0.1) -> Tensor:
    """Share of the top ``fraction`` pixels of ``a`` that are also among the top of ``b``.

    Args:
        a: ``(B, ...)`` maps.
        b: ``(B, ...)`` maps of the same shape.
        fraction: the share of pixels that counts as "top" (at least one pixel).

    Returns:
        ``(B,)`` overlaps in ``[0, 1]`` (1: the same top pixels).

    Raises:
        ShapeError: the shapes differ.
        ConfigurationError: ``fraction`` is not in ``(0, 1]``.

    Examples:
        >>> import torch
        >>> a = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
        >>> top_overlap(a, torch.tensor([[4.0, 1.0, 3.0, 2.0]]), fraction=0.5)
        tensor([0.5000])
    """
    if a.shape != b.shape or a.dim() < 2:
        raise ShapeError(
            f"maps must have one shape (B, ...), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not 0 < fraction <= 1:
        raise ConfigurationError(f"fraction must be in (0, 1], got {fraction}")
    x, y = a.detach().flatten(1), b.detach().flatten(1)
    k = max(1, int(round(fraction * x.shape[1])))
    tx = torch.zeros_like(x, dtype=torch.bool).scatter_(1, x.topk(k, dim=1).indices, True)
    ty = torch.zeros_like(y, dtype=torch.bool).scatter_(1, y.topk(k, dim=1).indices, True)
    return (tx & ty).sum(1).float() / k


# ------------------------------------------------------------------------------------------------
# deletion and insertion


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    c = x.shape[1]
    pad_h = min(radius, x.shape[-2] - 1)
    pad_w = min(radius, x.shape[-1] - 1)
    out = F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w > 0 else "replicate")
    # a kernel wider than the image is cut to it and renormalised (a constant stays constant)
    kw = k[radius - pad_w : radius + pad_w + 1]
    kw = kw / kw.sum()
    out = F.conv2d(out, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, pad_h, pad_h), mode="reflect" if pad_h > 0 else "replicate")
    kh = k[radius - pad_h : radius + pad_h + 1]
    kh = kh / kh.sum()
    return F.conv2d(out, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def impute(
    images: Tensor,
    removed: Tensor,
    how: Imputation = "blur",
    *,
    sigma: float = 5.0,
    fill: float = 0.0,
) -> Tensor:
    """Replace the ``removed`` pixels of a batch.

    Args:
        images: ``(B, C, H, W)`` float images (model input).
        removed: ``(B, H, W)`` bool, the pixels to replace.
        how: ``"blur"`` (a Gaussian-blurred copy of the image, ``sigma`` in pixels),
            ``"neighbours"`` (each removed pixel takes the Gaussian-weighted mean of the *kept*
            pixels around it: normalised convolution, a cheap neighbour fill after ROAD; where no
            kept pixel is near, the image mean), ``"mean"`` (the image's per-channel mean) or
            ``"black"`` (the constant ``fill``, in model-input units).
        sigma: blur width in pixels.
        fill: the constant of ``"black"``.

    Returns:
        ``(B, C, H, W)`` images, the kept pixels unchanged.

    Raises:
        ShapeError: ``removed`` does not match the images.
        ConfigurationError: an unknown ``how`` or a non-positive ``sigma``.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[[[1.0, 3.0, 5.0]]]])
        >>> impute(x, torch.tensor([[[False, True, False]]]), "neighbours", sigma=1.0)
        tensor([[[[1., 3., 5.]]]])
        >>> impute(x, torch.tensor([[[True, False, False]]]), "mean")
        tensor([[[[3., 3., 5.]]]])
    """
    if images.dim() != 4 or removed.shape != (images.shape[0], *images.shape[-2:]):
        raise ShapeError(
            f"removed must be (B, H, W) = {(images.shape[0], *images.shape[-2:])} for images "
            f"{tuple(images.shape)}, got {tuple(removed.shape)}"
        )
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigurationError(f"sigma must be a positive number of pixels, got {sigma}")
    m = removed[:, None].to(images.dtype)
    if how == "blur":
        filled = _gaussian_blur(images, sigma)
    elif how == "neighbours":
        keep = 1.0 - m
        num = _gaussian_blur(images * keep, sigma)
        den = _gaussian_blur(keep.expand_as(images), sigma)
        mean = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
        filled = torch.where(den > 1e-3, num / den.clamp_min(1e-3), mean)
    elif how == "mean":
        filled = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    elif how == "black":
        filled = torch.full_like(images, float(fill))
    else:
        raise ConfigurationError(
            f"imputation must be 'blur', 'neighbours', 'mean' or 'black', got {how!r}"
        )
    return torch.where(m.bool().expand_as(images), filled, images)


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves of the explained score.

    Attributes:
        fractions: ``(S + 1,)`` the share of pixels removed (deletion) or inserted at each step.
        deletion: ``(B, S + 1)`` score as the top-ranked pixels are removed, starting from the
            image (``deletion[:, 0]`` is the original score).
        insertion: ``(B, S + 1)`` score as the top-ranked pixels are put back into the fully
            imputed image (``insertion[:, -1]`` is the original score).
        deletion_auc: ``(B,)`` mean of the deletion curve (trapezoid rule over ``fractions``):
            lower is more faithful.
        insertion_auc: ``(B,)`` mean of the insertion curve: higher is more faithful.
        random_deletion_auc: ``(B,)`` the same for a random pixel order (the baseline a map must
            beat), or ``None`` when not computed.
        random_insertion_auc: ``(B,)`` likewise, or ``None``.
        imputation: how removed pixels were filled.
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor
    random_deletion_auc: Tensor | None
    random_insertion_auc: Tensor | None
    imputation: str

    def __len__(self) -> int:
        return int(self.deletion.shape[0])

    def __repr__(self) -> str:
        def m(t: Tensor | None) -> str:
            return "-" if t is None else f"{float(t.float().nanmean()):.3f}"

        return (
            f"Faithfulness(images={len(self)}, steps={self.fractions.numel() - 1}, "
            f"imputation={self.imputation!r}, deletion_auc={m(self.deletion_auc)} "
            f"(random {m(self.random_deletion_auc)}), insertion_auc={m(self.insertion_auc)} "
            f"(random {m(self.random_insertion_auc)}))"
        )


def _auc(curve: Tensor, fractions: Tensor) -> Tensor:
    return torch.trapezoid(curve, fractions, dim=1) / float(fractions[-1] - fractions[0])


def _order_ranks(maps: Tensor, generator: torch.Generator) -> Tensor:
    """``(B, HW)`` rank of every pixel in map order (0 = highest), ties broken at random."""
    b, n = maps.shape[0], maps[0].numel()
    flat = maps.detach().reshape(b, n).float()
    perm = torch.randperm(n, generator=generator).to(flat.device)
    order = perm[flat[:, perm].argsort(dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=flat.device).expand_as(order))
    return ranks


def _scores(
    model: nn.Module,
    images: Tensor,
    target: EmbeddingTarget,
    embedding_fn: Callable[[Any], Tensor] | None,
) -> Tensor:
    return target(pick_embedding(model(images), embedding_fn)).float()


def deletion_insertion(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: EmbeddingTarget,
    *,
    steps: int = 20,
    imputation: Imputation = "blur",
    sigma: float = 5.0,
    fill: float = 0.0,
    random_baseline: bool = True,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> Faithfulness:
    """Deletion and insertion curves of an embedding target's score, batched.

    Pixels are ranked by the map (highest first, ties in a seeded random order). Deletion
    replaces the top ``k/S`` share of the pixels with their imputed values for ``k = 0 .. S``;
    insertion starts from the fully imputed image and puts the top pixels back. Each step of
    ``B`` images is one batched forward (``2 (S + 1)`` forwards per image batch, twice that with
    the random baseline), in eval mode without gradient; the model's modes are restored.

    Args:
        model: the embedding model.
        images: ``(B, C, H, W)`` model-input images.
        maps: ``(B, H, W)`` maps at input resolution (``CamResult.maps``) giving the order.
        target: the explained target, e.g. ``CentroidTarget(centroids, labels)``.
        steps: number of steps ``S`` (>= 1).
        imputation: how removed pixels are filled (see [`impute`][embedcam.trust.impute]).
        sigma: blur width in pixels for ``"blur"`` and ``"neighbours"``.
        fill: the constant of ``"black"``.
        random_baseline: also compute the curves' AUCs for a random pixel order.
        embedding_fn: picks the embedding from a tuple/dict model output.
        batch_size: most images per forward (steps of several images are packed together).
        seed: seed of the tie-breaking and random orders.

    Returns:
        The [`Faithfulness`][embedcam.trust.Faithfulness] curves and AUCs.

    Raises:
        ShapeError: maps or images of the wrong shape, or a target for another batch size.
        ConfigurationError: ``steps`` or ``batch_size`` below 1, an unknown imputation.

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.eye(2)); _ = net[1].bias.fill_(1.0)
        >>> x = torch.tensor([[[[3.0, 4.0]]]])                  # embedding (4, 5)
        >>> f = deletion_insertion(net, x, torch.tensor([[[0.0, 1.0]]]),
        ...                        ec.ReferenceTarget(torch.tensor([1.0, 0.0])), steps=2,
        ...                        imputation="black", random_baseline=False)
        >>> f.deletion.round(decimals=4)                         # (4,5) -> (4,1) -> (1,1)
        tensor([[0.6247, 0.9701, 0.7071]])
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigurationError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    x = prepare_images(images, model)
    b, _, h, w = x.shape
    if not isinstance(maps, Tensor) or tuple(maps.shape) != (b, h, w):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ShapeError(
            f"maps must be (B, H, W) = {(b, h, w)} to match the images, got {shape}; pass "
            "CamResult.maps, which is at input resolution"
        )
    target.check_batch(b)
    # validate the imputation (and its arguments) before any forward
    impute(
        x[:1],
        torch.zeros(1, h, w, dtype=torch.bool, device=x.device),
        imputation,
        sigma=sigma,
        fill=fill,
    )
    gen = torch.Generator().manual_seed(seed)
    n = h * w
    counts = [round(k * n / steps) for k in range(steps + 1)]
    fractions = torch.tensor([c / n for c in counts], dtype=torch.float32)
    orders = [_order_ranks(maps.to(x.device), gen)]
    if random_baseline:
        orders.append(_order_ranks(torch.rand(b, h, w, generator=gen).to(x.device), gen))
    everything = torch.ones(b, h, w, dtype=torch.bool, device=x.device)
    with torch.inference_mode(), model_lock(model), explain_mode(model, freeze=False):
        blank = impute(x, everything, imputation, sigma=sigma, fill=fill)
        # Every (order, kind, step) is one batch of B images; pack them into forwards of at
        # most batch_size images. A target built for B images scores each chunk of B rows.
        jobs: list[tuple[int, int, int]] = [
            (o, kind, k) for o in range(len(orders)) for kind in (0, 1) for k in range(steps + 1)
        ]
        curves = torch.empty(len(orders), 2, steps + 1, b)
        per = max(1, batch_size // b) if b <= batch_size else 1
        for start in range(0, len(jobs), per):
            chunk = jobs[start : start + per]
            batch = []
            for o, kind, k in chunk:
                if kind == 0:  # deletion: the top counts[k] pixels imputed
                    removed = (orders[o] < counts[k]).reshape(b, h, w)
                    batch.append(torch.where(removed[:, None], blank, x))
                else:  # insertion: the top counts[k] pixels back in the imputed image
                    kept = (orders[o] < counts[k]).reshape(b, h, w)
                    batch.append(torch.where(kept[:, None], x, blank))
            if b <= batch_size:
                emb = pick_embedding(model(torch.cat(batch)), embedding_fn)
                for j, (o, kind, k) in enumerate(chunk):
                    curves[o, kind, k] = target(emb[j * b : (j + 1) * b]).float().cpu()
            else:
                for img, (o, kind, k) in zip(batch, chunk):
                    parts = [
                        pick_embedding(model(img[s : s + batch_size]), embedding_fn)
                        for s in range(0, b, batch_size)
                    ]
                    curves[o, kind, k] = target(torch.cat(parts)).float().cpu()
    c = curves.permute(0, 1, 3, 2)  # (orders, kind, B, S + 1)
    aucs = [[_auc(c[o, kind], fractions) for kind in (0, 1)] for o in range(len(orders))]
    return Faithfulness(
        fractions=fractions,
        deletion=c[0, 0],
        insertion=c[0, 1],
        deletion_auc=aucs[0][0],
        insertion_auc=aucs[0][1],
        random_deletion_auc=aucs[1][0] if random_baseline else None,
        random_insertion_auc=aucs[1][1] if random_baseline else None,
        imputation=imputation,
    )


# ------------------------------------------------------------------------------------------------
# model-parameter randomisation


@dataclass(frozen=True)
class Randomization:
    """How the maps change as the model's layers are re-initialised, from the head down.

    Attributes:
        layers: names of the re-initialised modules, in the order they were randomised (output
            first); step ``i`` has layers ``0..i`` randomised (cascading) or only layer ``i``
            (independent).
        rank_correlation: ``(L, B)`` Spearman correlation of each image's map after step ``i``
            with its original map (signed raw maps at the layer's resolution); NaN where a map
            is constant.
        top_overlap: ``(L, B)`` overlap of the top 10% pixels with the original map.
        unchanged: ``(B,)`` bool, the map after the *last* step still correlates with the
            original at ``|rho| >= threshold``: it does not depend on the learned weights
            (the check fails for that image).
        threshold: the ``|rho|`` threshold used.
        cascading: whether the layers were randomised cumulatively.
    """

    layers: list[str]
    rank_correlation: Tensor
    top_overlap: Tensor
    unchanged: Tensor
    threshold: float
    cascading: bool

    def __repr__(self) -> str:
        last = float(self.rank_correlation[-1].abs().nanmean()) if self.layers else float("nan")
        return (
            f"Randomization(layers={len(self.layers)}, cascading={self.cascading}, "
            f"final |rho|={last:.3f}, unchanged={int(self.unchanged.sum())}/"
            f"{self.unchanged.numel()})"
        )


def _reinit(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise the module's own parameters under a seeded RNG.

    Its ``reset_parameters`` where it has one, else a normal draw with the parameter's current
    standard deviation.
    """
    params = list(module.parameters(recurse=False))
    if not params:
        return
    state = torch.random.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    try:
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            if isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)):
                # their reset gives weight 1 / bias 0: draw them instead, or the layer stays
                # an identity that "survives" randomisation trivially
                with torch.no_grad():
                    for p in params:
                        p.normal_(0.0, 1.0)
        else:
            with torch.no_grad():
                for p in params:
                    std = float(p.float().std()) if p.numel() > 1 else 1.0
                    p.normal_(0.0, std if std > 0 else 1.0)
    finally:
        torch.random.set_rng_state(state)


def randomization_check(
    cam: EmbeddingCAM,
    images: Tensor,
    target: EmbeddingTarget,
    *,
    cascading: bool = True,
    layers: Sequence[str] | None = None,
    threshold: float = RANDOMIZATION_THRESHOLD,
    seed: int = 0,
) -> Randomization:
    """The model-parameter randomisation test (Adebayo et al., NeurIPS 2018), on a deep copy.

    The model is deep-copied once (the caller's model is never touched); its modules that hold
    parameters are re-initialised one by one from the output towards the input, cascading (each
    step keeps the earlier randomisations) unless ``cascading=False``, and after each step the
    same CAM (layer, method, backend) explains the same images and target. The rank correlation
    of each map with the original says how much it changed; a map whose ``|rho|`` stays at or
    above ``threshold`` after the last step is ``unchanged``: it shows the input or the
    architecture, not what the model learned.

    Args:
        cam: the CAM whose maps are checked.
        images: ``(B, C, H, W)`` images.
        target: the explained target. A fixed target (reference embeddings, centroids) is kept
            as it is, so the randomised model is explained against the trained model's
            references.
        cascading: randomise cumulatively (the paper's cascading test) or one layer at a time.
        layers: dotted names of the modules to randomise, in that order; default: every module
            with its own parameters, last first.
        threshold: the ``|rho|`` at or above which a map counts as unchanged.
        seed: seed of the re-initialisation.

    Returns:
        The [`Randomization`][embedcam.trust.Randomization] result.

    Raises:
        ConfigurationError: a name in ``layers`` is not a module of the model, the model has no
            parameters, or ``threshold`` is not in ``(0, 1]``.

    Examples:
        >>> import torch, embedcam as ec
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> cam = ec.EmbeddingCAM(net, "3")
        >>> ref = ec.ReferenceTarget(torch.ones(8))
        >>> r = randomization_check(cam, torch.rand(4, 3, 16, 16), ref)
        >>> r.layers, tuple(r.rank_correlation.shape)
        (['2', '0'], (2, 4))
    """
    if not 0 < threshold <= 1:
        raise ConfigurationError(f"threshold must be in (0, 1], got {threshold}")
    model = cam.model
    with model_lock(model):
        clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    if layers is None:
        names = [n for n, m in clone.named_modules() if list(m.parameters(recurse=False))][::-1]
    else:
        names = list(layers)
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigurationError(
                f"layers {missing[:5]} are not modules of the model; names look like "
                f"{[n for n in modules if n][:5]}"
            )
    if not names:
        raise ConfigurationError("the model has no parameters to randomise")

    def explain(m: nn.Module) -> Tensor:
        c = EmbeddingCAM(
            m,
            cam.layer_name,
            method=cam.method,
            backend=cam.backend,
            embedding_fn=cam.embedding_fn,
            reshape_transform=cam.reshape_transform,
        )
        return c(images, target).raw

    original = explain(clone)
    gen = torch.Generator().manual_seed(seed)
    rhos, overlaps = [], []
    pristine = copy.deepcopy(clone) if not cascading else None
    for name in names:
        if pristine is not None:
            clone = copy.deepcopy(pristine)
            modules = dict(clone.named_modules())
        _reinit(modules[name], gen)
        raw = explain(clone)
        rhos.append(rank_correlation(raw, original))
        overlaps.append(top_overlap(raw, original))
    rho = torch.stack(rhos).cpu()
    unchanged = rho[-1].abs() >= threshold
    return Randomization(
        layers=names,
        rank_correlation=rho,
        top_overlap=torch.stack(overlaps).cpu(),
        unchanged=unchanged,
        threshold=float(threshold),
        cascading=cascading,
    )


# ------------------------------------------------------------------------------------------------
# class specificity


@dataclass(frozen=True)
class Specificity:
    """Own-class maps against impostor-class maps.

    Attributes:
        own: ``(B, h, w)`` signed raw maps for the own centroid.
        other: ``(B, h, w)`` signed raw maps for the other class.
        other_labels: ``(B,)`` the other class of each image.
        rank_correlation: ``(B,)`` Spearman correlation of the two maps (NaN: a constant map).
        top_overlap: ``(B,)`` overlap of their top 10% pixels.
        specific: ``(B,)`` bool, ``rank_correlation < threshold``: the explanation changes with
            the class it explains. False where the correlation is NaN.
        threshold: the correlation threshold used.
        against: ``"impostor"`` or ``"random"``.
    """

    own: Tensor
    other: Tensor
    other_labels: Tensor
    rank_correlation: Tensor
    top_overlap: Tensor
    specific: Tensor
    threshold: float
    against: str

    def __repr__(self) -> str:
        return (
            f"Specificity(images={int(self.specific.numel())}, against={self.against!r}, "
            f"mean rho={float(self.rank_correlation.nanmean()):.3f}, specific="
            f"{int(self.specific.sum())}/{int(self.specific.numel())})"
        )


def class_specificity(
    cam: EmbeddingCAM,
    images: Tensor,
    centroids: Tensor,
    labels: Tensor | Sequence[int],
    *,
    against: Literal["impostor", "random"] = "impostor",
    threshold: float = SPECIFICITY_THRESHOLD,
    seed: int = 0,
) -> Specificity:
    """Whether the map changes when another class is explained (class specificity).

    Explains each image against its own centroid and against another class's centroid: the
    nearest *impostor* (the other centroid most similar to the image's embedding, the class it
    would be confused with) or a seeded *random* other class, and compares the two signed maps.
    Both are explained in one batched call of ``2B`` images.

    Args:
        cam: the CAM to check.
        images: ``(B, C, H, W)`` images.
        centroids: ``(C, D)`` class centroids, ``C >= 2``.
        labels: ``(B,)`` each image's own class.
        against: ``"impostor"`` or ``"random"``.
        threshold: rank correlation at or above which the maps count as the same (not
            class-specific).
        seed: seed of the random classes.

    Returns:
        The [`Specificity`][embedcam.trust.Specificity] result.

    Raises:
        ConfigurationError: fewer than two classes, an unknown ``against``, a threshold outside
            ``(-1, 1]``.

    Examples:
        >>> import torch, embedcam as ec
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> s = class_specificity(ec.EmbeddingCAM(net, "1"), torch.rand(3, 3, 16, 16),
        ...                       torch.randn(4, 8), [0, 1, 2])
        >>> s.other_labels.ne(torch.tensor([0, 1, 2])).all().item(), s.specific.shape
        (True, torch.Size([3]))
    """
    if against not in ("impostor", "random"):
        raise ConfigurationError(f"against must be 'impostor' or 'random', got {against!r}")
    if not -1 < threshold <= 1:
        raise ConfigurationError(f"threshold must be in (-1, 1], got {threshold}")
    if not isinstance(centroids, Tensor) or centroids.dim() != 2 or centroids.shape[0] < 2:
        shape = tuple(centroids.shape) if isinstance(centroids, Tensor) else type(centroids)
        raise ConfigurationError(
            f"class_specificity needs (C, D) centroids with C >= 2 classes, got {shape}"
        )
    own_target = CentroidTarget(centroids, labels)
    lab = own_target.labels.cpu()
    b = int(lab.numel())
    if against == "impostor":
        from embedcam.pairs import _embed_images

        emb = _embed_images(cam, images).float().cpu()
        cents = centroids.detach().float().cpu()
        unit = cents / cents.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims = (emb / emb.norm(dim=1, keepdim=True)) @ unit.T
        sims = sims.masked_fill(cents.norm(dim=1)[None] == 0, float("-inf"))
        sims[torch.arange(b), lab] = float("-inf")
        other = sims.argmax(dim=1)
    else:
        gen = torch.Generator().manual_seed(seed)
        shift = torch.randint(1, centroids.shape[0], (b,), generator=gen)
        other = (lab + shift) % centroids.shape[0]
    both = torch.cat([images, images])
    res = cam(both, CentroidTarget(centroids, torch.cat([lab, other])))
    own, oth = res.raw[:b], res.raw[b:]
    rho = rank_correlation(own, oth).cpu()
    return Specificity(
        own=own,
        other=oth,
        other_labels=other,
        rank_correlation=rho,
        top_overlap=top_overlap(own, oth).cpu(),
        specific=(rho < threshold) & ~torch.isnan(rho),
        threshold=float(threshold),
        against=against,
    )


# ------------------------------------------------------------------------------------------------
# evidence sufficiency: the paper's step 4, re-classified


@dataclass(frozen=True)
class EvidenceCheck:
    """Is the map's evidence enough for the decision, and needed for it? (darken, re-classify).

    Attributes:
        predicted: ``(B,)`` kNN prediction on the original images.
        predicted_darkened: ``(B,)`` kNN prediction after darkening everything outside the
            evidence region (only the evidence left).
        kept: ``(B,)`` bool, the prediction survives that darkening: the evidence is
            *sufficient*.
        similarity_kept: ``(B,)`` cosine between the embeddings of the original and the
            darkened image.
        predicted_removed: ``(B,)`` kNN prediction after darkening the evidence region itself
            (everything else left).
        lost: ``(B,)`` bool, the prediction changes when the evidence is darkened: the
            evidence is *necessary*.
        similarity_removed: ``(B,)`` cosine between the embeddings of the original and the
            image with its evidence darkened.
        area: ``(B,)`` fraction of the image inside the evidence region.
    """

    predicted: Tensor
    predicted_darkened: Tensor
    kept: Tensor
    similarity_kept: Tensor
    predicted_removed: Tensor
    lost: Tensor
    similarity_removed: Tensor
    area: Tensor

    @property
    def decisive(self) -> Tensor:
        """``(B,)`` bool: the evidence is both sufficient (`kept`) and necessary (`lost`)."""
        return self.kept & self.lost

    def __repr__(self) -> str:
        n = int(self.kept.numel())
        return (
            f"EvidenceCheck(images={n}, kept={int(self.kept.sum())}/{n}, "
            f"lost={int(self.lost.sum())}/{n}, mean evidence area "
            f"{float(self.area.float().mean()):.3f})"
        )


def evidence_region(maps: Tensor, threshold: float = 0.0, area: float | None = None) -> Tensor:
    """The evidence region of each map, ``(B, H, W)`` bool.

    By default the pixels with ``s > threshold * max s`` (``threshold = 0``: the paper's
    ``s > 0``, as [`darken`][embedcam.masks.darken] keeps them). With ``area``, instead the
    ``ceil(area * H * W)`` pixels of highest ``s`` (ties broken by position), so that every
    image keeps the same share: at CAM resolution ``s > 0`` often covers nearly the whole image.
    A map without positive evidence has an empty region.

    Args:
        maps: ``(B, H, W)`` maps.
        threshold: relative threshold in ``[0, 1)`` (ignored with ``area``).
        area: fraction of pixels in ``(0, 1]`` to keep, or ``None``.

    Returns:
        ``(B, H, W)`` bool.

    Raises:
        EmbedcamValueError: ``threshold`` or ``area`` out of range, NaN/inf maps.
        ShapeError: maps that are not ``(B, H, W)``.

    Examples:
        >>> import torch
        >>> m = torch.tensor([[[0.0, 0.2, 0.9, 0.5]]])
        >>> evidence_region(m).int().tolist()                 # s > 0
        [[[0, 1, 1, 1]]]
        >>> evidence_region(m, threshold=0.5).int().tolist()  # s > 0.45
        [[[0, 0, 1, 1]]]
        >>> evidence_region(m, area=0.25).int().tolist()      # the top quarter
        [[[0, 0, 1, 0]]]
    """
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ShapeError(f"maps must be (B, H, W), got {shape}")
    if not torch.isfinite(maps).all():
        raise EmbedcamValueError("maps have NaN/inf values; explain again or drop those images")
    if not 0 <= threshold < 1:
        raise EmbedcamValueError(f"threshold must be in [0, 1), got {threshold}")
    pos = maps.float().clamp_min(0)
    b, h, w = pos.shape
    flat = pos.flatten(1)
    peak = flat.amax(1, keepdim=True)
    if area is None:
        keep = (flat > threshold * peak) & (peak > 0)
        return keep.view(b, h, w)
    if not 0 < area <= 1:
        raise EmbedcamValueError(f"area must be in (0, 1], got {area}")
    n = min(h * w, max(1, math.ceil(area * h * w - 1e-9)))
    keep = torch.zeros_like(flat, dtype=torch.bool)
    if flat.shape[1]:
        # a stable descending sort: equal values keep their position order
        order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :n]
        keep.scatter_(1, order, True)
    return (keep & (peak > 0)).view(b, h, w)


def evidence_kept(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    gallery_embeddings: Tensor,
    gallery_labels: Tensor,
    *,
    k: int = 5,
    factor: float = 0.25,
    threshold: float = 0.0,
    area: float | None = None,
    embedding_fn: Callable[[Any], Tensor] | None = None,
) -> EvidenceCheck:
    """The paper's step 4 made measurable: darken outside the evidence, or the evidence itself.

    The evidence region is [`evidence_region`][embedcam.trust.evidence_region]
    (``s > threshold * max s``, or the top ``area`` share of pixels). Two versions of each image
    are classified again by a ``k``-nearest-neighbour vote in the gallery
    ([`knn_predict`][embedcam.classify.knn_predict]), each in one batched pass:

    * everything *outside* the region scaled by ``factor``: where the prediction survives
      (``kept``), the evidence was sufficient for the decision;
    * the region *itself* scaled by ``factor``: where the prediction changes (``lost``), the
      evidence was necessary.

    Args:
        model: the embedding model.
        images: ``(B, C, H, W)`` model-input images.
        maps: ``(B, H, W)`` maps at input resolution.
        gallery_embeddings: ``(G, D)`` embeddings of the labelled gallery (the training set).
        gallery_labels: ``(G,)`` their classes.
        k: neighbours of the vote.
        factor: brightness kept in darkened pixels, in ``[0, 1]`` (0 = black).
        threshold: relative map threshold of the evidence region, in ``[0, 1)``.
        area: share of pixels in the evidence region instead of a threshold, in ``(0, 1]``.
        embedding_fn: picks the embedding from a tuple/dict model output.

    Returns:
        The [`EvidenceCheck`][embedcam.trust.EvidenceCheck].

    Raises:
        ShapeError: maps that do not match the images, or gallery shapes that disagree.
        EmbedcamValueError: bad ``factor``/``threshold``/``area``, NaN maps or embeddings.

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.eye(2)); _ = net[1].bias.zero_()
        >>> gallery, labels = torch.tensor([[1.0, 0.1], [0.1, 1.0]]), torch.tensor([0, 1])
        >>> x = torch.tensor([[[[3.0, 1.0]]]])                  # class 0: pixel 0 decides
        >>> check = evidence_kept(net, x, torch.tensor([[[1.0, 0.0]]]), gallery, labels, k=1,
        ...                       factor=0.0)
        >>> check.kept, check.lost                               # sufficient and necessary
        (tensor([True]), tensor([True]))
        >>> check = evidence_kept(net, x, torch.tensor([[[0.0, 1.0]]]), gallery, labels, k=1,
        ...                       factor=0.0)                    # only pixel 1 left: class 1
        >>> check.kept, check.lost
        (tensor([False]), tensor([False]))
    """
    from embedcam.classify import knn_predict

    x = prepare_images(images, model)
    b, _, h, w = x.shape
    if not isinstance(maps, Tensor) or tuple(maps.shape) != (b, h, w):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ShapeError(f"maps must be (B, H, W) = {(b, h, w)} to match the images, got {shape}")
    if not 0 <= factor <= 1:
        raise EmbedcamValueError(f"factor must be in [0, 1], got {factor}")
    region = evidence_region(maps, threshold, area).to(x.device).unsqueeze(1)
    outside = x * torch.where(region, 1.0, factor).to(x.dtype)
    inside = x * torch.where(region, factor, 1.0).to(x.dtype)
    with torch.inference_mode(), model_lock(model), explain_mode(model, freeze=False):
        e = pick_embedding(model(x), embedding_fn).float()
        e_out = pick_embedding(model(outside), embedding_fn).float()
        e_in = pick_embedding(model(inside), embedding_fn).float()
    gal = gallery_embeddings.detach().float().to(e.device)
    lab = gallery_labels.to(e.device)
    pred = knn_predict(e, gal, lab, k=k)
    pred_out = knn_predict(e_out, gal, lab, k=k)
    pred_in = knn_predict(e_in, gal, lab, k=k)
    return EvidenceCheck(
        predicted=pred.cpu(),
        predicted_darkened=pred_out.cpu(),
        kept=(pred == pred_out).cpu(),
        similarity_kept=F.cosine_similarity(e, e_out, dim=1).cpu(),
        predicted_removed=pred_in.cpu(),
        lost=(pred != pred_in).cpu(),
        similarity_removed=F.cosine_similarity(e, e_in, dim=1).cpu(),
        area=region.flatten(1).float().mean(1).cpu(),
    )


# ------------------------------------------------------------------------------------------------
# every check of one recipe, summarised (the audit's and the SKU benchmark's trust table)


class TrustSummary(BaseModel):
    """The trust checks of one recipe on a set of images, as means (JSON-ready).

    Attributes:
        recipe: The recipe's name.
        images: Images checked.
        steps: Deletion/insertion steps.
        specificity_rho: Mean rank correlation of the own-centroid and nearest-impostor maps.
        specific: Share of images whose two maps differ (rho below
            [`SPECIFICITY_THRESHOLD`][embedcam.trust.SPECIFICITY_THRESHOLD]).
        randomization_rho: Mean ``|rho|`` between the original map and the map after the whole
            cascade of re-initialisations.
        unchanged: Share of maps that survive the randomisation (``|rho|`` at or above
            [`RANDOMIZATION_THRESHOLD`][embedcam.trust.RANDOMIZATION_THRESHOLD]).
        deletion_auc: Mean deletion AUC of the recipe's score (blur imputation; lower is better).
        random_deletion_auc: The same for a random pixel order.
        insertion_auc: Mean insertion AUC (higher is better).
        random_insertion_auc: The same for a random pixel order.
        beats_random: Share of images where deletion falls faster *and* insertion rises faster
            than the random order.
        empty: Share of empty (or degenerate) maps.
    """

    recipe: str
    images: int
    steps: int
    specificity_rho: float | None
    specific: float
    randomization_rho: float | None
    unchanged: float
    deletion_auc: float | None
    random_deletion_auc: float | None
    insertion_auc: float | None
    random_insertion_auc: float | None
    beats_random: float
    empty: float

    def __repr_args__(self) -> Any:
        # one short line for repr(), str(), rich and pydantic alike
        yield "recipe", self.recipe
        yield "images", self.images
        yield "specific", round(self.specific, 3)
        yield "unchanged", round(self.unchanged, 3)
        yield "beats_random", round(self.beats_random, 3)

    def __repr__(self) -> str:
        return (
            f"TrustSummary({self.recipe!r}, images={self.images}, specific={self.specific:.0%}, "
            f"unchanged={self.unchanged:.0%}, beats_random={self.beats_random:.0%})"
        )


def _nanmean(x: Tensor) -> float | None:
    v = float(x.float().nanmean()) if x.numel() else float("nan")
    return None if math.isnan(v) else v


def check_recipe(
    model: nn.Module,
    recipe: Any,
    images: Tensor,
    labels: Tensor | Sequence[int],
    centroids: Tensor,
    *,
    steps: int = 10,
    seed: int = 0,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
) -> TrustSummary:
    """Every trust check of one [`Recipe`][embedcam.recipe.Recipe] on a batch of images.

    Class specificity (own vs nearest-impostor centroid, at the recipe's layer and method),
    cascading parameter randomisation (on a deep copy) and deletion/insertion of the recipe's
    own score (blur imputation, random order as the baseline), summarised as means. What
    [`audit`][embedcam.audit.audit] reports with ``trust_images`` and the SKU benchmark in its
    trust section.

    Args:
        model: The embedding model (left as it was).
        recipe: The [`Recipe`][embedcam.recipe.Recipe] whose maps are checked (a centroid or
            contrastive target; a ``"reference"`` recipe has no class to be specific to).
        images: ``(B, C, H, W)`` model-input images.
        labels: ``(B,)`` their classes.
        centroids: ``(C, D)`` class centroids.
        steps: Deletion/insertion steps.
        seed: Seed of the randomisation and of the random pixel order.
        embedding_fn: Picks the embedding from a tuple/dict model output.
        reshape_transform: Maps token outputs to ``(B, K, h, w)`` (ViT).

    Returns:
        The [`TrustSummary`][embedcam.trust.TrustSummary].

    Raises:
        ConfigurationError: A ``"reference"`` recipe, or fewer than two classes.
        ShapeError: Images, labels and centroids that do not fit together.
    """
    if getattr(recipe, "target", None) == "reference":
        raise ConfigurationError(
            f"recipe {recipe.name!r} explains a reference embedding: the trust checks need a "
            "centroid or contrastive recipe (a class to be specific to)"
        )
    lab = torch.as_tensor(labels)
    cam = recipe.cam(model, embedding_fn=embedding_fn, reshape_transform=reshape_transform)
    target = recipe.make_target(centroids, lab)
    res = cam(images, target)
    shown = res.signed_maps() if recipe.signed else res.maps
    spec = class_specificity(cam, images, centroids, lab)
    rand = randomization_check(cam, images, target, seed=seed)
    faith = deletion_insertion(
        model, images, shown, target, steps=steps, seed=seed, embedding_fn=embedding_fn
    )
    assert faith.random_deletion_auc is not None and faith.random_insertion_auc is not None
    beats = (faith.deletion_auc < faith.random_deletion_auc) & (
        faith.insertion_auc > faith.random_insertion_auc
    )
    return TrustSummary(
        recipe=recipe.name,
        images=int(lab.numel()),
        steps=steps,
        specificity_rho=_nanmean(spec.rank_correlation),
        specific=float(spec.specific.float().mean()),
        randomization_rho=_nanmean(rand.rank_correlation[-1].abs()),
        unchanged=float(rand.unchanged.float().mean()),
        deletion_auc=_nanmean(faith.deletion_auc),
        random_deletion_auc=_nanmean(faith.random_deletion_auc),
        insertion_auc=_nanmean(faith.insertion_auc),
        random_insertion_auc=_nanmean(faith.random_insertion_auc),
        beats_random=float(beats.float().mean()),
        empty=float(res.empty.float().mean()),
    )
