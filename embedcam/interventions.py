"""Background interventions: measure background reliance by editing the pixels, not by a map.

A CAM only correlates evidence with places; an intervention changes the background and watches
the prediction (Xiao et al., *Noise or Signal: The Role of Image Backgrounds in Object
Recognition*, ICLR 2021; Moayeri et al., *A Comprehensive Study of Image Classification Model
Sensitivity to Foregrounds, Backgrounds, and Visual Attributes*, CVPR 2022). With an object mask
``m`` (exact on synthetic data; ``boxes_to_masks(boxes, size)`` on real data):

* [`only_bg`][embedcam.interventions.only_bg] (Only-BG-B): the object region filled with black.
* [`only_fg`][embedcam.interventions.only_fg] (Only-FG): the object on black.
* [`mixed_same`][embedcam.interventions.mixed_same] /
  [`mixed_rand`][embedcam.interventions.mixed_rand] (Mixed-Same / Mixed-Rand): the object pasted on
  the background of another image of the same class / of another class,
  ``bg_j * (1 - m_i) + x_i * m_i``. The donor's own object is removed first (see
  [`remove_objects`][embedcam.interventions.remove_objects]), as Xiao et al. do with their tiled
  Only-BG-T backgrounds, so the donor's silhouette does not leak its class.
* [`bg_gap`][embedcam.interventions.bg_gap] = accuracy(Mixed-Same) - accuracy(Mixed-Rand), and the
  relative foreground sensitivity
  [`relative_foreground_sensitivity`][embedcam.interventions.relative_foreground_sensitivity] with
  noise from [`region_noise`][embedcam.interventions.region_noise].

Everything is batched on ``(B, C, H, W)`` images and ``(B, H, W)`` bool masks, keeps the input
device, and is deterministic for a given ``torch.Generator`` or integer seed.

Examples:
    >>> import torch
    >>> x = torch.arange(8.0).reshape(2, 1, 2, 2)
    >>> m = torch.tensor([[[True, False], [False, False]]] * 2)
    >>> only_bg(x, m)[0, 0]
    tensor([[0., 1.],
            [2., 3.]])
    >>> mix_backgrounds(x, m, torch.tensor([1, 0]), donor_fill="keep")[0, 0]
    tensor([[0., 5.],
            [6., 7.]])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from embedcam._checks import as_label_tensor
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError

__all__ = [
    "only_bg",
    "only_fg",
    "remove_objects",
    "paste_objects",
    "mix_backgrounds",
    "same_class_donors",
    "other_class_donors",
    "mixed_same",
    "mixed_rand",
    "region_noise",
    "bg_gap",
    "relative_foreground_sensitivity",
]

DonorFill = Literal["inpaint", "black", "keep"]


def _check(images: Tensor, masks: Tensor) -> Tensor:
    """Check ``images (B, C, H, W)`` against ``masks (B, H, W)``; return masks ``(B, 1, H, W)``.

    Images must be floating and finite (the check shared with
    [`embedcam.darken`][embedcam.masks.darken]).
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ShapeError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ShapeError(
            f"masks must be a (B, H, W) bool tensor, got {shape}; for boxes use "
            "embedcam.boxes_to_masks(boxes, size=(H, W))"
        )
    if masks.dtype != torch.bool:
        raise EmbedcamValueError(
            f"masks must be bool, got {masks.dtype}; threshold them first, e.g. masks > 0.5"
        )
    b, _, h, w = images.shape
    if tuple(masks.shape) != (b, h, w):
        raise ShapeError(
            f"masks {tuple(masks.shape)} do not match images {tuple(images.shape)}; expected "
            f"({b}, {h}, {w})"
        )
    from embedcam.masks import check_finite_images  # masks loads scipy: imported on use

    check_finite_images(images)
    return masks.to(images.device)[:, None]


def _check_fill(fill: float) -> float:
    try:
        ok = math.isfinite(float(fill))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise EmbedcamValueError(
            f"fill must be a finite number, got {fill!r}; 0 is black for images in [0, 1]"
        )
    return float(fill)


def _generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if generator is None else int(generator))
    return gen


def only_bg(images: Tensor, masks: Tensor, fill: float = 0.0) -> Tensor:
    """Only-BG-B: fill the object region with ``fill`` (black by default).

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool, true on object pixels.
        fill: Value written on object pixels (0 is black for images in ``[0, 1]``; pass the
            normalised black if the images are normalised).

    Returns:
        ``(B, C, H, W)``: the images with the object removed; background pixels are unchanged.

    Raises:
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``masks`` is not bool, ``images`` not float or not finite, or
            ``fill`` is not a finite number.
    """
    m = _check(images, masks)
    return images.masked_fill(m, _check_fill(fill))


def only_fg(images: Tensor, masks: Tensor, fill: float = 0.0) -> Tensor:
    """Only-FG: keep the object, fill the background with ``fill`` (black by default).

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool, true on object pixels.
        fill: Value written on background pixels.

    Returns:
        ``(B, C, H, W)``: object pixels unchanged, the rest ``fill``.

    Raises:
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``masks`` is not bool, ``images`` not float or not finite, or
            ``fill`` is not a finite number.
    """
    m = _check(images, masks)
    return images.masked_fill(~m, _check_fill(fill))


def _push_pull(x: Tensor, known: Tensor) -> Tensor:
    """Fill unknown pixels from the known ones, coarse to fine (pull-push interpolation).

    ``x (B, C, H, W)``, ``known (B, 1, H, W)`` float 0/1. Known pixels are returned exactly;
    each unknown pixel takes the bilinear upsampling of the known-pixel average one level
    coarser, recursively (Gortler et al., *The Lumigraph*, SIGGRAPH 1996, pull-push).
    """
    if bool((known > 0).all()):
        return x
    h, w = x.shape[-2:]
    if h == 1 and w == 1:
        return x * known  # an image with no known pixel at all becomes black
    xs = F.avg_pool2d(x * known, 2, ceil_mode=True)
    ws = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = torch.where(ws > 0, xs / ws.clamp_min(1e-12), torch.zeros_like(xs))
    filled = _push_pull(coarse, (ws > 0).to(x.dtype))
    up = F.interpolate(filled, size=(h, w), mode="bilinear", align_corners=False)
    return torch.where(known > 0, x, up)


def remove_objects(images: Tensor, masks: Tensor, mode: DonorFill = "inpaint") -> Tensor:
    """Remove each image's object so that only its background remains.

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool object masks.
        mode: ``"inpaint"`` fills the object region smoothly from the surrounding background
            (pull-push), so neither the object nor its silhouette remain; ``"black"`` fills it
            with 0 (Only-BG-B); ``"keep"`` leaves the object in place.

    Returns:
        ``(B, C, H, W)`` backgrounds; pixels outside the masks are unchanged.

    Raises:
        ConfigurationError: If ``mode`` is unknown.
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``masks`` is not bool or ``images`` not float or not finite.
    """
    m = _check(images, masks)
    if mode == "keep":
        return images.clone()
    if mode == "black":
        return images.masked_fill(m, 0.0)
    if mode == "inpaint":
        return _push_pull(images, (~m).to(images.dtype))
    raise ConfigurationError(f"unknown fill mode {mode!r}; use 'inpaint', 'black' or 'keep'")


def paste_objects(images: Tensor, masks: Tensor, backgrounds: Tensor) -> Tensor:
    """Paste each image's object onto a background: ``bg * (1 - m) + x * m``.

    Args:
        images: ``(B, C, H, W)`` float images holding the objects.
        masks: ``(B, H, W)`` bool object masks of ``images``.
        backgrounds: ``(B, C, H, W)`` backgrounds, one per image.

    Returns:
        ``(B, C, H, W)``: object pixels from ``images``, every other pixel from ``backgrounds``.

    Raises:
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``masks`` is not bool, or ``images`` or ``backgrounds`` is not
            float or holds NaN/inf values.
    """
    m = _check(images, masks)
    if not isinstance(backgrounds, Tensor):
        raise ShapeError(
            f"backgrounds must be a (B, C, H, W) tensor like images, got "
            f"{type(backgrounds).__name__}"
        )
    if tuple(backgrounds.shape) != tuple(images.shape):
        raise ShapeError(
            f"backgrounds {tuple(backgrounds.shape)} must match images {tuple(images.shape)}"
        )
    from embedcam.masks import check_finite_images

    check_finite_images(backgrounds.to(images), "backgrounds")
    return torch.where(m, images, backgrounds.to(images))


def mix_backgrounds(
    images: Tensor, masks: Tensor, donor_index: Tensor, donor_fill: DonorFill = "inpaint"
) -> Tensor:
    """Paste object ``i`` on the background of image ``donor_index[i]`` of the same batch.

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool object masks.
        donor_index: ``(B,)`` int, the donor image of each image's background.
        donor_fill: How the donor's own object is removed (see
            [`remove_objects`][embedcam.interventions.remove_objects]).

    Returns:
        ``(B, C, H, W)``: ``bg[donor_index[i]] * (1 - m_i) + x_i * m_i``.

    Raises:
        ShapeError: If the shapes do not match or ``donor_index`` is not ``(B,)``.
        EmbedcamValueError: If a donor index is outside ``[0, B)``, ``masks`` is not bool or
            ``images`` not float or not finite.
    """
    _check(images, masks)
    donors = as_label_tensor(donor_index, name="donor_index")
    b = images.shape[0]
    if donors.shape[0] != b:
        raise ShapeError(f"donor_index has {donors.shape[0]} entries for a batch of {b} images")
    if donors.numel() and (int(donors.min()) < 0 or int(donors.max()) >= b):
        raise EmbedcamValueError(f"donor_index values must be in [0, {b}), got {donors.tolist()}")
    backgrounds = remove_objects(images, masks, donor_fill)[donors.to(images.device)]
    return paste_objects(images, masks, backgrounds)


def same_class_donors(labels: Tensor, generator: torch.Generator | int | None = None) -> Tensor:
    """For each image, a random *other* image of the same class in the batch.

    Args:
        labels: ``(B,)`` int class labels.
        generator: ``torch.Generator`` or seed (default seed 0) for reproducible picks.

    Returns:
        ``(B,)`` int64 donor indices, ``donor[i] != i`` and ``labels[donor[i]] == labels[i]``.

    Raises:
        EmbedcamValueError: If a class has a single image in the batch (the message names the
            class and position); sample batches with several images per class (P x K).

    Examples:
        >>> same_class_donors(torch.tensor([0, 1, 0, 1])).tolist()
        [2, 3, 0, 1]
    """
    labels = as_label_tensor(labels)
    gen = _generator(generator, labels.device)
    donors = torch.empty_like(labels)
    for c in torch.unique(labels.cpu()).tolist():
        idx = torch.nonzero(labels.cpu() == c).flatten()
        n = idx.numel()
        if n < 2:
            raise EmbedcamValueError(
                f"class {c} has a single image in the batch (position {int(idx[0])}), so it has "
                "no same-class donor; use batches with at least 2 images per class"
            )
        # a non-zero cyclic offset picks uniformly among the n - 1 others
        offset = torch.randint(1, n, (n,), generator=gen)
        donors[idx.to(labels.device)] = idx[(torch.arange(n) + offset) % n].to(labels.device)
    return donors


def other_class_donors(labels: Tensor, generator: torch.Generator | int | None = None) -> Tensor:
    """For each image, a random image of a *different* class in the batch.

    Args:
        labels: ``(B,)`` int class labels.
        generator: ``torch.Generator`` or seed (default seed 0).

    Returns:
        ``(B,)`` int64 donor indices with ``labels[donor[i]] != labels[i]``.

    Raises:
        EmbedcamValueError: If the batch holds a single class.
    """
    labels = as_label_tensor(labels)
    gen = _generator(generator, labels.device)
    cpu = labels.cpu()
    donors = torch.empty_like(cpu)
    for c in torch.unique(cpu).tolist():
        mine = torch.nonzero(cpu == c).flatten()
        others = torch.nonzero(cpu != c).flatten()
        if others.numel() == 0:
            raise EmbedcamValueError(
                f"every image in the batch has class {c}; Mixed-Rand needs images of other "
                "classes in the batch"
            )
        donors[mine] = others[torch.randint(0, others.numel(), (mine.numel(),), generator=gen)]
    return donors.to(labels.device)


def mixed_same(
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    generator: torch.Generator | int | None = None,
    donor_fill: DonorFill = "inpaint",
) -> tuple[Tensor, Tensor]:
    """Mixed-Same: each object on the background of another image of its class.

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool object masks.
        labels: ``(B,)`` class labels.
        generator: ``torch.Generator`` or seed for the donor choice.
        donor_fill: How the donor's object is removed (see
            [`remove_objects`][embedcam.interventions.remove_objects]).

    Returns:
        ``(mixed, donors)``: images ``(B, C, H, W)`` and donor indices ``(B,)``.

    Raises:
        EmbedcamValueError: If a class has a single image in the batch, or ``images`` is not
            float or not finite.
        ShapeError: If the shapes do not match.
    """
    donors = same_class_donors(labels, generator)
    return mix_backgrounds(images, masks, donors, donor_fill), donors


def mixed_rand(
    images: Tensor,
    masks: Tensor,
    labels: Tensor,
    generator: torch.Generator | int | None = None,
    donor_fill: DonorFill = "inpaint",
) -> tuple[Tensor, Tensor]:
    """Mixed-Rand: each object on the background of an image of another class.

    Xiao et al. draw the background class at random (it may coincide with the object's class
    with probability ``1/C``); here it is always another class, which makes BG-gap a little
    larger and clearer.

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool object masks.
        labels: ``(B,)`` class labels.
        generator: ``torch.Generator`` or seed for the donor choice.
        donor_fill: How the donor's object is removed (see
            [`remove_objects`][embedcam.interventions.remove_objects]).

    Returns:
        ``(mixed, donors)``: images ``(B, C, H, W)`` and donor indices ``(B,)``.

    Raises:
        EmbedcamValueError: If the batch holds a single class, or ``images`` is not float or
            not finite.
        ShapeError: If the shapes do not match.
    """
    donors = other_class_donors(labels, generator)
    return mix_backgrounds(images, masks, donors, donor_fill), donors


def region_noise(
    images: Tensor,
    masks: Tensor,
    region: Literal["fg", "bg"],
    rms: float = 0.1,
    generator: torch.Generator | int | None = None,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Add Gaussian noise of equal total energy to the object (``"fg"``) or the background.

    The noise is zero outside the region and its standard deviation inside is
    ``rms * sqrt(H W / |region|)``, so its energy summed over the image is the same whichever
    region it covers (Moayeri et al. 2022 compare equal-energy noise on foreground and
    background). An empty region gets no noise.

    Args:
        images: ``(B, C, H, W)`` float images.
        masks: ``(B, H, W)`` bool object masks.
        region: ``"fg"`` (object) or ``"bg"`` (everything else).
        rms: Root-mean-square of the noise over the whole image.
        generator: ``torch.Generator`` or seed.
        clamp: Clip the result to this range (``None``: no clipping; clipping reduces the
            energy slightly).

    Returns:
        ``(B, C, H, W)`` noisy images; pixels outside the region are unchanged (before clamping).

    Raises:
        ConfigurationError: If ``region`` is not ``"fg"``/``"bg"``, ``rms`` is negative or not
            finite, or ``clamp`` is not a ``(low, high)`` pair.
        ShapeError: If the shapes do not match.
        EmbedcamValueError: If ``masks`` is not bool or ``images`` not float or not finite.
    """
    m = _check(images, masks)
    if region not in ("fg", "bg"):
        raise ConfigurationError(f"region must be 'fg' or 'bg', got {region!r}")
    try:
        rms_ok = math.isfinite(float(rms)) and float(rms) >= 0
    except (TypeError, ValueError):
        rms_ok = False
    if not rms_ok:
        raise ConfigurationError(f"rms must be a finite number >= 0, got {rms!r}")
    if clamp is not None:
        try:
            lo, hi = (float(v) for v in clamp)
            clamp_ok = not (lo > hi)
        except (TypeError, ValueError):
            clamp_ok = False
        if not clamp_ok:
            raise ConfigurationError(f"clamp must be (low, high) with low <= high, got {clamp!r}")
    sel = m if region == "fg" else ~m
    gen = _generator(generator, images.device)
    noise = torch.randn(images.shape, generator=gen, dtype=images.dtype).to(images.device)
    n = sel.flatten(1).sum(1).to(images.dtype)
    scale = torch.where(n > 0, (images.shape[-2] * images.shape[-1] / n.clamp_min(1)).sqrt(), 0)
    out = images + noise * sel * (rms * scale).view(-1, 1, 1, 1)
    return out.clamp(*clamp) if clamp is not None else out


def bg_gap(acc_same: float | Tensor, acc_rand: float | Tensor) -> float | Tensor:
    """BG-gap (Xiao et al. 2021): accuracy on Mixed-Same minus accuracy on Mixed-Rand.

    A positive gap means the right background helps the model: it relies on the background.

    Args:
        acc_same: Accuracy on Mixed-Same images.
        acc_rand: Accuracy on Mixed-Rand images.

    Returns:
        ``acc_same - acc_rand`` (same type as the inputs).

    Examples:
        >>> round(bg_gap(0.9, 0.65), 6)
        0.25
    """
    return acc_same - acc_rand


def relative_foreground_sensitivity(
    acc_fg_noise: float | Tensor, acc_bg_noise: float | Tensor
) -> float | Tensor:
    """Relative foreground sensitivity (Moayeri et al. 2022).

    ``RFS = (a_bg - a_fg) / (2 min(a_mean, 1 - a_mean))`` with ``a_mean = (a_fg + a_bg) / 2``,
    where ``a_fg`` / ``a_bg`` are accuracies with equal-energy noise (see
    [`region_noise`][embedcam.interventions.region_noise]) on the object / on the background. RFS is
    in ``[-1, 1]``: positive when noise on the object hurts more than noise on the background (the
    model looks at the object). NaN when ``a_mean`` is 0 or 1.

    Args:
        acc_fg_noise: Accuracy with noise on the foreground, ``a_fg``.
        acc_bg_noise: Accuracy with noise on the background, ``a_bg``.

    Returns:
        The RFS (a float for float inputs, a tensor for tensors).

    Examples:
        >>> relative_foreground_sensitivity(0.25, 0.75)
        0.5
    """
    mean = (acc_fg_noise + acc_bg_noise) / 2
    if isinstance(mean, Tensor):
        denom = 2 * torch.minimum(mean, 1 - mean)
        return torch.where(denom > 0, (acc_bg_noise - acc_fg_noise) / denom, float("nan"))
    half = 2 * min(mean, 1 - mean)
    return (acc_bg_noise - acc_fg_noise) / half if half > 0 else float("nan")
