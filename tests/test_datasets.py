"""Roboflow readers and the DatasetIndex: five layouts of one fixture export, quirks, bad inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import embedcam as ec
from embedcam.datasets import DatasetIndex, ImageDataset, detect_format, load_roboflow
from embedcam.errors import ConfigurationError, DataError

H, W = 32, 64  # non-square, powers of two: YOLO's normalised numbers are exact in binary
CLASSES = ["apple", "banana", "cherry"]

# (split, file name, main class, [(class, [x0, y0, x1, y1]), ...]) in the internal convention.
# Quirks: Roboflow .rf.<hash> names, `valid` split, cherry only in train, banana missing from test,
# a2 holds two apple boxes plus a smaller banana (an "other object"), a3 touches the image edge.
ANNOTATIONS = [
    ("train", "a1_jpg.rf.0a1b2c.jpg", "apple", [("apple", [4, 2, 16, 10])]),
    (
        "train",
        "a2_jpg.rf.9f8e7d.jpg",
        "apple",
        [("apple", [2, 2, 10, 10]), ("apple", [20, 4, 30, 12]), ("banana", [32, 16, 44, 24])],
    ),
    ("train", "b1_jpg.rf.11aa22.jpg", "banana", [("banana", [8, 4, 40, 28])]),
    ("train", "c1_png.rf.33cc44.jpg", "cherry", [("cherry", [0, 0, 12, 8])]),
    ("valid", "b2_jpg.rf.55ee66.jpg", "banana", [("banana", [16, 8, 32, 24])]),
    ("test", "a3_jpg.rf.77ff88.jpg", "apple", [("apple", [40, 16, 64, 32])]),
]
LICENSE = "CC BY 4.0"


def _write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=90)


def write_export(root: Path, fmt: str, yolo_names: str = "list") -> Path:
    """Write the fixture export in one Roboflow layout, with that layout's quirks."""
    root.mkdir(parents=True)
    splits = sorted({a[0] for a in ANNOTATIONS})
    for k, (split, name, cls, objs) in enumerate(ANNOTATIONS):
        d = root / split
        if fmt == "folder":
            _write_image(d / cls / name, k)
        elif fmt == "yolo":
            _write_image(d / "images" / name, k)
            lines = []
            for c, (x0, y0, x1, y1) in objs:
                cx, cy = (x0 + x1) / 2 / W, (y0 + y1) / 2 / H
                lines.append(f"{CLASSES.index(c)} {cx} {cy} {(x1 - x0) / W} {(y1 - y0) / H}")
            (d / "labels").mkdir(parents=True, exist_ok=True)
            (d / "labels" / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")
        else:
            _write_image(d / name, k)
        if fmt == "voc":
            # tags out of the usual order, floats, extra tags: parse by name
            objects = "".join(
                f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<bndbox><ymin>{y0 + 1.0}</ymin><xmin>{x0 + 1.0}</xmin><ymax>{float(y1)}</ymax>"
                f"<xmax>{float(x1)}</xmax></bndbox><difficult>0</difficult></object>"
                for c, (x0, y0, x1, y1) in objs
            )
            (d / f"{Path(name).stem}.xml").write_text(
                f"<annotation><folder></folder><filename>{name}</filename><size>"
                f"<height>{H}</height><width>{W}</width><depth>3</depth></size>{objects}"
                "</annotation>"
            )
    if fmt == "csv":
        for split in splits:
            rows = [a for a in ANNOTATIONS if a[0] == split]
            # each split lists only the classes it has, as Roboflow does; header has spaces
            cols = [c for c in CLASSES if any(r[2] == c for r in rows)]
            text = "filename," + ",".join(f" {c}" for c in cols) + "\n"
            for _, name, cls, _ in rows:
                text += name + "," + ",".join(" 1" if c == cls else " 0" for c in cols) + "\n"
            (root / split / "_classes.csv").write_text(text)
    if fmt == "coco":
        for split in splits:
            rows = [a for a in ANNOTATIONS if a[0] == split]
            cats = [{"id": 0, "name": "fruit", "supercategory": "none"}] + [
                {"id": i + 1, "name": c, "supercategory": "fruit"}
                for i, c in enumerate(CLASSES)
                if split == "train" or any(r[2] == c for r in rows)
            ]
            images, anns = [], []
            for i, (_, name, _, objs) in enumerate(rows):
                images.append({"id": i, "file_name": name, "height": H, "width": W})
                for c, (x0, y0, x1, y1) in objs:
                    anns.append(
                        {
                            "id": len(anns),
                            "image_id": i,
                            "category_id": CLASSES.index(c) + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": (x1 - x0) * (y1 - y0),
                            "segmentation": [],
                            "iscrowd": 0,
                        }
                    )
            data = {
                "licenses": [{"id": 1, "name": LICENSE, "url": ""}],
                "categories": cats[::-1],  # order in the file must not matter
                "images": images,
                "annotations": anns,
            }
            (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    if fmt == "yolo":
        names = (
            "names: [" + ", ".join(f"'{c}'" for c in CLASSES) + "]"
            if yolo_names == "list"
            else "names:\n" + "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
        )
        (root / "data.yaml").write_text(
            f"train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
            f"nc: {len(CLASSES)}\n{names}\n"
            f"roboflow:\n  workspace: w\n  project: fruit\n  version: 1\n  license: {LICENSE}\n"
        )
    if fmt in ("folder", "csv", "voc"):
        (root / "README.dataset.txt").write_text(
            f"# fruit > 2024\nhttps://universe.roboflow.com/x\n\nLicense: {LICENSE}\n"
        )
    return root


FORMATS = ["folder", "csv", "coco", "yolo", "voc"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("exports")
    out = {f: write_export(base / f, f) for f in FORMATS}
    out["yolo-dict"] = write_export(base / "yolo-dict", "yolo", yolo_names="dict")
    return out


def _rows(index: DatasetIndex) -> list[tuple[str, str, int, str]]:
    return [(s.split, s.path.name, s.label, s.class_name) for s in index.samples]


EXPECTED_ROWS = [
    ("train", "a1_jpg.rf.0a1b2c.jpg", 0, "apple"),
    ("train", "a2_jpg.rf.9f8e7d.jpg", 0, "apple"),
    ("train", "b1_jpg.rf.11aa22.jpg", 1, "banana"),
    ("train", "c1_png.rf.33cc44.jpg", 2, "cherry"),
    ("valid", "b2_jpg.rf.55ee66.jpg", 1, "banana"),
    ("test", "a3_jpg.rf.77ff88.jpg", 0, "apple"),
]


@pytest.mark.parametrize("fmt", [*FORMATS, "yolo-dict"])
def test_every_layout_loads_the_same_samples(exports: dict[str, Path], fmt: str) -> None:
    index = load_roboflow(exports[fmt])
    assert index.format == fmt.split("-")[0]
    assert detect_format(exports[fmt]) == index.format
    assert index.classes == CLASSES
    assert _rows(index) == EXPECTED_ROWS
    assert index.splits == ["train", "valid", "test"]
    assert index.metadata["license"] == LICENSE
    assert all(s.size == (H, W) for s in index.samples)
    assert index.samples[0].source_name == "a1.jpg"
    assert index.samples[3].source_name == "c1.png"
    assert index.has_boxes == (index.format in ("coco", "yolo", "voc"))


@pytest.mark.parametrize("fmt", ["coco", "yolo", "yolo-dict", "voc"])
def test_boxes_match_the_annotation_exactly(exports: dict[str, Path], fmt: str) -> None:
    index = load_roboflow(exports[fmt])
    for s, (_, _, cls, objs) in zip(index.samples, ANNOTATIONS):
        own = [tuple(float(v) for v in b) for c, b in objs if c == cls]
        others = [(c, tuple(float(v) for v in b)) for c, b in objs if c != cls]
        assert list(s.boxes) == own
        assert list(s.other_objects) == others
    # the two-apple image keeps both boxes, the banana goes to other_objects
    a2 = index.samples[1]
    assert torch.equal(a2.box_tensor(), torch.tensor([[2.0, 2, 10, 10], [20, 4, 30, 12]]))


def test_coco_yolo_voc_boxes_identical(exports: dict[str, Path]) -> None:
    boxes = {
        f: [s.box_tensor() for s in load_roboflow(exports[f]).samples]
        for f in ("coco", "yolo", "voc")
    }
    for a, b, c in zip(boxes["coco"], boxes["yolo"], boxes["voc"]):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_split_and_counts(exports: dict[str, Path]) -> None:
    index = load_roboflow(exports["coco"])
    valid = index.split("valid")
    assert [s.path.name for s in valid.samples] == ["b2_jpg.rf.55ee66.jpg"]
    assert valid.classes == CLASSES  # the full class list is kept
    assert index.class_counts() == {"apple": 3, "banana": 2, "cherry": 1}
    assert index.labels().tolist() == [0, 0, 1, 2, 1, 0]
    assert [s.path.name for s in index] == [row[1] for row in EXPECTED_ROWS]  # iterates samples
    with pytest.raises(DataError, match="'val'"):
        index.split("val")


def test_index_json_roundtrip(exports: dict[str, Path], tmp_path: Path) -> None:
    index = load_roboflow(exports["voc"])
    index.save_json(tmp_path / "index.json")
    again = DatasetIndex.load_json(tmp_path / "index.json")
    assert again == index


# -- additional labels ---------------------------------------------------------------------------


def test_extra_labels_from_csv_and_json(exports: dict[str, Path], tmp_path: Path) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(
        "class, category, group\napple, fruit, pome\nbanana, fruit, berry\ncherry, fruit, drupe\n"
    )
    json_file = tmp_path / "labels.json"
    json_file.write_text(
        json.dumps(
            {
                "cherry": {"category": "fruit", "group": "drupe"},
                "apple": {"category": "fruit", "group": "pome"},
                "banana": {"category": "fruit", "group": "berry"},
            }
        )
    )
    a = load_roboflow(exports["coco"], extra_labels=csv_file)
    b = load_roboflow(exports["folder"], extra_labels=json_file)
    assert a.label_names == ["category", "group"]
    assert a.class_labels == b.class_labels
    assert a.samples[2].additional_labels == {"category": "fruit", "group": "berry"}
    # codes number values by first appearance over the class list
    assert a.label_codes().tolist() == [[0, 0], [0, 1], [0, 2]]
    assert a.label_codes(["group"]).tolist() == [[0], [1], [2]]


def test_class_missing_from_mapping_is_an_error(exports: dict[str, Path], tmp_path: Path) -> None:
    mapping = tmp_path / "labels.csv"
    mapping.write_text("class,group\napple,pome\nbanana,berry\n")
    with pytest.raises(DataError, match=r"missing from the additional-labels.*\['cherry'\]"):
        load_roboflow(exports["coco"], extra_labels=mapping)
    index = load_roboflow(exports["coco"], extra_labels=mapping, allow_missing_labels=True)
    assert index.samples[3].additional_labels == {}
    with pytest.raises(DataError, match=r"classes \['cherry'\] have no additional labels"):
        index.label_codes()


def test_unknown_class_in_mapping_is_an_error(exports: dict[str, Path], tmp_path: Path) -> None:
    mapping = tmp_path / "labels.csv"
    mapping.write_text("class,group\napple,a\nbanana,b\ncherry,c\ndurian,d\nelder,e\n")
    with pytest.raises(DataError, match=r"not in the export: \['durian', 'elder'\]"):
        load_roboflow(exports["coco"], extra_labels=mapping)


def test_mapping_with_inconsistent_columns(tmp_path: Path) -> None:
    mapping = tmp_path / "labels.json"
    mapping.write_text(json.dumps([{"class": "a", "group": "x"}, {"class": "b", "kind": "y"}]))
    with pytest.raises(DataError, match="class 'b' has labels"):
        ec.datasets.read_extra_labels(mapping)
    mapping.write_text(json.dumps([{"class": "a", "group": "x"}, {"class": "a", "group": "y"}]))
    with pytest.raises(DataError, match="lists class 'a' twice"):
        ec.datasets.read_extra_labels(mapping)


# -- bad inputs ----------------------------------------------------------------------------------


def _copy(exports: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exports[fmt], tmp_path / fmt))


def test_missing_annotation_file(exports: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(exports, "coco", tmp_path)
    (root / "valid" / "_annotations.coco.json").unlink()
    with pytest.raises(DataError, match=r"valid/_annotations\.coco\.json' is missing"):
        load_roboflow(root)
    root = _copy(exports, "yolo", tmp_path)
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match=r"data\.yaml' is missing"):
        load_roboflow(root, format="yolo")


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_image_names_the_file(exports: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    root = _copy(exports, fmt, tmp_path)
    bad = next(root.rglob("b1_jpg.rf.11aa22.jpg"))
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"b1_jpg\.rf\.11aa22\.jpg' is corrupt"):
        load_roboflow(root)
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index.skipped] == ["b1_jpg.rf.11aa22.jpg"]
    assert "b1_jpg.rf.11aa22.jpg" not in [s.path.name for s in index.samples]
    assert len(index) == len(ANNOTATIONS) - 1


def test_truncated_image_and_missing_image(exports: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(exports, "coco", tmp_path)
    f = root / "train" / "a1_jpg.rf.0a1b2c.jpg"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError, match=r"a1_jpg\.rf\.0a1b2c\.jpg' is corrupt"):
        load_roboflow(root)
    f.unlink()
    with pytest.raises(DataError, match=r"a1_jpg\.rf\.0a1b2c\.jpg' does not exist"):
        load_roboflow(root)


def test_boxes_asked_of_a_classification_export(exports: dict[str, Path]) -> None:
    for fmt in ("folder", "csv"):
        index = load_roboflow(exports[fmt])
        with pytest.raises(DataError, match=f"the '{fmt}' export .* has no boxes"):
            index.require_boxes()
        with pytest.raises(DataError, match="has no boxes"):
            ImageDataset(index, size=16, with_boxes=True)
        with pytest.raises(DataError, match="a1_jpg.rf.0a1b2c.jpg' has no boxes"):
            index.samples[0].box_tensor()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("0 0.5 0.5 0.25", "has 4 fields"),
        ("x 0.5 0.5 0.2 0.2", "not 'cls"),
        ("7 .5 .5 .2 .2", "class 7"),
    ],
)
def test_malformed_yolo_line(exports: dict[str, Path], tmp_path: Path, line: str, why: str) -> None:
    root = _copy(exports, "yolo", tmp_path)
    label = root / "valid" / "labels" / "b2_jpg.rf.55ee66.txt"
    label.write_text(f"{line}\n")
    with pytest.raises(DataError, match=rf"b2_jpg\.rf\.55ee66\.txt' line 1 .*{why}"):
        load_roboflow(root)
    index = load_roboflow(root, skip_invalid=True)
    assert [s.path.name for s in index.skipped] == ["b2_jpg.rf.55ee66.txt"]


def test_yolo_polygon_line_becomes_its_bounding_box(
    exports: dict[str, Path], tmp_path: Path
) -> None:
    root = _copy(exports, "yolo", tmp_path)
    # triangle (8, 8), (24, 8), (16, 24) in a 64 x 32 image, normalised
    (root / "valid" / "labels" / "b2_jpg.rf.55ee66.txt").write_text(
        "1 0.125 0.25 0.375 0.25 0.25 0.75\n"
    )
    index = load_roboflow(root)
    assert index.split("valid").samples[0].boxes == ((8.0, 8.0, 24.0, 24.0),)


def test_missing_label_file_and_empty_annotations(exports: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(exports, "yolo", tmp_path)
    (root / "test" / "labels" / "a3_jpg.rf.77ff88.txt").unlink()
    with pytest.raises(DataError, match=r"a3_jpg\.rf\.77ff88\.jpg' has no label file"):
        load_roboflow(root)
    root = _copy(exports, "voc", tmp_path)
    (root / "test" / "a3_jpg.rf.77ff88.xml").unlink()
    with pytest.raises(DataError, match=r"a3_jpg\.rf\.77ff88\.jpg' has no Pascal VOC annotation"):
        load_roboflow(root)


def test_malformed_voc_coordinate(exports: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(exports, "voc", tmp_path)
    xml = root / "valid" / "b2_jpg.rf.55ee66.xml"
    xml.write_text(xml.read_text().replace("<xmax>32.0</xmax>", "<xmax>wide</xmax>"))
    with pytest.raises(DataError, match=r"b2_jpg\.rf\.55ee66\.xml'.*<xmax> is 'wide'"):
        load_roboflow(root)


def test_csv_row_with_two_classes(exports: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(exports, "csv", tmp_path)
    table = root / "valid" / "_classes.csv"
    table.write_text("filename, apple, banana\nb2_jpg.rf.55ee66.jpg, 1, 1\n")
    with pytest.raises(DataError, match=r"b2_jpg.*has 2 classes \['apple', 'banana'\]"):
        load_roboflow(root)


def test_layout_detection_errors(exports: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no split folders"):
        load_roboflow(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="could not detect the layout"):
        load_roboflow(tmp_path)
    root = _copy(exports, "coco", tmp_path)
    (root / "train" / "_classes.csv").write_text("filename, apple\n")
    with pytest.raises(DataError, match=r"matches several layouts \['coco', 'csv'\]"):
        load_roboflow(root)
    assert load_roboflow(root, format="coco").format == "coco"
    with pytest.raises(ConfigurationError, match="unknown export format 'tfrecord'"):
        load_roboflow(root, format="tfrecord")  # type: ignore[arg-type]


def test_index_validation_rejects_inconsistent_samples() -> None:
    sample = ec.datasets.Sample(path="x.jpg", split="train", label=1, class_name="a")
    with pytest.raises(DataError, match="class_name 'a' but label 1 is 'b2'"):
        DatasetIndex.build(
            root=".", format="folder", classes=["b", "b2"], samples=[sample], has_boxes=False
        )
    boxed = ec.datasets.Sample(
        path="y.jpg", split="train", label=0, class_name="a", boxes=((5.0, 0.0, 2.0, 4.0),)
    )
    with pytest.raises(DataError, match=r"y\.jpg.*x1 <= x0"):
        DatasetIndex.build(root=".", format="coco", classes=["a"], samples=[boxed], has_boxes=True)
