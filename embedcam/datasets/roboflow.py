"""Readers for Roboflow exports in every layout, and the additional-labels mapping file.

Roboflow (https://roboflow.com) exports a project as ``train/``, ``valid/`` and ``test/`` folders
in one of these layouts, all read by [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow]:

* ``folder``: ``<split>/<class>/<image>`` (classification).
* ``csv``: ``<split>/_classes.csv`` with header ``filename, c1, c2, ...`` and one-hot rows
  (Roboflow's "multiclass classification" export).
* ``coco``: ``<split>/_annotations.coco.json`` (Lin et al., *Microsoft COCO*, ECCV 2014), boxes
  ``[x, y, w, h]``. Roboflow adds category 0, the project name, with ``supercategory: "none"`` as
  the parent of the real classes; it is not a class.
* ``yolo``: ``data.yaml`` (``names`` as a list or an ``{index: name}`` dict), ``<split>/images``
  and ``<split>/labels/<stem>.txt`` with lines ``cls cx cy w h`` normalised to ``[0, 1]``
  (Redmon et al., CVPR 2016); polygon lines ``cls x1 y1 x2 y2 ...`` become their bounding box.
* ``voc``: a Pascal VOC ``.xml`` beside each image (Everingham et al., IJCV 2010), read by tag
  name with float coordinates.

A ``val/`` or ``validation/`` folder is read as the ``valid`` split (an export with two of them
is refused). In COCO exports an image's exact object mask is the PNG its ``extra.mask`` names
(inside the export), or else the union of its own-class annotations' ``segmentation``
(polygons, uncompressed or compressed RLE), kept in `Sample.segmentation` and rasterised
by [`Sample.load_mask`][embedcam.datasets.index.Sample.load_mask].

Roboflow renames files to ``<stem>_<ext>.rf.<hash>.<ext>``;
[`Sample.source_name`][embedcam.datasets.index.Sample.source_name] recovers the original name.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import reprlib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from embedcam import boxes as _boxes
from embedcam.datasets._io import image_size, is_image
from embedcam.datasets._segmentation import check_segmentation
from embedcam.datasets.index import SPLITS, Box, DatasetIndex, ExportFormat, Sample, SkippedFile
from embedcam.errors import ConfigurationError, DataError

__all__ = ["FORMATS", "detect_format", "load_roboflow", "read_extra_labels"]

FORMATS: tuple[str, ...] = ("folder", "csv", "coco", "yolo", "voc")
"""The export layouts [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] reads."""

_COCO_FILE = "_annotations.coco.json"
_CSV_FILE = "_classes.csv"


@dataclass
class _Raw:
    """A sample before labels are numbered: what a layout reader found for one image."""

    path: Path
    split: str
    class_name: str
    boxes: list[Box] | None
    other_objects: list[tuple[str, Box]] = field(default_factory=list)
    size: tuple[int, int] | None = None
    mask_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    segmentation: tuple[Any, ...] | None = None


# -- reading files named by an export --------------------------------------------------------------

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 8, 6, 80, 80


def _short(value: Any) -> str:
    """A bounded ``repr`` of a value read from a file (safe for huge or deeply nested values)."""
    return _SHORT.repr(value)


_SKIP_HINT = re.compile(r"(?:[,;]\s*)?(?:or\s+)?pass skip_invalid=True[^;)]*")


def _skip_reason(reason: str) -> str:
    """A skipped file's reason without the advice to pass ``skip_invalid=True`` (it was)."""
    return _SKIP_HINT.sub("", reason).rstrip(" ,;")


def _image_entries(ctx: _Ctx, folder: Path) -> list[Path]:
    """The image files of ``folder``, sorted; a broken symlink named like an image is an error.

    A dangling symlink or a symlink loop is neither a file nor a folder, so a plain
    ``is_file()`` filter would drop it without a word and the export would silently shrink.
    """
    out: list[Path] = []
    for p in sorted(folder.iterdir()):
        if not is_image(p):
            continue
        if p.is_file():
            out.append(p)
        elif p.is_symlink():
            ctx.bad(
                p, f"the image {str(p)!r} is a broken symlink (its target is missing or a loop)"
            )
    return out


def _inside(root: Path, path: Path, entry: str) -> Path:
    """Return ``path`` if it resolves inside ``root``, following symlinks; raise otherwise.

    This is the one check every reader applies to every file and folder an export names or
    holds (split and class folders, annotation files, images, label files, mask files), so that
    no ``..`` step, absolute path or symlink can make a reader open a file outside the export.

    Args:
        root: The export's root folder, already resolved.
        path: The path the export names (absolute, under ``root`` before resolution).
        entry: What named the path and where, e.g. ``"the file_name 'x.jpg' of image 3 in
            '.../_annotations.coco.json'"``; it starts the error message.

    Returns:
        ``path`` unchanged.

    Raises:
        DataError: If the path cannot be resolved (a NUL byte, a symlink loop) or resolves
            outside ``root``.
    """
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as err:
        raise DataError(
            f"{entry} cannot be resolved to a file ({err}); name a file inside the export "
            f"{str(root)!r}"
        ) from err
    if resolved != root and not resolved.is_relative_to(root):
        raise DataError(
            f"{entry} resolves to {str(resolved)!r}, outside the export {str(root)!r}; an export "
            "may only name files inside its folder (no '..' steps, absolute paths or symlinks "
            "that lead out of it): copy the file or folder into the export (a symlink is replaced "
            "by a copy of what it points to with 'cp -rL'), or name it relative to its split "
            "folder"
        )
    return path


def _read_bytes(path: Path, what: str, root: Path | None = None) -> bytes:
    """The bytes of ``path`` (checked to lie inside ``root`` when given)."""
    if root is not None:
        _inside(root, path, f"the {what} {str(path)!r}")
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(
            f"cannot read the {what} {str(path)!r} ({err}); check that it is a readable file"
        ) from err


def _read_text(path: Path, what: str, root: Path | None = None) -> str:
    """The UTF-8 text of ``path`` (a leading byte-order mark is dropped)."""
    data = _read_bytes(path, what, root)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(
            f"the {what} {str(path)!r} is not UTF-8 text (byte {data[err.start]:#04x} at offset "
            f"{err.start}); re-save it as UTF-8 (Roboflow writes UTF-8)"
        ) from err


def _parse_json(path: Path, text: str, what: str) -> Any:
    """Parse JSON text read from ``path``; every failure is a `DataError` naming it."""
    try:
        return json.loads(text)
    except RecursionError as err:
        raise DataError(
            f"the {what} {str(path)!r} is not valid JSON (nested too deeply to be a {what}); "
            "re-export it"
        ) from err
    except ValueError as err:  # JSONDecodeError, and over-long integers
        raise DataError(
            f"the {what} {str(path)!r} is not valid JSON ({err}); re-export it"
        ) from err


@dataclass
class _Ctx:
    """Reader options and the list of skipped files."""

    root: Path
    skip_invalid: bool
    verify_images: bool
    skipped: list[SkippedFile] = field(default_factory=list)

    def bad(self, path: Path, reason: str) -> None:
        """Skip ``path`` (recording why) or raise, depending on ``skip_invalid``."""
        if self.skip_invalid:
            self.skipped.append(SkippedFile(path=path, reason=_skip_reason(reason)))
            return
        raise DataError(f"{reason}; fix the export, or pass skip_invalid=True to skip such files")

    def inside(self, path: Path, entry: str) -> Path:
        """`_inside` for this export: ``path`` if it resolves inside the root, else raise."""
        return _inside(self.root, path, entry)

    def inside_or_skip(self, path: Path, entry: str) -> bool:
        """Whether ``path`` lies inside the export; if not, skip it (or raise, see `bad`)."""
        try:
            self.inside(path, entry)
        except DataError as err:
            self.bad(path, str(err))
            return False
        return True

    def text(self, path: Path, what: str) -> str:
        """The UTF-8 text of an annotation file of the export."""
        return _read_text(path, what, self.root)

    def size_of(self, path: Path, *, needed: bool) -> tuple[int, int] | None | bool:
        """Image size ``(H, W)``; ``None`` if not needed and not verified; ``False`` if skipped."""
        if not (needed or self.verify_images):
            return None
        if self.skip_invalid:
            try:
                return image_size(path, verify=self.verify_images)
            except DataError as err:
                self.skipped.append(SkippedFile(path=path, reason=_skip_reason(str(err))))
                return False
        return image_size(path, verify=self.verify_images)


_SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val", "validation"),
    "test": ("test",),
}
"""Folder names accepted for each split (``val/`` and ``validation/`` are the ``valid`` split)."""


def _split_dirs(root: Path) -> list[tuple[str, Path]]:
    if not root.exists():
        raise DataError(
            f"export root {str(root)!r} does not exist; pass the folder of the unzipped export "
            f"(a relative path is relative to the current folder, {str(Path.cwd())!r})"
        )
    if not root.is_dir():
        raise DataError(f"export root {str(root)!r} is not a folder; pass the unzipped export")
    root = root.resolve()
    found: list[tuple[str, Path]] = []
    for split in SPLITS:
        dirs = [root / name for name in _SPLIT_FOLDERS[split] if (root / name).is_dir()]
        if len(dirs) > 1:
            raise DataError(
                f"the export at {str(root)!r} has several folders for the {split!r} split: "
                f"{[d.name + '/' for d in dirs]}; keep one (merge or remove the others)"
            )
        if dirs:
            _inside(root, dirs[0], f"the split folder {str(dirs[0])!r}")
            found.append((split, dirs[0]))
    if not found:
        raise DataError(
            f"no split folders {list(SPLITS)} (or val/, validation/) in {str(root)!r}; point "
            "load_roboflow at the folder that contains train/, valid/ and test/"
        )
    return found


def detect_format(root: str | Path) -> ExportFormat:
    """Detect the layout of a Roboflow export from its files.

    Args:
        root: The export's root folder (holding ``train/``, ``valid/``, ``test/``).

    Returns:
        One of ``"folder"``, ``"csv"``, ``"coco"``, ``"yolo"``, ``"voc"``.

    Raises:
        DataError: If no layout, or more than one, matches (the message lists what was found),
            or a split folder resolves outside ``root``.
    """
    root = Path(root)
    dirs = [d for _, d in _split_dirs(root)]
    found: list[ExportFormat] = []
    if any((d / _COCO_FILE).is_file() for d in dirs):
        found.append("coco")
    if (root / "data.yaml").is_file() or any((d / "labels").is_dir() for d in dirs):
        found.append("yolo")
    if any((d / _CSV_FILE).is_file() for d in dirs):
        found.append("csv")
    if any(next(d.glob("*.xml"), None) is not None for d in dirs):
        found.append("voc")
    if len(found) > 1:
        raise DataError(
            f"the export at {str(root)!r} matches several layouts {found}; pass format= to choose"
        )
    if found:
        return found[0]
    for d in dirs:
        for sub in d.iterdir():
            if sub.is_dir() and any(is_image(f) for f in sub.iterdir()):
                return "folder"
    raise DataError(
        f"could not detect the layout of {str(root)!r}: no {_COCO_FILE}, data.yaml, {_CSV_FILE}, "
        f".xml files or <split>/<class>/ image folders; pass format= one of {list(FORMATS)}"
    )


# -- layout readers -------------------------------------------------------------------------------


def _read_folder(ctx: _Ctx) -> tuple[list[_Raw], list[str]]:
    raws: list[_Raw] = []
    names: set[str] = set()
    for split, d in _split_dirs(ctx.root):
        for cdir in sorted(p for p in d.iterdir() if p.is_dir()):
            ctx.inside(cdir, f"the class folder {str(cdir)!r}")
            for f in _image_entries(ctx, cdir):
                if not ctx.inside_or_skip(f, f"the image {str(f)!r}"):
                    continue
                size = ctx.size_of(f, needed=False)
                if size is False:
                    continue
                names.add(cdir.name)
                raws.append(_Raw(f, split, cdir.name, None, size=cast(Any, size)))
    return raws, sorted(names)


def _csv_flag(value: str, where: str) -> bool:
    """A one-hot class flag: ``0``/``1`` (also written ``0.0``/``1.0``); anything else raises."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if number not in (0.0, 1.0):
        raise DataError(
            f"{where}: the flag is {text!r}; class flags must be 0 or 1 (exactly one 1 per row): "
            "fix the row, or re-export the dataset"
        )
    return number == 1.0


def _read_csv(ctx: _Ctx) -> tuple[list[_Raw], list[str]]:
    raws: list[_Raw] = []
    order: list[str] = []
    for split, d in _split_dirs(ctx.root):
        table = d / _CSV_FILE
        if not table.is_file():
            raise DataError(
                f"annotation file {str(table)!r} is missing; every split of a CSV export needs "
                f"its {_CSV_FILE}"
            )
        try:
            rows = list(csv.reader(io.StringIO(ctx.text(table, "annotation file"), newline="")))
        except csv.Error as err:
            raise DataError(
                f"{str(table)!r} is not a readable CSV file ({err}); re-export it"
            ) from err
        if not rows or len(rows[0]) < 2 or rows[0][0].strip().lower() != "filename":
            raise DataError(
                f"{str(table)!r} must start with a header 'filename, class1, class2, ...'"
            )
        header = [h.strip() for h in rows[0][1:]]
        if "" in header:
            raise DataError(
                f"{str(table)!r}: the header has an empty column name (column "
                f"{header.index('') + 2}); every column after 'filename' names a class"
            )
        twice = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if twice is not None:
            raise DataError(
                f"{str(table)!r}: the header names the column {twice!r} twice; class names must "
                "be unique"
            )
        order.extend(h for h in header if h not in order)
        seen: dict[str, int] = {}
        for line_no, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header) + 1:
                raise DataError(
                    f"{str(table)!r} line {line_no} has {len(row)} fields, the header has "
                    f"{len(header) + 1}"
                )
            name = row[0].strip()
            if not name:
                raise DataError(f"{str(table)!r} line {line_no} has an empty file name")
            flags = [
                _csv_flag(v, f"{str(table)!r} line {line_no}, column {header[i]!r}")
                for i, v in enumerate(row[1:])
            ]
            key = os.path.normpath(name)
            if key in seen:
                raise DataError(
                    f"{str(table)!r} lists {name!r} twice, on lines {seen[key]} and {line_no}; "
                    "keep one row per image"
                )
            seen[key] = line_no
            f = d / name
            if not ctx.inside_or_skip(
                f, f"the file name {name!r} on line {line_no} of {str(table)!r}"
            ):
                continue
            on = [header[i] for i, v in enumerate(flags) if v]
            if len(on) != 1:
                ctx.bad(
                    f,
                    f"{str(f)!r} ({str(table)!r} line {line_no}) has {len(on)} classes {on}; "
                    "embedcam needs exactly one class per image",
                )
                continue
            size = ctx.size_of(f, needed=False)
            if size is False:
                continue
            raws.append(_Raw(f, split, on[0], None, size=cast(Any, size)))
    return raws, order


def _main_class(objects: list[tuple[str, Box]], order: list[str]) -> str:
    """The class with the largest total box area; ties go to the class listed first."""
    area: dict[str, float] = {}
    for name, b in objects:
        area[name] = area.get(name, 0.0) + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    return min(area, key=lambda n: (-area[n], order.index(n)))


def _split_objects(
    objects: list[tuple[str, Box]], order: list[str]
) -> tuple[str, list[Box], list[tuple[str, Box]]]:
    main = _main_class(objects, order)
    own = [b for n, b in objects if n == main]
    others = [(n, b) for n, b in objects if n != main]
    return main, own, others


def _as_box_list(t: torch.Tensor) -> list[Box]:
    return [cast(Box, tuple(float(v) for v in row)) for row in t.reshape(-1, 4).tolist()]


_INT = re.compile(r"[+-]?[0-9]+")


def _as_int(value: Any) -> int | None:
    """``value`` as an int if it is one (an int, integral float or decimal string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return None


def _int_field(rec: dict[str, Any], key: str, where: str, *, positive: bool = False) -> int:
    """The integer field ``key`` of a COCO record; raise naming ``where`` and the field."""
    if key not in rec:
        raise DataError(f"{where}: {key!r} is missing")
    value = _as_int(rec[key])
    if value is None or (positive and value <= 0):
        kind = "a positive integer" if positive else "an integer"
        raise DataError(f"{where}: {key!r} is {_short(rec[key])}, not {kind}")
    return value


def _coco_bbox(a: dict[str, Any], where: str, size: tuple[int, int]) -> Box:
    """The ``bbox`` ``[x, y, w, h]`` of an annotation as an internal box inside ``size``."""
    if "bbox" not in a:
        raise DataError(f"{where}: 'bbox' is missing; each annotation needs [x, y, width, height]")
    v = a["bbox"]
    ok = (
        isinstance(v, list)
        and len(v) == 4
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v)
        and all(math.isfinite(c) for c in v)
        and v[2] > 0
        and v[3] > 0
    )
    if not ok:
        raise DataError(
            f"{where}: 'bbox' is {_short(v)}; it must be [x, y, width, height], 4 finite numbers "
            "with width and height > 0"
        )
    box = _as_box_list(_boxes.coco_to_xyxy(torch.tensor(v, dtype=torch.float64)))[0]
    h, w = size
    if box[0] >= w or box[1] >= h or box[2] <= 0 or box[3] <= 0:
        raise DataError(
            f"{where}: box {list(box)} ('bbox' {_short(v)}) lies entirely outside the image "
            f"{size} (H, W) declared by its 'height' and 'width'; fix the box or the image size"
        )
    return box


def _coco_records(data: Any, key: str, ann_file: Path) -> list[dict[str, Any]]:
    kind = {"images": "image", "categories": "category", "annotations": "annotation"}[key]
    if key not in data:
        if key == "annotations":
            return []
        raise DataError(
            f"{str(ann_file)!r} has no {key!r}; a COCO annotation file needs 'images', "
            "'categories' and 'annotations'"
        )
    records = data[key]
    if not isinstance(records, list):
        raise DataError(f"{str(ann_file)!r}: {key!r} must be a list, got {_short(records)}")
    for k, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataError(f"{str(ann_file)!r}: {kind} entry {k} is {_short(r)}, not an object")
    return records


@dataclass
class _CocoImage:
    id: int
    name: str
    path: Path
    size: tuple[int, int]
    extra: dict[str, Any]
    mask_path: Path | None


def _coco_categories(cats: list[dict[str, Any]], used: set[int], ann_file: Path) -> dict[int, str]:
    """Category id -> class name, without the project super-class (see the module docstring)."""
    rows: dict[int, tuple[str, str]] = {}
    for k, cat in enumerate(cats):
        cid = _int_field(cat, "id", f"{str(ann_file)!r} category entry {k}")
        name = cat.get("name")
        where = f"{str(ann_file)!r} category {cid}"
        if "name" not in cat:
            raise DataError(f"{where}: 'name' is missing")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: 'name' is {_short(name)}, not a non-empty string")
        if cid in rows:
            raise DataError(
                f"{str(ann_file)!r}: category id {cid} is used twice ({rows[cid][0]!r} and "
                f"{name!r}); category ids must be unique"
            )
        parent = cat.get("supercategory")
        rows[cid] = (name, parent if isinstance(parent, str) else "")
    cat_name: dict[int, str] = {}
    for cid in sorted(rows):
        name, parent = rows[cid]
        is_parent = any(p == name for c, (_, p) in rows.items() if c != cid)
        if parent.lower() == "none" and (is_parent or cid not in used):
            continue  # Roboflow's project super-class: not a class
        cat_name[cid] = name
    return cat_name


def _coco_images(
    ctx: _Ctx, d: Path, ann_file: Path, images: list[dict[str, Any]]
) -> dict[int, _CocoImage | None]:
    """Validate the image records: image id -> image, or ``None`` for an image skipped."""
    out: dict[int, _CocoImage | None] = {}
    names: dict[str, int] = {}
    by_id: dict[int, Any] = {}
    for k, img in enumerate(images):
        iid = _int_field(img, "id", f"{str(ann_file)!r} image entry {k}")
        if iid in by_id:
            raise DataError(
                f"{str(ann_file)!r} has two images with id {iid} ({_short(by_id[iid])} and "
                f"{_short(img.get('file_name'))}); image ids must be unique, or every "
                "annotation of that id would be given to both: re-export the dataset"
            )
        by_id[iid] = img.get("file_name")
        out[iid] = None
        where = f"{str(ann_file)!r} image {iid}"
        name = img.get("file_name")
        if not isinstance(name, str) or not name.strip():
            why = "is missing" if "file_name" not in img else f"is {_short(name)}, not a file name"
            ctx.bad(ann_file, f"{where}: 'file_name' {why}")
            continue
        key = os.path.normpath(name)
        if key in names:
            raise DataError(
                f"{str(ann_file)!r}: images {names[key]} and {iid} both name the file "
                f"{name!r}; each image must be listed once: merge their annotations"
            )
        names[key] = iid
        f = d / name
        if not ctx.inside_or_skip(f, f"the file_name {name!r} of image {iid} in {str(ann_file)!r}"):
            continue
        where = f"{where} ({name!r})"
        try:
            size = (
                _int_field(img, "height", where, positive=True),
                _int_field(img, "width", where, positive=True),
            )
            extra = img.get("extra")
            if extra is None:
                extra = {}
            if not isinstance(extra, dict):
                raise DataError(
                    f"the 'extra' of image {iid} ({name!r}) in {str(ann_file)!r} must be an "
                    f"object, got {_short(extra)}"
                )
            mask = extra.get("mask")
            mask_path = None
            if mask is not None and mask != "":
                if not isinstance(mask, str):
                    raise DataError(
                        f"the 'extra.mask' of image {iid} ({name!r}) in {str(ann_file)!r} must "
                        f"be a file name (a string), got {_short(mask)}"
                    )
                entry = f"the mask file {mask!r} of {str(f)!r} in {str(ann_file)!r}"
                mask_path = ctx.inside(d / mask, entry).resolve()
                if not mask_path.is_file():
                    raise DataError(f"{entry} does not exist ({str(mask_path)!r})")
        except DataError as err:
            ctx.bad(f, str(err))
            continue
        out[iid] = _CocoImage(iid, name, f, size, dict(extra), mask_path)
    return out


def _read_coco(ctx: _Ctx) -> tuple[list[_Raw], list[str], dict[str, Any]]:
    raws: list[_Raw] = []
    order: list[str] = []
    meta: dict[str, Any] = {}
    pending: list[tuple[_Raw, list[tuple[str, Box]], list[tuple[str, Any]]]] = []
    for split, d in _split_dirs(ctx.root):
        ann_file = d / _COCO_FILE
        if not ann_file.is_file():
            raise DataError(
                f"annotation file {str(ann_file)!r} is missing; every split of a COCO export "
                f"needs its {_COCO_FILE}"
            )
        data = _parse_json(ann_file, ctx.text(ann_file, "annotation file"), "annotation file")
        if not isinstance(data, dict):
            raise DataError(
                f"{str(ann_file)!r} must be a JSON object with 'images', 'categories' and "
                f"'annotations', got {_short(data)}"
            )
        cats = _coco_records(data, "categories", ann_file)
        images = _coco_records(data, "images", ann_file)
        anns = _coco_records(data, "annotations", ann_file)
        lic = data.get("licenses")
        if isinstance(lic, list) and lic and "license" not in meta and isinstance(lic[0], dict):
            if isinstance(lic[0].get("name"), str) and lic[0]["name"]:
                meta["license"] = lic[0]["name"]
                meta["license_source"] = f"{split}/{_COCO_FILE}"
        used = {c for c in (_as_int(a.get("category_id")) for a in anns) if c is not None}
        cat_name = _coco_categories(cats, used, ann_file)
        order.extend(n for n in cat_name.values() if n not in order)
        by_id = _coco_images(ctx, d, ann_file, images)
        objects_of: dict[int, list[tuple[str, Box]]] = {}
        segs_of: dict[int, list[tuple[str, Any, Any]]] = {}
        for k, a in enumerate(anns):
            aid = _short(a["id"]) if "id" in a else f"entry {k}"
            where = f"{str(ann_file)!r} annotation {aid}"
            try:
                iid = _int_field(a, "image_id", where)
            except DataError as err:
                ctx.bad(ann_file, str(err))
                continue
            if iid not in by_id:
                ctx.bad(
                    ann_file,
                    f"{where} refers to image {iid}, which is not in 'images' of that file; "
                    "remove the annotation or add its image",
                )
                continue
            img = by_id[iid]
            if img is None:
                continue  # the image was skipped already
            where = f"{where} (image {iid}, {img.name!r})"
            try:
                cid = _int_field(a, "category_id", where)
                if cid not in cat_name:
                    raise DataError(
                        f"{str(ann_file)!r} annotation {aid} uses category {cid}, which is not a "
                        "class (unknown, or the project super-class)"
                    )
                box = _coco_bbox(a, where, img.size)
            except DataError as err:
                ctx.bad(img.path, str(err))
                by_id[iid] = None
                continue
            objects_of.setdefault(iid, []).append((cat_name[cid], box))
            segs_of.setdefault(iid, []).append((cat_name[cid], a.get("segmentation"), a.get("id")))
        for iid, img in by_id.items():
            if img is None:
                continue
            f = img.path
            objects = objects_of.get(iid, [])
            if not objects:
                ctx.bad(f, f"{str(f)!r} has no annotations in {str(ann_file)!r}")
                continue
            size = ctx.size_of(f, needed=False)
            if size is False:
                continue
            if size is not None and size != img.size:
                ctx.bad(f, f"{str(f)!r} is {size} (H, W) but {_COCO_FILE} says {img.size}")
                continue
            segs: list[tuple[str, Any]] = []
            try:
                for name, seg, ann_id in segs_of.get(iid, []):
                    where = (
                        f"malformed segmentation in {str(ann_file)!r}, annotation "
                        f"{_short(ann_id)} of image {img.name!r}"
                    )
                    segs.append((name, seg if check_segmentation(seg, img.size, where) else None))
            except DataError as err:
                ctx.bad(f, str(err))
                continue
            raw = _Raw(f, split, "", None, size=img.size, mask_path=img.mask_path, extra=img.extra)
            pending.append((raw, objects, segs))
    for raw, objects, segs in pending:
        raw.class_name, raw.boxes, raw.other_objects = _split_objects(objects, order)
        own = [seg for name, seg in segs if name == raw.class_name]
        # a partial union would call unsegmented objects background: no mask rather than a wrong one
        if raw.mask_path is None and own and all(seg is not None for seg in own):
            raw.segmentation = tuple(own)
        raws.append(raw)
    return raws, order, meta


def _yolo_name(value: Any, index: int, data_yaml: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(
            f"{str(data_yaml)!r}: the name of class {index} is {_short(value)}, not a class name; "
            "write every name as a non-empty string, quoted if YAML would read it as something "
            "else (e.g. names: ['1', 'yes', 'null'])"
        )
    return value


def _yolo_names(data_yaml: Path, root: Path) -> tuple[list[str], dict[str, Any]]:
    text = _read_text(data_yaml, "annotation file", root)
    import yaml  # imported on use: only YOLO exports need it

    try:
        data = yaml.safe_load(text) or {}
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError) as err:
        raise DataError(f"{str(data_yaml)!r} is not valid YAML ({_short(err)})") from err
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        keyed: list[tuple[int, str]] = []
        for k, v in names.items():
            key = k if isinstance(k, int) and not isinstance(k, bool) else None
            if isinstance(k, str) and k.strip().isdigit():
                key = int(k)
            if key is None:
                raise DataError(
                    f"{str(data_yaml)!r}: 'names' key {_short(k)} is not a class index; write "
                    "'names' as a list, or as a dict {0: name0, 1: name1, ...}"
                )
            keyed.append((key, _yolo_name(v, key, data_yaml)))
        keyed.sort()
        if [k for k, _ in keyed] != list(range(len(keyed))):
            raise DataError(
                f"{str(data_yaml)!r}: 'names' keys must be 0..{len(keyed) - 1}, got "
                f"{[k for k, _ in keyed]}"
            )
        out = [v for _, v in keyed]
    elif isinstance(names, list):
        out = [_yolo_name(v, i, data_yaml) for i, v in enumerate(names)]
    else:
        raise DataError(
            f"{str(data_yaml)!r} has no 'names' list or dict; a YOLO export's data.yaml lists "
            "its classes"
        )
    for i, v in enumerate(out):
        if v in out[:i]:
            raise DataError(
                f"{str(data_yaml)!r}: class {v!r} is listed twice (classes {out.index(v)} and "
                f"{i}); class names must be unique"
            )
    nc = cast(dict[str, Any], data).get("nc")
    if nc is not None and (_as_int(nc) != len(out) or isinstance(nc, str)):
        raise DataError(
            f"{str(data_yaml)!r} says nc: {_short(nc)} but 'names' lists {len(out)} classes; make "
            "them agree (or drop nc)"
        )
    meta: dict[str, Any] = {}
    rf = cast(dict[str, Any], data).get("roboflow")
    if isinstance(rf, dict) and isinstance(rf.get("license"), str) and rf["license"]:
        meta = {"license": rf["license"], "license_source": "data.yaml"}
    return out, meta


def _parse_yolo(
    label_file: Path, names: list[str], size: tuple[int, int], root: Path
) -> list[tuple[str, Box]]:
    objects: list[tuple[str, Box]] = []
    text = _read_text(label_file, "label file", root)
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{str(label_file)!r} line {line_no} ({_short(line.strip())})"
        try:
            cls = int(tokens[0])
            values = [float(t) for t in tokens[1:]]
        except ValueError as err:
            raise DataError(f"malformed YOLO label: {where} is not 'cls cx cy w h'") from err
        if not 0 <= cls < len(names):
            raise DataError(
                f"malformed YOLO label: {where} has class {cls}, data.yaml names "
                f"{len(names)} classes"
            )
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"malformed YOLO label: {where} has a value that is not finite")
        if len(values) == 4:
            if values[2] <= 0 or values[3] <= 0:
                raise DataError(
                    f"malformed YOLO label: {where}: the box width and height must be > 0"
                )
            box = _boxes.yolo_to_xyxy(torch.tensor(values, dtype=torch.float64), size)
        elif len(values) >= 6 and len(values) % 2 == 0:
            pts = torch.tensor(values, dtype=torch.float64).reshape(-1, 2)
            lo, hi = pts.min(0).values, pts.max(0).values
            scale = torch.tensor([size[1], size[0]], dtype=torch.float64)
            box = torch.cat([lo * scale, hi * scale])
        else:
            raise DataError(
                f"malformed YOLO label: {where} has {len(tokens)} fields; expected 5 "
                "('cls cx cy w h') or a polygon 'cls x1 y1 x2 y2 x3 y3 ...'"
            )
        objects.append((names[cls], _as_box_list(box)[0]))
    return objects


def _read_yolo(ctx: _Ctx) -> tuple[list[_Raw], list[str], dict[str, Any]]:
    data_yaml = ctx.root / "data.yaml"
    if not data_yaml.is_file():
        raise DataError(
            f"annotation file {str(data_yaml)!r} is missing; a YOLO export needs data.yaml "
            "with the class names"
        )
    names, meta = _yolo_names(data_yaml, ctx.root)
    raws: list[_Raw] = []
    for split, d in _split_dirs(ctx.root):
        img_dir, lbl_dir = d / "images", d / "labels"
        if not img_dir.is_dir():
            raise DataError(f"YOLO split folder {str(d)!r} has no images/ folder")
        ctx.inside(img_dir, f"the images folder {str(img_dir)!r}")
        if lbl_dir.is_dir():
            ctx.inside(lbl_dir, f"the labels folder {str(lbl_dir)!r}")
        images = _image_entries(ctx, img_dir)
        by_stem: dict[str, Path] = {}
        for f in images:
            if f.stem in by_stem:  # a.jpg and a.png would both read labels/a.txt
                raise DataError(
                    f"{str(by_stem[f.stem])!r} and {str(f)!r} share the label file "
                    f"{str(lbl_dir / (f.stem + '.txt'))!r}; YOLO labels are matched by file name "
                    "without extension, so rename one image (and give it its own label file)"
                )
            by_stem[f.stem] = f
        for f in images:
            if not ctx.inside_or_skip(f, f"the image {str(f)!r}"):
                continue
            label_file = lbl_dir / f"{f.stem}.txt"
            if not label_file.is_file():
                ctx.bad(f, f"{str(f)!r} has no label file {str(label_file)!r}")
                continue
            size = ctx.size_of(f, needed=True)
            if size is False:
                continue
            try:
                objects = _parse_yolo(label_file, names, cast(tuple[int, int], size), ctx.root)
            except DataError as err:
                if not ctx.skip_invalid:
                    raise
                ctx.skipped.append(SkippedFile(path=label_file, reason=_skip_reason(str(err))))
                continue
            if not objects:
                ctx.bad(f, f"{str(f)!r} has an empty label file {str(label_file)!r}")
                continue
            main, own, others = _split_objects(objects, names)
            raws.append(_Raw(f, split, main, own, others, size=cast(Any, size)))
    return raws, names, meta


def _voc_float(node: ET.Element, tag: str, where: str) -> float:
    text = node.findtext(tag)
    try:
        value = float(cast(str, text))
    except (TypeError, ValueError) as err:
        raise DataError(
            f"malformed VOC file {where}: <{tag}> is {_short(text)}, not a number"
        ) from err
    if not math.isfinite(value):
        raise DataError(f"malformed VOC file {where}: <{tag}> is {_short(text)}, not finite")
    return value


def _read_voc(ctx: _Ctx) -> tuple[list[_Raw], list[str]]:
    raws: list[_Raw] = []
    names: set[str] = set()
    annotated_by: dict[str, Path] = {}
    for split, d in _split_dirs(ctx.root):
        xml_stems = {p.stem for p in d.glob("*.xml")}
        for f in _image_entries(ctx, d):
            if f.stem not in xml_stems:
                ctx.bad(f, f"{str(f)!r} has no Pascal VOC annotation file {f.stem}.xml beside it")
        for xml_file in sorted(d.glob("*.xml")):
            where = repr(str(xml_file))
            try:
                tree = ET.fromstring(_read_bytes(xml_file, "annotation file", ctx.root))
            except DataError as err:
                ctx.bad(xml_file, str(err))
                continue
            except (ET.ParseError, ValueError, RecursionError) as err:
                ctx.bad(xml_file, f"malformed VOC file {where} ({_short(err)})")
                continue
            beside = next(
                (
                    xml_file.with_suffix(s)
                    for s in (".jpg", ".jpeg", ".png", ".bmp", ".webp")
                    if xml_file.with_suffix(s).is_file()
                ),
                None,
            )
            if beside is not None:
                f, entry = beside, f"the image {str(beside)!r}"
            else:
                name = (tree.findtext("filename") or "").strip() or f"{xml_file.stem}.jpg"
                f, entry = d / name, f"the <filename> {name!r} in {where}"
            if not ctx.inside_or_skip(f, entry):
                continue
            key = os.path.normpath(f)
            if key in annotated_by:
                raise DataError(
                    f"the image {str(f)!r} is annotated by both {str(annotated_by[key])!r} and "
                    f"{where}; keep one annotation file per image"
                )
            annotated_by[key] = xml_file
            size = ctx.size_of(f, needed=False)
            if size is False:
                continue
            try:
                objects: list[tuple[str, Box]] = []
                for obj in tree.iter("object"):
                    name = (obj.findtext("name") or "").strip()
                    bb = obj.find("bndbox")
                    if not name or bb is None:
                        raise DataError(
                            f"malformed VOC file {where}: an <object> lacks <name> or <bndbox>"
                        )
                    voc = [_voc_float(bb, t, where) for t in ("xmin", "ymin", "xmax", "ymax")]
                    box = _boxes.voc_to_xyxy(torch.tensor(voc, dtype=torch.float64))
                    objects.append((name, _as_box_list(box)[0]))
            except DataError as err:
                ctx.bad(xml_file, str(err))
                continue
            if not objects:
                ctx.bad(f, f"{str(f)!r} has no <object> in {where}")
                continue
            names.update(n for n, _ in objects)
            raws.append(_Raw(f, split, "", None, objects, size=cast(Any, size)))
    order = sorted(names)
    for raw in raws:
        raw.class_name, raw.boxes, raw.other_objects = _split_objects(raw.other_objects, order)
    return raws, order


# -- additional labels ----------------------------------------------------------------------------


def read_extra_labels(path: str | Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    r"""Read an additional-labels mapping file keyed by class name.

    Roboflow flattens class names on export, so the hierarchy (category, group, ...) lives in a
    separate file. CSV: a header ``class, <label1>, <label2>, ...`` and one row per class. JSON:
    ``{"<class>": {"<label1>": ..., ...}, ...}`` or a list of records with a ``"class"`` key.

    Args:
        path: The mapping file (``.csv`` or ``.json``).

    Returns:
        ``(label_names, mapping)``: the label column names, and per class name its labels.

    Raises:
        DataError: If the file is missing or malformed, a class is listed twice, or classes do
            not all have the same labels.

    Examples:
        >>> import tempfile, pathlib
        >>> tmp = tempfile.TemporaryDirectory()
        >>> p = pathlib.Path(tmp.name) / "labels.csv"
        >>> _ = p.write_text("class, category, group\ncola, drinks, soda\n")
        >>> read_extra_labels(p)
        (['category', 'group'], {'cola': {'category': 'drinks', 'group': 'soda'}})
        >>> tmp.cleanup()
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"additional-labels file {str(p)!r} does not exist")
    records: list[dict[str, Any]]
    if p.suffix.lower() == ".json":
        data = _parse_json(p, _read_text(p, "additional-labels file"), "additional-labels file")
        if isinstance(data, dict):
            records = []
            for k, v in data.items():
                if not isinstance(v, dict):
                    raise DataError(
                        f"{str(p)!r}: each class must map to an object of labels; class {k!r} "
                        f"maps to {_short(v)}"
                    )
                if "class" in v:
                    raise DataError(
                        f"{str(p)!r}: class {k!r} has a label named 'class', which is reserved "
                        "for the class name; rename that label"
                    )
                records.append({"class": k, **v})
        elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
            records = list(data)
        else:
            raise DataError(f"{str(p)!r} must hold an object keyed by class, or a list of records")
    elif p.suffix.lower() == ".csv":
        text = _read_text(p, "additional-labels file")
        try:
            rows = [
                r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)
            ]
        except csv.Error as err:
            raise DataError(
                f"additional-labels file {str(p)!r} is not readable CSV ({err})"
            ) from err
        if not rows:
            raise DataError(f"additional-labels file {str(p)!r} is empty")
        header = [h.strip() for h in rows[0]]
        twice = next((h for i, h in enumerate(header) if h in header[:i]), None)
        if twice is not None or "" in header:
            what = f"the column {twice!r} twice" if twice is not None else "an empty column name"
            raise DataError(f"{str(p)!r}: the header has {what}; label columns must be unique")
        records = []
        for line_no, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise DataError(
                    f"{str(p)!r} line {line_no} has {len(row)} fields, the header has {len(header)}"
                )
            record = {h: v.strip() for h, v in zip(header, row)}
            if "class" in record and not record["class"]:
                raise DataError(f"{str(p)!r} line {line_no} has an empty class name")
            records.append(record)
    else:
        raise DataError(f"additional-labels file {str(p)!r} must be .csv or .json")
    mapping: dict[str, dict[str, str]] = {}
    label_names: list[str] | None = None
    for r in records:
        if "class" not in r:
            raise DataError(f"{str(p)!r}: every record needs a 'class' column/key, got {list(r)}")
        name = _label_value(p, r["class"], "the class name", "a record")
        if not name:
            raise DataError(f"{str(p)!r}: a record has an empty class name")
        labels = {
            str(k).strip(): _label_value(p, v, f"label {str(k).strip()!r}", f"class {name!r}")
            for k, v in r.items()
            if k != "class"
        }
        if name in mapping:
            raise DataError(f"{str(p)!r} lists class {name!r} twice")
        if label_names is None:
            label_names = list(labels)
        elif sorted(labels) != sorted(label_names):
            raise DataError(
                f"{str(p)!r}: class {name!r} has labels {sorted(labels)}, others have "
                f"{sorted(label_names)}"
            )
        mapping[name] = labels
    return label_names or [], mapping


def _label_value(p: Path, value: Any, what: str, of: str) -> str:
    """A label value as text: strings and numbers only (``None``, lists, objects are errors)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            f"{str(p)!r}: {what} of {of} is {_short(value)}; labels must be strings (or numbers)"
        )
    return str(value).strip()


# -- entry point ----------------------------------------------------------------------------------


def _readme_license(root: Path) -> dict[str, Any]:
    readme = root / "README.dataset.txt"
    if not readme.is_file():
        return {}
    # free text: undecodable bytes are replaced rather than refused
    text = _read_bytes(readme, "README", root).decode("utf-8", errors="replace")
    for line in text.splitlines():
        if line.strip().lower().startswith("license:"):
            return {
                "license": line.split(":", 1)[1].strip(),
                "license_source": "README.dataset.txt",
            }
    return {}


def load_roboflow(
    root: str | Path,
    extra_labels: str | Path | None = None,
    format: ExportFormat | None = None,  # noqa: A002 - the agreed public name
    *,
    allow_missing_labels: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = True,
) -> DatasetIndex:
    """Read a Roboflow export (any layout) into a `DatasetIndex`.

    Class order is stable: folder and VOC layouts sort the class names; CSV takes the header
    order; COCO the category ids; YOLO the ``names`` order. Classes present in only some splits
    are merged (union, in order of first appearance over train, valid, test). In detection
    exports an image's class is the class with the largest total box area in it, its
    `Sample.boxes` are that class's boxes and the rest go to `Sample.other_objects`.
    An image with no annotation is invalid (it has no label).

    The licence line of the export (``README.dataset.txt``, ``data.yaml``'s ``roboflow.license``
    or the COCO ``licenses``) is kept in ``index.metadata["license"]``.

    Exact object masks (COCO only): the PNG named by an image's ``extra.mask`` (relative to its
    split folder, and inside the export), else the union of the ``segmentation`` of the image's
    own-class annotations when every one of them has one (`Sample.segmentation`,
    rasterised by [`Sample.load_mask`][embedcam.datasets.index.Sample.load_mask]). An image where
    some of its class's objects are unsegmented gets no mask rather than one that calls them
    background.

    Args:
        root: The export's root folder (holding ``train/``, ``valid/``, ``test/``).
        extra_labels: Optional mapping file of additional labels keyed by class name (see
            [`read_extra_labels`][embedcam.datasets.roboflow.read_extra_labels]).
        format: ``"folder"``, ``"csv"``, ``"coco"``, ``"yolo"`` or ``"voc"``; detected from the
            files when ``None`` (see [`detect_format`][embedcam.datasets.roboflow.detect_format]).
        allow_missing_labels: Accept classes that the mapping file does not list (they get no
            additional labels) instead of raising.
        skip_invalid: Skip missing or corrupt images and invalid annotations, listing them in
            ``index.skipped``, instead of raising.
        verify_images: Decode every image once to catch corrupt files early (sizes are read
            from the file headers either way where the layout needs them).

    Returns:
        The validated index.

    Raises:
        ConfigurationError: If ``format`` is not one of the layouts.
        DataError: If the export cannot be read: no split folders (or both ``valid/`` and
            ``val/``), an undetectable layout, a missing annotation file, an annotation file
            that is not UTF-8 or not valid JSON/YAML/XML (naming the file), a corrupt or missing
            image (naming the file), a malformed YOLO or VOC label (naming the file and line), a
            COCO record with a missing or malformed field (naming the annotation file, the
            image or annotation id and the field), duplicate COCO image or category ids, an
            annotation of an image that is not listed, a CSV class flag other than 0/1 or a
            file listed twice (naming file, line and column), malformed YOLO ``names``, a
            malformed COCO segmentation (naming the annotation file and image), any file or
            folder that resolves outside the export (``..``, absolute paths, symlinks; naming
            the entry and the file that names it), classes missing from or unknown to the
            mapping file (listing them). With ``skip_invalid=True``, problems confined to one
            image (its file, its fields, its annotations) skip that image instead.

    Every file the export names or holds must resolve, symlinks followed, inside ``root``; the
    readers never open a file outside it.

    Examples:
        The Grocery Store sample in embedcam's tests (the path is relative to the root of a clone;
        the wheel does not ship it), a folder export
        (``train/<class>/*.jpg``) with a class-labels file:

        >>> import embedcam as ec
        >>> mini = "tests/fixtures/grocery-mini"
        >>> index = ec.datasets.load_roboflow(mini, extra_labels=f"{mini}/extra_labels.csv")
        >>> index.classes[:3], len(index.split("train")), index.label_names
        (['Arla-Medium-Fat-Milk', 'Arla-Standard-Milk', 'Granny-Smith'], 48, ['category', 'group'])
    """
    root = Path(root).resolve()
    fmt = detect_format(root) if format is None else format
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown export format {fmt!r}; use one of {list(FORMATS)}")
    ctx = _Ctx(root, skip_invalid, verify_images)
    meta: dict[str, Any] = {}
    readers: dict[str, Callable[[_Ctx], tuple[Any, ...]]] = {
        "folder": _read_folder,
        "csv": _read_csv,
        "coco": _read_coco,
        "yolo": _read_yolo,
        "voc": _read_voc,
    }
    out = readers[fmt](ctx)
    raws, classes = out[0], out[1]
    meta.update(out[2] if len(out) > 2 else {})
    meta.update(_readme_license(root))

    label_names: list[str] = []
    class_labels: dict[str, dict[str, str]] = {}
    if extra_labels is not None:
        label_names, class_labels = read_extra_labels(extra_labels)
        unknown = [c for c in class_labels if c not in classes]
        if unknown:
            raise DataError(
                f"the additional-labels file {str(extra_labels)!r} lists classes that are not "
                f"in the export: {unknown}; the export's classes are {classes}"
            )
        missing = [c for c in classes if c not in class_labels]
        if missing and not allow_missing_labels:
            raise DataError(
                f"classes missing from the additional-labels file {str(extra_labels)!r}: "
                f"{missing}; add them, or pass allow_missing_labels=True"
            )
    if not raws:
        raise DataError(
            f"no usable images found in the {fmt!r} export at {str(root)!r}"
            + (f" ({len(ctx.skipped)} skipped)" if ctx.skipped else "")
        )
    first: dict[str, Path] = {}
    for r in raws:
        key = os.path.normpath(r.path)
        if key in first:
            raise DataError(
                f"the image {str(r.path)!r} is listed twice in the {fmt!r} export at "
                f"{str(root)!r}; list each image once"
            )
        first[key] = r.path
    lookup = {c: i for i, c in enumerate(classes)}
    raws.sort(key=lambda r: (SPLITS.index(r.split), r.path.name, str(r.path)))
    samples = [
        Sample(
            path=r.path,
            split=cast(Any, r.split),
            label=lookup[r.class_name],
            class_name=r.class_name,
            boxes=tuple(r.boxes) if r.boxes is not None else None,
            other_objects=tuple(r.other_objects),
            size=r.size,
            additional_labels=class_labels.get(r.class_name, {}),
            mask_path=r.mask_path,
            extra=r.extra,
            segmentation=r.segmentation,
        )
        for r in raws
    ]
    return DatasetIndex.build(
        root=root,
        format=fmt,
        classes=classes,
        samples=samples,
        has_boxes=fmt in ("coco", "yolo", "voc"),
        label_names=label_names,
        class_labels=class_labels,
        metadata=meta,
        skipped=ctx.skipped,
    )
