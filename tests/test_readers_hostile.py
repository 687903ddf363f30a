"""Hostile Roboflow exports: paths out of the export, malformed fields, bad encodings.

Every case must end in a :class:`~embedcam.errors.DataError` that names the file (and the entry)
at fault - never a raw ``KeyError``/``UnicodeDecodeError``/``RecursionError``, never a file read
from outside the export, and never a silently wrong index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from embedcam.datasets import DatasetIndex, ImageDataset, load_roboflow, read_extra_labels
from embedcam.errors import DataError

W, H = 16, 8
COCO = "_annotations.coco.json"


def _img(
    path: Path, size: tuple[int, int] = (W, H), color: tuple[int, int, int] = (90, 60, 30)
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _images() -> list[dict[str, Any]]:
    return [
        {"id": 0, "file_name": "a.jpg", "height": H, "width": W},
        {"id": 1, "file_name": "b.jpg", "height": H, "width": W},
    ]


def _anns() -> list[dict[str, Any]]:
    return [
        {"id": 10, "image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 3]},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [8, 2, 6, 5]},
    ]


def _cats() -> list[dict[str, Any]]:
    return [
        {"id": 0, "name": "shop", "supercategory": "none"},
        {"id": 1, "name": "x", "supercategory": "shop"},
        {"id": 2, "name": "y", "supercategory": "shop"},
    ]


def coco(
    root: Path,
    images: list[dict[str, Any]] | None = None,
    anns: list[dict[str, Any]] | None = None,
    cats: list[dict[str, Any]] | None = None,
    *,
    write_images: bool = True,
) -> Path:
    """A one-split COCO export; images named by the records are written when they are plain."""
    images = _images() if images is None else images
    d = root / "train"
    d.mkdir(parents=True, exist_ok=True)
    if write_images:
        for img in images:
            name = img.get("file_name")
            if isinstance(name, str) and "/" not in name and name:
                _img(d / name)
    data = {
        "images": images,
        "annotations": _anns() if anns is None else anns,
        "categories": _cats() if cats is None else cats,
    }
    (d / COCO).write_text(json.dumps(data), encoding="utf-8")
    return root


def csv_export(root: Path, text: str, names: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    d = root / "train"
    for n in names:
        _img(d / n)
    (d / "_classes.csv").write_text(text, encoding="utf-8")
    return root


def yolo(
    root: Path, names_yaml: str = "names: [x, y]", labels: dict[str, str] | None = None
) -> Path:
    d = root / "train"
    labels = (
        {"a": "0 0.5 0.5 0.25 0.5\n", "b": "1 0.25 0.5 0.25 0.5\n"} if labels is None else labels
    )
    for stem, text in labels.items():
        _img(d / "images" / f"{stem}.jpg")
        (d / "labels").mkdir(parents=True, exist_ok=True)
        (d / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"nc: 2\n{names_yaml}\n", encoding="utf-8")
    return root


def _voc_xml(filename: str, name: str = "x") -> str:
    return (
        f"<annotation><filename>{filename}</filename><size><width>{W}</width>"
        f"<height>{H}</height></size><object><name>{name}</name><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>5</xmax><ymax>4</ymax></bndbox></object></annotation>"
    )


def voc(root: Path) -> Path:
    d = root / "train"
    for stem, cls in (("a", "x"), ("b", "y")):
        _img(d / f"{stem}.jpg")
        (d / f"{stem}.xml").write_text(_voc_xml(f"{stem}.jpg", cls))
    return root


def folder(root: Path) -> Path:
    _img(root / "train" / "x" / "a.jpg")
    _img(root / "train" / "y" / "b.jpg")
    return root


def _outside(tmp_path: Path) -> Path:
    """An image outside every export (a file the reader must never read)."""
    return _img(tmp_path / "outside.jpg", (W, H), (255, 0, 0))


def _symlink(link: Path, target: Path) -> None:
    if link.exists() or link.is_symlink():
        if link.is_dir() and not link.is_symlink():
            import shutil

            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(target)


# -- 1. files outside the export ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_coco_file_name_outside_the_export_is_refused(tmp_path: Path, kind: str) -> None:
    outside = _outside(tmp_path)
    root = tmp_path / "export"
    name = str(outside) if kind == "absolute" else "../../outside.jpg"
    images = [{"id": 0, "file_name": name, "height": H, "width": W}, _images()[1]]
    coco(root, images)
    with pytest.raises(
        DataError,
        match=rf"file_name '{_re(name)}' of image 0 in '.*train/{COCO}' resolves to "
        rf"'{_re(str(outside))}', outside the export",
    ):
        load_roboflow(root)
    # with skip_invalid the entry is skipped and reported, and the outside file is not indexed
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index] == ["b.jpg"]
    assert "outside the export" in index.skipped[0].reason


def _re(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize("fmt", ["folder", "csv", "coco", "yolo", "voc"])
def test_symlinked_image_pointing_outside_is_refused(tmp_path: Path, fmt: str) -> None:
    outside = _outside(tmp_path)
    root = tmp_path / "export"
    if fmt == "folder":
        folder(root)
        link = root / "train" / "x" / "a.jpg"
    elif fmt == "csv":
        csv_export(root, "filename,x,y\na.jpg,1,0\nb.jpg,0,1\n")
        link = root / "train" / "a.jpg"
    elif fmt == "coco":
        coco(root)
        link = root / "train" / "a.jpg"
    elif fmt == "yolo":
        yolo(root)
        link = root / "train" / "images" / "a.jpg"
    else:
        voc(root)
        link = root / "train" / "a.jpg"
    _symlink(link, outside)
    with pytest.raises(DataError, match=rf"a\.jpg.* resolves to '{_re(str(outside))}', outside"):
        load_roboflow(root, format=fmt)  # type: ignore[arg-type]


def test_symlinked_class_folder_outside_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _img(elsewhere / "secret.jpg")
    root = folder(tmp_path / "export")
    (root / "train" / "z").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DataError, match=r"folder '.*train/z' resolves to .*elsewhere', outside"):
        load_roboflow(root)


@pytest.mark.parametrize("fmt", ["folder", "yolo", "voc"])
@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_image_symlinks_are_reported_not_dropped(
    tmp_path: Path, fmt: str, kind: str
) -> None:
    # A dangling symlink or a loop is neither a file nor a folder: the listing dropped it and the
    # export silently shrank.
    root = {"folder": folder, "yolo": yolo, "voc": voc}[fmt](tmp_path / "export")
    d = {"folder": root / "train" / "x", "yolo": root / "train" / "images", "voc": root / "train"}
    link = d[fmt] / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg" if kind == "dangling" else link)
    with pytest.raises(DataError, match=r"gone\.jpg' is a broken symlink"):
        load_roboflow(root)
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index.skipped] == ["gone.jpg"]
    assert "skip_invalid" not in index.skipped[0].reason  # it was passed: no advice to pass it


def test_outside_message_says_how_to_replace_a_symlink(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _img(elsewhere / "secret.jpg")
    root = folder(tmp_path / "export")
    (root / "train" / "z").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DataError, match=r"cp -rL"):
        load_roboflow(root)


def test_symlinked_split_folder_outside_is_refused(tmp_path: Path) -> None:
    other = coco(tmp_path / "other")
    root = coco(tmp_path / "export")
    (root / "valid").symlink_to(other / "train", target_is_directory=True)
    with pytest.raises(DataError, match=r"split folder '.*export/valid' resolves to .*outside"):
        load_roboflow(root)


@pytest.mark.parametrize(
    "which", ["coco-json", "csv", "data.yaml", "yolo-label", "voc-xml", "readme"]
)
def test_symlinked_annotation_file_outside_is_refused(tmp_path: Path, which: str) -> None:
    root = tmp_path / "export"
    if which == "coco-json":
        coco(root)
        link = root / "train" / COCO
    elif which == "csv":
        csv_export(root, "filename,x,y\na.jpg,1,0\nb.jpg,0,1\n")
        link = root / "train" / "_classes.csv"
    elif which in ("data.yaml", "yolo-label"):
        yolo(root)
        link = root / "data.yaml" if which == "data.yaml" else root / "train/labels/a.txt"
    elif which == "voc-xml":
        voc(root)
        link = root / "train" / "a.xml"
    else:
        coco(root)
        link = root / "README.dataset.txt"
    secret = tmp_path / "secret.txt"
    secret.write_bytes(link.read_bytes() if link.exists() else b"License: stolen\n")
    _symlink(link, secret)
    with pytest.raises(DataError, match=rf"{_re(link.name)}' resolves to '{_re(str(secret))}'"):
        load_roboflow(root)


def test_csv_file_name_outside_is_refused(tmp_path: Path) -> None:
    _outside(tmp_path)
    root = csv_export(tmp_path / "export", "filename,x,y\n../../outside.jpg,1,0\nb.jpg,0,1\n")
    with pytest.raises(
        DataError,
        match=r"file name '\.\./\.\./outside\.jpg' on line 2 of '.*_classes\.csv'.*outside",
    ):
        load_roboflow(root)


def test_voc_filename_outside_is_refused(tmp_path: Path) -> None:
    _outside(tmp_path)
    root = voc(tmp_path / "export")
    (root / "train" / "c.xml").write_text(_voc_xml("../../outside.jpg"))
    with pytest.raises(
        DataError, match=r"<filename> '\.\./\.\./outside\.jpg' in '.*train/c\.xml'.*outside"
    ):
        load_roboflow(root)


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("not an object", "'extra' of image 0 .* must be an object"),
        ({"mask": 7}, "'extra.mask' of image 0 .* must be a file name"),
        ({"mask": "m\u0000.png"}, "mask file 'm\\\\x00.png' of .* cannot be resolved"),
        ({"mask": "missing.png"}, "mask file 'missing.png' of .* does not exist"),
    ],
)
def test_coco_bad_mask_entry(tmp_path: Path, extra: object, why: str) -> None:
    images = _images()
    images[0]["extra"] = extra
    root = coco(tmp_path, images)
    with pytest.raises(DataError, match=why):
        load_roboflow(root)


# -- 2. COCO fields -------------------------------------------------------------------------------


def _drop(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


ANN_CASES = [
    (lambda a: _drop(a, "bbox"), "annotation 10 \\(image 0, 'a\\.jpg'\\).*'bbox' is missing"),
    (lambda a: {**a, "bbox": "wide"}, "annotation 10 \\(image 0, 'a\\.jpg'\\).*'bbox' is 'wide'"),
    (lambda a: {**a, "bbox": [1, 1, 4]}, "'bbox' is \\[1, 1, 4\\]"),
    (lambda a: {**a, "bbox": [1, 1, -4, 3]}, "'bbox' is \\[1, 1, -4, 3\\].*width and height > 0"),
    (lambda a: {**a, "bbox": [1, float("nan"), 4, 3]}, "'bbox' is \\[1, nan, 4, 3\\]"),
    (lambda a: {**a, "bbox": [1, 1, float("inf"), 3]}, "'bbox' is \\[1, 1, inf, 3\\]"),
    (lambda a: {**a, "bbox": [1, 1, True, 3]}, "'bbox' is \\[1, 1, True, 3\\]"),
    (lambda a: {**a, "bbox": [40, 1, 4, 3]}, "box \\[40.0, 1.0, 44.0, 4.0\\].*outside the image"),
    (
        lambda a: _drop(a, "category_id"),
        "annotation 10 \\(image 0, 'a\\.jpg'\\).*'category_id' is missing",
    ),
    (lambda a: {**a, "category_id": "one"}, "'category_id' is 'one', not an integer"),
    (lambda a: {**a, "category_id": 1.5}, "'category_id' is 1.5, not an integer"),
    (lambda a: {**a, "category_id": 9}, "annotation 10 uses category 9, which is not a class"),
    (lambda a: _drop(a, "image_id"), "annotation 10.*'image_id' is missing"),
    (lambda a: {**a, "image_id": [0]}, "annotation 10.*'image_id' is \\[0\\], not an integer"),
]


@pytest.mark.parametrize(("mutate", "why"), ANN_CASES)
def test_coco_malformed_annotation_names_file_id_and_field(
    tmp_path: Path, mutate: Any, why: str
) -> None:
    anns = _anns()
    anns[0] = mutate(anns[0])
    root = coco(tmp_path, anns=anns)
    with pytest.raises(DataError, match=rf"'.*train/{COCO}'.*{why}"):
        load_roboflow(root)


IMG_CASES = [
    (lambda i: _drop(i, "file_name"), "image 0: 'file_name' is missing"),
    (lambda i: {**i, "file_name": 5}, "image 0: 'file_name' is 5, not a file name"),
    (lambda i: {**i, "file_name": ""}, "image 0: 'file_name' is '', not a file name"),
    (lambda i: _drop(i, "height"), "image 0 \\('a.jpg'\\): 'height' is missing"),
    (lambda i: {**i, "width": "wide"}, "image 0 \\('a.jpg'\\): 'width' is 'wide', not a positive"),
    (lambda i: {**i, "width": 0}, "'width' is 0, not a positive integer"),
    (lambda i: {**i, "height": 7.5}, "'height' is 7.5, not a positive integer"),
    (lambda i: _drop(i, "id"), "image entry 0: 'id' is missing"),
    (lambda i: {**i, "id": None}, "'id' is None, not an integer"),
]


@pytest.mark.parametrize(("mutate", "why"), IMG_CASES)
def test_coco_malformed_image_names_file_id_and_field(
    tmp_path: Path, mutate: Any, why: str
) -> None:
    images = _images()
    images[0] = mutate(images[0])
    root = coco(tmp_path, images)
    _img(root / "train" / "a.jpg")
    with pytest.raises(DataError, match=rf"'.*train/{COCO}'.*{why}"):
        load_roboflow(root)


@pytest.mark.parametrize(
    ("cats", "why"),
    [
        ([{"id": 1, "name": "x"}, {"name": "y"}], "category entry 1: 'id' is missing"),
        ([{"id": 1, "name": "x"}, {"id": "two", "name": "y"}], "'id' is 'two', not an integer"),
        ([{"id": 1, "name": "x"}, {"id": 2}], "category 2: 'name' is missing"),
        ([{"id": 1, "name": "x"}, {"id": 2, "name": ["y"]}], "category 2: 'name' is \\['y'\\]"),
        ([{"id": 1, "name": "x"}, {"id": 2, "name": ""}], "category 2: 'name' is ''"),
        (
            [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}, {"id": 2, "name": "z"}],
            "category id 2 is used twice \\('y' and 'z'\\)",
        ),
        ([{"id": 1, "name": "x"}, "y"], "category entry 1 is 'y', not an object"),
    ],
)
def test_coco_malformed_categories(tmp_path: Path, cats: list[Any], why: str) -> None:
    root = coco(tmp_path, cats=cats)
    with pytest.raises(DataError, match=rf"'.*train/{COCO}'.*{why}"):
        load_roboflow(root)


def test_coco_duplicate_image_id_is_refused(tmp_path: Path) -> None:
    images = _images()
    images[1]["id"] = 0
    root = coco(tmp_path, images)
    with pytest.raises(
        DataError, match=rf"'.*{COCO}' has two images with id 0 \('a\.jpg' and 'b\.jpg'\)"
    ):
        load_roboflow(root)


def test_coco_duplicate_file_name_is_refused(tmp_path: Path) -> None:
    images = _images()
    images[1]["file_name"] = "a.jpg"
    root = coco(tmp_path, images)
    with pytest.raises(DataError, match=r"images 0 and 1 both name the file 'a\.jpg'"):
        load_roboflow(root)


def test_coco_annotation_for_a_missing_image(tmp_path: Path) -> None:
    anns = [*_anns(), {"id": 12, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]}]
    root = coco(tmp_path, anns=anns)
    with pytest.raises(
        DataError, match=rf"'.*{COCO}' annotation 12 refers to image 99, which is not in 'images'"
    ):
        load_roboflow(root)
    # skip_invalid reports it (against the annotation file) and keeps the good images
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index] == ["a.jpg", "b.jpg"]
    assert [s.path.name for s in index.skipped] == [COCO]


def test_coco_bad_annotation_skips_only_its_image(tmp_path: Path) -> None:
    anns = _anns()
    anns[1]["bbox"] = [1, 1, 0, 3]
    root = coco(tmp_path, anns=anns)
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index] == ["a.jpg"]
    assert [s.path.name for s in index.skipped] == ["b.jpg"]
    assert "'bbox' is [1, 1, 0, 3]" in index.skipped[0].reason


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ([], "must be a JSON object"),
        ({"images": {}, "categories": [], "annotations": []}, "'images' must be a list"),
        ({"images": [], "categories": [], "annotations": 3}, "'annotations' must be a list"),
        ({"images": ["a.jpg"], "categories": [], "annotations": []}, "image entry 0 is 'a.jpg'"),
        ({"images": [], "categories": [], "annotations": [None]}, "annotation entry 0 is None"),
    ],
)
def test_coco_wrong_structure(tmp_path: Path, data: Any, why: str) -> None:
    d = tmp_path / "train"
    d.mkdir()
    (d / COCO).write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"'.*{COCO}'.*{why}"):
        load_roboflow(tmp_path, format="coco")


# -- 3. CSV ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["-1", "2", "yes", "nan", "0.5", ""])
def test_csv_flag_other_than_0_or_1(tmp_path: Path, flag: str) -> None:
    root = csv_export(tmp_path, f"filename,x,y\na.jpg,{flag},1\nb.jpg,0,1\n")
    with pytest.raises(
        DataError, match=rf"_classes\.csv' line 2, column 'x': the flag is '{_re(flag)}'"
    ):
        load_roboflow(root)


def test_csv_accepts_float_flags(tmp_path: Path) -> None:
    root = csv_export(tmp_path, "filename,x,y\na.jpg, 1.0 ,0\nb.jpg,0.0,1\n")
    index = load_roboflow(root)
    assert [(s.path.name, s.class_name) for s in index] == [("a.jpg", "x"), ("b.jpg", "y")]


def test_csv_file_listed_twice(tmp_path: Path) -> None:
    root = csv_export(tmp_path, "filename,x,y\na.jpg,1,0\nb.jpg,0,1\na.jpg,0,1\n")
    with pytest.raises(DataError, match=r"_classes\.csv' lists 'a\.jpg' twice, on lines 2 and 4"):
        load_roboflow(root)


@pytest.mark.parametrize(
    ("header", "why"), [("filename,x,x", "column 'x' twice"), ("filename,x,", "empty column name")]
)
def test_csv_bad_header(tmp_path: Path, header: str, why: str) -> None:
    root = csv_export(tmp_path, f"{header}\na.jpg,1,0\nb.jpg,0,1\n")
    with pytest.raises(DataError, match=rf"_classes\.csv'.*{why}"):
        load_roboflow(root)


# -- 4. YOLO names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "why"),
    [
        ("names: [null, y]", "class 0 is None"),
        ("names: [1, y]", "class 0 is 1"),
        ("names: [yes, y]", "class 0 is True"),
        ("names: ['', y]", "class 0 is ''"),
        ("names: ['  ', y]", "class 0 is '  '"),
        ("names: [x, x]", "class 'x' is listed twice \\(classes 0 and 1\\)"),
        ("names: [[x], y]", "class 0 is \\['x'\\]"),
        ("names: {a: x, 1: y}", "key 'a' is not a class index"),
        ("names: {0: x, 1.5: y}", "key 1.5 is not a class index"),
        ("names: {0: x, 1: null}", "class 1 is None"),
        ("names: {0: x, 2: y}", "keys must be 0..1"),
        ("names: x", "no 'names' list or dict"),
    ],
)
def test_yolo_bad_names(tmp_path: Path, names: str, why: str) -> None:
    root = yolo(tmp_path, names)
    with pytest.raises(DataError, match=rf"data\.yaml'.*{why}"):
        load_roboflow(root)


def test_yolo_nc_must_match_names(tmp_path: Path) -> None:
    root = yolo(tmp_path)
    (root / "data.yaml").write_text("nc: 3\nnames: [x, y]\n")
    with pytest.raises(DataError, match=r"data\.yaml' says nc: 3 but 'names' lists 2 classes"):
        load_roboflow(root)


@pytest.mark.parametrize(
    ("line", "why"),
    [("0 0.5 nan 0.2 0.2", "not finite"), ("0 0.5 0.5 -0.2 0.2", "width and height must be > 0")],
)
def test_yolo_bad_numbers_name_the_line(tmp_path: Path, line: str, why: str) -> None:
    root = yolo(tmp_path, labels={"a": f"{line}\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DataError, match=rf"a\.txt' line 1 .*{why}"):
        load_roboflow(root)


def test_yolo_images_sharing_a_label_file_are_refused(tmp_path: Path) -> None:
    # a.jpg and a.png both matched labels/a.txt: one label file counted for two images.
    root = yolo(tmp_path)
    _img(root / "train" / "images" / "a.png")
    with pytest.raises(DataError, match=r"a\.jpg' and .*a\.png' share the label file .*a\.txt"):
        load_roboflow(root)


# -- 5. declared size vs actual size --------------------------------------------------------------


def test_wrong_declared_size_without_verify_is_caught_on_decode(tmp_path: Path) -> None:
    images = _images()
    images[1].update(width=64, height=32)  # b.jpg is really 16 x 8; its box lies at x 40..56
    anns = _anns()
    anns[1]["bbox"] = [40, 10, 16, 12]
    root = coco(tmp_path, images, anns)
    with pytest.raises(DataError, match=r"b\.jpg' is \(8, 16\) \(H, W\) but .* says \(32, 64\)"):
        load_roboflow(root)
    index = load_roboflow(root, verify_images=False)
    # the boxes are checked against the declared size, and kept as declared
    assert index[1].size == (32, 64) and index[1].boxes == ((40.0, 10.0, 56.0, 22.0),)
    ds = ImageDataset(index)
    assert ds[0]["boxes"].tolist() == [[1.0, 1.0, 5.0, 4.0]]
    with pytest.raises(
        DataError,
        match=r"b\.jpg' decodes to \(8, 16\) \(H, W\) but the index says \(32, 64\)"
        r".*verify_images=True",
    ):
        ds[1]


def test_box_outside_the_declared_size_without_verify(tmp_path: Path) -> None:
    anns = _anns()
    anns[0]["bbox"] = [20, 1, 4, 3]  # W is 16: entirely right of the image
    root = coco(tmp_path, anns=anns)
    with pytest.raises(
        DataError, match=r"annotation 10 \(image 0, 'a\.jpg'\).*outside the image \(8, 16\)"
    ):
        load_roboflow(root, verify_images=False)


# -- 6. encodings, nesting, broken syntax ---------------------------------------------------------

LATIN1 = "caf\xe9".encode("latin-1")


@pytest.mark.parametrize("which", ["coco", "csv", "data.yaml", "yolo-label", "readme"])
def test_non_utf8_annotation_file_names_the_file(tmp_path: Path, which: str) -> None:
    if which == "coco":
        root = coco(tmp_path)
        target = root / "train" / COCO
        target.write_bytes(target.read_bytes().replace(b'"x"', b'"' + LATIN1 + b'"'))
    elif which == "csv":
        root = csv_export(tmp_path, "filename,x,y\na.jpg,1,0\nb.jpg,0,1\n")
        target = root / "train" / "_classes.csv"
        target.write_bytes(target.read_bytes().replace(b"x", LATIN1))
    elif which in ("data.yaml", "yolo-label"):
        root = yolo(tmp_path)
        target = root / "data.yaml" if which == "data.yaml" else root / "train/labels/a.txt"
        target.write_bytes(target.read_bytes() + b"# " + LATIN1 + b"\n")
    else:
        root = coco(tmp_path)
        target = root / "README.dataset.txt"
        target.write_bytes(b"License: " + LATIN1 + b"\n")
    if which == "readme":
        # a README is free text: undecodable bytes are replaced, the licence line still read
        assert load_roboflow(root).metadata["license"] == "caf\ufffd"
        return
    with pytest.raises(DataError, match=rf"'{_re(str(target))}' is not UTF-8 text .*re-save"):
        load_roboflow(root)


def test_non_utf8_voc_xml_names_the_file(tmp_path: Path) -> None:
    root = voc(tmp_path)
    xml = root / "train" / "a.xml"
    xml.write_bytes(xml.read_bytes().replace(b"<name>x</name>", b"<name>" + LATIN1 + b"</name>"))
    with pytest.raises(DataError, match=r"malformed VOC file '.*a\.xml'"):
        load_roboflow(root)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000])
def test_deeply_nested_coco_json(tmp_path: Path, text: str) -> None:
    root = coco(tmp_path)
    (root / "train" / COCO).write_text(text)
    with pytest.raises(DataError, match=rf"'.*{COCO}' is not valid JSON .*nested too deeply"):
        load_roboflow(root)


def test_truncated_coco_json_names_the_file(tmp_path: Path) -> None:
    root = coco(tmp_path)
    f = root / "train" / COCO
    f.write_text(f.read_text()[:40])
    with pytest.raises(DataError, match=rf"'.*{COCO}' is not valid JSON"):
        load_roboflow(root)


def test_deeply_nested_data_yaml(tmp_path: Path) -> None:
    root = yolo(tmp_path)
    (root / "data.yaml").write_text("names: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(DataError, match=r"data\.yaml' is not valid YAML"):
        load_roboflow(root)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("labels.csv", b"class,group\n" + LATIN1 + b",a\n", "is not UTF-8 text"),
        ("labels.json", b'{"' + LATIN1 + b'": {"group": "a"}}', "is not UTF-8 text"),
        ("labels.json", b"[" * 100_000, "nested too deeply"),
        (
            "labels.json",
            b'{"x": {"group": null}, "y": {"group": "b"}}',
            "label 'group' of class 'x' is None",
        ),
        ("labels.json", b'{"x": {"class": "z"}}', "class 'x' has a label named 'class'"),
        ("labels.csv", b"class,group,group\nx,a,b\n", "column 'group' twice"),
        ("labels.csv", b"class,group\n,a\n", "line 2 has an empty class name"),
    ],
)
def test_bad_extra_labels_file(tmp_path: Path, name: str, content: bytes, why: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match=rf"'{_re(str(p))}'.*{why}"):
        read_extra_labels(p)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\xff\xfe not json", "is not UTF-8 text"),
        (b"[" * 100_000, "is not valid JSON \\(nested too deeply"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"root": ".", "format": "coco"}', "is not a valid dataset index.*classes"),
        (
            b'{"root": ".", "format": "coco", "classes": "ab", "samples": [], "has_boxes": 3}',
            "is not a valid dataset index",
        ),
        (b"{truncated", "is not valid JSON"),
    ],
)
def test_index_load_json_names_the_file(tmp_path: Path, content: bytes, why: str) -> None:
    p = tmp_path / "index.json"
    p.write_bytes(content)
    with pytest.raises(DataError, match=rf"index file '{_re(str(p))}' {why}"):
        DatasetIndex.load_json(p)


def test_index_load_json_round_trip_still_works(tmp_path: Path) -> None:
    index = load_roboflow(coco(tmp_path / "export"))
    index.save_json(tmp_path / "index.json")
    again = DatasetIndex.load_json(tmp_path / "index.json")
    assert again == index and [s.boxes for s in again] == [
        ((1.0, 1.0, 5.0, 4.0),),
        ((8.0, 2.0, 14.0, 7.0),),
    ]


def test_a_valid_export_with_internal_symlinks_loads(tmp_path: Path) -> None:
    """Symlinks that stay inside the export are fine (e.g. a shared image pool)."""
    root = coco(tmp_path / "export")
    pool = root / "pool"
    pool.mkdir()
    os.replace(root / "train" / "a.jpg", pool / "a.jpg")
    (root / "train" / "a.jpg").symlink_to(pool / "a.jpg")
    index = load_roboflow(root)
    assert [s.path.name for s in index] == ["a.jpg", "b.jpg"]
    assert index[0].path == root.resolve() / "train" / "a.jpg"


@pytest.mark.parametrize(
    ("segmentation", "why"),
    [
        ({"counts": [10**30, 1], "size": [H, W]}, "RLE runs add up to more than"),
        # '?' encodes the run 15: a non-ASCII character must not be read as '?'
        ({"counts": "\u00e91", "size": [4, 4]}, "hold the character '\u00e9'"),
    ],
)
def test_coco_hostile_rle_names_the_annotation(
    tmp_path: Path, segmentation: object, why: str
) -> None:
    images = _images()
    anns = _anns()
    if segmentation["size"] == [4, 4]:  # type: ignore[index]
        images[0].update(height=4, width=4)
        anns[0]["bbox"] = [0, 0, 2, 2]
    anns[0]["segmentation"] = segmentation
    root = coco(tmp_path, images, anns)
    if segmentation["size"] == [4, 4]:  # type: ignore[index]
        _img(root / "train" / "a.jpg", (4, 4))
    with pytest.raises(DataError, match=rf"annotation 10 of image 'a\.jpg'.*{why}"):
        load_roboflow(root)


def test_a_missing_export_root_says_it_does_not_exist(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"nowhere' does not exist.*relative to the current folder"):
        load_roboflow("nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_roboflow(tmp_path / "file.txt")
