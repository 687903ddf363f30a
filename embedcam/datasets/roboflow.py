"""Readers for Roboflow exports in every layout, and the additional-labels mapping file.

Roboflow (https://roboflow.com) exports a project as ``train/``, ``valid/`` and ``test/`` folders
in one of these layouts, all read by :func:`load_roboflow`:

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
(polygons, uncompressed or compressed RLE), kept in :attr:`Sample.segmentation` and rasterised
by :meth:`Sample.load_mask`.

Roboflow renames files to ``<stem>_<ext>.rf.<hash>.<ext>``; :attr:`Sample.source_name` recovers
the original name.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from embedcam import boxes as _boxes
from embedcam.datasets._io import image_size, is_image
from embedcam.datasets._segmentation import check_segmentation
from embedcam.datasets.index import SPLITS, Box, DatasetIndex, ExportFormat, Sample, SkippedFile
from embedcam.errors import ConfigurationError, DataError

__all__ = ["FORMATS", "detect_format", "load_roboflow", "read_extra_labels"]

FORMATS: tuple[str, ...] = ("folder", "csv", "coco", "yolo", "voc")
"""The export layouts :func:`load_roboflow` reads."""

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
            self.skipped.append(SkippedFile(path=path, reason=reason))
            return
        raise DataError(f"{reason}; fix the export, or pass skip_invalid=True to skip such files")

    def size_of(self, path: Path, *, needed: bool) -> tuple[int, int] | None | bool:
        """Image size ``(H, W)``; ``None`` if not needed and not verified; ``False`` if skipped."""
        if not (needed or self.verify_images):
            return None
        if self.skip_invalid:
            try:
                return image_size(path, verify=self.verify_images)
            except DataError as err:
                self.skipped.append(SkippedFile(path=path, reason=str(err)))
                return False
        return image_size(path, verify=self.verify_images)


_SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "val", "validation"),
    "test": ("test",),
}
"""Folder names accepted for each split (``val/`` and ``validation/`` are the ``valid`` split)."""


def _split_dirs(root: Path) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise DataError(f"export root {str(root)!r} is not a folder; pass the unzipped export")
    found: list[tuple[str, Path]] = []
    for split in SPLITS:
        dirs = [root / name for name in _SPLIT_FOLDERS[split] if (root / name).is_dir()]
        if len(dirs) > 1:
            raise DataError(
                f"the export at {str(root)!r} has several folders for the {split!r} split: "
                f"{[d.name + '/' for d in dirs]}; keep one (merge or remove the others)"
            )
        if dirs:
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
        DataError: If no layout, or more than one, matches; the message lists what was found.
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
            for f in sorted(p for p in cdir.iterdir() if p.is_file() and is_image(p)):
                size = ctx.size_of(f, needed=False)
                if size is False:
                    continue
                names.add(cdir.name)
                raws.append(_Raw(f, split, cdir.name, None, size=cast(Any, size)))
    return raws, sorted(names)


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
        with table.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
        if not rows or len(rows[0]) < 2 or rows[0][0].strip().lower() != "filename":
            raise DataError(
                f"{str(table)!r} must start with a header 'filename, class1, class2, ...'"
            )
        header = [h.strip() for h in rows[0][1:]]
        order.extend(h for h in header if h not in order)
        for line_no, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header) + 1:
                raise DataError(
                    f"{str(table)!r} line {line_no} has {len(row)} fields, the header has "
                    f"{len(header) + 1}"
                )
            f = d / row[0].strip()
            try:
                flags = [int(float(v)) for v in row[1:]]
            except ValueError as err:
                raise DataError(
                    f"{str(table)!r} line {line_no} has a non-numeric class flag: {row[1:]}"
                ) from err
            on = [header[i] for i, v in enumerate(flags) if v != 0]
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


def _is_super_class(cat: dict[str, Any], cats: list[dict[str, Any]], used: set[int]) -> bool:
    if str(cat.get("supercategory", "")).lower() != "none":
        return False
    is_parent = any(c.get("supercategory") == cat.get("name") for c in cats if c is not cat)
    return is_parent or int(cat["id"]) not in used


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
        try:
            data = json.loads(ann_file.read_text(encoding="utf-8"))
            cats = list(data["categories"])
            images = list(data["images"])
            anns = list(data.get("annotations", []))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(
                f"{str(ann_file)!r} is not a COCO annotation file ({err!r}); it needs "
                "'images', 'categories' and 'annotations'"
            ) from err
        lic = data.get("licenses") or []
        if lic and "license" not in meta and isinstance(lic[0], dict) and lic[0].get("name"):
            meta["license"] = str(lic[0]["name"])
            meta["license_source"] = f"{split}/{_COCO_FILE}"
        used = {int(a["category_id"]) for a in anns}
        cat_name: dict[int, str] = {}
        for cat in sorted(cats, key=lambda c: int(c["id"])):
            if _is_super_class(cat, cats, used):
                continue
            cat_name[int(cat["id"])] = str(cat["name"])
            if cat_name[int(cat["id"])] not in order:
                order.append(cat_name[int(cat["id"])])
        by_image: dict[int, list[tuple[str, Box]]] = {}
        segs_of: dict[int, list[tuple[str, Any, Any]]] = {}
        for a in anns:
            cid = int(a["category_id"])
            if cid not in cat_name:
                raise DataError(
                    f"{str(ann_file)!r} annotation {a.get('id')} uses category {cid}, which is "
                    "not a class (unknown, or the project super-class)"
                )
            bbox = _boxes.coco_to_xyxy(torch.tensor(a["bbox"], dtype=torch.float64))
            by_image.setdefault(int(a["image_id"]), []).append(
                (cat_name[cid], _as_box_list(bbox)[0])
            )
            segs_of.setdefault(int(a["image_id"]), []).append(
                (cat_name[cid], a.get("segmentation"), a.get("id"))
            )
        for img in images:
            f = d / str(img["file_name"])
            objects = by_image.get(int(img["id"]), [])
            if not objects:
                ctx.bad(f, f"{str(f)!r} has no annotations in {str(ann_file)!r}")
                continue
            size = ctx.size_of(f, needed=False)
            if size is False:
                continue
            declared = (int(img["height"]), int(img["width"]))
            if size is not None and size != declared:
                ctx.bad(f, f"{str(f)!r} is {size} (H, W) but {_COCO_FILE} says {declared}")
                continue
            extra = dict(img.get("extra") or {})
            mask = extra.get("mask")
            mask_path = None
            if mask:
                mask_path = (d / str(mask)).resolve()
                if not mask_path.is_relative_to(ctx.root):
                    ctx.bad(
                        f,
                        f"the mask file {str(mask)!r} of {str(f)!r} in {str(ann_file)!r} "
                        f"resolves to {str(mask_path)!r}, outside the export {str(ctx.root)!r}",
                    )
                    continue
            segs: list[tuple[str, Any]] = []
            try:
                for name, seg, ann_id in segs_of.get(int(img["id"]), []):
                    where = (
                        f"malformed segmentation in {str(ann_file)!r}, annotation {ann_id} of "
                        f"image {str(img['file_name'])!r}"
                    )
                    segs.append((name, seg if check_segmentation(seg, declared, where) else None))
            except DataError as err:
                ctx.bad(f, str(err))
                continue
            raw = _Raw(f, split, "", None, size=declared, mask_path=mask_path, extra=extra)
            pending.append((raw, objects, segs))
    for raw, objects, segs in pending:
        raw.class_name, raw.boxes, raw.other_objects = _split_objects(objects, order)
        own = [seg for name, seg in segs if name == raw.class_name]
        # a partial union would call unsegmented objects background: no mask rather than a wrong one
        if raw.mask_path is None and own and all(seg is not None for seg in own):
            raw.segmentation = tuple(own)
        raws.append(raw)
    return raws, order, meta


def _yolo_names(data_yaml: Path) -> tuple[list[str], dict[str, Any]]:
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{str(data_yaml)!r} is not valid YAML ({err})") from err
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            keyed = sorted((int(k), str(v)) for k, v in names.items())
        except (TypeError, ValueError) as err:
            raise DataError(f"{str(data_yaml)!r}: 'names' keys must be class indices") from err
        if [k for k, _ in keyed] != list(range(len(keyed))):
            raise DataError(
                f"{str(data_yaml)!r}: 'names' keys must be 0..{len(keyed) - 1}, got "
                f"{[k for k, _ in keyed]}"
            )
        out = [v for _, v in keyed]
    elif isinstance(names, list):
        out = [str(v) for v in names]
    else:
        raise DataError(
            f"{str(data_yaml)!r} has no 'names' list or dict; a YOLO export's data.yaml lists "
            "its classes"
        )
    meta: dict[str, Any] = {}
    rf = data.get("roboflow")
    if isinstance(rf, dict) and rf.get("license"):
        meta = {"license": str(rf["license"]), "license_source": "data.yaml"}
    return out, meta


def _parse_yolo(label_file: Path, names: list[str], size: tuple[int, int]) -> list[tuple[str, Box]]:
    objects: list[tuple[str, Box]] = []
    for line_no, line in enumerate(label_file.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{str(label_file)!r} line {line_no} ({line.strip()!r})"
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
        if len(values) == 4:
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
    names, meta = _yolo_names(data_yaml)
    raws: list[_Raw] = []
    for split, d in _split_dirs(ctx.root):
        img_dir, lbl_dir = d / "images", d / "labels"
        if not img_dir.is_dir():
            raise DataError(f"YOLO split folder {str(d)!r} has no images/ folder")
        for f in sorted(p for p in img_dir.iterdir() if p.is_file() and is_image(p)):
            label_file = lbl_dir / f"{f.stem}.txt"
            if not label_file.is_file():
                ctx.bad(f, f"{str(f)!r} has no label file {str(label_file)!r}")
                continue
            size = ctx.size_of(f, needed=True)
            if size is False:
                continue
            try:
                objects = _parse_yolo(label_file, names, cast(tuple[int, int], size))
            except DataError as err:
                if not ctx.skip_invalid:
                    raise
                ctx.skipped.append(SkippedFile(path=label_file, reason=str(err)))
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
        return float(cast(str, text))
    except (TypeError, ValueError) as err:
        raise DataError(f"malformed VOC file {where}: <{tag}> is {text!r}, not a number") from err


def _read_voc(ctx: _Ctx) -> tuple[list[_Raw], list[str]]:
    raws: list[_Raw] = []
    names: set[str] = set()
    for split, d in _split_dirs(ctx.root):
        xml_stems = {p.stem for p in d.glob("*.xml")}
        for f in sorted(p for p in d.iterdir() if p.is_file() and is_image(p)):
            if f.stem not in xml_stems:
                ctx.bad(f, f"{str(f)!r} has no Pascal VOC annotation file {f.stem}.xml beside it")
        for xml_file in sorted(d.glob("*.xml")):
            where = repr(str(xml_file))
            try:
                tree = ET.parse(xml_file).getroot()
            except ET.ParseError as err:
                ctx.bad(xml_file, f"malformed VOC file {where} ({err})")
                continue
            f = next(
                (
                    xml_file.with_suffix(s)
                    for s in (".jpg", ".jpeg", ".png", ".bmp", ".webp")
                    if xml_file.with_suffix(s).is_file()
                ),
                d / (tree.findtext("filename") or f"{xml_file.stem}.jpg").strip(),
            )
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
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
        >>> _ = p.write_text("class, category, group\ncola, drinks, soda\n")
        >>> read_extra_labels(p)
        (['category', 'group'], {'cola': {'category': 'drinks', 'group': 'soda'}})
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"additional-labels file {str(p)!r} does not exist")
    records: list[dict[str, Any]]
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(f"additional-labels file {str(p)!r} is not valid JSON ({err})") from err
        if isinstance(data, dict):
            records = [{"class": k, **v} for k, v in data.items() if isinstance(v, dict)]
            if len(records) != len(data):
                raise DataError(f"{str(p)!r}: each class must map to an object of labels")
        elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
            records = list(data)
        else:
            raise DataError(f"{str(p)!r} must hold an object keyed by class, or a list of records")
    elif p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows = [r for r in reader if any(c.strip() for c in r)]
        if not rows:
            raise DataError(f"additional-labels file {str(p)!r} is empty")
        header = [h.strip() for h in rows[0]]
        records = []
        for line_no, row in enumerate(rows[1:], start=2):
            if len(row) != len(header):
                raise DataError(
                    f"{str(p)!r} line {line_no} has {len(row)} fields, the header has {len(header)}"
                )
            records.append({h: v.strip() for h, v in zip(header, row)})
    else:
        raise DataError(f"additional-labels file {str(p)!r} must be .csv or .json")
    mapping: dict[str, dict[str, str]] = {}
    label_names: list[str] | None = None
    for r in records:
        if "class" not in r:
            raise DataError(f"{str(p)!r}: every record needs a 'class' column/key, got {list(r)}")
        name = str(r["class"]).strip()
        labels = {str(k).strip(): str(v).strip() for k, v in r.items() if k != "class"}
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


# -- entry point ----------------------------------------------------------------------------------


def _readme_license(root: Path) -> dict[str, Any]:
    readme = root / "README.dataset.txt"
    if not readme.is_file():
        return {}
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
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
    """Read a Roboflow export (any layout) into a :class:`DatasetIndex`.

    Class order is stable: folder and VOC layouts sort the class names; CSV takes the header
    order; COCO the category ids; YOLO the ``names`` order. Classes present in only some splits
    are merged (union, in order of first appearance over train, valid, test). In detection
    exports an image's class is the class with the largest total box area in it, its
    :attr:`Sample.boxes` are that class's boxes and the rest go to :attr:`Sample.other_objects`.
    An image with no annotation is invalid (it has no label).

    The licence line of the export (``README.dataset.txt``, ``data.yaml``'s ``roboflow.license``
    or the COCO ``licenses``) is kept in ``index.metadata["license"]``.

    Exact object masks (COCO only): the PNG named by an image's ``extra.mask`` (relative to its
    split folder, and inside the export), else the union of the ``segmentation`` of the image's
    own-class annotations when every one of them has one (:attr:`Sample.segmentation`,
    rasterised by :meth:`Sample.load_mask`). An image where some of its class's objects are
    unsegmented gets no mask rather than one that calls them background.

    Args:
        root: The export's root folder (holding ``train/``, ``valid/``, ``test/``).
        extra_labels: Optional mapping file of additional labels keyed by class name (see
            :func:`read_extra_labels`).
        format: ``"folder"``, ``"csv"``, ``"coco"``, ``"yolo"`` or ``"voc"``; detected from the
            files when ``None`` (see :func:`detect_format`).
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
            ``val/``), an undetectable layout, a missing annotation file, a corrupt or missing
            image (naming the file), a malformed YOLO or VOC label (naming the file and line), a
            malformed COCO segmentation (naming the annotation file and image), a mask file
            outside the export, classes missing from or unknown to the mapping file (listing
            them).

    Examples:
        >>> import embedcam as ec
        >>> index = ec.datasets.load_roboflow("export", extra_labels="a.csv")  # doctest: +SKIP
        >>> index.classes, len(index.split("train"))  # doctest: +SKIP
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
