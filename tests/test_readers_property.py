"""Property tests of the Roboflow readers: valid exports round-trip, corruptions fail cleanly.

(a) A random small export written in the COCO, YOLO, CSV or VOC layout loads back with the same
classes, files, labels and boxes. (b) A random corruption of a valid export (a truncated or
garbled annotation file, a deleted image, a field of the wrong type, a ``../`` file name, swapped
bytes, a symlink out of the export) either loads into a consistent index or raises a
:class:`~embedcam.errors.DataError` naming a file of the export - never another exception.

Set ``EC_PROP_EXAMPLES`` (default 30) for a longer search, e.g. ``EC_PROP_EXAMPLES=2000``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from embedcam.datasets import DatasetIndex, load_roboflow
from embedcam.errors import DataError

PROJECT = "proj"
LAYOUTS = ["coco", "yolo", "csv", "voc"]
SETTINGS = settings(
    max_examples=int(os.environ.get("EC_PROP_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Img:
    split: str
    name: str
    size: tuple[int, int]  # (H, W)
    cls: int
    boxes: tuple[tuple[int, int, int, int], ...]  # internal [x0, y0, x1, y1], integer pixels


@dataclass(frozen=True)
class Spec:
    classes: tuple[str, ...]
    images: tuple[Img, ...]


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=8).filter(
    lambda n: n != PROJECT
)


@st.composite
def _box(draw: st.DrawFn, size: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = size
    x0 = draw(st.integers(0, w - 1))
    y0 = draw(st.integers(0, h - 1))
    return x0, y0, draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    classes = tuple(draw(st.lists(_names, min_size=1, max_size=4, unique=True)))
    n = draw(st.integers(1, 6))
    images = []
    for k in range(n):
        size = (draw(st.integers(8, 24)), draw(st.integers(8, 24)))
        split = draw(st.sampled_from(["train", "train", "valid", "test"]))
        boxes = tuple(draw(st.lists(_box(size), min_size=1, max_size=3)))
        images.append(
            Img(
                split,
                f"i{k}_jpg.rf.{k:04x}.png",
                size,
                draw(st.integers(0, len(classes) - 1)),
                boxes,
            )
        )
    return Spec(classes, tuple(images))


def _write_image(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (seed * 37 % 256, 90, 200)).save(path)


def write(root: Path, spec: Spec, fmt: str) -> Path:
    """Write ``spec`` as a Roboflow export in layout ``fmt`` under ``root``."""
    splits = sorted({i.split for i in spec.images})
    for k, img in enumerate(spec.images):
        d = root / img.split
        h, w = img.size
        if fmt == "yolo":
            _write_image(d / "images" / img.name, img.size, k)
            lines = [
                f"{img.cls} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} {(x1 - x0) / w!r} "
                f"{(y1 - y0) / h!r}"
                for x0, y0, x1, y1 in img.boxes
            ]
            (d / "labels").mkdir(parents=True, exist_ok=True)
            (d / "labels" / f"{Path(img.name).stem}.txt").write_text("\n".join(lines) + "\n")
        else:
            _write_image(d / img.name, img.size, k)
        if fmt == "voc":
            objects = "".join(
                f"<object><name>{spec.classes[img.cls]}</name><bndbox><xmin>{x0 + 1}</xmin>"
                f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                for x0, y0, x1, y1 in img.boxes
            )
            (d / f"{Path(img.name).stem}.xml").write_text(
                f"<annotation><filename>{img.name}</filename><size><width>{w}</width>"
                f"<height>{h}</height></size>{objects}</annotation>"
            )
    if fmt == "yolo":
        (root / "data.yaml").write_text(
            yaml.safe_dump({"nc": len(spec.classes), "names": list(spec.classes)})
        )
    for split in splits:
        rows = [i for i in spec.images if i.split == split]
        if fmt == "csv":
            buf = io.StringIO()
            out = csv.writer(buf)
            out.writerow(["filename", *spec.classes])
            for i in rows:
                out.writerow([i.name, *(int(c == i.cls) for c in range(len(spec.classes)))])
            (root / split / "_classes.csv").write_text(buf.getvalue())
        if fmt == "coco":
            cats = [{"id": 0, "name": PROJECT, "supercategory": "none"}] + [
                {"id": c + 1, "name": n, "supercategory": PROJECT}
                for c, n in enumerate(spec.classes)
            ]
            images, anns = [], []
            for j, i in enumerate(rows):
                images.append(
                    {"id": j, "file_name": i.name, "height": i.size[0], "width": i.size[1]}
                )
                for x0, y0, x1, y1 in i.boxes:
                    anns.append(
                        {
                            "id": len(anns),
                            "image_id": j,
                            "category_id": i.cls + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                        }
                    )
            data = {"categories": cats, "images": images, "annotations": anns}
            (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def _expected_classes(spec: Spec, fmt: str) -> list[str]:
    if fmt == "voc":  # VOC knows only the classes it sees, sorted
        return sorted({spec.classes[i.cls] for i in spec.images})
    return list(spec.classes)


@SETTINGS
@given(spec=specs(), fmt=st.sampled_from(LAYOUTS))
def test_random_valid_export_round_trips(spec: Spec, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = write(Path(tmp) / "export", spec, fmt)
        index = load_roboflow(root)
        assert index.format == fmt and index.skipped == []
        assert index.classes == _expected_classes(spec, fmt)
        got = {(s.split, s.path.name): s for s in index}
        assert sorted(got) == sorted((i.split, i.name) for i in spec.images)
        for img in spec.images:
            s = got[(img.split, img.name)]
            assert s.class_name == spec.classes[img.cls]
            assert index.classes[s.label] == s.class_name
            assert (
                s.path
                == root.resolve() / img.split / ("images" if fmt == "yolo" else "") / img.name
            )
            assert s.size == img.size
            if fmt == "csv":
                assert s.boxes is None
                continue
            assert s.boxes is not None and len(s.boxes) == len(img.boxes)
            rounded = sorted(tuple(round(v, 6) for v in b) for b in s.boxes)
            for b, e in zip(rounded, sorted(img.boxes)):
                assert all(math.isclose(u, v, abs_tol=1e-6) for u, v in zip(b, e)), (b, e)


# -- (b) corruptions ------------------------------------------------------------------------------

CORRUPTIONS = ["truncate", "garble", "swap", "delete-image", "wrong-type", "dotdot", "symlink-out"]
BAD_VALUES: list[Any] = [None, "x", [], {}, -1, 0, 1.5, True, "../../outside.png", [1, 2], 10**30]


def _annotation_file(root: Path, fmt: str) -> Path:
    if fmt == "yolo":
        return root / "data.yaml"
    if fmt == "voc":
        return sorted(root.glob("*/*.xml"))[0]
    name = "_annotations.coco.json" if fmt == "coco" else "_classes.csv"
    return sorted(root.glob(f"*/{name}"))[0]


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png") if p.is_file())


def _wrong_type(root: Path, fmt: str, data: st.DataObject) -> None:
    value = data.draw(st.sampled_from(BAD_VALUES))
    if fmt == "coco":
        f = _annotation_file(root, fmt)
        coco = json.loads(f.read_text())
        key = data.draw(st.sampled_from(["images", "annotations", "categories"]))
        records = coco[key]
        rec = records[data.draw(st.integers(0, len(records) - 1))]
        rec[data.draw(st.sampled_from(sorted(rec)))] = value
        f.write_text(json.dumps(coco))
    elif fmt == "yolo":
        if data.draw(st.booleans()):
            f = root / "data.yaml"
            doc = yaml.safe_load(f.read_text())
            doc[data.draw(st.sampled_from(["names", "nc"]))] = value
            f.write_text(yaml.safe_dump(doc))
        else:
            f = sorted(root.glob("*/labels/*.txt"))[0]
            tokens = f.read_text().split()
            tokens[data.draw(st.integers(0, len(tokens) - 1))] = str(value)
            f.write_text(" ".join(tokens) + "\n")
    elif fmt == "csv":
        f = _annotation_file(root, fmt)
        rows = list(csv.reader(io.StringIO(f.read_text())))
        r = data.draw(st.integers(0, len(rows) - 1))
        rows[r][data.draw(st.integers(0, len(rows[r]) - 1))] = str(value)
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        f.write_text(buf.getvalue())
    else:
        f = _annotation_file(root, fmt)
        tag = data.draw(st.sampled_from(["xmin", "ymax", "name", "filename"]))
        text = f.read_text()
        start, end = text.find(f"<{tag}>") + len(tag) + 2, text.find(f"</{tag}>")
        f.write_text(text[:start] + str(value) + text[end:])


def corrupt(root: Path, fmt: str, kind: str, data: st.DataObject) -> None:
    """Apply one corruption ``kind`` to the export at ``root``."""
    ann = _annotation_file(root, fmt)
    raw = ann.read_bytes()
    if kind == "truncate":
        ann.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    elif kind == "garble":
        at = data.draw(st.integers(0, len(raw) - 1))
        junk = data.draw(st.binary(min_size=1, max_size=8))
        ann.write_bytes(raw[:at] + junk + raw[at + len(junk) :])
    elif kind == "swap":
        i, j = sorted(data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=2, max_size=2)))
        b = bytearray(raw)
        b[i], b[j] = b[j], b[i]
        ann.write_bytes(bytes(b))
    elif kind == "delete-image":
        images = _images(root)
        images[data.draw(st.integers(0, len(images) - 1))].unlink()
    elif kind == "wrong-type":
        _wrong_type(root, fmt, data)
    elif kind == "dotdot":
        images = _images(root)
        victim = images[data.draw(st.integers(0, len(images) - 1))].name
        target = data.draw(st.sampled_from(["../" + victim, "../../outside.png", "/etc/passwd"]))
        if fmt == "yolo":  # YOLO names no files: point a label file out of the export instead
            label = sorted(root.glob("*/labels/*.txt"))[0]
            label.unlink()
            label.symlink_to(root.parent / "outside.txt")
        elif fmt == "voc":
            xml = sorted(root.glob("*/*.xml"))[0]
            for p in xml.parent.glob(xml.stem + ".*"):
                if p.suffix != ".xml":
                    p.unlink()
            text = xml.read_text()
            start, end = text.find("<filename>") + 10, text.find("</filename>")
            xml.write_text(text[:start] + target + text[end:])
        else:
            ann.write_bytes(raw.replace(victim.encode(), target.encode(), 1))
    else:  # symlink-out: an image replaced by a symlink to a file outside the export
        images = _images(root)
        victim = images[data.draw(st.integers(0, len(images) - 1))]
        victim.unlink()
        victim.symlink_to(root.parent / "outside.png")


def _check_consistent(index: DatasetIndex, root: Path) -> None:
    """What a successful load must guarantee, whatever the input was."""
    real = root.resolve()
    paths = [s.path for s in index]
    assert len(set(paths)) == len(paths)
    for s in index:
        assert s.path.resolve().is_relative_to(real), s.path
        assert s.path.is_file()
        assert index.classes[s.label] == s.class_name
        if s.mask_path is not None:
            assert s.mask_path.resolve().is_relative_to(real)
        if s.boxes is not None:
            assert s.boxes and s.size is not None
            h, w = s.size
            for x0, y0, x1, y1 in s.boxes:
                assert all(math.isfinite(v) for v in (x0, y0, x1, y1))
                assert x0 < x1 and y0 < y1 and x0 < w and y0 < h and x1 > 0 and y1 > 0
        if s.size is not None:
            with Image.open(s.path) as im:
                assert (im.height, im.width) == s.size


@SETTINGS
@given(
    spec=specs(),
    fmt=st.sampled_from(LAYOUTS),
    kind=st.sampled_from(CORRUPTIONS),
    skip=st.booleans(),
    data=st.data(),
)
def test_corrupted_export_fails_with_a_data_error_naming_the_file(
    spec: Spec, fmt: str, kind: str, skip: bool, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _write_image(base / "outside.png", (8, 8), 1)
        (base / "outside.txt").write_text("0 0.5 0.5 0.5 0.5\n")
        root = write(base / "export", spec, fmt)
        corrupt(root, fmt, kind, data)
        try:
            index = load_roboflow(root, format=fmt, skip_invalid=skip)  # type: ignore[arg-type]
        except DataError as err:
            event(f"{fmt} {kind}: DataError")
            # names a file (or folder) of the export: the annotation file, image or entry at fault
            assert str(root.resolve()) in str(err), str(err)
            return
        event(f"{fmt} {kind}: loaded")
        _check_consistent(index, root)
        if kind in ("dotdot", "symlink-out"):
            outside = str(base.resolve() / "outside")
            assert not any(str(s.path.resolve()).startswith(outside) for s in index)
            assert not any(str(s.path.resolve()) == "/etc/passwd" for s in index)
