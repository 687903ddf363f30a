"""Composites of real cut-outs on real photos, and COCO segmentations / split folders in the reader.

The composites are built from the committed grocery-mini fixture (6 products of the Grocery
Store dataset, Klasson et al., WACV 2019, MIT licence): ``iconic/<class>.jpg`` on white and real
store photos in ``<split>/<class>/*.jpg``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedcam.datasets import (
    CompositeConfig,
    CompositeRenderer,
    ImageDataset,
    compose_export,
    cutout_mask,
    load_cutout,
    load_roboflow,
)
from embedcam.datasets import _segmentation as seg
from embedcam.datasets import composite as composite_module
from embedcam.datasets._io import read_mask, read_rgb
from embedcam.errors import ConfigurationError, DataError

FIXTURE = Path(__file__).parent / "fixtures" / "grocery-mini"
ICONIC = FIXTURE / "iconic"
PHOTOS = FIXTURE / "train"  # 6 classes x 8 real photos
CLASSES = [
    "Arla-Medium-Fat-Milk",
    "Arla-Standard-Milk",
    "Granny-Smith",
    "Pink-Lady",
    "Red-Bell-Pepper",
    "Yellow-Onion",
]
CREDIT = (
    'M. Klasson, C. Zhang, H. Kjellström, "A Hierarchical Grocery Store Image Dataset with '
    'Visual and Semantic Labels", WACV 2019'
)
TINY = {
    "image_size": 64,
    "images_per_class": {"train": 3, "valid": 1, "test": 2},
    "license": "MIT",
    "credit": CREDIT,
}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("composite") / "export"
    compose_export(ICONIC, PHOTOS, out, TINY, labels=FIXTURE / "extra_labels.csv")
    return out


# -- the export -----------------------------------------------------------------------------------


def test_export_reads_back_with_boxes_and_masks(export: Path) -> None:
    index = load_roboflow(export, extra_labels=export / "additional_labels.csv")
    assert index.format == "coco" and index.has_boxes
    assert index.classes == CLASSES
    assert len(index) == 6 * 6 and index.splits == ["train", "valid", "test"]
    assert index.class_labels["Granny-Smith"] == {"category": "Fruit", "group": "Apple"}
    assert index.metadata["license"] == "MIT"
    readme = (export / "README.dataset.txt").read_text(encoding="utf-8")
    assert CREDIT in readme and "License: MIT" in readme
    coco = json.loads((export / "train" / "_annotations.coco.json").read_text(encoding="utf-8"))
    assert coco["categories"][0] == {"id": 0, "name": "embedcam-composite", "supercategory": "none"}
    assert coco["info"]["contributor"] == CREDIT and coco["licenses"][0]["name"] == "MIT"
    for img, ann in zip(coco["images"], coco["annotations"]):
        assert ann["image_id"] == img["id"] and ann["iscrowd"] == 0
        assert ann["segmentation"] and all(len(p) >= 6 for p in ann["segmentation"])
        mask = read_mask(export / "train" / img["extra"]["mask"])
        assert ann["area"] == int(mask.sum())
        assert img["extra"]["object"] == f"{CLASSES[ann['category_id'] - 1]}.jpg"
        assert img["extra"]["background"].endswith(".jpg")
    for s in index:
        assert s.mask_path is not None and s.has_mask and s.size == (64, 64)
        m = s.load_mask().numpy()
        rows, cols = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        tight = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        assert s.boxes == (tight,)
        assert 0.02 < m.mean() < 0.9
    ds = ImageDataset(index, size=32, split="train", with_boxes=True, with_masks=True)
    item = ds[0]
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.bool


def test_mask_is_exactly_what_was_pasted(tmp_path: Path) -> None:
    cfg = {**TINY, "image_format": "png", "images_per_class": {"train": 2}}
    index = compose_export(ICONIC, PHOTOS, tmp_path / "png", cfg)
    renderer = CompositeRenderer(ICONIC, PHOTOS, cfg)
    for s in index:
        i = int(s.path.name.split("_train_")[1][:5])
        r = renderer.render("train", s.label, i)
        written = read_rgb(s.path)
        mask = s.load_mask().numpy()
        assert np.array_equal(written, r.image) and np.array_equal(mask, r.mask)
        changed = (written != r.background_image).any(axis=2)
        # outside the mask the background photo is untouched; inside, the product replaced it
        assert not changed[~mask].any()
        assert changed[mask].mean() > 0.95
        assert s.extra["background"] == r.background and s.extra["home"] == r.home


def test_polygons_agree_with_the_exact_masks(export: Path, tmp_path: Path) -> None:
    root = tmp_path / "polygons"
    shutil.copytree(export, root)
    for split in ("train", "valid", "test"):
        f = root / split / "_annotations.coco.json"
        coco = json.loads(f.read_text(encoding="utf-8"))
        for img in coco["images"]:
            img["extra"].pop("mask")
        f.write_text(json.dumps(coco), encoding="utf-8")
    exact = load_roboflow(export)
    from_polygons = load_roboflow(root)
    for a, b in zip(exact, from_polygons):
        assert b.mask_path is None and b.segmentation is not None and b.has_mask
        ma, mb = a.load_mask().numpy(), b.load_mask().numpy()
        iou = (ma & mb).sum() / (ma | mb).sum()
        assert iou >= 0.95, (a.path.name, iou)
    # The torch dataset finds the segmentation masks by itself, at the item's size.
    ds = ImageDataset(from_polygons, size=32, split="train")
    assert ds.with_masks
    item = ds[0]
    sample = [s for s in from_polygons if s.split == "train"][0]
    assert item["mask"].shape == (32, 32) and item["mask"].any()
    assert sample.has_mask


def test_home_flags_follow_the_shortcut(tmp_path: Path) -> None:
    counts = {"train": 8, "test": 8}
    always = compose_export(
        ICONIC,
        PHOTOS,
        tmp_path / "one",
        {**TINY, "images_per_class": counts, "shortcut": {"train": 1.0, "test": 1.0}},
    )
    never = compose_export(
        ICONIC,
        PHOTOS,
        tmp_path / "zero",
        {**TINY, "images_per_class": counts, "shortcut": {"train": 0.0, "test": 0.0}},
    )
    assert all(s.extra["home"] for s in always)
    assert all(s.extra["background"] in s.extra["home_backgrounds"] for s in always)
    assert not any(s.extra["home"] for s in never)
    homes = {b for s in always for b in s.extra["home_backgrounds"]}
    assert len(homes) == 6  # one photo per class, disjoint
    assert not any(s.extra["background"] in homes for s in never)  # off-home: the shared pool
    # a photo filed under a class's own name is never that class's home
    assert all(Path(s.extra["home_backgrounds"][0]).parent.name != s.class_name for s in always)
    # only the backgrounds change with the shortcut: same object, same place
    for a, b in zip(always, never):
        assert a.path.name == b.path.name and a.boxes == b.boxes
        assert torch.equal(a.load_mask(), b.load_mask())
        assert a.extra["object"] == b.extra["object"] and a.extra["flipped"] == b.extra["flipped"]


def test_home_rate_matches_an_intermediate_shortcut() -> None:
    p, n = 0.6, 60
    r = CompositeRenderer(ICONIC, PHOTOS, {**TINY, "shortcut": {"valid": p}})
    homes = [r.render("valid", c, i).home for c in range(len(r.classes)) for i in range(n)]
    se = math.sqrt(p * (1 - p) / len(homes))
    assert abs(np.mean(homes) - p) < 4 * se


def test_deterministic_for_a_seed(export: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    compose_export(ICONIC, PHOTOS, again, TINY, labels=FIXTURE / "extra_labels.csv")
    assert _files(export) == _files(again)
    other = compose_export(ICONIC, PHOTOS, tmp_path / "seed1", {**TINY, "seed": 1})
    first = load_roboflow(export)
    assert sum(a.boxes != b.boxes for a, b in zip(first, other)) >= len(first) // 2


def test_reuse_checks_config_and_sources(tmp_path: Path) -> None:
    iconic = tmp_path / "iconic"
    shutil.copytree(ICONIC, iconic)
    out = tmp_path / "out"
    first = compose_export(iconic, PHOTOS, out, TINY)
    stamp = (out / "embedcam_composite.json").stat().st_mtime_ns
    with pytest.raises(DataError, match="exists and is not empty.*'reuse'"):
        compose_export(iconic, PHOTOS, out, TINY)
    assert compose_export(iconic, PHOTOS, out, TINY, if_exists="reuse") == first
    assert (out / "embedcam_composite.json").stat().st_mtime_ns == stamp  # not rewritten
    with pytest.raises(DataError, match="config or labels changed"):
        compose_export(iconic, PHOTOS, out, {**TINY, "seed": 3}, if_exists="reuse")
    # the same file names with other bytes are other sources
    img = Image.open(iconic / "Pink-Lady.jpg").convert("RGB")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(iconic / "Pink-Lady.jpg", quality=90)
    with pytest.raises(DataError, match="source files changed"):
        compose_export(iconic, PHOTOS, out, TINY, if_exists="reuse")
    replaced = compose_export(iconic, PHOTOS, out, TINY, if_exists="overwrite")
    assert compose_export(iconic, PHOTOS, out, TINY, if_exists="reuse") == replaced
    # a folder that is not a composite export is never replaced
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="exists and is not empty; choose a new folder$"):
        compose_export(iconic, PHOTOS, other, TINY, if_exists="overwrite")
    assert (other / "notes.txt").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_bad_cutouts_are_refused_naming_the_file(tmp_path: Path) -> None:
    objects = {c: ICONIC / f"{c}.jpg" for c in CLASSES[:2]}
    photo = next(PHOTOS.rglob("*.jpg"))
    with pytest.raises(DataError, match=rf"{photo.name}' has no white background"):
        compose_export({**objects, "photo": photo}, PHOTOS, tmp_path / "a", TINY)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (60, 60), (255, 255, 255)).save(blank)
    with pytest.raises(DataError, match=r"blank\.png'.*covers 0\.0%.*no product found"):
        compose_export({**objects, "blank": blank}, PHOTOS, tmp_path / "b", TINY)
    full = tmp_path / "full.png"
    arr = np.full((100, 100, 3), 255, np.uint8)
    arr[1:-1, 1:-1] = (30, 90, 200)
    Image.fromarray(arr).save(full)
    with pytest.raises(DataError, match=r"full\.png'.*at most 95\.0% allowed"):
        compose_export({**objects, "full": full}, PHOTOS, tmp_path / "c", TINY)
    with pytest.raises(DataError, match=r"do not exist: \['.*missing\.jpg'\]"):
        compose_export({**objects, "gone": tmp_path / "missing.jpg"}, PHOTOS, tmp_path / "d", TINY)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_config_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="object_area"):
        compose_export(ICONIC, PHOTOS, tmp_path / "a", {"object_area": (0.5, 0.1)})
    with pytest.raises(ConfigurationError, match="shortcut"):
        compose_export(ICONIC, PHOTOS, tmp_path / "a", {"shortcut": {"test": 2.0}})
    with pytest.raises(ConfigurationError, match="convex names classes that are not objects"):
        compose_export(ICONIC, PHOTOS, tmp_path / "a", {**TINY, "convex": ("Banana",)})
    few = sorted(PHOTOS.rglob("*.jpg"))[:6]
    with pytest.raises(DataError, match="6 background photos are too few"):
        compose_export(ICONIC, few, tmp_path / "a", TINY)
    with pytest.raises(
        DataError, match=r"lacks additional labels for the classes \['Arla-Medium-Fat-Milk'"
    ):
        compose_export(
            ICONIC, PHOTOS, tmp_path / "a", TINY, labels={"Granny-Smith": {"group": "Apple"}}
        )


# -- the cut-out rule -----------------------------------------------------------------------------


def test_cutout_keeps_enclosed_white_and_drops_the_light_rim() -> None:
    img = np.full((80, 80, 3), 255, np.uint8)
    img[20:60, 20:60] = (40, 40, 40)  # a dark outline ...
    img[23:57, 23:57] = (255, 255, 255)  # ... around a pure white face (a milk carton)
    img[19, 20:60] = (235, 225, 225)  # a light anti-aliased rim above it: halo
    m = cutout_mask(img)
    assert m[20:60, 20:60].all()  # the white face stays object
    assert not m[19].any() and m.sum() == 40 * 40


def test_cutout_keeps_several_pieces_and_drops_specks() -> None:
    img = np.full((100, 100, 3), 255, np.uint8)
    img[10:40, 10:40] = (200, 20, 20)
    img[50:90, 50:90] = (200, 20, 20)
    img[5, 90] = (0, 0, 0)  # a speck of dust
    m = cutout_mask(img)
    assert m[10:40, 10:40].all() and m[50:90, 50:90].all() and not m[5, 90]


def test_convex_hull_and_alpha_cutouts(tmp_path: Path) -> None:
    img = np.full((80, 80, 3), 255, np.uint8)
    img[20:60, 20:60] = (200, 20, 20)
    img[20:30, 45:60] = 255  # a white corner of a carton meets the white background
    assert not cutout_mask(img)[25, 50]
    assert cutout_mask(img, convex=True)[25, 50]
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[..., :3] = 255  # white product on a transparent background: alpha decides
    rgba[10:30, 5:25, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "white.png")
    cut = load_cutout(tmp_path / "white.png")
    assert cut.mask.shape == (20, 20) and cut.mask.all() and cut.name == "white.png"


def test_real_white_cartons_lose_only_slivers_and_the_hull_restores_them() -> None:
    # the fixture's milk cartons are white-faced packages on white: where a white face meets the
    # white background without a visible edge the rule cannot see it, so those pixels become
    # background (bays along the edge); convex=True (CompositeConfig.convex) restores the carton
    for name in ("Arla-Medium-Fat-Milk", "Arla-Standard-Milk"):
        rgb = read_rgb(ICONIC / f"{name}.jpg")
        plain = cutout_mask(rgb, CompositeConfig())
        hull = cutout_mask(rgb, CompositeConfig(), convex=True)
        assert 0.9 * hull.sum() <= plain.sum() < hull.sum()
        assert not (plain & ~hull).any()
        # the white face enclosed by print stays object: no holes in the plain mask
        from scipy import ndimage

        assert np.array_equal(ndimage.binary_fill_holes(plain), plain)
    # fruit and vegetables are not white: the rule and the hull differ only in concavities
    for name in ("Granny-Smith", "Red-Bell-Pepper"):
        rgb = read_rgb(ICONIC / f"{name}.jpg")
        assert cutout_mask(rgb).sum() >= 0.9 * cutout_mask(rgb, convex=True).sum()


# -- the reader: COCO segmentations ---------------------------------------------------------------


def test_polygon_rasterises_by_pixel_centres() -> None:
    # square from (1, 1) to (4, 3) in COCO pixel coordinates: x = 1..3, y = 1..2
    square = [[1, 1, 4, 1, 4, 3, 1, 3]]
    expected = np.zeros((4, 5), bool)
    expected[1:3, 1:4] = True
    assert np.array_equal(seg.rasterize_segmentations([square], (4, 5), "t"), expected)
    # a right triangle (0, 0), (4, 0), (0, 4): pixel centres with x + y < 4
    tri = seg.rasterize_segmentations([[[0, 0, 4, 0, 0, 4]]], (4, 4), "t")
    assert tri.astype(int).tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]]
    # two polygons of one annotation are united
    two = seg.rasterize_segmentations(
        [[[0, 0, 1, 0, 1, 1, 0, 1], [3, 3, 4, 3, 4, 4, 3, 4]]], (4, 4), "t"
    )
    assert np.flatnonzero(two).tolist() == [0, 15]


def test_rle_both_encodings_decode_to_known_pixels() -> None:
    # the 3 x 4 mask below, column-major: col0 = 0 1 1, col1 = 1 0 0, col2 = 0 0 0, col3 = 1 1 1
    expected = np.array([[0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]], dtype=bool)
    counts = [1, 3, 5, 3]  # runs over 0 1 1 1 0 0 0 0 0 1 1 1
    plain = {"counts": counts, "size": [3, 4]}
    assert np.array_equal(seg.rasterize_segmentations([plain], (3, 4), "t"), expected)
    # compressed: 1 -> '1', 3 -> '3', 5 -> '5', then 3 - counts[1] = 0 -> '0'
    assert seg.rle_counts_to_string(counts) == "1350"
    packed = {"counts": "1350", "size": [3, 4]}
    assert np.array_equal(seg.rasterize_segmentations([packed], (3, 4), "t"), expected)
    assert seg.encode_rle(expected) == plain
    # multi-character numbers and negative deltas: 40 = 8 + 1 << 5 -> 'X1'; 39 - 40 = -1 -> 'O'
    assert seg.rle_counts_from_string("X1").tolist() == [40]
    assert seg.rle_counts_to_string([2, 40, 3, 39]) == "2X13O"
    assert seg.rle_counts_from_string("2X13O").tolist() == [2, 40, 3, 39]
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.random(tuple(rng.integers(1, 40, 2))) < rng.random()
        enc = seg.encode_rle(m)
        s = seg.rle_counts_to_string(enc["counts"])
        assert np.array_equal(seg.decode_rle(seg.rle_counts_from_string(s), m.shape), m)


def test_polygon_outline_of_a_mask_round_trips() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    for _ in range(30):
        m = ndimage.gaussian_filter(rng.random((40, 50)), 2.0) > 0.5
        m = ndimage.binary_fill_holes(m, structure=np.ones((3, 3)))
        polys = seg.mask_to_polygons(m)
        back = seg.rasterize_segmentations([polys], m.shape, "t") if polys else ~m & m
        assert np.array_equal(back, m)


def _coco_export(root: Path, images: list[dict], anns: list[dict], split: str = "train") -> Path:
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    for img in images:
        Image.new("RGB", (img["width"], img["height"]), (90, 90, 90)).save(d / img["file_name"])
    coco = {
        "images": images,
        "categories": [
            {"id": 0, "name": "p", "supercategory": "none"},
            {"id": 1, "name": "a", "supercategory": "p"},
            {"id": 2, "name": "b", "supercategory": "p"},
        ],
        "annotations": anns,
    }
    (d / "_annotations.coco.json").write_text(json.dumps(coco), encoding="utf-8")
    return root


def _ann(i: int, image: int, cat: int, bbox: list[float], segmentation: object) -> dict:
    return {
        "id": i,
        "image_id": image,
        "category_id": cat,
        "bbox": bbox,
        "area": 1,
        "iscrowd": 0,
        "segmentation": segmentation,
    }


def test_reader_builds_masks_from_segmentations(tmp_path: Path) -> None:
    images = [
        {"id": 0, "file_name": "poly.jpg", "height": 6, "width": 8},
        {"id": 1, "file_name": "rle.jpg", "height": 3, "width": 4},
        {"id": 2, "file_name": "boxonly.jpg", "height": 6, "width": 8},
        {"id": 3, "file_name": "partial.jpg", "height": 6, "width": 8},
    ]
    anns = [
        _ann(0, 0, 1, [1, 1, 3, 2], [[1, 1, 4, 1, 4, 3, 1, 3]]),
        _ann(1, 0, 1, [5, 4, 2, 2], [[5, 4, 7, 4, 7, 6, 5, 6]]),
        _ann(2, 0, 2, [0, 0, 1, 1], [[0, 0, 1, 0, 1, 1]]),  # another class: not in the mask
        _ann(3, 1, 1, [0, 0, 4, 3], {"counts": "1350", "size": [3, 4]}),
        _ann(4, 2, 1, [1, 1, 3, 2], []),
        _ann(5, 3, 1, [1, 1, 3, 2], [[1, 1, 4, 1, 4, 3, 1, 3]]),
        _ann(6, 3, 1, [5, 4, 2, 2], []),  # unsegmented object of the class: no partial mask
    ]
    index = load_roboflow(_coco_export(tmp_path, images, anns))
    by_name = {s.path.name: s for s in index}
    poly = by_name["poly.jpg"].load_mask().numpy()
    expected = np.zeros((6, 8), bool)
    expected[1:3, 1:4] = True
    expected[4:6, 5:7] = True
    assert np.array_equal(poly, expected)
    rle = by_name["rle.jpg"].load_mask().numpy()
    assert rle.astype(int).tolist() == [[0, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]]
    for name in ("boxonly.jpg", "partial.jpg"):
        assert by_name[name].segmentation is None and not by_name[name].has_mask
        with pytest.raises(DataError, match="has no object mask"):
            by_name[name].load_mask()
    # the index survives its JSON round trip with the segmentations
    index.save_json(tmp_path / "index.json")
    again = type(index).load_json(tmp_path / "index.json")
    assert torch.equal(again[-1].load_mask(), by_name["rle.jpg"].load_mask())


@pytest.mark.parametrize(
    ("segmentation", "why"),
    [
        ([[1, 1, 4, 1]], "polygon 0 has 4 coordinates"),
        ([[1, 1, 4, 1, 4]], "polygon 0 has 5 coordinates"),
        ([["a", 1, 4, 1, 4, 3]], "polygon 0 must be a list of numbers"),
        ({"counts": [1, 2], "size": [3, 4]}, "RLE runs add up to 3 pixels"),
        ({"counts": "1350", "size": [4, 3]}, r"RLE 'size' \[4, 3\] differs"),
        ({"counts": "13z", "size": [3, 4]}, "hold the character 'z'"),
        ({"counts": "1X", "size": [3, 4]}, "end in the middle of a number"),
        ({"counts": [1, -2, 13], "size": [3, 4]}, "non-negative integers"),
        ({"size": [3, 4]}, "needs exactly 'counts' and 'size'"),
        ("1350", "must be polygons"),
    ],
)
def test_malformed_segmentation_names_file_and_image(
    tmp_path: Path, segmentation: object, why: str
) -> None:
    images = [{"id": 7, "file_name": "img.jpg", "height": 3, "width": 4}]
    root = _coco_export(tmp_path, images, [_ann(11, 7, 1, [0, 0, 2, 2], segmentation)])
    with pytest.raises(
        DataError, match=rf"_annotations\.coco\.json', annotation 11 of image 'img\.jpg'.*{why}"
    ):
        load_roboflow(root)


def test_malformed_segmentation_can_be_skipped(tmp_path: Path) -> None:
    images = [
        {"id": 0, "file_name": "bad.jpg", "height": 3, "width": 4},
        {"id": 1, "file_name": "good.jpg", "height": 3, "width": 4},
    ]
    anns = [_ann(0, 0, 1, [0, 0, 2, 2], [[1, 1]]), _ann(1, 1, 1, [0, 0, 2, 2], [])]
    index = load_roboflow(_coco_export(tmp_path, images, anns), skip_invalid=True)
    assert [s.path.name for s in index] == ["good.jpg"]
    assert "malformed segmentation" in index.skipped[0].reason


def test_mask_file_outside_the_export_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    Image.new("L", (4, 3)).save(outside)
    images = [
        {
            "id": 0,
            "file_name": "img.jpg",
            "height": 3,
            "width": 4,
            "extra": {"mask": "../../secret.png"},
        }
    ]
    root = _coco_export(tmp_path / "export", images, [_ann(0, 0, 1, [0, 0, 2, 2], [])])
    with pytest.raises(
        DataError, match=r"mask file '\.\./\.\./secret\.png' of '.*img\.jpg'.*outside the export"
    ):
        load_roboflow(root)


# -- the reader: split folders --------------------------------------------------------------------


def test_val_and_validation_folders_are_the_valid_split(tmp_path: Path) -> None:
    images = [{"id": 0, "file_name": "img.jpg", "height": 3, "width": 4}]
    anns = [_ann(0, 0, 1, [0, 0, 2, 2], [])]
    for name in ("val", "validation"):
        root = tmp_path / name
        _coco_export(root, images, anns, split="train")
        _coco_export(root, images, anns, split=name)
        index = load_roboflow(root)
        assert index.splits == ["train", "valid"] and len(index.split("valid")) == 1
    # a folder export too
    root = tmp_path / "folder"
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (4, 3)).save(root / split / "a" / "x.jpg")
    assert load_roboflow(root).splits == ["train", "valid"]
    (root / "valid" / "a").mkdir(parents=True)
    Image.new("RGB", (4, 3)).save(root / "valid" / "a" / "y.jpg")
    with pytest.raises(
        DataError, match=r"several folders for the 'valid' split: \['valid/', 'val/'\]"
    ):
        load_roboflow(root)


# -- speed and docs -------------------------------------------------------------------------------


def test_build_decodes_each_photo_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps a build fast: no photo is decoded twice, backgrounds at JPEG draft size."""
    decoded: list[tuple[str, str, int | None]] = []
    decode = composite_module._decode

    def counting_decode(path: Path, what: str, draft: int | None = None, **kw: object) -> object:
        decoded.append((Path(path).relative_to(FIXTURE).as_posix(), what, draft))
        return decode(path, what, draft, **kw)

    monkeypatch.setattr(composite_module, "_decode", counting_decode)
    cfg = {**TINY, "images_per_class": {"train": 10}}
    index = compose_export(ICONIC, PHOTOS, tmp_path / "fast", cfg)
    assert len(index) == 60  # 6 classes x 10 images
    cutouts = [name for name, what, _ in decoded if what == "cut-out photo"]
    assert sorted(cutouts) == sorted(f"iconic/{p.name}" for p in ICONIC.iterdir())  # once each
    backgrounds = [(name, draft) for name, what, draft in decoded if what == "background photo"]
    assert len(cutouts) + len(backgrounds) == len(decoded)
    names = [name for name, _ in backgrounds]
    assert len(names) == len(set(names)) and len(names) <= 48  # 48 photos, none decoded twice
    draft = math.ceil(64 / CompositeConfig().background_crop[0])
    assert {d for _, d in backgrounds} == {draft}


def test_no_image_shows_a_photo_filed_under_its_own_class(tmp_path: Path) -> None:
    """Home or pool: a product is never pasted on a photo of its own shelf."""
    cfg = {**TINY, "images_per_class": {"train": 12, "valid": 4, "test": 12}}
    cfg["shortcut"] = {"train": 0.0, "valid": 0.0, "test": 0.0}  # every image from the pool
    renderer = CompositeRenderer(ICONIC, PHOTOS, cfg)
    for c, pool in renderer.pools.items():
        assert pool and all(renderer.background_names[b].split("/")[0] != c for b in pool)
        assert set(pool) <= set(renderer.pool)
    index = compose_export(ICONIC, PHOTOS, tmp_path / "e", cfg)
    folders = [Path(s.extra["background"]).parts[0] for s in index]
    assert all(f != index.classes[s.label] for f, s in zip(folders, index))
    # the pool is shared: other classes' folders do appear
    assert len(set(folders)) == len(CLASSES)
