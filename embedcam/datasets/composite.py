"""Real composites: catalogue cut-outs pasted on real photos, with exact masks and a shortcut.

[`generate_shelf`][embedcam.datasets.synthetic.generate_shelf] draws its own products; this module
builds the same kind of shortcut audit from *your* imagery: catalogue photos of each product on a
white background, and real photos of shelves or stores as backgrounds.
[`compose_export`][embedcam.datasets.composite.compose_export] writes a Roboflow COCO export that
[`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] reads with boxes *and* exact masks.

**Cut-outs** ([`cutout_mask`][embedcam.datasets.composite.cutout_mask]). The white background of a
catalogue photo is removed by this rule (the names in code font are fields of
[`CompositeConfig`][embedcam.datasets.composite.CompositeConfig]):

1. The background colour is the median colour of the photo's border pixels; it must be
   near-white (every channel at least 200), else the photo is refused.
2. A pixel's *distance to the background* is how much darker than the background it is in its
   darkest channel, ``max_c(ref_c - rgb_c)`` on 0..255: a saturated pixel (one low channel) and
   a grey or dark pixel (low value) are both far from white.
3. The background is the set of pixels within ``white_threshold`` of it that are connected
   (4-neighbours) to the border of the photo; everything else is the object. White parts
   *inside* a product (a label, a white carton face enclosed by print) therefore stay object.
4. Scikit-image / SciPy morphology: a closing with a disk of ``close_radius`` (bridges small
   gaps in a faint outline), filling of holes, removal of the light rim: object pixels within
   ``halo`` pixels of the background and within ``halo_threshold`` of its colour are background
   (they are blends of product and white, the white halo of a careless cut-out), then only the
   connected components of at least ``keep_fraction`` times the largest one are kept (several
   pieces, e.g. two tomatoes, survive; specks go).
5. Classes listed in ``convex`` get the convex hull of that mask instead: for boxes and cartons,
   whose white faces may meet the white background with no visible edge at all (the one case
   the rule cannot see; without the hull such a face loses the corner that touches the white).
6. A mask covering less than ``coverage[0]`` or more than ``coverage[1]`` of the photo is
   refused with [`DataError`][embedcam.errors.DataError] naming the file (nothing found, or no white
   background). A PNG with an alpha channel uses its alpha (``>= 128``) instead of steps 1-5.

White products on white are the hard case. White *inside* the outline (print, a carton's front
face framed by its edges) stays object because the background must reach it from the border
through near-white pixels; but where a white face touches the white background with no visible
edge, the two are the same colour and the rule gives those pixels to the background (the
product loses a sliver or a corner; the mask still says exactly what was pasted). Packages are
convex: list them in ``convex``. A soft grey drop shadow of the catalogue photo is darker than
the threshold and stays with the product.

Cut-outs are first reduced so that their longer side is at most ``cutout_size`` pixels; the
radii are in those pixels.

**Pasting.** Each image is a random square crop of a background photo (side ``background_crop``
of the photo's short side) resized to ``image_size``, with one object pasted: scaled so that its
box covers a fraction of the image drawn from ``object_area``, at a random place fully inside,
flipped horizontally with probability ``flip``, its brightness scaled by up to ``brightness``.
The object is resampled premultiplied by its mask (its edge colours never mix with the white
background) and pasted with a hard edge, so the exact mask is the set of pixels that came from
the cut-out (the resampled mask thresholded at 0.5) and the box is tight around it.

**The shortcut.** Every class gets ``homes_per_class`` background photos of its own (*home*,
disjoint between classes; with ``avoid_own_folder``, never a photo filed in a folder named like
the class, which would show the product itself); the photos left form the shared *pool*,
nobody's home. With
probability ``shortcut[split]`` an image of a class shows one of its home photos, otherwise a
pool photo drawn uniformly (with ``avoid_own_folder``, from the pool photos outside the class's
own folder: a banana is never pasted on the banana shelf), so off-home the background carries
no more about the class than "not filed under this class" (Geirhos et
al., *Shortcut learning in deep neural networks*, Nature Machine Intelligence 2020; Xiao et al.,
*Noise or Signal: The Role of Image Backgrounds in Object Recognition*, ICLR 2021). As in
[`generate_shelf`][embedcam.datasets.synthetic.generate_shelf], each image draws from its own random
streams derived from ``(seed, split, class, i)``, one for the object and one for the background: the
export is a deterministic function of the config and the source files, and changing only
``shortcut`` changes only the backgrounds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from embedcam.atomic import temporary_folder
from embedcam.datasets._io import encode_image, is_image
from embedcam.datasets._segmentation import mask_to_polygons
from embedcam.datasets.index import SPLITS, DatasetIndex
from embedcam.datasets.roboflow import load_roboflow, read_extra_labels
from embedcam.errors import ConfigurationError, DataError

__all__ = [
    "CompositeConfig",
    "CompositeRenderer",
    "CompositeImage",
    "Cutout",
    "cutout_mask",
    "load_cutout",
    "compose_export",
]

_MARKER = "embedcam_composite.json"
_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}
_FORMAT_VERSION = 2  # 2: off-home photos avoid the class's own folder too


class CompositeConfig(BaseModel):
    """Settings of `compose_export`; every field has a default.

    Attributes:
        image_size: Side of the square images in pixels.
        images_per_class: Images per class in each split (0 or absent: no such split).
        shortcut: Per split, the probability that an image shows one of its class's home
            backgrounds (missing splits keep the default 0.9).
        homes_per_class: Home background photos per class (disjoint between classes).
        avoid_own_folder: Never show a class on a photo filed in a folder named like it, home
            or pool (in a store-photo export filed by product, ``train/Granny-Smith/*.jpg``
            show the product itself, which would plant object evidence, not a background
            shortcut).
        object_area: Range of the object's box area as a fraction of the image.
        background_crop: Range of the side of the square background crop, as a fraction of the
            background photo's short side (1.0: a square as large as the photo allows).
        flip: Probability of a horizontal flip of the object.
        brightness: The object's brightness is scaled by a factor drawn from
            ``[1 - brightness, 1 + brightness]``.
        white_threshold: Largest distance to the background colour (darkest channel, 0..255) of
            a background pixel (see the module's rule).
        close_radius: Radius of the disk of the closing applied to the object mask.
        halo: Width in pixels of the rim where light pixels are removed (0: no removal).
        halo_threshold: Distance to the background colour up to which a rim pixel is removed.
        keep_fraction: Connected components smaller than this fraction of the largest are
            dropped.
        coverage: Accepted range of the mask's fraction of the cut-out photo.
        convex: Classes whose mask is replaced by its convex hull (boxes, cartons).
        cutout_size: Cut-outs are reduced to at most this many pixels on the longer side first.
        image_format: ``"jpg"`` (as Roboflow exports) or ``"png"`` (lossless).
        jpeg_quality: JPEG quality.
        seed: The random seed.
        project: Project name, written as the COCO super-class (category 0).
        license: One-line licence of the source imagery (e.g. ``"MIT"``), written to the COCO
            ``licenses`` and to ``README.dataset.txt`` (read back as ``metadata["license"]``).
        credit: Credit / attribution text of the source imagery, written to the README and
            the COCO ``info`` block.

    Examples:
        >>> cfg = CompositeConfig(image_size=64, shortcut={"test": 0.0})
        >>> cfg.shortcut["train"], cfg.shortcut["test"], cfg.white_threshold
        (0.9, 0.0, 8)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(128, ge=32, le=1024)
    images_per_class: dict[Literal["train", "valid", "test"], int] = Field(
        default_factory=lambda: cast(
            "dict[Literal['train', 'valid', 'test'], int]", {"train": 20, "valid": 5, "test": 5}
        )
    )
    shortcut: dict[Literal["train", "valid", "test"], float] = Field(
        default_factory=lambda: cast(
            "dict[Literal['train', 'valid', 'test'], float]",
            {"train": 0.9, "valid": 0.9, "test": 0.9},
        )
    )
    homes_per_class: int = Field(1, ge=1, le=64)
    avoid_own_folder: bool = True
    object_area: tuple[float, float] = (0.15, 0.40)
    background_crop: tuple[float, float] = (0.6, 1.0)
    flip: float = Field(0.5, ge=0.0, le=1.0)
    brightness: float = Field(0.1, ge=0.0, le=0.5)
    white_threshold: int = Field(8, ge=0, le=100)
    close_radius: int = Field(2, ge=0, le=16)
    halo: int = Field(1, ge=0, le=8)
    halo_threshold: int = Field(40, ge=0, le=255)
    keep_fraction: float = Field(0.05, gt=0.0, le=1.0)
    coverage: tuple[float, float] = (0.01, 0.95)
    convex: tuple[str, ...] = ()
    cutout_size: int = Field(512, ge=64, le=4096)
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = Field(95, ge=50, le=100)
    seed: int = Field(0, ge=0)
    project: str = "embedcam-composite"
    license: str = ""
    credit: str = ""

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

    @field_validator("license")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if "\n" in v or "\r" in v:
            raise ValueError("license must be one line (e.g. 'MIT'); put longer text in credit")
        return v.strip()

    @model_validator(mode="after")
    def _check(self) -> CompositeConfig:
        lo, hi = self.object_area
        if not 0.01 <= lo <= hi <= 0.9:
            raise ValueError(f"object_area must satisfy 0.01 <= lo <= hi <= 0.9, got {(lo, hi)}")
        lo, hi = self.background_crop
        if not 0.05 <= lo <= hi <= 1.0:
            raise ValueError(f"background_crop must satisfy 0.05 <= lo <= hi <= 1, got {(lo, hi)}")
        lo, hi = self.coverage
        if not 0.0 < lo < hi <= 1.0:
            raise ValueError(f"coverage must satisfy 0 < lo < hi <= 1, got {(lo, hi)}")
        return self


@dataclass(frozen=True)
class Cutout:
    """A product cut out of its white background.

    Attributes:
        name: The source file's name relative to the objects folder (or their common folder).
        path: The source file.
        rgb: uint8 ``(h, w, 3)``, cropped to the mask's box.
        mask: bool ``(h, w)``, the object pixels.
    """

    name: str
    path: Path
    rgb: np.ndarray
    mask: np.ndarray


# -- cut-outs -------------------------------------------------------------------------------------


def cutout_mask(
    image: np.ndarray,
    config: CompositeConfig | None = None,
    *,
    convex: bool = False,
    name: str = "the cut-out",
) -> np.ndarray:
    """The object mask of a photo of one product on a (near-)white background.

    Applies steps 1-6 of the rule in [`embedcam.datasets.composite`][embedcam.datasets.composite].

    Args:
        image: uint8 RGB ``(H, W, 3)``.
        config: The thresholds and radii (default ``CompositeConfig()``).
        convex: Replace the mask by its convex hull (boxes, cartons).
        name: How error messages name the photo (e.g. its path).

    Returns:
        Bool ``(H, W)``, true on the object.

    Raises:
        DataError: If the photo's border is not near-white, or the mask covers less or more of
            the photo than ``config.coverage`` allows.

    Examples:
        >>> img = np.full((40, 40, 3), 255, np.uint8)
        >>> img[10:30, 12:28] = (200, 30, 30)
        >>> m = cutout_mask(img)
        >>> int(m.sum()), bool(m[10:30, 12:28].all())
        (320, True)
    """
    cfg = config or CompositeConfig()
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(
            f"{name}: expected a uint8 (H, W, 3) RGB image, got {rgb.dtype} {rgb.shape}"
        )
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.int16)
    ref = np.median(border, axis=0)
    if float(ref.min()) < 200:
        raise DataError(
            f"{name} has no white background: the median colour of its border is "
            f"{tuple(int(v) for v in ref)}; cut-outs must show the product on white (or be PNGs "
            "with an alpha channel)"
        )
    dist = np.clip((ref[None, None, :] - rgb.astype(np.float64)).max(axis=2), 0, 255)
    near = dist <= cfg.white_threshold
    from scipy import ndimage  # imported on use, like scikit-image: import embedcam stays light

    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge[edge > 0])
    obj = ~background
    if cfg.close_radius > 0:
        from skimage.morphology import disk

        r = cfg.close_radius
        padded = np.pad(obj, r + 1)
        obj = ndimage.binary_closing(padded, structure=disk(r))[r + 1 : -(r + 1), r + 1 : -(r + 1)]
    obj = ndimage.binary_fill_holes(obj)
    if cfg.halo > 0:
        from skimage.morphology import disk

        rim = ndimage.binary_dilation(~obj, structure=disk(cfg.halo)) & obj
        obj = obj & ~(rim & (dist <= cfg.halo_threshold))
    obj = _keep_large(obj, cfg.keep_fraction)
    if convex and obj.any():
        from skimage.morphology import convex_hull_image

        obj = convex_hull_image(obj)
    lo, hi = cfg.coverage
    frac = float(obj.mean())
    if frac < lo:
        raise DataError(
            f"{name}: the cut-out mask covers {frac:.1%} of the photo (at least {lo:.1%} "
            "needed): no product found on the white background; check the photo, or lower "
            "white_threshold / coverage"
        )
    if frac > hi:
        raise DataError(
            f"{name}: the cut-out mask covers {frac:.1%} of the photo (at most {hi:.1%} "
            "allowed): the photo has no white background around the product; use a photo on "
            "white, or raise white_threshold / coverage"
        )
    return obj


def _keep_large(mask: np.ndarray, keep_fraction: float) -> np.ndarray:
    from skimage.measure import label

    lab = label(mask, connectivity=2)
    if lab.max() == 0:
        return mask
    areas = np.bincount(lab.ravel())
    areas[0] = 0
    keep = areas >= keep_fraction * areas.max()
    keep[0] = False
    return keep[lab]


def _decode(
    path: Path, what: str, draft: int | None = None, *, max_pixels: int | None = None
) -> Any:  # noqa: ANN401 - PIL image
    """A loaded ``RGB`` or ``RGBA`` PIL image, decoded as displayed by the one image decoder.

    EXIF orientation applied, true bit depth, the pixel cap checked on the size decoded (after
    the JPEG ``draft`` reduction); see `embedcam.datasets._io`.
    """
    from embedcam.datasets._io import open_rgb

    return open_rgb(
        path,
        what=what,
        hint="replace or remove the file",
        max_pixels=max_pixels,
        draft=draft,
    )


def load_cutout(
    path: str | Path,
    config: CompositeConfig | None = None,
    *,
    convex: bool = False,
    name: str | None = None,
) -> Cutout:
    """Read a catalogue photo and cut the product out (see `cutout_mask`).

    Args:
        path: The photo (on white), or a PNG with an alpha channel.
        config: The cut-out settings (default ``CompositeConfig()``).
        convex: Use the convex hull of the mask.
        name: The name stored in the cut-out (default: the file name).

    Returns:
        The cut-out, cropped to its mask's box.

    Raises:
        DataError: If the file is missing or corrupt, or the cut-out is refused; the message
            names the file.
    """
    from PIL import Image

    cfg = config or CompositeConfig()
    p = Path(path)
    img = _decode(p, "cut-out photo")
    try:
        scale = cfg.cutout_size / max(img.size)
        if scale < 1:
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                Image.Resampling.LANCZOS,
            )
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (
            img.mode == "P" and "transparency" in img.info
        )
        if has_alpha:
            rgba = np.asarray(img.convert("RGBA"))
            rgb = np.ascontiguousarray(rgba[..., :3])
            alpha = rgba[..., 3]
        else:
            rgb = np.asarray(img.convert("RGB")).copy()
            alpha = None
    finally:
        img.close()
    where = repr(str(p))
    if alpha is not None and bool((alpha < 255).any()):
        mask = _keep_large(alpha >= 128, cfg.keep_fraction)
        if convex and mask.any():
            from skimage.morphology import convex_hull_image

            mask = convex_hull_image(mask)
        lo, hi = cfg.coverage
        frac = float(mask.mean())
        if not lo <= frac <= hi:
            raise DataError(
                f"{where}: the alpha channel's object covers {frac:.1%} of the image, outside "
                f"the accepted coverage {lo:.1%}..{hi:.1%}"
            )
    else:
        mask = cutout_mask(rgb, cfg, convex=convex, name=where)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return Cutout(
        name=name if name is not None else p.name,
        path=p,
        rgb=rgb[y0:y1, x0:x1].copy(),
        mask=mask[y0:y1, x0:x1].copy(),
    )


# -- sources --------------------------------------------------------------------------------------


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image(p) and not p.name.startswith("."))


def _object_sources(
    objects: Mapping[str, str | Path | Sequence[str | Path]] | str | Path,
) -> OrderedDict[str, list[Path]]:
    out: OrderedDict[str, list[Path]] = OrderedDict()
    if isinstance(objects, (str, os.PathLike)):
        folder = Path(objects)
        if not folder.is_dir():
            raise DataError(
                f"objects folder {str(folder)!r} does not exist; pass a folder of <class>.jpg "
                "files (or <class>/ folders), or a mapping class -> image path(s)"
            )
        found: dict[str, list[Path]] = {}
        for f in _image_files(folder, recursive=False):
            found.setdefault(f.stem, []).append(f)
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = _image_files(sub, recursive=False)
            if files:
                found.setdefault(sub.name, []).extend(files)
        for name in sorted(found):
            out[name] = sorted(found[name])
        if not out:
            raise DataError(f"objects folder {str(folder)!r} holds no images")
        return out
    if not isinstance(objects, Mapping):
        raise ConfigurationError(
            "objects must be a folder or a mapping class name -> image path(s), got "
            f"{type(objects).__name__}"
        )
    for name, value in objects.items():
        paths = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        if not paths:
            raise DataError(f"class {name!r} has no cut-out photos")
        files = [Path(p) for p in paths]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"cut-out photos of class {name!r} do not exist: {missing}")
        out[str(name)] = files
    if not out:
        raise DataError("objects is empty; pass at least two classes")
    return out


def _background_sources(backgrounds: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(backgrounds, (str, os.PathLike)):
        folder = Path(backgrounds)
        if not folder.is_dir():
            raise DataError(f"backgrounds folder {str(folder)!r} does not exist")
        files = _image_files(folder, recursive=True)
    else:
        files = [Path(p) for p in backgrounds]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"background photos do not exist: {missing[:5]}")
    if not files:
        raise DataError(f"no background photos found in {str(backgrounds)!r}")
    return files


def _relative_names(files: Sequence[Path]) -> list[str]:
    """Names relative to the files' common folder (stable when the data moves)."""
    absolute = [f.resolve() for f in files]
    common = Path(os.path.commonpath([str(f.parent) for f in absolute]))
    return [f.relative_to(common).as_posix() for f in absolute]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _labels_table(
    labels: Mapping[str, Mapping[str, str]] | str | Path | None, classes: list[str]
) -> tuple[list[str], dict[str, dict[str, str]]] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        names, mapping = read_extra_labels(labels)
        where = repr(str(labels))
    else:
        mapping = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in labels.items()}
        names = list(next(iter(mapping.values()), {}))
        where = "the labels mapping"
        for c, v in mapping.items():
            if sorted(v) != sorted(names):
                raise DataError(
                    f"{where}: class {c!r} has labels {sorted(v)}, others have {sorted(names)}"
                )
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise DataError(f"{where} lacks additional labels for the classes {missing}")
    if any("," in v or "\n" in v for c in classes for v in mapping[c].values()) or any(
        "," in n for n in names
    ):
        raise DataError(f"{where}: additional labels must not contain commas or newlines")
    return names, {c: dict(mapping[c]) for c in classes}


# -- rendering ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sources:
    """The resolved source files and their stable names."""

    objects: OrderedDict[str, list[Path]]
    object_names: dict[Path, str]
    backgrounds: list[Path]
    background_names: list[str]


def _resolve(
    objects: Mapping[str, str | Path | Sequence[str | Path]] | str | Path,
    backgrounds: str | Path | Sequence[str | Path],
) -> _Sources:
    sources = _object_sources(objects)
    files = [f for fs in sources.values() for f in fs]
    object_names = dict(zip(files, _relative_names(files)))
    bg = _background_sources(backgrounds)
    names = _relative_names(bg)
    order = sorted(range(len(bg)), key=lambda j: names[j])
    bg, names = [bg[j] for j in order], [names[j] for j in order]
    dup = sorted({n for k, n in enumerate(names) if k and names[k - 1] == n})
    if dup:
        raise DataError(f"background photos listed twice: {dup[:5]}")
    return _Sources(sources, object_names, bg, names)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-.") or "class"


def _resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(arr[..., k], dtype=np.float32)).resize(
                (w, h), Image.Resampling.BILINEAR
            )
        )
        for k in range(arr.shape[2])
    ]
    return np.stack(chans, axis=2)


@dataclass(frozen=True)
class CompositeImage:
    """One composite image with its ground truth.

    Attributes:
        image: uint8 ``(S, S, 3)`` RGB.
        mask: bool ``(S, S)``, exactly the pixels taken from the cut-out.
        box: ``[x0, y0, x1, y1]`` tight around ``mask`` (internal box convention).
        background_image: uint8 ``(S, S, 3)``, the background crop before the object was
            pasted (``image`` equals it outside ``mask``).
        background_id: Index of the background photo in
            `CompositeRenderer.background_names`.
        background: The background photo's name.
        home: Whether it is one of the class's home photos.
        object: The cut-out photo's name.
        flipped: Whether the object was flipped horizontally.
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[float, float, float, float]
    background_image: np.ndarray
    background_id: int
    background: str
    home: bool
    object: str
    flipped: bool


class CompositeRenderer:
    """Cuts the products out, assigns the home backgrounds and draws composites in memory.

    [`compose_export`][embedcam.datasets.composite.compose_export] writes what this draws. Useful on
    its own for renders that are not in the export, e.g. an object on another class's home:
    ``render(split, label, i, background_id=b)`` keeps the object, its place and size and changes
    only the background.

    Args:
        objects: The cut-out photos (see
            [`compose_export`][embedcam.datasets.composite.compose_export]).
        backgrounds: The background photos (see
            [`compose_export`][embedcam.datasets.composite.compose_export]).
        config: The settings (default ``CompositeConfig()``).

    Attributes:
        config: The settings.
        classes: Class names; the label indexes this list.
        cutouts: Per class, its cut-outs.
        background_names: Names of the background photos (relative to their common folder),
            sorted; ``background_id`` indexes this list.
        homes: Per class, the ids of its home photos.
        pool: The ids of the shared photos (nobody's home).
        pools: Per class, the pool photos it may show off home (with ``avoid_own_folder``,
            those outside its own folder).

    Raises:
        DataError: If a source is missing, a cut-out is refused (naming the file), or there are
            too few background photos.

    Examples:
        With the six-class Grocery Store sample in embedcam's tests (relative to the root of a
        clone, not in the wheel; catalogue photos
        in ``iconic/``, shelf photos in ``train/``):

        >>> mini = "tests/fixtures/grocery-mini"
        >>> r = CompositeRenderer(f"{mini}/iconic", f"{mini}/train", {"image_size": 64})
        >>> out = r.render("train", label=0, i=0)
        >>> out.image.shape, out.mask.dtype.name, out.home
        ((64, 64, 3), 'bool', True)
    """

    def __init__(
        self,
        objects: Mapping[str, str | Path | Sequence[str | Path]] | str | Path,
        backgrounds: str | Path | Sequence[str | Path],
        config: CompositeConfig | dict[str, Any] | None = None,
    ) -> None:
        self.config = _as_config(config)
        self._init(_resolve(objects, backgrounds))

    @classmethod
    def _from_sources(cls, sources: _Sources, config: CompositeConfig) -> CompositeRenderer:
        self = cls.__new__(cls)
        self.config = config
        self._init(sources)
        return self

    def _init(self, src: _Sources) -> None:
        cfg = self.config
        self.classes: list[str] = list(src.objects)
        if len(self.classes) < 2:
            raise DataError(f"a composite export needs at least two classes, got {self.classes}")
        unknown = [c for c in cfg.convex if c not in src.objects]
        if unknown:
            raise ConfigurationError(f"convex names classes that are not objects: {unknown}")
        self._backgrounds = src.backgrounds
        self.background_names: list[str] = src.background_names
        n = cfg.homes_per_class
        need = len(self.classes) * n + 1
        if len(src.backgrounds) < need:
            raise DataError(
                f"{len(src.backgrounds)} background photos are too few: {len(self.classes)} "
                f"classes x {n} home photo(s) each, plus at least one shared photo, need {need}"
            )
        perm = np.random.default_rng([cfg.seed, 104_729]).permutation(len(src.backgrounds))
        taken: set[int] = set()
        self.homes: dict[str, list[int]] = {}
        for c in self.classes:
            # a photo filed under the class's own name likely shows the product: not its home
            fits = [
                int(b)
                for b in perm
                if int(b) not in taken
                and not (cfg.avoid_own_folder and src.backgrounds[b].parent.name == c)
            ]
            if len(fits) < n:
                raise DataError(
                    f"too few background photos for {n} home photo(s) of class {c!r} outside a "
                    f"folder named {c!r}; add photos, or pass avoid_own_folder=False"
                )
            self.homes[c] = sorted(fits[:n])
            taken.update(fits[:n])
        self.pool: list[int] = sorted(int(b) for b in perm if int(b) not in taken)
        if not self.pool:
            raise DataError("no background photo is left for the shared pool; add photos")
        # Off home, a class never shows a pool photo filed under its own name either.
        self.pools: dict[str, list[int]] = {}
        for c in self.classes:
            own = [
                b
                for b in self.pool
                if not (cfg.avoid_own_folder and src.backgrounds[b].parent.name == c)
            ]
            if not own:
                raise DataError(
                    f"every shared background photo is in a folder named {c!r}; add photos of "
                    "other scenes, or pass avoid_own_folder=False"
                )
            self.pools[c] = own
        self.cutouts: dict[str, list[Cutout]] = {
            c: [
                load_cutout(f, cfg, convex=c in cfg.convex, name=src.object_names[f])
                for f in src.objects[c]
            ]
            for c in self.classes
        }
        # JPEG draft decoding at a size where the smallest crop still has image_size pixels
        self._draft = int(np.ceil(cfg.image_size / cfg.background_crop[0]))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._capacity = len(self.classes) * n + 64

    def _photo(self, b: int) -> np.ndarray:
        if b in self._cache:
            self._cache.move_to_end(b)
            return self._cache[b]
        img = _decode(self._backgrounds[b], "background photo", draft=self._draft)
        try:
            arr = np.asarray(img.convert("RGB")).copy()
        finally:
            img.close()
        self._cache[b] = arr
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return arr

    def render(
        self, split: str, label: int, i: int, *, background_id: int | None = None
    ) -> CompositeImage:
        """Render image ``i`` of class ``label`` in ``split``.

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"`` (selects the random streams and the
                shortcut probability).
            label: Class index.
            i: Image number within the class and split.
            background_id: Force this background photo (the crop window, the object, its place
                and size stay the same).

        Returns:
            The image and its ground truth.

        Raises:
            DataError: If ``split``, ``label`` or ``background_id`` is out of range.
        """
        from PIL import Image

        cfg = self.config
        if split not in _SPLIT_ID:
            raise DataError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        if not 0 <= label < len(self.classes):
            raise DataError(f"label {label} is outside [0, {len(self.classes)})")
        nb = len(self.background_names)
        if background_id is not None and not 0 <= background_id < nb:
            raise DataError(f"background_id {background_id} is outside [0, {nb})")
        s = cfg.image_size
        name = self.classes[label]
        obj_seq, bg_seq = np.random.SeedSequence([cfg.seed, _SPLIT_ID[split], label, i]).spawn(2)
        obj_rng, bg_rng = np.random.default_rng(obj_seq), np.random.default_rng(bg_seq)

        # background stream: every draw is made whatever the branch, so the streams stay aligned
        home_draw = bg_rng.random()
        home_pick = int(bg_rng.integers(0, len(self.homes[name])))
        pool_pick = int(bg_rng.integers(0, len(self.pools[name])))
        lo, hi = cfg.background_crop
        crop_frac = lo + (hi - lo) * bg_rng.random()
        cy, cx = bg_rng.random(), bg_rng.random()
        if background_id is None:
            at_home = bool(home_draw < cfg.shortcut[split])  # type: ignore[index]
            background_id = self.homes[name][home_pick] if at_home else self.pools[name][pool_pick]
        photo = self._photo(background_id)
        ph, pw = photo.shape[:2]
        side = max(1, int(round(crop_frac * min(ph, pw))))
        top, left = int(cy * (ph - side + 1)), int(cx * (pw - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        backdrop = np.asarray(crop.resize((s, s), Image.Resampling.LANCZOS)).copy()

        # object stream
        cutouts = self.cutouts[name]
        cut = cutouts[int(obj_rng.integers(0, len(cutouts)))]
        alo, ahi = cfg.object_area
        area = (alo + (ahi - alo) * obj_rng.random()) * s * s
        flipped = bool(obj_rng.random() < cfg.flip)
        gain = 1.0 + cfg.brightness * (2.0 * obj_rng.random() - 1.0)
        bh, bw = cut.mask.shape
        k = min(float(np.sqrt(area / (bh * bw))), s / bh, s / bw)
        h, w = max(1, min(s, int(round(bh * k)))), max(1, min(s, int(round(bw * k))))
        alpha = cut.mask.astype(np.float32)
        premult = np.concatenate(
            [cut.rgb.astype(np.float32) * alpha[..., None], alpha[..., None]], axis=2
        )
        small = _resize(premult, h, w)
        a = small[..., 3]
        mask = a >= 0.5
        if not mask.any():  # a sliver thinner than half a pixel: keep its strongest pixel
            mask.flat[int(np.argmax(a))] = True
        colour = np.clip(small[..., :3] / np.maximum(a, 1e-6)[..., None] * gain, 0, 255)
        colour = np.round(colour).astype(np.uint8)
        if flipped:
            mask, colour = mask[:, ::-1], colour[:, ::-1]
        y0 = int(obj_rng.integers(0, s - h + 1))
        x0 = int(obj_rng.integers(0, s - w + 1))
        image = backdrop.copy()
        window = image[y0 : y0 + h, x0 : x0 + w]
        window[mask] = colour[mask]
        full = np.zeros((s, s), dtype=bool)
        full[y0 : y0 + h, x0 : x0 + w] = mask
        rows, cols = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        return CompositeImage(
            image=image,
            mask=full,
            box=box,
            background_image=backdrop,
            background_id=int(background_id),
            background=self.background_names[background_id],
            home=background_id in self.homes[name],
            object=cut.name,
            flipped=flipped,
        )


def _as_config(config: CompositeConfig | dict[str, Any] | None) -> CompositeConfig:
    if config is None:
        return CompositeConfig()
    if isinstance(config, CompositeConfig):
        return config
    try:
        return CompositeConfig.model_validate(config)
    except ValidationError as err:
        raise ConfigurationError(f"invalid composite config: {err}") from err


# -- the export -----------------------------------------------------------------------------------


def _fingerprint(
    cfg: CompositeConfig,
    src: _Sources,
    labels: tuple[list[str], dict[str, dict[str, str]]] | None,
) -> tuple[str, str, str]:
    """``(fingerprint, config hash, sources hash)``, sha256 hex digests."""
    config_text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
    labels_text = json.dumps(labels, sort_keys=True)
    config_hash = hashlib.sha256(f"{config_text}\n{labels_text}".encode()).hexdigest()
    h = hashlib.sha256()
    for name, files in src.objects.items():
        for f in sorted(files, key=lambda p: src.object_names[p]):
            h.update(f"object\0{name}\0{src.object_names[f]}\0{_sha256_file(f)}\n".encode())
    for n, f in zip(src.background_names, src.backgrounds):
        h.update(f"background\0{n}\0{_sha256_file(f)}\n".encode())
    sources_hash = h.hexdigest()
    both = hashlib.sha256(f"{_FORMAT_VERSION}\0{config_hash}\0{sources_hash}".encode())
    return both.hexdigest(), config_hash, sources_hash


def _readme(cfg: CompositeConfig, plan: CompositeRenderer, fingerprint: str) -> str:
    lines = [
        f"# {cfg.project} (composite, made by embedcam.datasets.compose_export)",
        "",
        f"{len(plan.classes)} classes: catalogue cut-outs pasted on real background photos, with",
        "exact object masks (masks/<stem>.png, referenced by each COCO image's extra.mask) and a",
        "planted background-class correlation (extra.home: the image shows its class's home",
        "background; extra.background: the background photo; extra.object: the cut-out photo).",
        "",
        f"- cut-out photos: {sum(len(v) for v in plan.cutouts.values())}",
        f"- background photos: {len(plan.background_names)} ({len(plan.pool)} shared, the rest "
        "homes)",
        f"- images per class: {dict(cfg.images_per_class)}",
        f"- shortcut (home-background probability): {dict(cfg.shortcut)}",
        f"- fingerprint (config + source files, sha256): {fingerprint}",
        "",
    ]
    if cfg.credit:
        lines += ["Credit for the source imagery:", "", cfg.credit.strip(), ""]
    lines.append(f"License: {cfg.license or 'unspecified (see the source imagery)'}")
    return "\n".join(lines) + "\n"


def _write_export(
    cfg: CompositeConfig,
    plan: CompositeRenderer,
    labels: tuple[list[str], dict[str, dict[str, str]]] | None,
    out: Path,
    marker: dict[str, Any],
    progress: bool,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    licence = {"id": 1, "url": "", "name": cfg.license or "unspecified"}
    categories = [{"id": 0, "name": cfg.project, "supercategory": "none"}] + [
        {"id": k + 1, "name": c, "supercategory": cfg.project} for k, c in enumerate(plan.classes)
    ]
    homes_named = {c: [plan.background_names[b] for b in plan.homes[c]] for c in plan.classes}
    total = sum(cfg.images_per_class.values()) * len(plan.classes)
    bar = Progress(
        TextColumn("[bold]composites"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    )
    with bar:
        task = bar.add_task("composites", total=total)
        for split in SPLITS:
            n = cfg.images_per_class.get(split, 0)  # type: ignore[call-overload]
            if n == 0:
                continue
            d = out / split
            (d / "masks").mkdir(parents=True, exist_ok=True)
            images: list[dict[str, Any]] = []
            annotations: list[dict[str, Any]] = []
            for c, name in enumerate(plan.classes):
                for i in range(n):
                    r = plan.render(split, c, i)
                    digest = hashlib.md5(f"{cfg.seed}/{split}/{c}/{i}".encode()).hexdigest()
                    fmt = cfg.image_format
                    stem = f"{_slug(name)}_{split}_{i:05d}_{fmt}.rf.{digest}"
                    (d / f"{stem}.{fmt}").write_bytes(encode_image(r.image, fmt, cfg.jpeg_quality))
                    (d / "masks" / f"{stem}.png").write_bytes(
                        encode_image(r.mask.astype(np.uint8) * 255, "png")
                    )
                    image_id = len(images)
                    images.append(
                        {
                            "id": image_id,
                            "license": 1,
                            "file_name": f"{stem}.{fmt}",
                            "height": cfg.image_size,
                            "width": cfg.image_size,
                            "date_captured": "2024-01-01T00:00:00+00:00",
                            "extra": {
                                "mask": f"masks/{stem}.png",
                                "home": r.home,
                                "background": r.background,
                                "background_id": r.background_id,
                                "home_backgrounds": homes_named[name],
                                "object": r.object,
                                "flipped": r.flipped,
                            },
                        }
                    )
                    x0, y0, x1, y1 = r.box
                    annotations.append(
                        {
                            "id": len(annotations),
                            "image_id": image_id,
                            "category_id": c + 1,
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "area": int(r.mask.sum()),
                            "segmentation": mask_to_polygons(r.mask),
                            "iscrowd": 0,
                        }
                    )
                    bar.advance(task)
            coco = {
                "info": {
                    "year": "2024",
                    "version": "1",
                    "description": (
                        f"{cfg.project}: catalogue cut-outs on real background photos, made by "
                        "embedcam.datasets.compose_export"
                    ),
                    "contributor": cfg.credit.strip(),
                    "url": "",
                    "date_created": "2024-01-01T00:00:00+00:00",
                    "embedcam": {"fingerprint": marker["fingerprint"], "seed": cfg.seed},
                },
                "licenses": [licence],
                "categories": categories,
                "images": images,
                "annotations": annotations,
            }
            (d / "_annotations.coco.json").write_text(json.dumps(coco), encoding="utf-8")
    if labels is not None:
        names, mapping = labels
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["class", *names])
        for cls in plan.classes:
            writer.writerow([cls, *(mapping[cls][n] for n in names)])
        (out / "additional_labels.csv").write_text(buf.getvalue(), encoding="utf-8")
    (out / "README.dataset.txt").write_text(
        _readme(cfg, plan, marker["fingerprint"]), encoding="utf-8"
    )
    (out / _MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True), encoding="utf-8")


def compose_export(
    objects: Mapping[str, str | Path | Sequence[str | Path]] | str | Path,
    backgrounds: str | Path | Sequence[str | Path],
    out: str | Path,
    config: CompositeConfig | dict[str, Any] | None = None,
    *,
    labels: Mapping[str, Mapping[str, str]] | str | Path | None = None,
    if_exists: Literal["error", "reuse", "overwrite"] = "error",
    progress: bool = False,
) -> DatasetIndex:
    """Paste catalogue cut-outs on real photos and write a COCO export with exact masks.

    The export holds ``train/``, ``valid/``, ``test/`` (the splits with images), each with
    ``_annotations.coco.json`` (category 0 is the project super-class, as Roboflow writes it;
    ``bbox``, ``area``, ``iscrowd`` and polygon ``segmentation`` per image), the images and
    ``masks/<stem>.png`` (the exact masks, named by each image's ``extra.mask``, beside
    ``extra.home``, ``extra.background``, ``extra.object``); ``additional_labels.csv`` when
    ``labels`` is given; ``README.dataset.txt`` with the provenance, the credit and the licence
    line; and ``embedcam_composite.json`` with the config and a sha256 fingerprint of the config,
    the labels and every source file (names and bytes). The folder is built in a temporary
    sibling and moved into place, so a crash never leaves a half-written export. The rule that
    cuts the products out, the pasting and the planted shortcut are described in
    [`embedcam.datasets.composite`][embedcam.datasets.composite].

    Args:
        objects: The cut-out photos: a mapping class name -> one or more image paths, or a
            folder holding ``<class>.<ext>`` files (one class per file) and/or ``<class>/``
            folders of images. Classes keep the mapping's order; a folder's are sorted.
        backgrounds: The background photos: a list of image paths, or a folder searched
            recursively (hidden files skipped).
        out: Destination folder (created; must not exist or be empty unless ``if_exists``
            says otherwise).
        config: A [`CompositeConfig`][embedcam.datasets.composite.CompositeConfig], or a dict of its
            fields; default ``CompositeConfig()``.
        labels: Additional labels per class (e.g. ``{"Granny-Smith": {"category": "Fruit",
            "group": "Apple"}}``), or a mapping file as read by
            [`read_extra_labels`][embedcam.datasets.roboflow.read_extra_labels]; classes not among
            the objects are ignored, missing ones are an error.
        if_exists: When ``out`` already holds files: ``"error"``; ``"reuse"`` to load it if it
            is a composite export with the same fingerprint (same config, labels and source
            files; an error otherwise, never a silent reuse); ``"overwrite"`` to replace it if
            it is a composite export (other folders are never deleted).
        progress: Show a rich progress bar.

    Returns:
        The export loaded with [`load_roboflow`][embedcam.datasets.roboflow.load_roboflow] (boxes,
        ``mask_path``, ``extra``; the additional labels when given).

    Raises:
        ConfigurationError: If the config is invalid (the message names the field).
        DataError: If a source is missing or corrupt, a cut-out is refused (the message names
            the file), there are too few background photos (one home each plus a shared one),
            or ``out`` exists with other content, per ``if_exists``.

    Examples:
        With the six-class Grocery Store sample in embedcam's tests (relative to the root of a
        clone, not in the wheel; catalogue photos
        on white in ``iconic/``, real shelf photos searched recursively in ``train/``):

        >>> import tempfile
        >>> import embedcam as ec
        >>> mini = "tests/fixtures/grocery-mini"
        >>> tmp = tempfile.TemporaryDirectory()
        >>> index = ec.datasets.compose_export(
        ...     f"{mini}/iconic",
        ...     f"{mini}/train",
        ...     f"{tmp.name}/composite",
        ...     {"image_size": 64, "images_per_class": {"train": 2, "valid": 1, "test": 1},
        ...      "shortcut": {"test": 0.0}, "license": "MIT",
        ...      "credit": "Grocery Store dataset (Klasson et al., WACV 2019)"},
        ...     labels=f"{mini}/extra_labels.csv",
        ... )
        >>> len(index), index[0].load_mask().shape, index[0].extra["home"]
        (24, torch.Size([64, 64]), True)
        >>> tmp.cleanup()
    """
    cfg = _as_config(config)
    if if_exists not in ("error", "reuse", "overwrite"):
        raise ConfigurationError(
            f"if_exists must be 'error', 'reuse' or 'overwrite', got {if_exists!r}"
        )
    out_dir = Path(out)
    src = _resolve(objects, backgrounds)
    table = _labels_table(labels, list(src.objects))
    fingerprint, config_hash, sources_hash = _fingerprint(cfg, src, table)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        marker_file = out_dir / _MARKER
        ours = marker_file.is_file()
        if if_exists == "reuse" and ours:
            try:
                previous = json.loads(marker_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise DataError(f"{str(marker_file)!r} is unreadable ({err})") from err
            if previous.get("fingerprint") == fingerprint:
                return _load(out_dir)
            what = [
                name
                for name, key, now in (
                    ("the config or labels", "config_sha256", config_hash),
                    ("the source files", "sources_sha256", sources_hash),
                )
                if previous.get(key) != now
            ] or ["the export format"]
            raise DataError(
                f"{str(out_dir)!r} holds a composite export made from other inputs "
                f"({' and '.join(what)} changed); choose another folder or pass "
                "if_exists='overwrite'"
            )
        if if_exists != "overwrite" or not ours:
            raise DataError(
                f"{str(out_dir)!r} exists and is not empty; choose a new folder"
                + (", or pass if_exists='overwrite' or 'reuse'" if ours else "")
            )
    plan = CompositeRenderer._from_sources(src, cfg)
    marker = {
        "format_version": _FORMAT_VERSION,
        "fingerprint": fingerprint,
        "config_sha256": config_hash,
        "sources_sha256": sources_hash,
        "config": cfg.model_dump(mode="json"),
        "classes": plan.classes,
        "objects": {c: [src.object_names[f] for f in src.objects[c]] for c in plan.classes},
        "backgrounds": len(plan.background_names),
        "homes": {c: [plan.background_names[b] for b in plan.homes[c]] for c in plan.classes},
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out_dir.parent, out_dir.name)
    try:
        _write_export(cfg, plan, table, tmp, marker, progress)
        if out_dir.exists():
            old = temporary_folder(out_dir.parent, out_dir.name + ".old")
            os.replace(out_dir, old / "export")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(out_dir)


def _load(out: Path) -> DatasetIndex:
    labels = out / "additional_labels.csv"
    return load_roboflow(
        out,
        extra_labels=labels if labels.is_file() else None,
        format="coco",
        verify_images=False,
    )
