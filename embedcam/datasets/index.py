"""The dataset index: one validated record of every sample of an export, whatever its layout.

Every reader in [`embedcam.datasets`][embedcam.datasets] produces a
[`DatasetIndex`][embedcam.datasets.index.DatasetIndex]; the torch
[`ImageDataset`][embedcam.datasets.torch_dataset.ImageDataset], the synthetic generator and the
benchmark consume it. Boxes are stored in embedcam's internal convention
([`embedcam.boxes`][embedcam.boxes]: float ``[x0, y0, x1, y1]``, half-open pixel edges), whatever
the export's own format was.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from embedcam import boxes as _boxes
from embedcam.datasets._io import atomic_write_text, read_mask
from embedcam.errors import DataError, EmbedcamValueError

__all__ = [
    "SPLITS",
    "Split",
    "ExportFormat",
    "Box",
    "Sample",
    "SkippedFile",
    "DatasetIndex",
]

SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""The split folder names of a Roboflow export, in their canonical order."""

Split = Literal["train", "valid", "test"]
ExportFormat = Literal["folder", "csv", "coco", "yolo", "voc"]
Box = tuple[float, float, float, float]

_RF_NAME = re.compile(r"^(?P<stem>.+?)_(?P<ext>[A-Za-z0-9]+)\.rf\.[0-9A-Za-z]+\.[A-Za-z0-9]+$")


class Sample(BaseModel):
    """One image of an export with its label, boxes and additional labels.

    Attributes:
        path: Absolute path of the image file.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        label: Class index into `DatasetIndex.classes`.
        class_name: Name of the class (``classes[label]``).
        boxes: Boxes of the image's class in the internal ``[x0, y0, x1, y1]`` convention, or
            ``None`` for a classification export (folder, CSV), which has no boxes.
        other_objects: ``(class name, box)`` of annotated objects of *other* classes in the same
            image (detection exports only).
        size: Image size ``(H, W)`` in pixels, when the reader looked at the file.
        additional_labels: The class's additional labels, e.g. ``{"category": ..., "group": ...}``.
        mask_path: Path of an exact object mask (synthetic and composite exports: a COCO
            image's ``extra.mask``), or ``None``.
        extra: Free-form per-image ground truth, e.g. ``background_id`` and ``home`` for
            synthetic images (copied from a COCO image's ``extra`` field).
        segmentation: The COCO ``segmentation`` of each of the image's own-class annotations
            (polygons, uncompressed or compressed RLE), when the image has no mask file and
            every such annotation has one; [`load_mask`][embedcam.datasets.index.Sample.load_mask]
            rasterises their union at [`size`][embedcam.cam.result.CamResult.size]. ``None``
            otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    split: Split
    label: int = Field(ge=0)
    class_name: str
    boxes: tuple[Box, ...] | None = None
    other_objects: tuple[tuple[str, Box], ...] = ()
    size: tuple[int, int] | None = None
    additional_labels: dict[str, str] = Field(default_factory=dict)
    mask_path: Path | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    segmentation: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _check_segmentation(self) -> Sample:
        if self.segmentation is not None and self.size is None:
            raise ValueError(f"{self.path}: a segmentation needs the image size")
        return self

    @property
    def source_name(self) -> str:
        """The original file name before Roboflow renamed it.

        Roboflow stores ``IMG_1.jpg`` as ``IMG_1_jpg.rf.<hash>.jpg``; augmented copies of one
        original share the source name, which is what a leakage check between splits compares.
        Names without the ``.rf.`` part are returned unchanged.
        """
        m = _RF_NAME.match(self.path.name)
        if m is None:
            return self.path.name
        return f"{m.group('stem')}.{m.group('ext')}"

    def box_tensor(self) -> torch.Tensor:
        """The sample's boxes as a float32 tensor ``(K, 4)``.

        Raises:
            DataError: If the sample has no boxes because it comes from a classification export.
        """
        if self.boxes is None:
            raise DataError(
                f"{str(self.path)!r} has no boxes: it comes from a classification export "
                "(folder or CSV layout); export the dataset from Roboflow as COCO, YOLO or VOC"
            )
        return torch.tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)

    @property
    def has_mask(self) -> bool:
        """Whether `load_mask` has an exact mask to return (a mask file or a segmentation)."""
        return self.mask_path is not None or self.segmentation is not None

    def load_mask(self) -> torch.Tensor:
        """Read the exact object mask of the sample.

        The mask file (`mask_path`) when there is one, else the union of the COCO
        `segmentation` rasterised at [`size`][embedcam.cam.result.CamResult.size] (a pixel is in the
        mask when its centre lies inside a polygon; RLE runs are column-major, as in COCO).

        Returns:
            A bool tensor ``(H, W)``, true on object pixels.

        Raises:
            DataError: If the sample has no mask, the mask file is missing or corrupt, or the
                segmentation is malformed.
        """
        if self.mask_path is not None:
            return torch.from_numpy(read_mask(self.mask_path))
        if self.segmentation is not None and self.size is not None:
            from embedcam.datasets._segmentation import rasterize_segmentations

            mask = rasterize_segmentations(
                self.segmentation, self.size, f"segmentation of {str(self.path)!r}"
            )
            return torch.from_numpy(mask)
        raise DataError(
            f"{str(self.path)!r} has no object mask; masks exist for synthetic and composite "
            "exports (generate_shelf, compose_export) and COCO exports with segmentations; "
            "otherwise use boxes_to_masks(boxes, size)"
        )


class SkippedFile(BaseModel):
    """A file a reader skipped with ``skip_invalid=True``, and why."""

    model_config = ConfigDict(frozen=True)

    path: Path
    reason: str


class DatasetIndex(BaseModel):
    """All samples of an export, its class list, additional labels and metadata.

    Built by [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] and validated on
    construction: labels in range, class names consistent with labels, boxes well formed, additional
    labels consistent.

    Attributes:
        root: The export's root folder.
        format: The layout it was read from: ``folder``, ``csv``, ``coco``, ``yolo`` or ``voc``.
        classes: Class names; ``label`` indexes this list. The union over splits, in a stable
            order (see [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow]).
        samples: Samples ordered by split (train, valid, test), then file path.
        has_boxes: Whether the export carries boxes (false for folder and CSV layouts).
        label_names: Names of the additional labels, e.g. ``["category", "group"]``.
        class_labels: Additional labels per class name.
        metadata: Export metadata, e.g. ``license`` and ``license_source``.
        skipped: Files skipped with ``skip_invalid=True``, with the reason.

    Examples:
        >>> idx = DatasetIndex(root=".", format="folder", classes=["a"], has_boxes=False,
        ...     samples=[Sample(path="x.jpg", split="train", label=0, class_name="a")])
        >>> len(idx), idx.splits
        (1, ['train'])
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path
    format: ExportFormat
    classes: list[str]
    samples: list[Sample]
    has_boxes: bool
    label_names: list[str] = Field(default_factory=list)
    class_labels: dict[str, dict[str, str]] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    skipped: list[SkippedFile] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DatasetIndex:
        dup = [c for c, n in Counter(self.classes).items() if n > 1]
        if dup:
            raise ValueError(f"class names must be unique, duplicated: {dup}")
        unknown = sorted(set(self.class_labels) - set(self.classes))
        if unknown:
            raise ValueError(f"additional labels given for unknown classes {unknown}")
        for name, labels in self.class_labels.items():
            if sorted(labels) != sorted(self.label_names):
                raise ValueError(
                    f"class {name!r} has additional labels {sorted(labels)}, expected "
                    f"{sorted(self.label_names)}"
                )
        n = len(self.classes)
        for i, s in enumerate(self.samples):
            if s.label >= n:
                raise ValueError(f"sample {i} ({s.path}) has label {s.label} >= {n} classes")
            if s.class_name != self.classes[s.label]:
                raise ValueError(
                    f"sample {i} ({s.path}) has class_name {s.class_name!r} but label {s.label} "
                    f"is {self.classes[s.label]!r}"
                )
            if (s.boxes is not None) != self.has_boxes:
                raise ValueError(
                    f"sample {i} ({s.path}) {'has' if s.boxes is not None else 'lacks'} boxes "
                    f"but has_boxes={self.has_boxes}"
                )
            if s.additional_labels != self.class_labels.get(s.class_name, {}):
                raise ValueError(
                    f"sample {i} ({s.path}) additional labels differ from its class's "
                    f"{self.class_labels.get(s.class_name, {})}"
                )
            if s.boxes:
                try:
                    _boxes.validate_boxes(
                        torch.tensor(s.boxes, dtype=torch.float64), size=s.size, image_index=i
                    )
                except EmbedcamValueError as err:
                    raise ValueError(f"{s.path}: {err}") from err
        return self

    @classmethod
    def build(cls, **fields: Any) -> DatasetIndex:
        """Construct and validate an index, turning validation failures into `DataError`.

        Args:
            **fields: The fields of [`DatasetIndex`][embedcam.datasets.index.DatasetIndex].

        Returns:
            The validated index.

        Raises:
            DataError: If the fields are inconsistent; the message lists each problem.
        """
        try:
            return cls(**fields)
        except ValidationError as err:
            raise DataError(f"invalid dataset index: {err}") from err

    # -- access ---------------------------------------------------------------------------------

    def __repr_args__(self) -> list[tuple[str, Any]]:
        """A summary, never the samples: pydantic's ``__repr__``, rich and devtools all use it."""
        splits: Counter[str] = Counter(x.split for x in self.samples)
        return [
            ("root", str(self.root)),
            ("format", self.format),
            ("classes", len(self.classes)),
            ("samples", len(self.samples)),
            ("splits", {name: splits[name] for name in self.splits}),
            ("boxes", self.has_boxes),
            ("additional_labels", list(self.label_names)),
        ]

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={value!r}" for name, value in self.__repr_args__())
        return f"DatasetIndex({args})"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:  # type: ignore[override]
        """Iterate over the samples (not over the model's fields, as a plain pydantic model)."""
        return iter(self.samples)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.classes)

    @property
    def splits(self) -> list[str]:
        """The splits that have samples, in canonical order."""
        present = {s.split for s in self.samples}
        return [s for s in SPLITS if s in present]

    def split(self, name: str) -> DatasetIndex:
        """The samples of one split, with the full class list kept (labels stay comparable).

        Args:
            name: ``"train"``, ``"valid"`` or ``"test"``.

        Returns:
            A new index holding only that split's samples.

        Raises:
            DataError: If ``name`` is not a split name or the split has no samples.
        """
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; splits are {list(SPLITS)}")
        picked = [s for s in self.samples if s.split == name]
        if not picked:
            raise DataError(
                f"split {name!r} of {str(self.root)!r} has no samples; present: {self.splits}"
            )
        return self.model_copy(update={"samples": picked})

    def labels(self) -> torch.Tensor:
        """Labels of all samples as an int64 tensor ``(N,)``."""
        return torch.tensor([s.label for s in self.samples], dtype=torch.int64)

    def class_counts(self) -> dict[str, int]:
        """Number of samples per class name (classes without samples count 0)."""
        counts = Counter(s.class_name for s in self.samples)
        return {c: counts.get(c, 0) for c in self.classes}

    def require_boxes(self) -> None:
        """Raise unless the index carries boxes.

        Raises:
            DataError: For a classification export (folder, CSV), which has no boxes.
        """
        if not self.has_boxes:
            raise DataError(
                f"the {self.format!r} export at {str(self.root)!r} is a classification export "
                "and has no boxes; export the dataset from Roboflow as COCO, YOLO or Pascal VOC "
                "to get boxes"
            )

    def label_codes(self, names: list[str] | None = None) -> torch.Tensor:
        """Additional labels as integer codes, one row per class.

        Codes number each label's distinct values in order of first appearance over
        `classes`. This is the input of a hierarchy-aware loss (e.g. the flexible margin).

        Args:
            names: Which additional labels, in which column order; default `label_names`.

        Returns:
            Int64 tensor ``(C, L)``.

        Raises:
            DataError: If the index has no additional labels for a class, or a name is unknown.

        Examples:
            >>> idx = DatasetIndex(root=".", format="folder", classes=["a", "b", "c"],
            ...     has_boxes=False, samples=[], label_names=["group"],
            ...     class_labels={"a": {"group": "x"}, "b": {"group": "y"}, "c": {"group": "x"}})
            >>> idx.label_codes().tolist()
            [[0], [1], [0]]
        """
        names = list(self.label_names) if names is None else list(names)
        unknown = [n for n in names if n not in self.label_names]
        if unknown:
            raise DataError(f"unknown additional labels {unknown}; known: {self.label_names}")
        missing = [c for c in self.classes if c not in self.class_labels]
        if missing:
            raise DataError(
                f"classes {missing} have no additional labels; load the export with a mapping "
                "file that lists them (extra_labels=...)"
            )
        columns = []
        for n in names:
            codes: dict[str, int] = {}
            columns.append(
                [codes.setdefault(self.class_labels[c][n], len(codes)) for c in self.classes]
            )
        table = torch.tensor(columns, dtype=torch.int64).reshape(len(names), len(self.classes))
        return table.T.contiguous()

    # -- persistence ----------------------------------------------------------------------------

    def save_json(self, path: str | Path) -> None:
        """Write the index to a JSON file atomically.

        Args:
            path: Destination file.
        """
        atomic_write_text(Path(path), self.model_dump_json(indent=1))

    @classmethod
    def load_json(cls, path: str | Path) -> DatasetIndex:
        """Read an index written by [`save_json`][embedcam.datasets.index.DatasetIndex.save_json].

        Args:
            path: The JSON file.

        Returns:
            The validated index.

        Raises:
            DataError: If the file is missing or unreadable, not UTF-8, not valid JSON (also:
                nested too deeply), or not a valid index; the message names the file.
        """
        p = Path(path)
        if not p.is_file():
            raise DataError(f"index file {str(p)!r} does not exist")
        try:
            raw = p.read_bytes()
        except OSError as err:
            raise DataError(f"index file {str(p)!r} cannot be read ({err})") from err
        redo = "re-create it with DatasetIndex.save_json (or load_roboflow)"
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(
                f"the index file {str(p)!r} is not UTF-8 text (byte {raw[err.start]:#04x} at "
                f"offset {err.start}); {redo}"
            ) from err
        except RecursionError as err:
            raise DataError(
                f"the index file {str(p)!r} is not valid JSON (nested too deeply to be an "
                f"index); {redo}"
            ) from err
        except ValueError as err:
            raise DataError(f"the index file {str(p)!r} is not valid JSON ({err}); {redo}") from err
        if not isinstance(data, dict):
            raise DataError(
                f"the index file {str(p)!r} must hold a JSON object (as DatasetIndex.save_json "
                f"writes), got a {type(data).__name__}; {redo}"
            )
        try:
            return cls(**data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])[:80] or '(top)'}: {e['msg'][:200]}"
                for e in err.errors()[:5]
            )
            more = f" and {err.error_count() - 5} more" if err.error_count() > 5 else ""
            raise DataError(
                f"the index file {str(p)!r} is not a valid dataset index ({problems}{more}); {redo}"
            ) from err
        except RecursionError as err:
            raise DataError(
                f"the index file {str(p)!r} is not a valid dataset index (nested too deeply); "
                f"{redo}"
            ) from err
