"""Retrieval explanations: why is this query close to that gallery image?

Three questions a retrieval or re-identification user asks, each one call:

* [`explain_pair`][embedcam.pairs.explain_pair] - the Grad-CAM of ``cos(query, gallery)`` on
  *both* sides of B pairs in one batched call: the query's map with the gallery embedding held
  fixed, and the gallery image's map with the query embedding held fixed.
* [`rank_list`][embedcam.pairs.rank_list] - a query's top-k neighbours in a gallery with both
  maps per neighbour, which neighbours are correct when labels are known, and for every wrong
  neighbour that outranked the best correct match the map of
  [`ContrastivePairTarget`][embedcam.targets.ContrastivePairTarget]
  ``cos(q, g_wrong) - cos(q, g_right)``: the query evidence that made the wrong one win.
  [`rank_list_figure`][embedcam.report.retrieval.rank_list_figure] draws it the way re-ID papers
  show rank lists.
* [`point_to_point`][embedcam.pairs.point_to_point] - the decomposition of the similarity of
  two images into contributions of (query location, gallery location) pairs (Zhu et al., "Visual
  Explanation for Deep Metric Learning", IEEE TIP 2021), for embeddings built by global average
  pooling: which part of the gallery image matches *this* part of the query. Exact when the head
  after the pooling is affine (the parts sum to the cosine), first-order otherwise.

Grad-CAM maps of a pair carry the degenerate flag of [`CamResult`][embedcam.cam.result.CamResult]:
a pair of identical images (a self-match) has a saturated cosine whose gradient is noise, so its
maps are zeros and ``empty``. The point-to-point decomposition needs no gradient of the cosine and
stays informative there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from embedcam._loaders import Batch
from embedcam._model import embed as pick_embedding
from embedcam._repr import tensor_summary
from embedcam.cam._model import (
    explain_mode,
    model_lock,
    prepare_images,
    resolve_layer,
    single_use_guard,
)
from embedcam.cam.core import EmbeddingCAM
from embedcam.cam.result import CamResult, finish_maps, normalize_maps, upsample
from embedcam.embedding import embed_batches, embed_loader, embedding_health
from embedcam.errors import ConfigurationError, EmbedcamValueError, ShapeError, UnsupportedError
from embedcam.targets import ContrastivePairTarget, EmbeddingTarget, ReferenceTarget, _cosine_rows

__all__ = [
    "PairResult",
    "explain_pair",
    "RankList",
    "rank_list",
    "PointToPoint",
    "point_to_point",
    "AFFINE_TOLERANCE",
]

#: Relative tolerance of the check that the model's embedding is ``head(mean-pooled layer
#: output)`` (as a direction: ``1 - cosine``), and of the exactness check of an affine head.
AFFINE_TOLERANCE = 1e-4


def _split(res: CamResult, n: int) -> tuple[CamResult, CamResult]:
    """The first ``n`` and the remaining rows of a result, as two results."""
    tensors = ("maps", "raw", "scores", "empty", "degenerate")
    first = {f: getattr(res, f)[:n] for f in tensors}
    rest = {f: getattr(res, f)[n:] for f in tensors}
    meta = {f.name: getattr(res, f.name) for f in fields(res) if f.name not in tensors}
    return CamResult(**first, **meta), CamResult(**rest, **meta)


def _concat(results: Sequence[CamResult]) -> CamResult:
    """The rows of several results of one CAM, in order."""
    if len(results) == 1:
        return results[0]
    tensors = ("maps", "raw", "scores", "empty", "degenerate")
    rows = {f: torch.cat([getattr(r, f) for r in results]) for f in tensors}
    first = results[0]
    return CamResult(
        maps=rows["maps"],
        raw=rows["raw"],
        scores=rows["scores"],
        empty=rows["empty"],
        degenerate=rows["degenerate"],
        method=first.method,
        backend=first.backend,
        layer=first.layer,
    )


class _InBatchPairTarget(EmbeddingTarget):
    """``cos(e_b, e_partner(b))`` on a batch ``[queries; gallery]`` of ``2n`` images.

    The partner's embedding comes from the same forward and is detached, so the gradient at image
    ``b`` is the gradient of its own pair's cosine with the partner held fixed: both sides of
    ``n`` pairs from one forward and one backward, with no separate pass to embed the partners.
    Only for backends that score the whole batch at once (native, Captum).
    """

    is_cosine = True

    def __init__(self, n: int) -> None:
        self.n = n
        self.batch_size = 2 * n

    @property
    def dim(self) -> int:  # pragma: no cover - __call__ is overridden and never reads it
        raise NotImplementedError

    def __call__(self, embeddings: Tensor) -> Tensor:
        from embedcam._checks import check_rows

        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else None
            raise ShapeError(
                f"embeddings must be a (B, D) tensor, got {shape or type(embeddings).__name__}; "
                "if the model returns a tuple or dict, pass embedding_fn to pick the embedding"
            )
        self.check_batch(embeddings.shape[0])
        check_rows(embeddings.detach(), name="embeddings", what="image")
        return self.score(embeddings)

    def score(self, embeddings: Tensor) -> Tensor:
        n = self.n
        partner = torch.cat([embeddings[n:], embeddings[:n]]).detach()
        return _cosine_rows(embeddings, partner)

    def as_gradcam_targets(self, batch_size: int | None = None) -> list[Callable[[Tensor], Tensor]]:
        raise UnsupportedError(
            "in-batch pair targets score whole batches; not for pytorch-grad-cam"
        )


@dataclass(frozen=True)
class PairResult:
    """Grad-CAM maps of both sides of B (query, gallery) pairs.

    Attributes:
        query: maps of the query images: what in each query makes it similar to its gallery
            image (the gallery embedding held fixed). ``query.scores`` is ``cos(q_b, g_b)``.
        gallery: maps of the gallery images, the query embedding held fixed.

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> pairs = ec.explain_pair(ec.EmbeddingCAM(net, "1"), torch.rand(2, 3, 8, 8),
        ...                         torch.rand(2, 3, 8, 8))
        >>> len(pairs), tuple(pairs.query.maps.shape), tuple(pairs.gallery.maps.shape)
        (2, (2, 8, 8), (2, 8, 8))
    """

    query: CamResult
    gallery: CamResult

    def __len__(self) -> int:
        return len(self.query)

    @property
    def similarity(self) -> Tensor:
        """``(B,)`` cosine of each pair (the score both sides explain)."""
        return self.query.scores

    @property
    def degenerate(self) -> Tensor:
        """``(B,)`` bool: either side is degenerate (e.g. a self-match, cosine ~ 1)."""
        return self.query.degenerate | self.gallery.degenerate.to(self.query.degenerate.device)

    def __repr__(self) -> str:
        k = int(self.degenerate.sum())
        extra = f", degenerate={k}/{len(self)}" if k else ""
        return (
            f"PairResult(pairs={len(self)}, query={tuple(self.query.maps.shape)}, "
            f"gallery={tuple(self.gallery.maps.shape)}, layer={self.query.layer!r}, "
            f"method={self.query.method!r}{extra})"
        )


def _embed_images(cam: EmbeddingCAM, images: Tensor) -> Tensor:
    """Embeddings of a batch, in eval mode under inference mode (the model's modes restored)."""
    batch = Batch(images, torch.zeros(images.shape[0], dtype=torch.int64))
    emb, _ = embed_batches(cam.model, [(0, batch)], cam.embedding_fn)
    return emb


def _check_pair_batches(queries: Any, gallery: Any) -> tuple[Tensor, Tensor]:
    for name, x in (("queries", queries), ("gallery", gallery)):
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(
                f"{name} must be a (B, C, H, W) tensor, got {shape}; add a batch dimension with "
                "unsqueeze(0) for a single image"
            )
    nq, ng = int(queries.shape[0]), int(gallery.shape[0])
    if nq != ng:
        if nq == 1:
            queries = queries.expand(ng, *queries.shape[1:])
        elif ng == 1:
            gallery = gallery.expand(nq, *gallery.shape[1:])
        else:
            raise ShapeError(
                f"{nq} queries but {ng} gallery images; pass one gallery image per query (pair b "
                "is (queries[b], gallery[b])), or a single query or gallery image to pair with all"
            )
    if queries.shape[1] != gallery.shape[1]:
        raise ShapeError(
            f"queries have {queries.shape[1]} channels but gallery images {gallery.shape[1]}; "
            "both go through the same model"
        )
    return queries, gallery


def explain_pair(
    cam: EmbeddingCAM, queries: Tensor, gallery: Tensor, *, batch_size: int | None = None
) -> PairResult:
    """Explain ``cos(query_b, gallery_b)`` on both sides of B pairs in one batched call.

    The query side is the CAM of ``cos(e(q_b), g)`` with the gallery embedding ``g = e(g_b)``
    held fixed (a [`ReferenceTarget`][embedcam.targets.ReferenceTarget]), the gallery side the
    CAM of ``cos(e(g_b), e(q_b))`` with the query embedding fixed: exactly what two separate
    calls ``cam(queries, ReferenceTarget(e(gallery)))`` and
    ``cam(gallery, ReferenceTarget(e(queries)))`` give, at the cost of about two CAM calls of
    ``B`` images (measured on a 2-core CPU: 1.95-2.03x one single-sided call, against 3.9-4.0x
    for the two calls with the partners embedded first; ``benchmarks/pair_speed.py``):

    * ``native`` and ``captum`` backends, images of one size: a chunk of pairs goes through the
      model as one batch ``[queries; gallery]``, each image's score uses its partner's
      embedding from the same forward (detached), and one backward gives both sides. No
      separate pass embeds the partners. Each forward holds at most ``batch_size`` images
      (default ``B``, the batch of a single-sided call: the same peak memory, and on CPU a batch
      twice as large is more than twice as slow).
    * ``grad-cam`` backend (its targets see one image at a time) or images of different sizes:
      the partners are embedded first (one forward without gradient), then one CAM call per
      image size.

    Args:
        cam: the CAM to use (model, target layer, method, backend, ``embedding_fn``).
        queries: ``(B, C, H, W)`` query images, or ``(1, C, H, W)`` to pair one query with every
            gallery image.
        gallery: ``(B, C, H', W')`` gallery images (pair ``b`` is ``(queries[b], gallery[b])``), or
            ``(1, C, H', W')``.
        batch_size: most images per forward on the in-batch path (pairs are explained in chunks
            of ``batch_size // 2``, at least one pair); default ``max(2, B)``.

    Returns:
        A [`PairResult`][embedcam.pairs.PairResult]; its ``query`` and ``gallery`` are
        [`CamResult`][embedcam.cam.result.CamResult]s of ``B`` rows with the usual conventions
        (``maps`` in ``[0, 1]``, ``empty``, ``degenerate``).

    Raises:
        ShapeError: the batches are not 4-D, their sizes differ (and neither is 1), or their
            channel counts differ.
        ConfigurationError, EmbedcamValueError: as for
            [`EmbeddingCAM`][embedcam.cam.core.EmbeddingCAM] (NaN images, zero embeddings, ...).

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> q, g = torch.rand(1, 3, 8, 8), torch.rand(3, 3, 8, 8)
        >>> pairs = ec.explain_pair(ec.EmbeddingCAM(net, "1"), q, g)   # one query, 3 images
        >>> pairs.similarity.shape, pairs.gallery.maps.shape
        (torch.Size([3]), torch.Size([3, 8, 8]))
    """
    if not isinstance(cam, EmbeddingCAM):
        raise ConfigurationError(
            f"cam must be an embedcam.EmbeddingCAM, got {type(cam).__name__}; build one with "
            "ec.EmbeddingCAM(model, target_layer)"
        )
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    queries, gallery = _check_pair_batches(queries, gallery)
    gallery = gallery.to(queries.device)
    n = int(queries.shape[0])
    same_size = queries.shape[-2:] == gallery.shape[-2:]
    if same_size and cam.backend != "grad-cam":
        chunk = max(1, (batch_size if batch_size is not None else max(2, n)) // 2)
        sides: list[tuple[CamResult, CamResult]] = []
        for s in range(0, max(n, 1), chunk):
            m = min(chunk, n - s)
            both = torch.cat([queries[s : s + m], gallery[s : s + m]])
            sides.append(_split(cam(both, _InBatchPairTarget(m)), m))
        return PairResult(_concat([a for a, _ in sides]), _concat([b for _, b in sides]))
    if same_size:
        both = torch.cat([queries, gallery])
        emb = _embed_images(cam, both)
        return PairResult(*_split(cam(both, ReferenceTarget(torch.cat([emb[n:], emb[:n]]))), n))
    eq, eg = _embed_images(cam, queries), _embed_images(cam, gallery)
    return PairResult(cam(queries, ReferenceTarget(eg)), cam(gallery, ReferenceTarget(eq)))


# ------------------------------------------------------------------------------------------------
# rank lists


@dataclass(frozen=True)
class RankList:
    """A query's top-k gallery neighbours, with the maps that explain each match.

    Attributes:
        indices: ``(k,)`` int64 gallery positions, most similar first.
        similarities: ``(k,)`` cosine of the query to each neighbour (from the embeddings the
            ranking used).
        pairs: both sides' maps for the ``k`` (query, neighbour) pairs, in rank order.
        query_image: ``(C, H, W)`` the query as given (model input, possibly normalised).
        images: ``(k, C, H, W)`` the neighbours' images, in rank order.
        query_label: the query's class, or ``None``.
        labels: ``(k,)`` the neighbours' classes, or ``None`` without gallery labels.
        correct: ``(k,)`` bool, the neighbour has the query's class; ``None`` without labels.
        right_index: gallery position of the best-ranked correct match (it may lie beyond
            ``k``), or ``None`` without labels or when the gallery holds no image of the class.
        right_rank: its rank, 0-based, among all gallery images (``None`` as above).
        right_similarity: its cosine to the query (``None`` as above).
        contrast: query maps of ``cos(q, g_wrong) - cos(q, g_right)``
            ([`ContrastivePairTarget`][embedcam.targets.ContrastivePairTarget]), one row per
            wrong neighbour ranked above the best correct match: what in the query made that
            wrong neighbour win. ``None`` when there is none (or no labels).
        contrast_ranks: ``(m,)`` int64 ranks (positions in this list) of those wrong neighbours.
        right_image: ``(C, H, W)`` image of the best-ranked correct match, or ``None``.
    """

    indices: Tensor
    similarities: Tensor
    pairs: PairResult
    query_image: Tensor
    images: Tensor
    query_label: int | None = None
    labels: Tensor | None = None
    correct: Tensor | None = None
    right_index: int | None = None
    right_rank: int | None = None
    right_similarity: float | None = None
    contrast: CamResult | None = None
    contrast_ranks: Tensor | None = None
    right_image: Tensor | None = None

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        hits = "" if self.correct is None else f", correct={int(self.correct.sum())}/{len(self)}"
        right = "" if self.right_rank is None else f", right_rank={self.right_rank}"
        contrast = "" if self.contrast is None else f", contrast={len(self.contrast)}"
        return (
            f"RankList(k={len(self)}, indices={self.indices.tolist()}{hits}{right}{contrast}, "
            f"query_image={tensor_summary(self.query_image)})"
        )


def _item_image(item: Any, position: int) -> Tensor:
    """The image of one dataset item."""
    if isinstance(item, dict):
        if "image" not in item:
            raise ShapeError(
                f"gallery item {position} is a dict without an 'image' key (keys: "
                f"{sorted(map(str, item))})"
            )
        image = item["image"]
    elif isinstance(item, (tuple, list)) and item:
        image = item[0]
    else:
        image = item
    if not isinstance(image, Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ShapeError(
            f"gallery item {position}: the image must be a (C, H, W) tensor, got {shape}; the "
            "dataset must return an image tensor, an (image, label, ...) tuple or a dict with an "
            "'image' key"
        )
    return image


def _gallery_embeddings(
    cam: EmbeddingCAM, gallery: Any, batch_size: int, progress: bool
) -> tuple[Tensor, Tensor | None]:
    """``(N, D)`` embeddings of the gallery and its labels when the gallery carries them."""
    if isinstance(gallery, Tensor):
        starts = range(0, int(gallery.shape[0]), batch_size)
        chunks = (
            (i, Batch(part, torch.zeros(part.shape[0], dtype=torch.int64)))
            for i, part in enumerate(gallery[s : s + batch_size] for s in starts)
        )
        emb, _ = embed_batches(cam.model, chunks, cam.embedding_fn)
        return emb, None
    loader = gallery if isinstance(gallery, DataLoader) else None
    if loader is None:
        loader = DataLoader(gallery, batch_size=batch_size, shuffle=False)
    embedded = embed_loader(
        cam.model, loader, embedding_fn=cam.embedding_fn, progress=progress, what="gallery"
    )
    return embedded.embeddings, embedded.labels


def _gallery_source(gallery: Any) -> Tensor | Dataset[Any]:
    if isinstance(gallery, Tensor):
        if gallery.dim() != 4:
            raise ShapeError(f"a tensor gallery must be (N, C, H, W), got {tuple(gallery.shape)}")
        return gallery
    if isinstance(gallery, DataLoader):
        gallery = gallery.dataset
    if not (hasattr(gallery, "__getitem__") and hasattr(gallery, "__len__")):
        raise ConfigurationError(
            f"gallery must be an (N, C, H, W) tensor, a map-style Dataset or a DataLoader over "
            f"one (with shuffle=False), got {type(gallery).__name__}"
        )
    return gallery


def _fetch(source: Tensor | Dataset[Any], positions: Sequence[int]) -> Tensor:
    """The gallery images at ``positions``, as one batch."""
    if isinstance(source, Tensor):
        return source[list(positions)]
    images = [_item_image(source[p], p) for p in positions]
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ShapeError(
            f"gallery images have different shapes {sorted(sizes)}; resize them to one size in "
            "the dataset's transform"
        )
    return torch.stack(images)


def _warn_if_collapsed(emb: Tensor) -> None:
    """Warn when the gallery embeddings look collapsed (measured on up to 2048 of them)."""
    n = int(emb.shape[0])
    if n < 2:
        return
    rows = torch.linspace(0, n - 1, min(n, 2048)).round().long().unique()
    health = embedding_health(emb.detach()[rows.to(emb.device)])
    if health.collapsed:
        from embedcam.audit import CollapseWarning

        warnings.warn(
            f"the gallery embeddings look collapsed (effective rank "
            f"{health.effective_rank:.1f} of {health.dim}, mean pairwise cosine "
            f"{health.mean_pairwise_cosine:.3f}): every image is near every other, the ranking "
            "rests on tiny differences and the maps explain those; check the model's training "
            "(embedcam.embedding_health)",
            CollapseWarning,
            stacklevel=3,
        )


def rank_list(
    cam: EmbeddingCAM,
    query: Tensor,
    gallery: Tensor | Dataset[Any] | DataLoader[Any],
    *,
    k: int = 5,
    query_label: int | None = None,
    gallery_labels: Tensor | Sequence[int] | None = None,
    gallery_embeddings: Tensor | None = None,
    exclude: int | Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> RankList:
    """Rank a gallery by cosine to a query and explain the top-k matches on both sides.

    The gallery is embedded (or ``gallery_embeddings`` used), ranked by cosine to the query's
    embedding, and the ``k`` nearest images are explained with
    [`explain_pair`][embedcam.pairs.explain_pair] in one batch. With labels (``query_label``,
    and ``gallery_labels`` or a dataset whose items carry labels), the neighbours are marked
    correct or wrong, the best-ranked correct image in the whole gallery is found (``g_right``),
    and every wrong neighbour ranked above it gets the query map of
    ``cos(q, g_wrong) - cos(q, g_right)``: what in the query made it win. (On the gallery side
    that contrast is the pair map of the wrong neighbour itself, up to a constant, so it is not
    repeated.)

    Args:
        cam: the CAM to use.
        query: ``(C, H, W)`` or ``(1, C, H, W)`` query image, preprocessed like the gallery.
        gallery: ``(N, C, H, W)`` images, a map-style dataset (items: an image tensor, an
            ``(image, label, ...)`` tuple, or a dict with ``"image"`` and ``"label"``, as
            [`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset] returns), or a
            ``DataLoader`` over one with ``shuffle=False`` (embedded batch by batch with
            [`embed_loader`][embedcam.embedding.embed_loader]; only the ``k`` neighbours are
            loaded again).
        k: number of neighbours (at most the gallery size minus ``exclude``).
        query_label: the query's class, to mark neighbours and find the right match.
        gallery_labels: ``(N,)`` classes of the gallery; by default the dataset's labels (a
            tensor gallery has none).
        gallery_embeddings: ``(N, D)`` precomputed gallery embeddings (e.g. from
            [`embed_loader`][embedcam.embedding.embed_loader]; made under inference mode is
            fine); the gallery is then not embedded again.
        exclude: gallery positions never ranked, e.g. the query itself when it is part of the
            gallery (re-identification protocols also drop same-camera images this way).
        batch_size: batch size for embedding a tensor or dataset gallery.
        progress: show a progress bar while embedding the gallery.

    Returns:
        A [`RankList`][embedcam.pairs.RankList].

    Raises:
        ShapeError: the query is not one image, the gallery embeddings or labels do not match
            the gallery, or gallery images differ in size.
        ConfigurationError: ``k < 1``, fewer than ``k`` gallery images left after ``exclude``,
            an ``exclude`` position outside the gallery, or a gallery of an unsupported type.
        EmbedcamValueError: NaN or zero-norm gallery embeddings.

    Warns:
        UserWarning: the given ``gallery_embeddings`` disagree with the model's embeddings of
            the neighbours (cosine to the query differs by more than 1e-3): they came from
            another model, weights or preprocessing, and the maps explain the model, not them.
        CollapseWarning: the gallery embeddings look collapsed
            ([`embedding_health`][embedcam.embedding.embedding_health] on up to 2048 of them;
            a `UserWarning` subclass from [`embedcam.audit`][embedcam.audit]): a collapsed model
            ranks by noise-level differences.

    Examples:
        >>> import torch, embedcam as ec
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.Flatten())
        >>> gallery, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> rl = ec.rank_list(ec.EmbeddingCAM(net, "0"), gallery[0], gallery, k=3,
        ...                   query_label=0, gallery_labels=labels, exclude=0)
        >>> len(rl), 0 in rl.indices.tolist(), rl.pairs.query.maps.shape
        (3, False, torch.Size([3, 8, 8]))
    """
    if not isinstance(cam, EmbeddingCAM):
        raise ConfigurationError(f"cam must be an embedcam.EmbeddingCAM, got {type(cam).__name__}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ConfigurationError(f"k must be a positive int, got {k!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    if (
        not isinstance(query, Tensor)
        or query.dim() not in (3, 4)
        or (query.dim() == 4 and query.shape[0] != 1)
    ):
        shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
        raise ShapeError(
            f"query must be one image, (C, H, W) or (1, C, H, W), got {shape}; call rank_list "
            "once per query"
        )
    q = query.reshape(1, *query.shape[-3:])
    source = _gallery_source(gallery)
    n = int(source.shape[0]) if isinstance(source, Tensor) else len(source)  # type: ignore[arg-type]
    data_labels: Tensor | None = None
    if gallery_embeddings is None:
        emb, data_labels = _gallery_embeddings(cam, gallery, batch_size, progress)
    else:
        if not isinstance(gallery_embeddings, Tensor) or gallery_embeddings.dim() != 2:
            shape = (
                tuple(gallery_embeddings.shape)
                if isinstance(gallery_embeddings, Tensor)
                else type(gallery_embeddings).__name__
            )
            raise ShapeError(f"gallery_embeddings must be an (N, D) tensor, got {shape}")
        emb = gallery_embeddings
    if emb.shape[0] != n:
        raise ShapeError(
            f"gallery_embeddings hold {emb.shape[0]} rows but the gallery has {n} images; pass "
            "the embeddings of this gallery, in its order"
        )
    from embedcam._checks import as_label_tensor, check_matrix

    check_matrix(emb.detach(), name="gallery_embeddings", what="gallery image")
    _warn_if_collapsed(emb)
    labels = data_labels
    if gallery_labels is not None:
        labels = as_label_tensor(gallery_labels, name="gallery_labels")
        if labels.shape != (n,):
            raise ShapeError(
                f"gallery_labels hold {labels.numel()} values for a gallery of {n} images"
            )
    if query_label is not None and labels is None:
        raise ConfigurationError(
            "query_label is given but the gallery's labels are unknown; pass gallery_labels= "
            "(a tensor gallery, or precomputed gallery_embeddings, carry none)"
        )
    excluded = torch.zeros(n, dtype=torch.bool)
    if exclude is not None:
        pos = [exclude] if isinstance(exclude, int) else list(exclude)
        bad = [p for p in pos if not isinstance(p, int) or not 0 <= p < n]
        if bad:
            raise ConfigurationError(
                f"exclude holds positions outside the gallery of {n} images: {bad[:5]}"
            )
        excluded[pos] = True
    left = int((~excluded).sum())
    if k > left:
        raise ConfigurationError(
            f"k={k} neighbours asked of a gallery with {left} images left after exclude; "
            f"pass k <= {left}"
        )
    eq = _embed_images(cam, q)
    with torch.inference_mode(False), torch.no_grad():
        e = emb.detach().float().cpu()
        sims = _cosine_rows(e, eq.float().cpu().expand_as(e))
        ranked = sims.masked_fill(excluded, float("-inf"))
        order = torch.argsort(ranked, descending=True, stable=True)
    top = order[:k]
    images = _fetch(source, top.tolist())
    pairs = explain_pair(cam, q, images)
    if gallery_embeddings is not None:
        drift = (pairs.similarity.cpu() - sims[top]).abs().max()
        if float(drift) > 1e-3:
            warnings.warn(
                f"gallery_embeddings disagree with the model: the cosine of the query to a "
                f"neighbour differs by {float(drift):.3g} between them and the model's own "
                "embedding of the image; they come from another model, weights or "
                "preprocessing, and the maps explain the model",
                UserWarning,
                stacklevel=2,
            )
    result: dict[str, Any] = {}
    if query_label is not None and labels is not None:
        query_label = int(query_label)
        top_labels = labels[top]
        correct = top_labels == query_label
        result.update(labels=top_labels, correct=correct, query_label=query_label)
        is_right = (labels == query_label) & ~excluded
        if bool(is_right.any()):
            rank_of = torch.empty(n, dtype=torch.int64)
            rank_of[order] = torch.arange(n)
            right_rank = int(rank_of[is_right].min())
            right_index = int(order[right_rank])
            result.update(
                right_index=right_index,
                right_rank=right_rank,
                right_similarity=float(sims[right_index]),
                right_image=images[right_rank]
                if right_rank < k
                else _fetch(source, [right_index])[0],
            )
            wrong = torch.arange(min(k, right_rank))  # every neighbour above the right one
            if wrong.numel() > 0:
                target = ContrastivePairTarget(emb[top[wrong]].detach(), emb[right_index].detach())
                result.update(
                    contrast=cam(q.expand(wrong.numel(), *q.shape[1:]), target),
                    contrast_ranks=wrong,
                )
    return RankList(
        indices=top,
        similarities=sims[top],
        pairs=pairs,
        query_image=q[0],
        images=images,
        **result,
    )


# ------------------------------------------------------------------------------------------------
# point-to-point


_AFFINE_MODULES = (
    nn.Identity,
    nn.Linear,
    nn.Flatten,
    nn.Dropout,
    nn.BatchNorm1d,
    nn.LazyLinear,
)


def _is_affine(head: Callable[[Tensor], Tensor]) -> bool:
    """Whether ``head`` is built only of affine modules (in eval mode)."""
    if isinstance(head, nn.Sequential):
        return all(_is_affine(m) for m in head)
    return isinstance(head, _AFFINE_MODULES)


@dataclass(frozen=True)
class PointToPoint:
    """The similarity of B image pairs split into (query location, gallery location) parts.

    With the layer output ``A`` (``K`` channels on an ``h x w`` grid of ``N`` locations), the
    embedding ``e = head(mean_i a_i)`` and each location's part ``z_i = head(a_i) / N`` (affine
    head: ``sum_i z_i = e`` exactly), the cosine of a pair is

    ``cos(e_q, e_g) = sum_(i, j) z_q,i . z_g,j / (|e_q| |e_g|) = sum_(i, j) matrix[i, j]``.

    Row sums give the query map (what each query location contributes to the similarity), column
    sums the gallery map; a row, reshaped to the gallery grid, shows which gallery locations
    match that one query location ([`correspondence`][embedcam.pairs.PointToPoint.correspondence]).

    Attributes:
        matrix: ``(B, Nq, Ng)`` float32 parts, query locations in rows, row-major over the grid;
            ``matrix[b].sum()`` is ``similarity[b]`` (to float rounding).
        similarity: ``(B,)`` cosine of ``head(pooled)`` of query and gallery, which is the
            model's cosine (checked).
        query: [`CamResult`][embedcam.cam.result.CamResult] of the query maps (``raw`` the
            signed row sums on the query grid, ``maps`` their usual display form);
            ``degenerate`` is all false: the decomposition needs no gradient of the cosine and
            stays informative for a self-match.
        gallery: the same for the gallery images (column sums).
        query_grid: ``(h, w)`` of the query's layer output.
        gallery_grid: ``(h, w)`` of the gallery's layer output.
        exact: True when the head is affine, so every part is exact; False for a non-linear
            head, whose parts are first-order (``z_i = (head(f) + J (a_i - f)) / N`` with ``f``
            the pooled features and ``J`` the head's Jacobian there: they still sum exactly to
            the embedding, but each location's share is linearised).
    """

    matrix: Tensor
    similarity: Tensor
    query: CamResult
    gallery: CamResult
    query_grid: tuple[int, int]
    gallery_grid: tuple[int, int]
    exact: bool

    def __len__(self) -> int:
        return int(self.similarity.numel())

    def __repr__(self) -> str:
        return (
            f"PointToPoint(pairs={len(self)}, matrix={tensor_summary(self.matrix)}, "
            f"query_grid={self.query_grid}, gallery_grid={self.gallery_grid}, exact={self.exact})"
        )

    def correspondence(self, b: int, y: int, x: int, *, side: str = "query") -> Tensor:
        """Where on the other image a point of one image finds its match.

        Args:
            b: the pair.
            y: row of the point, in input pixels of the image it lies on.
            x: column of the point, in input pixels.
            side: ``"query"`` (the point is on the query; the map is on the gallery image) or
                ``"gallery"``.

        Returns:
            ``(H, W)`` map in ``[0, 1]`` on the other image's input resolution: that location's
            row (or column) of ``matrix`` reshaped to the other grid, ReLU'd, bilinearly
            upsampled and min-max scaled (all zeros when nothing matches positively).

        Raises:
            ConfigurationError: ``side`` is unknown, ``b`` is not a pair, or the point lies
                outside the image.
        """
        if side not in ("query", "gallery"):
            raise ConfigurationError(f"side must be 'query' or 'gallery', got {side!r}")
        if not 0 <= b < len(self):
            raise ConfigurationError(f"pair {b} out of range: {len(self)} pairs")
        own, other = (self.query, self.gallery) if side == "query" else (self.gallery, self.query)
        own_grid, other_grid = (
            (self.query_grid, self.gallery_grid)
            if side == "query"
            else (self.gallery_grid, self.query_grid)
        )
        height, width = own.size
        if not (0 <= y < height and 0 <= x < width):
            raise ConfigurationError(
                f"point (y={y}, x={x}) lies outside the {side} image of size {(height, width)}"
            )
        cell = (y * own_grid[0] // height) * own_grid[1] + (x * own_grid[1] // width)
        row = self.matrix[b, cell] if side == "query" else self.matrix[b, :, cell]
        grid = row.reshape(1, *other_grid).clamp_min(0)
        return normalize_maps(upsample(grid, other.size))[0]


def _layer_features(
    model: nn.Module,
    layer: nn.Module,
    layer_name: str,
    images: Tensor,
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> tuple[Tensor, Tensor]:
    """``(A (B, K, h, w), embedding (B, D))`` from one forward without gradient."""
    captured: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ConfigurationError(
                f"target layer {layer_name!r} returns {type(output).__name__}, not a tensor; "
                "pick a layer whose output is a feature map"
            )
        captured["acts"] = output.detach()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            emb = pick_embedding(model(images), embedding_fn)
    finally:
        handle.remove()
    if "acts" not in captured:
        raise ConfigurationError(
            f"target layer {layer_name!r} did not run in the forward pass; pick a layer on the "
            "path from the image to the embedding"
        )
    acts = captured["acts"]
    if reshape_transform is not None:
        acts = reshape_transform(acts)
    if acts.dim() != 4:
        raise ShapeError(
            f"layer {layer_name!r} outputs shape {tuple(acts.shape)}, not a (B, K, h, w) feature "
            "map; pick a convolutional layer or pass reshape_transform"
        )
    return acts, emb


def _location_parts(
    head: Callable[[Tensor], Tensor], acts: Tensor, affine: bool
) -> tuple[Tensor, Tensor]:
    """Per-location parts ``z (B, N, D)`` and the embedding ``head(f) (B, D)``."""
    b, k, h, w = acts.shape
    a = acts.flatten(2).transpose(1, 2)  # (B, N, K)
    f = a.mean(dim=1)
    e = head(f)
    if affine:
        z = head(a.reshape(b * h * w, k)).reshape(b, h * w, e.shape[-1]) / (h * w)
        return z, e
    from torch.func import jvp, vmap

    def directional(v: Tensor) -> Tensor:
        return jvp(head, (f,), (v,))[1]

    try:
        lin = vmap(directional, in_dims=1, out_dims=1)(a - f[:, None])
    except Exception as exc:  # noqa: BLE001 - any failure of forward-mode AD in a user's head
        raise UnsupportedError(
            f"the head is not affine and forward-mode differentiation of it failed "
            f"({type(exc).__name__}: {exc}); pass an affine head (nn.Linear, nn.Identity, ...) "
            "or a head built of differentiable torch operations"
        ) from exc
    return (e[:, None] + lin) / (h * w), e


def point_to_point(
    model: nn.Module,
    target_layer: nn.Module | str,
    queries: Tensor,
    gallery: Tensor,
    *,
    head: Callable[[Tensor], Tensor] | None = None,
    embedding_fn: Callable[[Any], Tensor] | None = None,
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
    batch_size: int | None = None,
) -> PointToPoint:
    """Decompose the cosine of B (query, gallery) pairs into point-to-point contributions.

    For a model whose embedding is ``head(global average pool(layer output))`` (up to a positive
    scale, e.g. a final L2 normalisation): each location ``i`` of the layer output contributes
    ``z_i = head(a_i) / N`` to the embedding, and the cosine of a pair splits into the parts
    ``z_q,i . z_g,j / (|e_q| |e_g|)`` (Zhu et al., "Visual Explanation for Deep Metric
    Learning", IEEE TIP 2021). With an affine ``head`` (``nn.Linear``, ``nn.Identity``, eval-mode
    ``nn.BatchNorm1d``, ``nn.Dropout``, ``nn.Sequential`` of them) the parts are exact and sum to
    the cosine; with any other head they are first-order (see
    [`PointToPoint`][embedcam.pairs.PointToPoint]) and ``exact`` is false.

    One forward without gradient per image, in eval mode (the model's modes restored), all
    batched tensor code on the model's device.

    Args:
        model: the embedding model.
        target_layer: the layer whose output is pooled into the embedding (e.g. ``"layer4"`` of a
            ResNet), as a module or dotted name.
        queries: ``(B, C, H, W)`` query images, or ``(1, C, H, W)`` for one query against every
            gallery image.
        gallery: ``(B, C, H', W')`` gallery images, or ``(1, C, H', W')``.
        head: the modules after the pooling, mapping ``(B, K)`` pooled features to the
            embedding (ResNet: ``model.fc``); ``None`` when the pooled features are the embedding.
        embedding_fn: picks the embedding from a tuple/dict model output.
        reshape_transform: maps the layer output to ``(B, K, h, w)`` (ViT tokens, see
            [`token_reshape`][embedcam.cam.reshape.token_reshape]).
        batch_size: most images per forward (pairs go in chunks of ``batch_size // 2``, at
            least one); default ``max(2, B)``, the batch of a single-sided call.

    Returns:
        A [`PointToPoint`][embedcam.pairs.PointToPoint].

    Raises:
        ShapeError: bad image batches, or a layer output that is not a feature map.
        ConfigurationError: the model's embedding is not ``head(mean-pooled layer output)`` (the
            message gives the cosine between the two: pass the right ``head`` or layer), or the
            layer does not run.
        UnsupportedError: a non-affine head that forward-mode differentiation cannot handle.

    Examples:
        >>> import torch, embedcam as ec
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ...                           torch.nn.Linear(4, 2))
        >>> p2p = ec.point_to_point(net, "1", torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8),
        ...                         head=net[4])
        >>> p2p.matrix.shape, p2p.exact
        (torch.Size([1, 36, 36]), True)
        >>> bool(torch.allclose(p2p.matrix.sum(dim=(1, 2)), p2p.similarity, atol=1e-5))
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
    layer, layer_name = resolve_layer(model, target_layer)
    queries, gallery = _check_pair_batches(queries, gallery)
    head_fn: Callable[[Tensor], Tensor] = head if head is not None else nn.Identity()
    if not callable(head_fn):
        raise ConfigurationError(f"head must be a module or callable, got {type(head).__name__}")
    n = int(queries.shape[0])
    chunk = max(1, (batch_size if batch_size is not None else max(2, n)) // 2)
    parts = [
        _point_to_point(
            model,
            layer,
            layer_name,
            queries[s : s + chunk],
            gallery[s : s + chunk],
            head_fn,
            embedding_fn,
            reshape_transform,
        )
        for s in range(0, max(n, 1), chunk)
    ]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return PointToPoint(
        matrix=torch.cat([p.matrix for p in parts]),
        similarity=torch.cat([p.similarity for p in parts]),
        query=_concat([p.query for p in parts]),
        gallery=_concat([p.gallery for p in parts]),
        query_grid=first.query_grid,
        gallery_grid=first.gallery_grid,
        exact=all(p.exact for p in parts),
    )


def _point_to_point(
    model: nn.Module,
    layer: nn.Module,
    layer_name: str,
    queries: Tensor,
    gallery: Tensor,
    head_fn: Callable[[Tensor], Tensor],
    embedding_fn: Callable[[Any], Tensor] | None,
    reshape_transform: Callable[[Tensor], Tensor] | None,
) -> PointToPoint:
    """`point_to_point` of one chunk of pairs (validated arguments)."""
    affine = _is_affine(head_fn)
    n = int(queries.shape[0])
    with torch.inference_mode(False), model_lock(model), explain_mode(model, freeze=True):
        q = prepare_images(queries, model)
        g = prepare_images(gallery, model)
        with single_use_guard(model, layer, layer_name):
            if q.shape[-2:] == g.shape[-2:]:
                acts, emb = _layer_features(
                    model, layer, layer_name, torch.cat([q, g]), embedding_fn, reshape_transform
                )
                parts = [(acts[:n], emb[:n]), (acts[n:], emb[n:])]
            else:
                parts = [
                    _layer_features(model, layer, layer_name, x, embedding_fn, reshape_transform)
                    for x in (q, g)
                ]
        with torch.no_grad():
            zs, es = [], []
            for acts, emb in parts:
                z, e = _location_parts(head_fn, acts.float(), affine)
                if e.dim() != 2 or e.shape[0] != acts.shape[0] or e.shape[1] != emb.shape[-1]:
                    raise ConfigurationError(
                        f"head maps the pooled (B, {acts.shape[1]}) features to shape "
                        f"{tuple(e.shape)}, but the model's embedding is {tuple(emb.shape)}; "
                        "pass as head the modules between the global average pooling of the "
                        f"layer {layer_name!r} and the embedding"
                    )
                agree = _cosine_rows(e, emb.float())
                if agree.numel() and float(agree.min()) < 1 - AFFINE_TOLERANCE:
                    raise ConfigurationError(
                        f"the model's embedding is not head(global average pool of layer "
                        f"{layer_name!r}): their cosine is {float(agree.min()):.6f}, not 1. "
                        "Pick the layer whose output is average-pooled into the embedding and "
                        "pass head= the modules after the pooling (e.g. model.fc for a "
                        "torchvision ResNet); point-to-point needs average pooling (not max or "
                        "GeM pooling)"
                    )
                zs.append(z)
                es.append(e)
            zq, zg = zs
            eq, eg = es
            norms = torch.linalg.vector_norm(eq, dim=1) * torch.linalg.vector_norm(eg, dim=1)
            if bool((norms == 0).any()):
                raise EmbedcamValueError(
                    "an embedding is all zero, so its cosine is undefined; check the images"
                )
            matrix = torch.bmm(zq, zg.transpose(1, 2)) / norms[:, None, None]
            similarity = _cosine_rows(eq, eg)
            grids = [tuple(int(s) for s in p[0].shape[-2:]) for p in parts]
            results = []
            for raw, img in (
                (matrix.sum(dim=2).reshape(n, *grids[0]), q),
                (matrix.sum(dim=1).reshape(n, *grids[1]), g),
            ):
                maps, empty = finish_maps(raw, (int(img.shape[-2]), int(img.shape[-1])))
                results.append(
                    CamResult(
                        maps=maps,
                        raw=raw,
                        scores=similarity,
                        empty=empty,
                        method="point-to-point",
                        backend="native",
                        layer=layer_name,
                    )
                )
    exact = affine and (
        zq.shape[0] == 0
        or torch.allclose(
            zq.sum(dim=1), eq, rtol=AFFINE_TOLERANCE, atol=AFFINE_TOLERANCE * float(eq.abs().max())
        )
    )
    return PointToPoint(
        matrix=matrix,
        similarity=similarity,
        query=results[0],
        gallery=results[1],
        query_grid=(grids[0][0], grids[0][1]),
        gallery_grid=(grids[1][0], grids[1][1]),
        exact=exact,
    )
