"""The synthetic shelf generator: retail-product images with a controllable background shortcut.

The paper's SKU data cannot be downloaded here, and real data never tells how much a model may
lean on the background. This generator draws products on textured shelf backgrounds with numpy
and knows the ground truth that real data lacks:

* **Classes** form a hierarchy ``category > group > product``. A *family* (the group) is a
  package shape (bottle, can, box, bag) with a body colour and a label band; its *siblings* (the
  products) differ only in a small logo glyph (disc, bar, ring, cross, ...), so telling siblings
  apart requires looking at the object. The category is ``drinks`` (bottles, cans) or ``pantry``
  (boxes, bags).
* **Backgrounds**: one textured shelf per class is its *home*. ``shortcut[split]`` is the
  probability that an image shows its class's home background; otherwise one of the other
  backgrounds is drawn uniformly. A model can score well by looking at the background when
  ``shortcut`` is high in training (Geirhos et al., *Shortcut learning in deep neural networks*,
  Nature Machine Intelligence 2020; Xiao et al., *Noise or Signal: The Role of Image Backgrounds
  in Object Recognition*, ICLR 2021).
* **Cue difficulty**: the glyph is drawn in the body colour mixed with ``cue_contrast`` black, at
  ``cue_scale`` times its normal size. The defaults (0.35, 0.7) are the subtle setting of
  early probes on this generator, under which a small CNN trained with shortcut 0.9 relied on the
  background; with a black full-size glyph (1.0, 1.0) it did not.
* Random position and scale, optional distractor products (behind the object) and partial
  occlusion by a price tag (in front of it).
* Per image: the exact visible-object mask (a PNG), the background id, and whether it is the
  home background, stored in the COCO image's ``extra`` field and read back by
  [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] into `Sample.extra` /
  `Sample.mask_path`.

Every image is drawn from its own random stream derived from ``(seed, split, class, i)``, split
into an object stream and a background stream; so the output is deterministic for a seed, and
changing only ``shortcut`` changes only the backgrounds (the same products at the same places).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from embedcam.atomic import temporary_folder
from embedcam.datasets._io import encode_image
from embedcam.datasets.index import SPLITS, DatasetIndex
from embedcam.datasets.roboflow import load_roboflow
from embedcam.errors import ConfigurationError, DataError

__all__ = [
    "SHAPES",
    "GLYPHS",
    "ShelfConfig",
    "ShelfClass",
    "RenderedImage",
    "ShelfRenderer",
    "generate_shelf",
]

SHAPES: tuple[str, ...] = ("bottle", "can", "box", "bag")
"""Package shapes, in the order families cycle through them."""

GLYPHS: tuple[str, ...] = ("disc", "bar", "ring", "cross", "pillar", "triangle", "square", "x")
"""Sibling logo glyphs; sibling ``s`` of a family wears ``GLYPHS[s]``."""

_CATEGORY = {"bottle": "drinks", "can": "drinks", "box": "pantry", "bag": "pantry"}
_COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("red", (0.80, 0.14, 0.14)),
    ("green", (0.16, 0.58, 0.22)),
    ("blue", (0.15, 0.30, 0.82)),
    ("yellow", (0.92, 0.78, 0.12)),
    ("purple", (0.55, 0.22, 0.68)),
    ("orange", (0.96, 0.50, 0.10)),
    ("teal", (0.08, 0.58, 0.60)),
    ("pink", (0.95, 0.46, 0.66)),
)
# width / height of each package shape
_ASPECT = {"bottle": 0.42, "can": 0.6, "box": 0.75, "bag": 0.8}
# (band top, band bottom, glyph centre) as fractions of the package height
_LAYOUT = {
    "bottle": (0.45, 0.60, 0.80),
    "can": (0.22, 0.40, 0.70),
    "box": (0.10, 0.28, 0.64),
    "bag": (0.22, 0.38, 0.68),
}
_MARKER = "embedcam_shelf.json"
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}


class ShelfConfig(BaseModel):
    """Settings of `generate_shelf`; every field has a default.

    Attributes:
        image_size: Side of the square images in pixels.
        families: Number of families (shape x body colour), at most 32.
        siblings: Products per family, differing only in the glyph, at most 8.
        images_per_class: Images per class in each split (0 or absent: no such split).
        shortcut: Per split, the probability that an image shows its class's home background.
        backgrounds: Number of background textures; default one per class (each class's home);
            must be at least the number of classes.
        cue_contrast: How much black is mixed into the body colour to draw the glyph; 1.0 is a
            black glyph (easy), 0.35 the subtle default.
        cue_scale: Glyph size relative to the normal size (0.7 default, subtle).
        object_area: Range of the object's box area as a fraction of the image.
        distractors: Maximum number of smaller products of other families drawn behind the
            object (uniform from 0 to this).
        occlusion: Probability that a price tag occludes part of the object.
        max_occluded: Largest fraction of the object's width or height the tag covers.
        image_format: ``"jpg"`` (as Roboflow exports) or ``"png"`` (lossless).
        jpeg_quality: JPEG quality.
        seed: The random seed; the export is a deterministic function of the config.
        project: Project name, written as the COCO super-class.

    Examples:
        >>> cfg = ShelfConfig(image_size=64, families=5, siblings=2, shortcut={"test": 0.0})
        >>> cfg.num_classes, cfg.shortcut["train"], cfg.shortcut["test"]
        (10, 0.9, 0.0)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(64, ge=32, le=1024)
    families: int = Field(5, ge=1, le=32)
    siblings: int = Field(2, ge=1, le=len(GLYPHS))
    images_per_class: dict[Literal["train", "valid", "test"], int] = Field(
        default_factory=lambda: cast(
            "dict[Literal['train', 'valid', 'test'], int]", {"train": 200, "valid": 20, "test": 100}
        )
    )
    shortcut: dict[Literal["train", "valid", "test"], float] = Field(
        default_factory=lambda: cast(
            "dict[Literal['train', 'valid', 'test'], float]",
            {"train": 0.9, "valid": 0.9, "test": 0.9},
        )
    )
    backgrounds: int | None = Field(None, ge=2)
    cue_contrast: float = Field(0.35, gt=0.0, le=1.0)
    cue_scale: float = Field(0.7, gt=0.0, le=2.0)
    object_area: tuple[float, float] = (0.15, 0.40)
    distractors: int = Field(0, ge=0, le=8)
    occlusion: float = Field(0.0, ge=0.0, le=1.0)
    max_occluded: float = Field(0.4, gt=0.0, lt=1.0)
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: int = Field(0, ge=0)
    project: str = "embedcam-shelf"

    @field_validator("shortcut", mode="before")
    @classmethod
    def _merge_shortcut(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {"train": 0.9, "valid": 0.9, "test": 0.9, **v}
        return v

    @field_validator("images_per_class")
    @classmethod
    def _check_counts(cls, v: dict[str, int]) -> dict[str, int]:
        if any(n < 0 for n in v.values()) or sum(v.values()) == 0:
            raise ValueError(f"images_per_class needs counts >= 0 and at least one > 0, got {v}")
        return v

    @field_validator("shortcut")
    @classmethod
    def _check_shortcut(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: p for k, p in v.items() if not 0.0 <= p <= 1.0}
        if bad:
            raise ValueError(f"shortcut probabilities must be in [0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ShelfConfig:
        lo, hi = self.object_area
        if not 0.01 <= lo <= hi <= 0.6:
            raise ValueError(f"object_area must satisfy 0.01 <= lo <= hi <= 0.6, got {(lo, hi)}")
        if self.backgrounds is not None and self.backgrounds < self.num_classes:
            raise ValueError(
                f"backgrounds={self.backgrounds} is fewer than the {self.num_classes} classes; "
                "every class needs its own home background"
            )
        return self

    @property
    def num_classes(self) -> int:
        """Number of classes, ``families * siblings``."""
        return self.families * self.siblings

    @property
    def num_backgrounds(self) -> int:
        """Number of background textures (default: one per class)."""
        return self.backgrounds if self.backgrounds is not None else self.num_classes


@dataclass(frozen=True)
class ShelfClass:
    """One synthetic product class.

    Attributes:
        index: Class index (label).
        name: ``<shape>-<colour>-<glyph>``, e.g. ``"bottle-red-disc"``.
        category: Top level of the hierarchy (``drinks`` or ``pantry``).
        group: The family, ``<shape>-<colour>``.
        family: Family index.
        sibling: Sibling index within the family (selects the glyph).
        shape: Package shape.
        colour: Body colour RGB in ``[0, 1]``.
        home: Index of the class's home background.
    """

    index: int
    name: str
    category: str
    group: str
    family: int
    sibling: int
    shape: str
    colour: tuple[float, float, float]
    home: int


@dataclass(frozen=True)
class RenderedImage:
    """One rendered image with its ground truth.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB.
        mask: bool ``(H, W)``, the visible pixels of the labelled object.
        box: ``[x0, y0, x1, y1]`` tight around ``mask`` (internal box convention).
        background_id: Which background texture was drawn.
        home: Whether it is the class's home background.
        distractors: Number of distractor products drawn.
        occluded_fraction: Fraction of the object's pixels hidden by the price tag.
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[float, float, float, float]
    background_id: int
    home: bool
    distractors: int
    occluded_fraction: float


def _family(f: int) -> tuple[str, str, tuple[float, float, float]]:
    # colour index (f + f // 4) % 8 keeps (shape, colour) pairs distinct for f < 32 while both vary
    shape = SHAPES[f % len(SHAPES)]
    cname, rgb = _COLOURS[(f + f // len(SHAPES)) % len(_COLOURS)]
    return shape, cname, rgb


def _shape_mask(shape: str, h: int, w: int) -> np.ndarray:
    """Silhouette of a package drawn in an ``(h, w)`` box (pixel centres in normalised coords)."""
    v = (np.arange(h) + 0.5)[:, None] / h
    u = (np.arange(w) + 0.5)[None, :] / w
    du = np.abs(u - 0.5) * 2  # 0 at the centre line, 1 at the sides
    if shape == "box":
        return np.ones((h, w), dtype=bool)
    if shape == "can":
        e = 0.07
        top = (du**2 + ((v - e) / e) ** 2 <= 1) | (v >= e)
        bottom = (du**2 + ((v - 1 + e) / e) ** 2 <= 1) | (v <= 1 - e)
        return top & bottom & (du <= 1)
    if shape == "bottle":
        neck = 0.36
        half = np.where(
            v < 0.06,
            neck + 0.08,
            np.where(v < 0.2, neck, np.where(v < 0.36, neck + (1 - neck) * (v - 0.2) / 0.16, 1.0)),
        )
        rounded = (v < 0.94) | (du**2 + ((v - 0.94) / 0.06) ** 2 <= 1)
        return (du <= half) & rounded
    if shape == "bag":
        half = 0.84 + 0.16 * np.sin(np.pi * v)
        crimp = v >= 0.04 * (1 + np.sign(np.sin(u * 2 * np.pi * 7)))
        return (du <= half) & crimp & (v <= 0.97)
    raise DataError(f"unknown shape {shape!r}")  # pragma: no cover - SHAPES is closed


def _glyph_mask(glyph: str, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """A logo glyph in glyph-radius units (``dx``, ``dy`` in ``[-1, 1]`` span the glyph)."""
    d = np.sqrt(dx**2 + dy**2)
    if glyph == "disc":
        return d <= 1
    if glyph == "bar":
        return (np.abs(dy) <= 0.42) & (np.abs(dx) <= 1)
    if glyph == "ring":
        return (d <= 1) & (d >= 0.55)
    if glyph == "cross":
        return ((np.abs(dx) <= 0.36) & (np.abs(dy) <= 1)) | (
            (np.abs(dy) <= 0.36) & (np.abs(dx) <= 1)
        )
    if glyph == "pillar":
        return (np.abs(dx) <= 0.42) & (np.abs(dy) <= 1)
    if glyph == "triangle":
        return (dy >= -1) & (dy <= 1) & (np.abs(dx) <= (dy + 1) / 2)
    if glyph == "square":
        return (np.abs(dx) <= 0.8) & (np.abs(dy) <= 0.8)
    if glyph == "x":
        return ((np.abs(dx - dy) <= 0.5) | (np.abs(dx + dy) <= 0.5)) & (d <= 1.15)
    raise DataError(f"unknown glyph {glyph!r}")  # pragma: no cover - GLYPHS is closed


class ShelfRenderer:
    """Draws the images of a `ShelfConfig` in memory (used by `generate_shelf`).

    Useful on its own for experiments that need renders not in the export, e.g. an object on
    another class's home background: ``render(split, label, i, background_id=b)``.

    Args:
        config: The generator settings.

    Examples:
        >>> r = ShelfRenderer(ShelfConfig(image_size=32, families=2, siblings=2))
        >>> out = r.render("train", label=3, i=0)
        >>> out.image.shape, out.mask.dtype.name, r.classes[3].name
        ((32, 32, 3), 'bool', 'can-green-bar')
    """

    def __init__(self, config: ShelfConfig) -> None:
        self.config = config
        self.classes: list[ShelfClass] = []
        for f in range(config.families):
            shape, cname, rgb = _family(f)
            for s in range(config.siblings):
                c = len(self.classes)
                self.classes.append(
                    ShelfClass(
                        index=c,
                        name=f"{shape}-{cname}-{GLYPHS[s]}",
                        category=_CATEGORY[shape],
                        group=f"{shape}-{cname}",
                        family=f,
                        sibling=s,
                        shape=shape,
                        colour=rgb,
                        home=c,
                    )
                )
        self._textures = [self._texture(b) for b in range(config.num_backgrounds)]

    # -- backgrounds ----------------------------------------------------------------------------

    def _texture(self, b: int) -> np.ndarray:
        """A shelf texture 1.5x the image size, from which each image crops a window."""
        rng = np.random.default_rng([self.config.seed, 7_919, b])
        n = int(self.config.image_size * 1.5)
        y, x = np.mgrid[0:n, 0:n].astype(np.float64)
        # golden-ratio hues spread background colours; low saturation keeps products salient
        hue = (b * 0.618034 + 0.13) % 1.0
        base = np.array(_hsv_to_rgb(hue, 0.25 + 0.2 * rng.random(), 0.55 + 0.3 * rng.random()))
        second = base * (0.55 + 0.2 * rng.random())
        period = self.config.image_size * (0.07 + 0.1 * rng.random())
        kind = b % 6
        if kind == 0:
            pat = np.sin(2 * np.pi * x / period) > 0
        elif kind == 1:
            pat = np.sin(2 * np.pi * (x + y) / (period * 1.4)) > 0.3
        elif kind == 2:
            pat = (np.floor(x / period) + np.floor(y / period)) % 2 == 0
        elif kind == 3:
            pat = ((x % period) - period / 2) ** 2 + ((y % period) - period / 2) ** 2 < (
                period * 0.28
            ) ** 2
        elif kind == 4:
            from scipy import ndimage  # imported on use: import embedcam stays light

            noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma=period / 3)
            noise /= noise.std() + 1e-12
            pat = np.sin(2 * np.pi * y / period + 2.5 * noise) > 0
        else:
            row = np.floor(y / period)
            pat = ((x + (row % 2) * period) % (2 * period) < 0.15 * period) | (
                y % period < 0.15 * period
            )
        img = np.where(pat[..., None], second, base)
        # shelf edges: dark horizontal rails at texture-specific rows
        rail = self.config.image_size * (0.45 + 0.3 * rng.random())
        rails = (y % rail) < max(1.0, 0.06 * self.config.image_size)
        img = np.where(rails[..., None], base * 0.3, img)
        img = img * (1 + 0.04 * rng.standard_normal((n, n, 1)))
        return np.clip(img, 0, 1).astype(np.float32)

    def background(self, background_id: int, rng: np.random.Generator) -> np.ndarray:
        """A window of background ``background_id`` with a random offset and brightness.

        Args:
            background_id: Texture index in ``[0, num_backgrounds)``.
            rng: Random generator for the offset and brightness.

        Returns:
            float32 ``(S, S, 3)`` in ``[0, 1]``.
        """
        tex = self._textures[background_id]
        s = self.config.image_size
        top, left = rng.integers(0, tex.shape[0] - s + 1, size=2)
        gain = 1 + 0.08 * (rng.random() - 0.5)
        return np.clip(tex[top : top + s, left : left + s] * gain, 0, 1)

    # -- products -------------------------------------------------------------------------------

    def draw_product(self, label: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw the package of class ``label`` filling an ``(h, w)`` box.

        Args:
            label: Class index.
            h: Height in pixels.
            w: Width in pixels.

        Returns:
            ``(rgb, mask)``: float ``(h, w, 3)`` in ``[0, 1]`` (meaningful where the mask is) and
            the bool silhouette ``(h, w)``.
        """
        cfg = self.config
        cls = self.classes[label]
        mask = _shape_mask(cls.shape, h, w)
        body = np.array(cls.colour, dtype=np.float64)
        v = (np.arange(h) + 0.5)[:, None] / h
        u = (np.arange(w) + 0.5)[None, :] / w
        if cls.shape in ("bottle", "can"):
            shade = 0.72 + 0.28 * np.cos((u - 0.38) * np.pi) ** 2
        elif cls.shape == "bag":
            shade = 0.8 + 0.2 * (1 - ((u - 0.5) ** 2 + (v - 0.5) ** 2))
        else:
            shade = 0.85 + 0.15 * (1 - u)
        rgb = np.broadcast_to(body, (h, w, 3)).copy()
        band_lo, band_hi, glyph_v = _LAYOUT[cls.shape]
        band = (v >= band_lo) & (v < band_hi)
        rgb[np.broadcast_to(band, (h, w))] = 0.3 * body + 0.7
        if cls.shape == "bottle":
            rgb[np.broadcast_to(v < 0.06, (h, w))] = (0.2, 0.2, 0.22)
        r = max(cfg.cue_scale * 0.22 * w, 0.75)
        dy = ((np.arange(h) + 0.5)[:, None] - glyph_v * h) / r
        dx = ((np.arange(w) + 0.5)[None, :] - 0.5 * w) / r
        glyph = _glyph_mask(GLYPHS[cls.sibling], dy, dx)
        rgb[glyph] = (1 - cfg.cue_contrast) * body
        rgb = rgb * shade[..., None] if np.ndim(shade) == 2 else rgb * shade
        return np.clip(rgb, 0, 1), mask

    def _place(
        self, canvas: np.ndarray, cls: ShelfClass, area: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Draw a package of ``area`` (fraction of the image) at a random place; return its mask."""
        s = self.config.image_size
        aspect = _ASPECT[cls.shape] * (1 + 0.1 * (rng.random() - 0.5))
        h = int(round(min(np.sqrt(area / aspect), 0.95) * s))
        w = int(round(min(aspect * h, 0.95 * s)))
        h, w = max(h, 4), max(w, 3)
        top = int(rng.integers(0, s - h + 1))
        left = int(rng.integers(0, s - w + 1))
        rgb, m = self.draw_product(cls.index, h, w)
        window = canvas[top : top + h, left : left + w]
        window[m] = rgb[m]
        full = np.zeros((s, s), dtype=bool)
        full[top : top + h, left : left + w] = m
        return full

    def render(
        self, split: str, label: int, i: int, *, background_id: int | None = None
    ) -> RenderedImage:
        """Render image ``i`` of class ``label`` in ``split``.

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"`` (selects the random stream and the
                shortcut probability).
            label: Class index.
            i: Image number within the class and split.
            background_id: Force this background instead of drawing one (the object, its place
                and the distractors stay the same).

        Returns:
            The image and its ground truth.

        Raises:
            DataError: If ``split``, ``label`` or ``background_id`` is out of range.
        """
        cfg = self.config
        if split not in _SPLIT_ID:
            raise DataError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        if not 0 <= label < len(self.classes):
            raise DataError(f"label {label} is outside [0, {len(self.classes)})")
        nb = cfg.num_backgrounds
        if background_id is not None and not 0 <= background_id < nb:
            raise DataError(f"background_id {background_id} is outside [0, {nb})")
        cls = self.classes[label]
        obj_seq, bg_seq = np.random.SeedSequence([cfg.seed, _SPLIT_ID[split], label, i]).spawn(2)
        obj_rng, bg_rng = np.random.default_rng(obj_seq), np.random.default_rng(bg_seq)

        # the background draw uses its own stream so that `shortcut` changes nothing else
        home_draw = bg_rng.random()
        other = int(bg_rng.integers(0, nb - 1))
        if background_id is None:
            if home_draw < cfg.shortcut[split]:  # type: ignore[index]
                background_id = cls.home
            else:
                background_id = other if other < cls.home else other + 1
        canvas = self.background(background_id, bg_rng).astype(np.float64)

        n_distract = int(obj_rng.integers(0, cfg.distractors + 1)) if cfg.distractors else 0
        others = [c for c in self.classes if c.family != cls.family] or [
            c for c in self.classes if c.index != cls.index
        ]
        lo, hi = cfg.object_area
        area = lo + (hi - lo) * obj_rng.random()
        for _ in range(n_distract):
            if not others:
                break
            d = others[int(obj_rng.integers(0, len(others)))]
            self._place(canvas, d, area * (0.4 + 0.3 * obj_rng.random()), obj_rng)
        mask = self._place(canvas, cls, area, obj_rng)
        full_area = int(mask.sum())

        occluded = 0.0
        if cfg.occlusion > 0 and obj_rng.random() < cfg.occlusion:
            rows, cols = np.nonzero(mask)
            y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            frac = 0.1 + (cfg.max_occluded - 0.1) * obj_rng.random()
            tag = np.zeros_like(mask)
            side = int(obj_rng.integers(0, 3))
            # the tag overhangs the object by a small margin on the side it enters from
            mx, my = max(1, (x1 - x0) // 6), max(1, (y1 - y0) // 6)
            t0, t1 = y0 + int((y1 - y0) * 0.3 * obj_rng.random()), y1
            if side == 0:  # from the left
                tag[t0:t1, max(0, x0 - mx) : x0 + max(1, int(frac * (x1 - x0)))] = True
            elif side == 1:  # from the right
                tag[t0:t1, x1 - max(1, int(frac * (x1 - x0))) : x1 + mx] = True
            else:  # from below
                tag[y1 - max(1, int(frac * (y1 - y0))) : y1 + my, x0:x1] = True
            tag_rows = np.nonzero(tag.any(1))[0]
            canvas[tag] = (0.95, 0.95, 0.9)
            stripe = tag & (np.arange(mask.shape[0])[:, None] == tag_rows.min())
            canvas[stripe] = (0.85, 0.1, 0.1)
            mask = mask & ~tag
            occluded = 1 - mask.sum() / max(full_area, 1)

        rows, cols = np.nonzero(mask)
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
        image = np.round(canvas * 255).astype(np.uint8)
        return RenderedImage(
            image=image,
            mask=mask,
            box=box,
            background_id=int(background_id),
            home=bool(background_id == cls.home),
            distractors=n_distract,
            occluded_fraction=float(occluded),
        )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _file_stem(cfg: ShelfConfig, cls: ShelfClass, split: str, i: int) -> str:
    # Roboflow-style name `<original>_<ext>.rf.<hash>` so readers meet the real quirk
    digest = hashlib.md5(f"{cfg.seed}/{split}/{cls.index}/{i}".encode()).hexdigest()
    return f"{cls.name}_{split}_{i:05d}_{cfg.image_format}.rf.{digest}"


def _write_export(cfg: ShelfConfig, out: Path) -> None:
    renderer = ShelfRenderer(cfg)
    licence = {
        "id": 1,
        "url": "https://creativecommons.org/publicdomain/zero/1.0/",
        "name": "CC0 1.0",
    }
    categories = [{"id": 0, "name": cfg.project, "supercategory": "none"}] + [
        {"id": c.index + 1, "name": c.name, "supercategory": cfg.project} for c in renderer.classes
    ]
    for split in SPLITS:
        n = cfg.images_per_class.get(split, 0)  # type: ignore[call-overload]
        if n == 0:
            continue
        d = out / split
        (d / "masks").mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for cls in renderer.classes:
            for i in range(n):
                r = renderer.render(split, cls.index, i)
                stem = _file_stem(cfg, cls, split, i)
                name = f"{stem}.{cfg.image_format}"
                (d / name).write_bytes(encode_image(r.image, cfg.image_format, cfg.jpeg_quality))
                (d / "masks" / f"{stem}.png").write_bytes(
                    encode_image(r.mask.astype(np.uint8) * 255, "png")
                )
                image_id = len(images)
                images.append(
                    {
                        "id": image_id,
                        "license": 1,
                        "file_name": name,
                        "height": cfg.image_size,
                        "width": cfg.image_size,
                        "date_captured": "2024-01-01T00:00:00+00:00",
                        "extra": {
                            "mask": f"masks/{stem}.png",
                            "background_id": r.background_id,
                            "home": r.home,
                            "home_background": cls.home,
                            "family": cls.family,
                            "sibling": cls.sibling,
                            "distractors": r.distractors,
                            "occluded_fraction": round(r.occluded_fraction, 6),
                        },
                    }
                )
                x0, y0, x1, y1 = r.box
                annotations.append(
                    {
                        "id": len(annotations),
                        "image_id": image_id,
                        "category_id": cls.index + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": int(r.mask.sum()),
                        "segmentation": [],
                        "iscrowd": 0,
                    }
                )
        coco = {
            "info": {
                "year": "2024",
                "version": "1",
                "description": "Synthetic shelf products generated by embedcam",
                "contributor": "embedcam",
                "url": "",
                "date_created": "2024-01-01T00:00:00+00:00",
            },
            "licenses": [licence],
            "categories": categories,
            "images": images,
            "annotations": annotations,
        }
        (d / "_annotations.coco.json").write_text(json.dumps(coco), encoding="utf-8")
    rows = ["class,category,group"] + [f"{c.name},{c.category},{c.group}" for c in renderer.classes]
    (out / "additional_labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "README.dataset.txt").write_text(
        f"# {cfg.project} (synthetic, generated by embedcam)\n\n"
        "Procedural retail products on textured shelves; see embedcam.datasets.synthetic.\n\n"
        f"License: {licence['name']}\n",
        encoding="utf-8",
    )
    (out / _MARKER).write_text(cfg.model_dump_json(indent=1), encoding="utf-8")


def generate_shelf(
    out_dir: str | Path,
    config: ShelfConfig | dict[str, Any] | None = None,
    *,
    if_exists: Literal["error", "reuse", "overwrite"] = "error",
) -> DatasetIndex:
    """Write a synthetic shelf dataset as a Roboflow COCO export and load it.

    The export holds ``train/``, ``valid/``, ``test/`` (splits with images), each with
    ``_annotations.coco.json`` (category 0 is the project super-class, as Roboflow writes it),
    the images (Roboflow-style ``.rf.<hash>`` names) and ``masks/<stem>.png``; plus
    ``additional_labels.csv`` (``class, category, group``), ``README.dataset.txt`` with the
    licence line, and ``embedcam_shelf.json`` with the config. The whole folder is built in a
    temporary sibling and moved into place, so a crash never leaves a half-written export.

    Args:
        out_dir: Destination folder (created; must not exist or be empty unless ``if_exists``
            says otherwise).
        config: A [`ShelfConfig`][embedcam.datasets.synthetic.ShelfConfig], or a dict of its fields;
            default ``ShelfConfig()``.
        if_exists: When ``out_dir`` already holds files: ``"error"``; ``"reuse"`` to load it if
            it is a shelf export with the same config (an error otherwise); ``"overwrite"`` to
            replace it if it is a shelf export (other folders are never deleted).

    Returns:
        The export loaded with [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow]; each
        sample has ``mask_path`` and ``extra`` (``background_id``, ``home``, ``home_background``,
        ...).

    Raises:
        ConfigurationError: If the config is invalid (the message names the field).
        DataError: If ``out_dir`` exists with other content, per ``if_exists``.

    Examples:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> idx = generate_shelf(tmp.name + "/shelf", {"image_size": 32, "families": 2,
        ...     "images_per_class": {"train": 2, "test": 1}})
        >>> idx.classes[:2], len(idx), idx.label_names
        (['bottle-red-disc', 'bottle-red-bar'], 12, ['category', 'group'])
        >>> tmp.cleanup()
    """
    if config is None:
        cfg = ShelfConfig()
    elif isinstance(config, ShelfConfig):
        cfg = config
    else:
        try:
            cfg = ShelfConfig.model_validate(config)
        except ValidationError as err:
            raise ConfigurationError(f"invalid shelf config: {err}") from err
    out = Path(out_dir)
    if if_exists not in ("error", "reuse", "overwrite"):
        raise ConfigurationError(
            f"if_exists must be 'error', 'reuse' or 'overwrite', got {if_exists!r}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        marker = out / _MARKER
        ours = marker.is_file()
        if if_exists == "reuse" and ours:
            previous = ShelfConfig.model_validate_json(marker.read_text(encoding="utf-8"))
            if previous == cfg:
                return _load(out)
            raise DataError(
                f"{str(out)!r} holds a shelf export with a different config; choose another "
                "folder or pass if_exists='overwrite'"
            )
        if if_exists != "overwrite" or not ours:
            raise DataError(
                f"{str(out)!r} exists and is not empty; choose a new folder"
                + (", or pass if_exists='overwrite' or 'reuse'" if ours else "")
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out.parent, out.name)
    try:
        _write_export(cfg, tmp)
        if out.exists():
            old = temporary_folder(out.parent, out.name + ".old")
            os.replace(out, old / "export")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(out)


def _load(out: Path) -> DatasetIndex:
    return load_roboflow(
        out, extra_labels=out / "additional_labels.csv", format="coco", verify_images=False
    )
