"""Datasets: Roboflow export readers, the dataset index, a torch Dataset and synthetic shelves.

* [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] reads a Roboflow export in any layout
  (folder, CSV, COCO, YOLO, VOC) into a validated
  [`DatasetIndex`][embedcam.datasets.index.DatasetIndex], with additional labels from a mapping
  file.
* [`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset] and
  [`collate_boxes`][embedcam.datasets.torch_dataset.collate_boxes] feed an index to a model, moving
  boxes and masks with every resize or augmentation.
* [`generate_shelf`][embedcam.datasets.synthetic.generate_shelf] writes a synthetic shelf dataset
  with a controllable background shortcut as a Roboflow COCO export, with exact object masks.
* [`compose_export`][embedcam.datasets.composite.compose_export] does the same with real imagery:
  catalogue cut-outs on white pasted onto real shelf or store photos, with exact masks and a planted
  background shortcut.
* [`preview_grid`][embedcam.datasets.preview.preview_grid] /
  [`save_preview`][embedcam.datasets.preview.save_preview] draw a grid of samples with their boxes,
  and [`intervention_grid`][embedcam.datasets.preview.intervention_grid] /
  [`save_intervention_grid`][embedcam.datasets.preview.save_intervention_grid] one of background
  interventions.
"""

from __future__ import annotations

from embedcam.datasets.composite import (
    CompositeConfig,
    CompositeImage,
    CompositeRenderer,
    Cutout,
    compose_export,
    cutout_mask,
    load_cutout,
)
from embedcam.datasets.index import SPLITS, DatasetIndex, Sample, SkippedFile
from embedcam.datasets.preview import (
    intervention_grid,
    preview_grid,
    save_intervention_grid,
    save_preview,
)
from embedcam.datasets.roboflow import FORMATS, detect_format, load_roboflow, read_extra_labels
from embedcam.datasets.synthetic import (
    GLYPHS,
    SHAPES,
    RenderedImage,
    ShelfClass,
    ShelfConfig,
    ShelfRenderer,
    generate_shelf,
)
from embedcam.datasets.torch_dataset import (
    BoxTransform,
    Compose,
    ImageDataset,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    collate_boxes,
)

__all__ = [
    "SPLITS",
    "FORMATS",
    "DatasetIndex",
    "Sample",
    "SkippedFile",
    "load_roboflow",
    "detect_format",
    "read_extra_labels",
    "ImageDataset",
    "collate_boxes",
    "BoxTransform",
    "Compose",
    "Resize",
    "RandomHorizontalFlip",
    "RandomCrop",
    "ShelfConfig",
    "ShelfClass",
    "ShelfRenderer",
    "RenderedImage",
    "SHAPES",
    "GLYPHS",
    "generate_shelf",
    "CompositeConfig",
    "CompositeRenderer",
    "CompositeImage",
    "Cutout",
    "compose_export",
    "cutout_mask",
    "load_cutout",
    "preview_grid",
    "intervention_grid",
    "save_preview",
    "save_intervention_grid",
]
