"""The front door: [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM]."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from embedcam._checks import check_eager, check_materialised
from embedcam.cam import adapters
from embedcam.cam import result as _result
from embedcam.cam._model import (
    explain_mode,
    model_lock,
    prepare_images,
    resolve_layer,
    single_use_guard,
)
from embedcam.cam.native import layer_activations_and_grads
from embedcam.cam.registry import BACKENDS, available_methods, check_method, native_formula
from embedcam.cam.result import CamResult, finish_maps
from embedcam.errors import ConfigurationError, ShapeError, UnsupportedError
from embedcam.targets import EmbeddingTarget

__all__ = ["EmbeddingCAM", "available_methods", "check_method", "BACKENDS"]

Backend = Literal["native", "grad-cam", "captum"]


class EmbeddingCAM:
    """Grad-CAM family explanations of an embedding model's similarity scores.

    One front door over three backends that give the same maps for the same method:

    * ``"native"`` (default): embedcam's engine. The graph is cut at the target layer (nothing
      before it is recorded), the gradient is taken with ``torch.autograd.grad`` with respect to
      the layer output only, no parameter gradients are created, and everything stays on the
      model's device. Methods: ``gradcam``, ``gradcam++`` (closed form, no epsilon),
      ``hirescam``, ``xgradcam``, ``layercam``.
    * ``"grad-cam"``: pytorch-grad-cam's classes, fed one target per image; also ``scorecam``,
      ``eigencam``, ``eigengradcam``, ``gradcam-elementwise``.
    * ``"captum"``: Captum's ``LayerGradCam`` (``gradcam``) and ``LayerGradientXActivation``
      (``hirescam``); Captum has no Grad-CAM++.

    Whatever the backend, the model is explained in eval mode (BatchNorm must not couple images,
    nor update its running statistics; dropout is off), and afterwards every module's training
    mode, every parameter's ``requires_grad`` flag and ``.grad`` are as before, and no hooks
    remain - also when an error is raised. The same input gets the same behaviour on every
    backend:

    * Threads: calls on the same model (or on models sharing sub-modules) are serialised by a
      per-module lock, so a thread pool or web server may share one model; each call sees the
      model as the caller left it. Do not train or run the model outside embedcam in another
      thread meanwhile: during a call it is in eval mode with hooks attached.
    * Images: never modified, never given a ``.grad``; embedcam works on a private copy on the
      model's device, cast to the dtype of the model's floating-point parameters (float64 images
      from NumPy into a float32 model, float32 images into a float16 / bfloat16 model).
      Integer images, NaN or infinite values raise.
    * Precision: ``maps``, ``raw`` and ``scores`` are float32 on every backend, whatever the
      model's dtype (half-precision models agree across backends to half precision).
    * An empty batch (``B = 0``) gives an empty [`CamResult`][embedcam.cam.result.CamResult] on
      every backend.
    * A target layer that runs more than once per forward (a shared module) raises.
    * Degenerate explanations are flagged, never shown as evidence: an image explained against
      its own embedding (a self-match, a near-duplicate, a centroid made from that one image)
      has a score whose gradient is noise (~1e-10). An image is ``degenerate`` when
      ``S = sum_(k,i,j) |d score / d A_kij * A_kij|`` over the layer output ``A`` (the
      first-order score change, in score units) is below
      [`DEGENERATE_SENSITIVITY`][embedcam.cam.result.DEGENERATE_SENSITIVITY] (1e-5), or when
      the target is a cosine ([`CentroidTarget`][embedcam.targets.CentroidTarget],
      [`ReferenceTarget`][embedcam.targets.ReferenceTarget]) and ``|score| >= 1 - 1e-6``
      ([`ContrastiveTarget`][embedcam.targets.ContrastiveTarget] and custom targets: the ``S``
      rule only). Its ``maps`` are all zeros and ``empty`` is true (so scores and the judge
      count it as no evidence); see [`CamResult`][embedcam.cam.result.CamResult]. The native
      engine computes ``S`` from the activations and gradients it already has, the
      ``"grad-cam"`` backend with one extra backward on the graph its forward recorded, the
      ``"captum"`` backend with one extra graph-cut forward and backward; the flag agrees across
      backends.

    Gradient contexts: a call works inside ``torch.no_grad()`` or ``torch.inference_mode()`` (an
    evaluation loop) and with images or targets made under ``torch.inference_mode()`` (gallery
    embeddings from [`embed_loader`][embedcam.embedding.embed_loader], centroids from
    [`ClassCentroids.fit`][embedcam.centroids.ClassCentroids.fit]), with the maps of a plain call
    on every backend. The CAM enables what it needs locally: it runs its forward and backward
    under ``torch.inference_mode(False)`` and ``torch.enable_grad()`` on its private copy of the
    images, and [`CentroidTarget`][embedcam.targets.CentroidTarget],
    [`ReferenceTarget`][embedcam.targets.ReferenceTarget] and
    [`ContrastiveTarget`][embedcam.targets.ContrastiveTarget] copy inference tensors to normal
    ones once, when they are built. After the call the caller's grad mode and inference mode
    are as before, also when an error is raised. A custom
    [`EmbeddingTarget`][embedcam.targets.EmbeddingTarget] must hold normal tensors (``t.clone()``
    outside inference mode).

    Args:
        model: the embedding model; its forward returns the ``(B, D)`` embedding, or anything
            from which ``embedding_fn`` picks it.
        target_layer: the module whose output is explained, or its dotted name
            (``"layer4"``, ``"features.block5.relu"``); usually the last convolutional block.
        method: CAM method, see [`available_methods`][embedcam.cam.registry.available_methods];
            add a native one with [`register_method`][embedcam.cam.registry.register_method].
        backend: ``"native"``, ``"grad-cam"`` or ``"captum"``.
        embedding_fn: picks the embedding from a tuple/dict model output.
        reshape_transform: maps the layer output (e.g. ViT tokens ``(B, N, K)``) to
            ``(B, K, h, w)``; native and grad-cam backends only.

    Raises:
        ConfigurationError: unknown backend or method, or a layer that is not in the model (the
            message lists near matches).
        UnsupportedError: a method the chosen backend does not implement (the message names the
            backends that do), or a TorchScript (scripted or traced) model: hooks cannot observe
            compiled code, pass the eager model.

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> cam = ec.EmbeddingCAM(net, "1", method="gradcam")
        >>> images = torch.rand(2, 3, 8, 8)
        >>> res = cam(images, ec.ReferenceTarget(torch.ones(4)))
        >>> res.maps.shape, res.raw.shape, res.scores.shape
        (torch.Size([2, 8, 8]), torch.Size([2, 6, 6]), torch.Size([2]))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str,
        method: str = "gradcam",
        backend: Backend | str = "native",
        *,
        embedding_fn: Callable[[Any], Tensor] | None = None,
        reshape_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_method(method, backend)
        if backend == "captum" and reshape_transform is not None:
            raise UnsupportedError(
                "the captum backend does not support reshape_transform; use backend='native'"
            )
        if isinstance(model, torch.jit.ScriptModule):
            check_eager(model, "")
        self.model = model
        self.layer, self.layer_name = resolve_layer(model, target_layer)
        check_eager(model, self.layer_name)
        self.method = method
        # Bound now: a method registered again later does not change this CAM.
        self._formula = native_formula(method) if backend == "native" else None
        self.backend = backend
        self.embedding_fn = embedding_fn
        self.reshape_transform = reshape_transform

    def __repr__(self) -> str:
        return (
            f"EmbeddingCAM(layer={self.layer_name!r}, method={self.method!r}, "
            f"backend={self.backend!r})"
        )

    def __call__(self, images: Tensor, target: EmbeddingTarget) -> CamResult:
        """Explain ``target``'s score for every image of the batch.

        Args:
            images: ``(B, C, H, W)`` float batch. Never modified: embedcam works on a copy on the
                model's device, cast to the dtype of the model's floating-point parameters.
            target: an [`EmbeddingTarget`][embedcam.targets.EmbeddingTarget] with one score per
                image (e.g. ``CentroidTarget(centroids, labels)``).

        Returns:
            A [`CamResult`][embedcam.cam.result.CamResult] with float32 ``maps (B, H, W)``,
            ``raw (B, h, w)`` and ``scores (B,)``, and bool ``empty (B,)`` and
            ``degenerate (B,)``; empty tensors for ``B = 0``.

        Raises:
            ShapeError: ``images`` is not a ``(B, C, H, W)`` float tensor (integer images must be
                converted and normalised), the target was built for another batch size, or the
                layer output is not a ``(B, K, h, w)`` map.
            ConfigurationError: the model output needs an ``embedding_fn``, the score does not
                depend on the target layer, the target layer runs more than once per forward,
                or the model is on the meta device.
            EmbedcamValueError: NaN or infinite images, NaN or zero-norm embeddings, images on
                the meta device.
        """
        # Whatever the caller's context (torch.no_grad(), torch.inference_mode()): the engine
        # records what it needs here, and the context managers restore the caller's modes on exit.
        with torch.inference_mode(False), torch.enable_grad():
            return self._explain(images, target)

    def _explain(self, images: Tensor, target: EmbeddingTarget) -> CamResult:
        if not isinstance(target, EmbeddingTarget):
            raise ConfigurationError(
                f"target must be an embedcam target (CentroidTarget, ReferenceTarget, "
                f"ContrastiveTarget), got {type(target).__name__}"
            )
        check_materialised(self.model)
        images = prepare_images(images, self.model)
        target.check_batch(images.shape[0])
        size = (int(images.shape[-2]), int(images.shape[-1]))
        # An empty batch has nothing to compute: every backend returns what the native engine
        # gives (empty tensors, with the layer's resolution from a forward of zero images).
        backend = "native" if images.shape[0] == 0 else self.backend
        with (
            model_lock(self.model),
            explain_mode(self.model, freeze=backend == "native"),
            single_use_guard(self.model, self.layer, self.layer_name),
        ):
            if backend == "native":
                acts, grads, scores = layer_activations_and_grads(
                    self.model, self.layer, self.layer_name, images, target, self.embedding_fn
                )
            elif backend == "grad-cam":
                raw, scores, acts, grads = adapters.run_gradcam(
                    self.model,
                    self.layer,
                    images,
                    target,
                    self.method,
                    self.embedding_fn,
                    self.reshape_transform,
                )
            else:
                raw, scores = adapters.run_captum(
                    self.model, self.layer, images, target, self.method, self.embedding_fn
                )
                # The degenerate flag needs the layer's activations and gradients, which Captum
                # does not hand out: one extra graph-cut forward and backward (parameters
                # frozen, restored by explain_mode).
                with explain_mode(self.model, freeze=True):
                    acts, grads, _ = layer_activations_and_grads(
                        self.model, self.layer, self.layer_name, images, target, self.embedding_fn
                    )
        with torch.no_grad():
            acts, grads = self._as_maps(acts), self._as_maps(grads)
            if backend == "native":
                if acts.shape[0] == 0:  # any method (also one only another backend has)
                    raw = acts.new_zeros((0, *acts.shape[-2:]))
                else:
                    raw = self._native_raw(acts.float(), grads.float())
            raw = raw.float()
            scores = scores.detach().float()
            degenerate = self._degenerate(acts, grads, scores, target).to(raw.device)
            maps, empty = finish_maps(raw, size, degenerate)
        return CamResult(
            maps=maps,
            raw=raw,
            scores=scores,
            empty=empty,
            method=self.method,
            backend=self.backend,
            layer=self.layer_name,
            degenerate=degenerate,
        )

    @staticmethod
    def _degenerate(acts: Tensor, grads: Tensor, scores: Tensor, target: EmbeddingTarget) -> Tensor:
        """``(B,)`` bool: the score is insensitive to the layer, or a saturated cosine."""
        sensitivity = (grads.float() * acts.float()).abs().flatten(1).sum(dim=1)
        flags = sensitivity < _result.DEGENERATE_SENSITIVITY
        if target.is_cosine:
            saturated = scores.abs() >= 1.0 - _result.SATURATED_COSINE_EPS
            flags = flags | saturated.to(flags.device)
        return flags

    def _native_raw(self, acts: Tensor, grads: Tensor) -> Tensor:
        fn = self._formula if self._formula is not None else native_formula(self.method)
        raw = fn(acts, grads)
        want = (acts.shape[0], *acts.shape[-2:])
        if not isinstance(raw, Tensor) or tuple(raw.shape) != want:
            got = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
            raise ShapeError(
                f"CAM method {self.method!r} returned {got}, expected a {want} tensor: one signed "
                "(h, w) map per image, from the (B, K, h, w) activations and gradients"
            )
        if not raw.dtype.is_floating_point:
            raise ShapeError(
                f"CAM method {self.method!r} returned dtype {raw.dtype}; it must return a float map"
            )
        return raw

    def _as_maps(self, t: Tensor) -> Tensor:
        if self.reshape_transform is not None:
            t = self.reshape_transform(t)
        if t.dim() != 4:
            raise ShapeError(
                f"layer {self.layer_name!r} outputs shape {tuple(t.shape)}, not a (B, K, h, w) "
                "feature map; pick a convolutional layer or pass reshape_transform"
            )
        return t
