"""A torch ``Dataset`` over a `DatasetIndex`, with transforms that move boxes and masks.

Every geometric transform is applied to the image, its boxes (through
[`embedcam.boxes`][embedcam.boxes], so the half-open ``[x0, y0, x1, y1]`` convention holds: pixel
``(r, c)`` is inside when ``x0 <= c + 0.5 < x1``) and its object
mask together, and boxes are clipped afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from embedcam import boxes as _boxes
from embedcam.datasets._io import read_rgb
from embedcam.datasets.index import DatasetIndex
from embedcam.errors import ConfigurationError, DataError, ShapeError

__all__ = [
    "BoxTransform",
    "Compose",
    "Resize",
    "RandomHorizontalFlip",
    "RandomCrop",
    "ImageDataset",
    "collate_boxes",
]

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _size2(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ConfigurationError(f"{name} must be a positive int or an (H, W) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


class BoxTransform(Protocol):
    """A transform of an image together with its boxes and (optional) mask.

    Called as ``transform(image, boxes, mask, generator)`` with ``image`` ``(3, H, W)`` float,
    ``boxes`` ``(K, 4)`` float, ``mask`` ``(H, W)`` bool or ``None`` and a ``torch.Generator``
    for any randomness; returns the transformed ``(image, boxes, mask)``.
    """

    def __call__(  # noqa: D102 - documented on the class
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Triple: ...


class Compose:
    """Apply box transforms in order.

    Args:
        transforms: The transforms.
    """

    def __init__(self, transforms: Sequence[BoxTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Triple:
        """Apply every transform; see `BoxTransform`."""
        for t in self.transforms:
            image, boxes, mask = t(image, boxes, mask, generator)
        return image, boxes, mask


class Resize:
    """Resize to ``size`` (bilinear with antialiasing; masks nearest), scaling the boxes.

    Args:
        size: Output ``(H, W)``, or an int for a square output.

    Examples:
        >>> img, b, _ = Resize((2, 4))(torch.zeros(3, 4, 4), torch.tensor([[0., 0., 2., 4.]]),
        ...     None, torch.Generator())
        >>> tuple(img.shape), b.tolist()
        ((3, 2, 4), [[0.0, 0.0, 2.0, 2.0]])
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size2(size)

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Triple:
        """Resize; see [`BoxTransform`][embedcam.datasets.torch_dataset.BoxTransform]."""
        src = (int(image.shape[-2]), int(image.shape[-1]))
        if src == self.size:
            return image, boxes, mask
        image = F.interpolate(
            image[None], size=self.size, mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0.0, 1.0)
        boxes = _boxes.resize_boxes(boxes, src, self.size)
        if mask is not None:
            mask = (
                F.interpolate(mask[None, None].float(), size=self.size, mode="nearest")[0, 0] > 0.5
            )
        return image, boxes, mask


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``.

    A box ``[x0, y0, x1, y1]`` becomes ``[W - x1, y0, W - x0, y1]``.

    Args:
        p: Flip probability in ``[0, 1]``.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigurationError(f"flip probability p must be in [0, 1], got {p}")
        self.p = p

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Triple:
        """Maybe flip; see [`BoxTransform`][embedcam.datasets.torch_dataset.BoxTransform]."""
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, boxes, mask
        w = image.shape[-1]
        flipped = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], -1)
        return image.flip(-1), flipped, None if mask is None else mask.flip(-1)


class RandomCrop:
    """Crop a random window covering a fraction of the image area, keeping the aspect ratio.

    Boxes are moved into the window with [`embedcam.boxes.crop_boxes`][embedcam.boxes.crop_boxes]
    and clipped; boxes that fall entirely outside become degenerate and are dropped by
    [`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset].

    Args:
        scale: Range ``(lo, hi)`` of the window's area fraction, ``0 < lo <= hi <= 1``.
    """

    def __init__(self, scale: tuple[float, float] = (0.7, 1.0)) -> None:
        lo, hi = scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigurationError(f"crop scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        self.scale = (float(lo), float(hi))

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        mask: torch.Tensor | None,
        generator: torch.Generator,
    ) -> Triple:
        """Crop; see [`BoxTransform`][embedcam.datasets.torch_dataset.BoxTransform]."""
        h, w = int(image.shape[-2]), int(image.shape[-1])
        u = torch.rand(3, generator=generator).tolist()
        frac = self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]
        ch, cw = max(1, round(h * frac**0.5)), max(1, round(w * frac**0.5))
        top, left = int(u[1] * (h - ch + 1)), int(u[2] * (w - cw + 1))
        image = image[:, top : top + ch, left : left + cw]
        boxes = _boxes.crop_boxes(boxes, top, left, (ch, cw))
        if mask is not None:
            mask = mask[top : top + ch, left : left + cw]
        return image, boxes, mask


class ImageDataset(Dataset):
    """A torch dataset over a `DatasetIndex` that moves boxes and masks with the image.

    Each item is a dict:

    * ``image``: float32 ``(3, H, W)`` in ``[0, 1]`` (or normalised with ``mean``/``std``),
    * ``label``: int class index,
    * ``boxes``: float32 ``(K, 4)`` ``[x0, y0, x1, y1]`` in the output image's pixels (only when
      boxes are requested; a classification export has none),
    * ``index``: int position of the sample in the (split) index,
    * ``mask``: bool ``(H, W)`` exact object mask (only when masks are requested).

    The image goes through ``transform`` (e.g. augmentations), then is resized to ``size``.
    Batch items with [`collate_boxes`][embedcam.datasets.torch_dataset.collate_boxes].

    Args:
        index: The dataset index.
        size: Model input size ``(H, W)`` (or an int for square); ``None`` keeps each image's
            own size.
        split: Restrict to one split (``"train"``, ``"valid"``, ``"test"``).
        transform: Optional [`BoxTransform`][embedcam.datasets.torch_dataset.BoxTransform] applied
            before the final resize.
        with_boxes: Return ``boxes``; ``None`` means "if the export has boxes".
        with_masks: Return ``mask``; ``None`` means "if every sample has a mask file".
        mean: Optional per-channel mean for normalisation (with ``std``).
        std: Optional per-channel standard deviation.
        seed: Seed of the per-item random generators (see
            [`set_epoch`][embedcam.datasets.torch_dataset.ImageDataset.set_epoch]).

    Raises:
        DataError: If boxes are requested from a classification export, or masks from samples
            without mask files. Reading an item raises it when the image file is missing or
            corrupt, or decodes to a size other than the sample's `Sample.size` (the size
            its boxes refer to, e.g. a COCO ``width``/``height`` not checked because the index
            was loaded with ``verify_images=False``).
        ConfigurationError: If ``size``, ``mean`` or ``std`` are malformed.

    Examples:
        On the Grocery Store sample in embedcam's tests (the path is relative to the root of a
        clone; the wheel does not ship it; a folder export, so the
        items have no boxes; a detection export's batches would need ``collate_boxes``):

        >>> from torch.utils.data import DataLoader
        >>> from embedcam.datasets import load_roboflow
        >>> index = load_roboflow("tests/fixtures/grocery-mini")
        >>> ds = ImageDataset(index, size=(64, 64), split="train")
        >>> batch = next(iter(DataLoader(ds, batch_size=4)))
        >>> tuple(batch["image"].shape), batch["label"].tolist()
        ((4, 3, 64, 64), [0, 0, 0, 0])
    """

    def __init__(
        self,
        index: DatasetIndex,
        size: int | Sequence[int] | None = None,
        *,
        split: str | None = None,
        transform: BoxTransform | None = None,
        with_boxes: bool | None = None,
        with_masks: bool | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.index = index.split(split) if split is not None else index
        self.size = None if size is None else _size2(size)
        self.transform = transform
        if with_boxes is None:
            with_boxes = self.index.has_boxes
        elif with_boxes:
            self.index.require_boxes()
        self.with_boxes = bool(with_boxes)
        if with_masks is None:
            with_masks = bool(self.index.samples) and all(s.has_mask for s in self.index.samples)
        elif with_masks:
            lacking = [str(s.path) for s in self.index.samples if not s.has_mask]
            if lacking:
                raise DataError(
                    f"{len(lacking)} samples have no object mask (first: {lacking[0]!r}); masks "
                    "come from mask files (generate_shelf, compose_export) or COCO "
                    "segmentations; pass with_masks=False, or use boxes_to_masks for box regions"
                )
        self.with_masks = bool(with_masks)
        if (mean is None) != (std is None):
            raise ConfigurationError("pass both mean and std for normalisation, or neither")
        self.mean = self.std = None
        if mean is not None and std is not None:
            m = torch.tensor(list(mean), dtype=torch.float32)
            s = torch.tensor(list(std), dtype=torch.float32)
            if m.shape != (3,) or s.shape != (3,) or bool((s <= 0).any()):
                raise ConfigurationError(
                    f"mean and std need 3 values each and std > 0, got {mean!r}, {std!r}"
                )
            self.mean, self.std = m.view(3, 1, 1), s.view(3, 1, 1)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def labels(self) -> torch.Tensor:
        """Labels of all items, int64 ``(N,)`` (for samplers that need them, e.g. P x K)."""
        return self.index.labels()

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream of the transforms (call once per epoch for new augmentations).

        Args:
            epoch: The epoch number.
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.index[i]
        array = read_rgb(sample.path)
        image = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
        actual = (int(image.shape[-2]), int(image.shape[-1]))
        if sample.size is not None and tuple(sample.size) != actual:
            # boxes, segmentations and resizing all use the size in the index: never a
            # silently dropped or mis-scaled box
            raise DataError(
                f"image {str(sample.path)!r} decodes to {actual} (H, W) but the index says "
                f"{tuple(sample.size)} (the size the export declares, which its boxes and masks "
                "refer to); fix the image's height/width in the export or re-export the image, "
                "and load with load_roboflow(..., verify_images=True), which compares every "
                "image with its declared size (skip_invalid=True skips the ones that differ)"
            )
        boxes = sample.box_tensor() if self.with_boxes else torch.zeros(0, 4)
        mask = None
        if self.with_masks:
            mask = sample.load_mask()
            if tuple(mask.shape) != tuple(image.shape[-2:]):
                raise DataError(
                    f"mask {str(sample.mask_path or 'from the segmentation')!r} is "
                    f"{tuple(mask.shape)} but image "
                    f"{str(sample.path)!r} is {tuple(image.shape[-2:])} (H, W)"
                )
        state = np.random.SeedSequence([self.seed, self.epoch, int(i)]).generate_state(1)
        gen = torch.Generator().manual_seed(int(state[0]))
        if self.transform is not None:
            image, boxes, mask = self.transform(image, boxes, mask, gen)
        if self.size is not None:
            image, boxes, mask = Resize(self.size)(image, boxes, mask, gen)
        if self.mean is not None and self.std is not None:
            image = (image - self.mean) / self.std
        item: dict[str, Any] = {"image": image.contiguous(), "label": sample.label, "index": i}
        if self.with_boxes:
            # Exports may hold boxes that run past the image edge (common in YOLO/VOC); clip
            # after every transform, also when no resize happened (REFERENCE section 2).
            boxes = _boxes.clip_boxes(boxes, tuple(image.shape[-2:]))
            keep = _boxes.box_area(boxes) > 0
            item["boxes"] = boxes[keep].to(torch.float32)
        if mask is not None:
            item["mask"] = mask
        return item


def collate_boxes(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate `ImageDataset` items whose box counts differ.

    Args:
        batch: Items from [`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset].

    Returns:
        A dict with the same keys as the items: ``image`` ``(B, 3, H, W)``, ``label`` int64
        ``(B,)``, ``index`` int64 ``(B,)``, ``boxes`` a list of ``B`` tensors ``(K_i, 4)`` (when
        present) and ``mask`` bool ``(B, H, W)`` (when present).

    Raises:
        ShapeError: If the batch is empty, the items have different keys, or image sizes differ
            (pass ``size=`` to [`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset]).

    Examples:
        >>> items = [{"image": torch.zeros(3, 2, 2), "label": 1, "index": 0,
        ...           "boxes": torch.zeros(0, 4)},
        ...          {"image": torch.ones(3, 2, 2), "label": 0, "index": 1,
        ...           "boxes": torch.tensor([[0., 0., 1., 1.]])}]
        >>> out = collate_boxes(items)
        >>> tuple(out["image"].shape), out["label"].tolist(), [tuple(b.shape) for b in out["boxes"]]
        ((2, 3, 2, 2), [1, 0], [(0, 4), (1, 4)])
    """
    if len(batch) == 0:
        raise ShapeError("cannot collate an empty batch")
    keys = set(batch[0])
    for j, item in enumerate(batch):
        if set(item) != keys:
            raise ShapeError(f"batch item {j} has keys {sorted(item)}, item 0 has {sorted(keys)}")
    shapes = {tuple(item["image"].shape) for item in batch}
    if len(shapes) > 1:
        raise ShapeError(
            f"images in a batch differ in shape {sorted(shapes)}; pass size=(H, W) to "
            "ImageDataset so every image is resized to the model input"
        )
    out: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in batch]),
        "label": torch.tensor([int(item["label"]) for item in batch], dtype=torch.int64),
        "index": torch.tensor([int(item["index"]) for item in batch], dtype=torch.int64),
    }
    if "boxes" in keys:
        out["boxes"] = [item["boxes"] for item in batch]
    if "mask" in keys:
        out["mask"] = torch.stack([item["mask"] for item in batch])
    return out
