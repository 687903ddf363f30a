"""Data for the SKU benchmark: a Roboflow export or a generated synthetic shelf, held in memory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

import embedcam as ec
from embedcam.datasets import DatasetIndex, ImageDataset, ShelfConfig, collate_boxes
from embedcam.errors import ConfigurationError, DataError

from .config import SkuConfig


@dataclass
class Split:
    """One split in memory.

    Attributes:
        images: ``(N, 3, S, S)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64.
        boxes: One ``(K_i, 4)`` tensor per image, or ``None`` (classification export).
        regions: ``(N, S, S)`` bool rasterised boxes (what the judge scores against), or ``None``.
        masks: ``(N, S, S)`` bool exact object masks (synthetic), else the box regions, or None.
        home: ``(N,)`` bool, image shows its class's home background (synthetic), or ``None``.
        paths: Image file paths.
        exact_masks: ``masks`` are exact object masks (synthetic, or an export with masks or
            COCO segmentation), not box rectangles.
    """

    images: Tensor
    labels: Tensor
    boxes: list[Tensor] | None
    regions: Tensor | None
    masks: Tensor | None
    home: Tensor | None
    paths: list[str]
    exact_masks: bool = False

    def __len__(self) -> int:
        return int(self.labels.numel())

    def dataset(self) -> TensorDataset:
        """A map-style dataset of ``(image, label)`` for training and embedding."""
        return TensorDataset(self.images, self.labels)

    def loader(self, batch_size: int, *, masks: bool = False) -> DataLoader:
        """The split as embedcam reads it: a fixed-order DataLoader of batch dicts.

        Batches hold ``image``, ``label``, ``index``, ``id`` (the file path), ``boxes`` (when the
        split has boxes) and, with ``masks=True``, the exact object ``mask`` (the interventions
        use it; maps are still scored against the boxes). Map-style, so the audit's
        interventions can read donor backgrounds by index.
        """
        return DataLoader(
            _SplitItems(self, masks=masks and self.masks is not None),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=_collate,
        )


class _SplitItems(Dataset):
    """A `Split` as a map-style dataset of item dicts (see `Split.loader`)."""

    def __init__(self, split: Split, masks: bool) -> None:
        self.split, self.masks = split, masks

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        s = self.split
        item = {"image": s.images[i], "label": int(s.labels[i]), "index": i, "id": s.paths[i]}
        if s.boxes is not None:
            item["boxes"] = s.boxes[i]
        if self.masks:
            assert s.masks is not None
            item["mask"] = s.masks[i]
        return item


def _collate(items: list[dict]) -> dict:
    out = collate_boxes(items)
    out["id"] = [it["id"] for it in items]
    return out


@dataclass
class Data:
    """Everything the benchmark reads: splits, classes, additional labels, provenance.

    ``digest`` identifies the data by content (the generator's settings for synthetic data;
    every file of a user's export, with the data settings): the checkpoint cache is keyed by it,
    so an export regenerated in place is never mistaken for the old one.
    """

    classes: list[str]
    extra_labels: dict[int, tuple[str, ...]] | None
    extra_label_names: list[str]
    splits: dict[str, Split]
    control_train: Split | None
    source: str
    license: str | None
    synthetic: bool
    digest: str = ""

    @property
    def has_boxes(self) -> bool:
        """Whether feature judging is possible (boxes exist)."""
        return self.splits["test"].regions is not None


def _load_split(index: DatasetIndex, split: str, size: int) -> Split:
    """Read one split in memory: images, labels, boxes, exact masks where every image has one,
    and the home-background flag where the export records it (synthetic and composite data)."""
    has_boxes = index.has_boxes
    samples = [s for s in index.samples if s.split == split]
    with_masks = bool(samples) and all(s.has_mask for s in samples)
    dataset = ImageDataset(
        index, size=size, split=split, with_boxes=has_boxes, with_masks=with_masks
    )
    if len(dataset) == 0:
        raise DataError(f"the {split!r} split has no images; the benchmark needs train and test")
    loader = DataLoader(dataset, batch_size=256, collate_fn=collate_boxes)
    images, labels, boxes, masks = [], [], [], []
    for batch in loader:
        images.append(batch["image"])
        labels.append(batch["label"])
        if has_boxes:
            boxes.extend(batch["boxes"])
        if with_masks:
            masks.append(batch["mask"])
    regions = ec.boxes_to_masks(boxes, size=(size, size)) if has_boxes else None
    home = None
    if samples and all("home" in s.extra for s in samples):
        home = torch.tensor([bool(s.extra["home"]) for s in samples])
    return Split(
        images=torch.cat(images),
        labels=torch.cat(labels).long(),
        boxes=boxes if has_boxes else None,
        regions=regions,
        masks=torch.cat(masks) if with_masks else regions,
        home=home,
        paths=[str(s.path) for s in samples],
        exact_masks=with_masks,
    )


def export_digest(root: Path, extra_labels: Path | None, settings: dict[str, Any]) -> str:
    """A short content hash of an export: every file's relative path and bytes, the
    additional-labels file and the data settings."""
    h = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8)
    files = sorted(f for f in Path(root).rglob("*") if f.is_file())
    if extra_labels is not None:
        files.append(Path(extra_labels))
    for f in files:
        h.update(str(f.relative_to(root) if f.is_relative_to(root) else f.name).encode())
        h.update(b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _extra_labels(index: DatasetIndex) -> tuple[dict[int, tuple[str, ...]] | None, list[str]]:
    if not index.label_names:
        return None, []
    names = list(index.label_names)
    table = {
        i: tuple(index.class_labels[c][n] for n in names)
        for i, c in enumerate(index.classes)
        if c in index.class_labels
    }
    return table, names


def _shelf_config(cfg: SkuConfig, train_shortcut: float) -> ShelfConfig:
    d = cfg.data
    return ShelfConfig(
        image_size=d.image_size,
        families=d.families,
        siblings=d.siblings,
        images_per_class={
            "train": d.train_per_class,
            "valid": d.valid_per_class,
            "test": d.test_per_class,
        },
        shortcut={"train": train_shortcut, "valid": d.shortcut, "test": d.shortcut},
        cue_contrast=d.cue_contrast,
        cue_scale=d.cue_scale,
        seed=d.seed,
    )


def load_data(cfg: SkuConfig, cache: Path) -> Data:
    """Generate (or reuse) the synthetic shelf, or read the user's export; load it in memory.

    On synthetic data a second export with the same classes and no background shortcut in its
    training split feeds the control model.
    """
    size = cfg.data.image_size
    if cfg.data.synthetic:
        main_dir = cache / "data" / f"shelf-{cfg.data_key()}"
        index = ec.datasets.generate_shelf(
            main_dir, _shelf_config(cfg, cfg.data.shortcut), if_exists="reuse"
        )
        splits = {s: _load_split(index, s, size) for s in ("train", "valid", "test")}
        control = None
        if cfg.control:
            # Neutral, not 0: with one home background per class, a shortcut of 0 would make
            # the home background *anti*-correlated with the class; 1 / (number of backgrounds)
            # makes background and class independent. Same seed: the same objects in the same
            # places, only the backgrounds differ.
            neutral = 1.0 / (cfg.data.families * cfg.data.siblings)
            ctrl_index = ec.datasets.generate_shelf(
                cache / "data" / f"shelf-{cfg.data_key(neutral)}-control",
                _shelf_config(cfg, neutral),
                if_exists="reuse",
            )
            if ctrl_index.classes != index.classes:
                raise DataError("the control export has different classes; regenerate the cache")
            control = _load_split(ctrl_index, "train", size)
        extra, names = _extra_labels(index)
        return Data(
            classes=list(index.classes),
            extra_labels=extra,
            extra_label_names=names,
            splits=splits,
            control_train=control,
            source="synthetic shelf (embedcam generator)",
            license=index.metadata.get("license"),
            synthetic=True,
            digest=cfg.data_key(),
        )
    index = ec.datasets.load_roboflow(cfg.data.path, extra_labels=cfg.data.extra_labels)
    present = {s.split for s in index.samples}
    missing = {"train", "test"} - present
    if missing:
        raise DataError(f"the export at {cfg.data.path} has no {sorted(missing)} split(s)")
    names = [s for s in ("train", "valid", "test") if s in present]
    splits = {s: _load_split(index, s, size) for s in names}
    extra, label_names = _extra_labels(index)
    if "flexible" in cfg.losses and extra is None:
        raise ConfigurationError(
            "the flexible-margin loss needs additional labels: pass --extra-labels FILE "
            "(CSV/JSON keyed by class name) or set losses=[triplet,focal]"
        )
    return Data(
        classes=list(index.classes),
        extra_labels=extra,
        extra_label_names=label_names,
        splits=splits,
        control_train=None,
        source=str(cfg.data.path),
        license=index.metadata.get("license"),
        synthetic=False,
        digest=export_digest(
            cfg.data.path, cfg.data.extra_labels, cfg.data.model_dump(mode="json")
        ),
    )
