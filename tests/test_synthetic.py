"""The synthetic shelf generator: determinism, masks vs. boxes, the planted shortcut, the export."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedcam.datasets import (
    GLYPHS,
    ShelfConfig,
    ShelfRenderer,
    generate_shelf,
    load_roboflow,
    save_preview,
)
from embedcam.errors import ConfigurationError, DataError

SMALL = {
    "image_size": 32,
    "families": 2,
    "siblings": 2,
    "images_per_class": {"train": 3, "test": 2},
}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    cfg = {**SMALL, "distractors": 2, "occlusion": 0.5}
    generate_shelf(tmp_path / "a", cfg)
    generate_shelf(tmp_path / "b", cfg)
    generate_shelf(tmp_path / "c", {**cfg, "seed": 1})
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert len(a) == 2 * (4 * 5) + 1 * 2 + 3  # images + masks, 2 COCO files, 3 root files
    # another seed: other file hashes and other pictures
    a_imgs = [a[k] for k in sorted(a) if k.endswith(".jpg")]
    c_imgs = [c[k] for k in sorted(c) if k.endswith(".jpg")]
    assert len(a_imgs) == len(c_imgs) == 20
    assert sum(x != y for x, y in zip(a_imgs, c_imgs)) == 20
    assert set(a).isdisjoint(k for k in c if k.endswith(".jpg"))


def test_export_is_a_roboflow_coco_export(tmp_path: Path) -> None:
    index = generate_shelf(tmp_path / "shelf", SMALL)
    root = tmp_path / "shelf"
    assert sorted(p.name for p in root.iterdir()) == [
        "README.dataset.txt",
        "additional_labels.csv",
        "embedcam_shelf.json",
        "test",
        "train",
    ]
    coco = json.loads((root / "train" / "_annotations.coco.json").read_text())
    assert coco["categories"][0] == {"id": 0, "name": "embedcam-shelf", "supercategory": "none"}
    assert len(coco["images"]) == 12 and len(coco["annotations"]) == 12
    # the generic reader (format detection included) gives the same index
    again = load_roboflow(root, extra_labels=root / "additional_labels.csv")
    assert again == index
    assert index.format == "coco" and index.metadata["license"] == "CC0 1.0"
    assert index.classes == ["bottle-red-disc", "bottle-red-bar", "can-green-disc", "can-green-bar"]
    assert index.class_labels["can-green-bar"] == {"category": "drinks", "group": "can-green"}
    # hierarchy: category > group > product
    assert index.label_codes().tolist() == [[0, 0], [0, 0], [0, 1], [0, 1]]
    assert all(".rf." in s.path.name for s in index.samples)
    assert index.samples[0].source_name.endswith(".jpg")


def test_boxes_are_tight_around_masks(tmp_path: Path) -> None:
    cfg = {**SMALL, "distractors": 3, "occlusion": 0.7, "images_per_class": {"train": 8}}
    index = generate_shelf(tmp_path / "shelf", cfg)
    occluded = 0
    for s in index.samples:
        mask = s.load_mask().numpy()
        assert mask.shape == (32, 32) and mask.any()
        rows, cols = np.nonzero(mask)
        assert s.boxes == ((cols.min(), rows.min(), cols.max() + 1.0, rows.max() + 1.0),)
        occluded += s.extra["occluded_fraction"] > 0
    assert occluded > 0  # the occluder really cut into some masks


def test_mask_marks_exactly_the_object_pixels() -> None:
    # the same object on two backgrounds: identical on the mask, different around it
    r = ShelfRenderer(ShelfConfig(image_size=48, families=3, siblings=2, image_format="png"))
    for label in range(6):
        out = r.render("train", label, 0)
        again = r.render("train", label, 0, background_id=out.background_id)
        assert np.array_equal(out.image, again.image)
        moved = r.render("train", label, 0, background_id=(out.background_id + 1) % 6)
        assert np.array_equal(out.mask, moved.mask)
        assert np.array_equal(out.image[out.mask], moved.image[moved.mask])
        same_outside = (out.image == moved.image).all(-1) & ~out.mask
        assert same_outside.sum() < 0.05 * (~out.mask).sum()


@pytest.mark.parametrize(("split", "p"), [("train", 0.8), ("test", 0.25)])
def test_home_background_rate_matches_shortcut(split: str, p: float) -> None:
    cfg = ShelfConfig(
        image_size=32, families=3, siblings=2, shortcut={"train": 0.8, "test": 0.25}, seed=3
    )
    r = ShelfRenderer(cfg)
    n_per_class = 150
    homes = []
    for label in range(cfg.num_classes):
        for i in range(n_per_class):
            out = r.render(split, label, i)
            assert out.home == (out.background_id == r.classes[label].home)
            homes.append(out.home)
    n = len(homes)
    rate = sum(homes) / n
    # within 4 binomial standard errors (false alarm ~6e-5)
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n), (rate, p, n)


def test_shortcut_extremes_and_other_backgrounds_uniform(tmp_path: Path) -> None:
    cfg = {
        **SMALL,
        "shortcut": {"train": 1.0, "test": 0.0},
        "images_per_class": {"train": 5, "test": 60},
    }
    index = generate_shelf(tmp_path / "shelf", cfg)
    train, test = index.split("train"), index.split("test")
    assert all(s.extra["home"] for s in train.samples)
    assert not any(s.extra["home"] for s in test.samples)
    # away from home every other background is used (4 classes -> 3 others each)
    for label in range(4):
        used = {s.extra["background_id"] for s in test.samples if s.label == label}
        assert used == set(range(4)) - {label}


def test_shortcut_changes_only_the_background() -> None:
    a = ShelfRenderer(ShelfConfig(image_size=32, shortcut={"train": 1.0}))
    b = ShelfRenderer(ShelfConfig(image_size=32, shortcut={"train": 0.0}))
    for label in (0, 3, 7):
        ra, rb = a.render("train", label, 4), b.render("train", label, 4)
        assert np.array_equal(ra.mask, rb.mask) and ra.box == rb.box
        assert ra.home and not rb.home
        assert np.array_equal(ra.image[ra.mask], rb.image[rb.mask])


def test_siblings_differ_only_in_the_glyph() -> None:
    r = ShelfRenderer(ShelfConfig(image_size=64, families=4, siblings=3))
    for family in range(4):
        imgs = [r.draw_product(family * 3 + s, 40, 28) for s in range(3)]
        masks = [m for _, m in imgs]
        assert all(np.array_equal(masks[0], m) for m in masks)  # same silhouette
        for s in (1, 2):
            diff = np.abs(imgs[0][0] - imgs[s][0]).max(-1) > 1e-9
            # a small detail: under 10% of the object's pixels
            assert 0 < diff[masks[0]].sum() < 0.1 * masks[0].sum()


def test_cue_contrast_sets_the_glyph_colour() -> None:
    easy = ShelfRenderer(ShelfConfig(image_size=64, cue_contrast=1.0, cue_scale=1.0))
    subtle = ShelfRenderer(ShelfConfig(image_size=64))
    rgb_e, _ = easy.draw_product(0, 40, 28)
    rgb_s, _ = subtle.draw_product(0, 40, 28)
    glyph = rgb_e.max(-1) == 0  # a black glyph
    assert glyph.sum() > 0
    body = np.array(easy.classes[0].colour)
    # subtle glyph: 65% of the (shaded) body colour, i.e. 0.65 x the plain body pixel beside it
    row, col = np.argwhere(glyph)[0]
    ratio = rgb_s[row, col] / np.clip(body, 1e-6, None)
    assert np.allclose(ratio / ratio.max(), np.ones(3), atol=1e-6)
    assert subtle.config.cue_contrast == 0.35 and subtle.config.cue_scale == 0.7
    assert len(GLYPHS) == 8


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="backgrounds=3 is fewer than the 10 classes"):
        generate_shelf(tmp_path / "x", {"backgrounds": 3})
    with pytest.raises(ConfigurationError, match="shortcut"):
        generate_shelf(tmp_path / "x", {"shortcut": {"train": 1.5}})
    with pytest.raises(ConfigurationError, match="images_per_class"):
        generate_shelf(tmp_path / "x", {"images_per_class": {"train": 0}})
    with pytest.raises(ConfigurationError, match="image_size"):
        generate_shelf(tmp_path / "x", {"image_size": "big"})
    assert not (tmp_path / "x").exists()


def test_existing_folder_policy(tmp_path: Path) -> None:
    out = tmp_path / "shelf"
    first = generate_shelf(out, SMALL)
    with pytest.raises(DataError, match="exists and is not empty"):
        generate_shelf(out, SMALL)
    stamp = (out / "train" / "_annotations.coco.json").stat().st_mtime_ns
    assert generate_shelf(out, SMALL, if_exists="reuse") == first
    assert (out / "train" / "_annotations.coco.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="different config"):
        generate_shelf(out, {**SMALL, "seed": 5}, if_exists="reuse")
    second = generate_shelf(out, {**SMALL, "seed": 5}, if_exists="overwrite")
    assert second != first and len(second) == len(first)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match="exists and is not empty"):
        generate_shelf(other, SMALL, if_exists="overwrite")
    assert (other / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "shelf"]  # no temp left over


def test_generator_builds_each_texture_once_and_renders_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What keeps the generator fast (its measured rate is in the docs): the textures, the
    # expensive part, are built once per export rather than once per image.
    calls = {"renderer": 0, "texture": 0, "render": 0}

    def counted(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(ShelfRenderer, "__init__", counted("renderer", ShelfRenderer.__init__))
    monkeypatch.setattr(ShelfRenderer, "_texture", counted("texture", ShelfRenderer._texture))
    monkeypatch.setattr(ShelfRenderer, "render", counted("render", ShelfRenderer.render))
    cfg = {"image_size": 64, "families": 5, "siblings": 2, "images_per_class": {"train": 20}}
    index = generate_shelf(tmp_path / "shelf", cfg)
    assert len(index) == 200  # 5 families x 2 siblings = 10 classes, 20 images each
    # one renderer, one texture per background (one per class by default), one render per image
    assert calls == {"renderer": 1, "texture": 10, "render": 200}


def test_preview_has_boxes(tmp_path: Path) -> None:
    index = generate_shelf(tmp_path / "shelf", SMALL)
    path = save_preview(index, tmp_path / "p.png", n=4, cols=2, tile=32)
    from PIL import Image

    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    green = (grid[..., 0] == 0) & (grid[..., 1] == 230) & (grid[..., 2] == 0)
    assert green.sum() >= 4 * 4 * 4  # four box outlines


def test_intervention_grid(tmp_path: Path) -> None:
    from embedcam.datasets.preview import intervention_grid

    index = generate_shelf(tmp_path / "shelf", SMALL)
    grid = intervention_grid(index, n=2, tile=32)
    assert grid.shape == (2 * 34 + 2, 5 * 34 + 2, 3)
    first = next(s for s in index.split("train").samples if s.label == 0)  # row 0: class 0
    first_mask = first.load_mask().numpy()
    only_fg = grid[2 : 2 + 32, 2 + 2 * 34 : 2 + 2 * 34 + 32]
    assert (only_fg[~first_mask] == 0).all() and only_fg[first_mask].any()
    with pytest.raises(DataError, match="need 5 classes with two masked samples .* found 4"):
        intervention_grid(index, n=5)
