"""Private file helpers for the dataset readers and the generator: images and atomic writes.

Every image file embedcam reads goes through this module, which decodes it the way an image
viewer displays it:

* **Orientation.** The EXIF ``Orientation`` tag (JPEG, PNG, TIFF, WebP; or the XMP
  ``tiff:Orientation`` fallback) is applied, so arrays, sizes and the boxes drawn on them refer to
  the displayed image. It is read from the header, before the pixels are decoded, so
  `image_size` gives the displayed size with ``verify=False`` too. A malformed EXIF block is
  ignored (as viewers do). Masks follow the same rule: a mask that carries no EXIF (the usual
  case for PNG masks) is read as stored, one that carries it is turned like its image.
* **Bit depth.** Values are scaled by the file's true range: 8-bit by 255, 16-bit grey
  (PIL modes ``I;16*``, and ``I`` from PNG) by 65535, a TIFF's ``BitsPerSample`` when it says
  fewer bits (12-bit: 4095). `read_rgb_float` keeps the full precision; `read_rgb`
  rounds to 8 bits. Integer images of more than 16 bits or with negative values are refused:
  they have no standard display range. 16-bit colour PNGs are decoded by PIL to 8 bits (the high
  byte of each value, within 1/255 of the exact scaling), which is the precision embedcam gets.
* **Float images** (PIL mode ``F``: 32-bit float TIFFs) are read as intensities in ``[0, 1]``.
  Values outside ``[0, 1]`` (beyond a rounding tolerance of 1e-6, which is clipped) and NaN or
  infinite values raise a [`DataError`][embedcam.errors.DataError] asking to rescale the file: a
  guessed rescaling would change what the model sees without telling anyone.
* **Alpha** is dropped, not composited: the colour stored under a transparent pixel is kept,
  exactly as ``PIL.Image.convert("RGB")`` (and so torchvision's default image loader) reads it,
  so a model sees the pixels it was trained on. Palette images with transparency, ``LA`` and
  ``RGBA`` all follow that rule; grey and 1-bit images are replicated to three channels; CMYK
  (and other colour spaces PIL converts) are converted by PIL.
* **Multi-frame files** (animated GIF, APNG, WebP, multi-page TIFF, MPO) give their first frame.
* **A pixel cap** guards against decompression bombs (a 140 KB PNG can claim 12000 x 12000
  pixels, 432 MB as uint8 RGB and 1.7 GB as a float tensor). The size is checked from the
  header before any pixel is decoded; an image over the cap raises a ``DataError`` that names the
  file and its pixel count. The cap is the ``max_pixels`` argument of the readers, else the
  environment variable ``EMBEDCAM_MAX_PIXELS`` (inherited by data-loader worker processes),
  else the module constant `MAX_PIXELS`. PIL's own ``Image.MAX_IMAGE_PIXELS`` is neither
  relied on nor changed, but PIL still refuses images of more than twice that (179 MP by
  default) when they are opened; the error then says so.
* **Broken files** (missing, zero bytes, not an image, truncated, unsupported by PIL) raise a
  ``DataError`` naming the path, never a raw ``OSError`` or PIL exception.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedcam.atomic import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from embedcam.errors import ConfigurationError, DataError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

MAX_PIXELS: int = 64_000_000
"""Default pixel cap (width x height) of one decoded image.

64 MP holds every common camera and phone photo (50 MP phone sensors: 8160 x 6144; 61 MP
full-frame cameras: 9504 x 6336) while bounding one decoded image to 192 MB as uint8 RGB and
768 MB as a float32 tensor. It stays below PIL's own warning threshold (89.5 MP), so PIL never
warns first. Raise it per call with ``max_pixels=``, for a whole run (data-loader workers
included) with the environment variable ``EMBEDCAM_MAX_PIXELS``, or by setting this constant.
"""

MAX_PIXELS_ENV = "EMBEDCAM_MAX_PIXELS"

_EXIF_ORIENTATION = 0x0112
_FLOAT_TOLERANCE = 1e-6
_MISSING_HINT = (
    "check the export is complete, or pass skip_invalid=True to skip and report such files"
)
_SIZE_HINT = "re-export it, or pass skip_invalid=True to skip and report such files"


def is_image(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes Roboflow exports use."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def pixel_cap(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels``, else ``$EMBEDCAM_MAX_PIXELS``, else MAX_PIXELS.

    Args:
        max_pixels: An explicit cap (width x height), or ``None`` for the default.

    Returns:
        The cap, a positive number of pixels.

    Raises:
        ConfigurationError: If the argument or the environment variable is not a positive
            integer.
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigurationError(
                f"max_pixels must be a positive integer (width x height), got {max_pixels!r}"
            )
        return max_pixels
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            cap = int(env)
        except ValueError:
            cap = 0
        if cap < 1:
            raise ConfigurationError(
                f"the environment variable {MAX_PIXELS_ENV}={env!r} must be a positive integer "
                f"number of pixels (width x height), e.g. {MAX_PIXELS_ENV}=100000000; unset it "
                f"for the default cap of {MAX_PIXELS:,}"
            )
        return cap
    return int(MAX_PIXELS)


def _cap_error(path: Path, what: str, pixels: int, cap: int, dims: str, hint: str) -> DataError:
    from PIL import Image

    pil = Image.MAX_IMAGE_PIXELS
    if pil is not None and cap >= pixels > 2 * pil:
        return DataError(
            f"{what} {str(path)!r} has {dims}{pixels:,} pixels: within embedcam's cap of "
            f"{cap:,} but over PIL's own limit of 2 x PIL.Image.MAX_IMAGE_PIXELS = {2 * pil:,} "
            f"pixels; raise PIL.Image.MAX_IMAGE_PIXELS too, or downscale it; {hint}"
        )
    extra = ""
    if pil is not None and pixels > 2 * pil:
        extra = (
            f"; PIL itself refuses more than 2 x PIL.Image.MAX_IMAGE_PIXELS = {2 * pil:,} "
            "pixels, so raise that too"
        )
    return DataError(
        f"{what} {str(path)!r} has {dims}{pixels:,} pixels, over the cap of {cap:,} pixels that "
        f"guards against decompression bombs; downscale it, or raise the cap with the "
        f"environment variable {MAX_PIXELS_ENV}=<pixels> or the max_pixels argument{extra}; "
        f"{hint}"
    )


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8) from the header, without decoding pixels; 1 if none or bad."""
    from PIL import Image

    try:
        # the base method reads only what the header gave (PNG's own override decodes the
        # pixels to look for an eXIf chunk after the image data)
        value = Image.Image.getexif(img).get(_EXIF_ORIENTATION, 1)
        orientation = int(value)
    except Exception:  # a malformed EXIF block is ignored, as viewers do
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn ``a`` (``(H, W, ...)``) from stored to displayed orientation (views, no copies)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, k=-1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, k=1)
    return a


def _open(
    path: Path,
    *,
    what: str = "image file",
    hint: str = _SIZE_HINT,
    missing_hint: str = _MISSING_HINT,
    max_pixels: int | None = None,
    draft: int | None = None,
) -> tuple[Image.Image, int]:
    """Open ``path`` lazily, check its pixel count from the header; return it and its orientation.

    Raises:
        DataError: If the file is missing, not an image, or over the pixel cap.
        ConfigurationError: If the pixel cap is not a positive integer.
    """
    from PIL import Image

    cap = pixel_cap(max_pixels)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist; {missing_hint}")
    try:
        with warnings.catch_warnings():
            # embedcam's own cap, checked below, replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = int(found[1]) if found else 2 * int(Image.MAX_IMAGE_PIXELS or 0) + 1
        raise _cap_error(path, what, pixels, cap, "", hint) from err
    except MemoryError:
        raise
    except Exception as err:  # any decoder failure on a user's file
        raise DataError(f"{what} {str(path)!r} is corrupt or not an image ({err}); {hint}") from err
    try:
        orientation = _orientation(img)
        if draft is not None and img.format == "JPEG":
            img.draft("RGB", (draft, draft))
        width, height = int(img.width), int(img.height)
        if width * height > cap:
            raise _cap_error(path, what, width * height, cap, f"{width} x {height} = ", hint)
    except DataError:
        img.close()
        raise
    except MemoryError:
        img.close()
        raise
    except Exception as err:  # any decoder failure
        img.close()
        raise DataError(f"{what} {str(path)!r} is corrupt ({err}); {hint}") from err
    return img, orientation


def _int_bits(img: Image.Image) -> int:
    """The true bit depth of a PIL integer image (modes ``I;16*`` and ``I``).

    A TIFF's ``BitsPerSample``; otherwise 16 (PNG and PGM hold at most 16 bits, and values over
    65535 are refused by the range check).
    """
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF BitsPerSample
        bits = tags[258]
        return int(bits[0] if isinstance(bits, tuple) else bits)
    return 16


def _pixels(
    img: Image.Image, path: Path, what: str, hint: str
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Decode a PIL image: values ``(H, W, 3)`` or ``(H, W, 1)`` (grey), their full scale, alpha.

    Stored orientation; uint8 values for 8-bit files, wider types otherwise.
    """
    img.load()
    mode = img.mode
    where = f"{what} {str(path)!r}"
    if mode == "RGB":
        return np.asarray(img), 255.0, None
    if mode == "RGBA":
        rgba = np.asarray(img)
        return rgba[..., :3], 255.0, rgba[..., 3]
    if mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        return rgba[..., :3], 255.0, rgba[..., 3]
    if mode == "I" or mode.startswith("I;16"):
        grey = np.asarray(img)
        bits = _int_bits(img)
        if bits > 16:
            raise DataError(
                f"{where} is a {bits}-bit integer image (PIL mode {mode}), which has no standard "
                "display range; convert it to 8 or 16 bits, or to float in [0, 1]"
            )
        top = (1 << bits) - 1
        lo, hi = (int(grey.min()), int(grey.max())) if grey.size else (0, 0)
        if lo < 0 or hi > top:
            raise DataError(
                f"{where} holds values {lo}..{hi}, outside its {bits}-bit range 0..{top}; "
                "convert it to unsigned 8 or 16 bits"
            )
        return grey[..., None], float(top), None
    if mode == "F":
        grey = np.asarray(img)
        finite = bool(np.isfinite(grey).all())
        flo, fhi = (float(np.nanmin(grey)), float(np.nanmax(grey))) if grey.size else (0.0, 0.0)
        if not finite or flo < -_FLOAT_TOLERANCE or fhi > 1 + _FLOAT_TOLERANCE:
            found = "NaN or infinite values" if not finite else f"values in [{flo:g}, {fhi:g}]"
            raise DataError(
                f"{where} is a float image with {found}; embedcam reads float images as "
                "intensities in [0, 1]: rescale it to [0, 1] (e.g. divide by its maximum) or "
                "save it as an 8- or 16-bit image"
            )
        return np.clip(grey, 0.0, 1.0)[..., None], 1.0, None
    try:
        return np.asarray(img.convert("RGB")), 255.0, None
    except ValueError as err:  # a mode PIL cannot convert (e.g. LAB)
        raise DataError(
            f"{where} has PIL mode {mode}, which cannot be converted to RGB ({err}); save it "
            "as RGB or grey"
        ) from err


def _decode(
    path: Path,
    *,
    what: str,
    hint: str,
    missing_hint: str = _MISSING_HINT,
    max_pixels: int | None = None,
    draft: int | None = None,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Open, cap-check and decode ``path``: displayed-orientation values, scale, alpha."""
    img, orientation = _open(
        path, what=what, hint=hint, missing_hint=missing_hint, max_pixels=max_pixels, draft=draft
    )
    try:
        values, scale, alpha = _pixels(img, path, what, hint)
    except (DataError, MemoryError):
        raise
    except Exception as err:  # truncated data, bad chunks, decoder errors
        raise DataError(f"{what} {str(path)!r} is corrupt ({err}); {hint}") from err
    finally:
        img.close()
    values = _orient(values, orientation)
    if alpha is not None:
        alpha = _orient(alpha, orientation)
    return values, scale, alpha


def _to_uint8(values: np.ndarray, scale: float) -> np.ndarray:
    if values.dtype == np.uint8 and scale == 255.0:
        out = values
    else:
        out = np.rint(values.astype(np.float32) * np.float32(255.0 / scale)).astype(np.uint8)
    if out.shape[-1] == 1:
        return np.repeat(out, 3, axis=-1)
    return np.array(out, dtype=np.uint8, order="C", copy=True)


def image_size(
    path: Path,
    *,
    verify: bool = True,
    max_pixels: int | None = None,
    what: str = "image file",
    hint: str = _SIZE_HINT,
) -> tuple[int, int]:
    """Return the displayed ``(H, W)`` of an image file (EXIF orientation applied).

    Args:
        path: The image file.
        verify: Decode the pixels too (a truncated or otherwise unreadable file then fails
            here); without it only the header is read, orientation and pixel cap included.
        max_pixels: The pixel cap (default `pixel_cap`).
        what: How error messages name the file.
        hint: The remedy error messages suggest.

    Returns:
        ``(height, width)`` as displayed.

    Raises:
        DataError: If the file is missing, cannot be decoded or is over the pixel cap; the
            message names the path.
    """
    path = Path(path)
    if verify:
        values, _, _ = _decode(
            path,
            what=what,
            hint=hint,
            missing_hint=_MISSING_HINT if hint == _SIZE_HINT else hint,
            max_pixels=max_pixels,
        )
        return int(values.shape[0]), int(values.shape[1])
    img, orientation = _open(
        path,
        what=what,
        hint=hint,
        missing_hint=_MISSING_HINT if hint == _SIZE_HINT else hint,
        max_pixels=max_pixels,
    )
    try:
        height, width = int(img.height), int(img.width)
    finally:
        img.close()
    return (width, height) if orientation >= 5 else (height, width)


def read_rgb(
    path: Path,
    *,
    max_pixels: int | None = None,
    what: str = "image file",
    hint: str = "re-export it",
) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array, as displayed.

    See the module docstring for the rules: EXIF orientation applied, 16-bit and float images
    scaled by their true range then rounded to 8 bits, alpha dropped, first frame.

    Args:
        path: The image file.
        max_pixels: The pixel cap (default `pixel_cap`).
        what: How error messages name the file.
        hint: The remedy error messages suggest.

    Returns:
        A C-contiguous, writable uint8 array.

    Raises:
        DataError: If the file is missing, cannot be decoded, holds values outside its range or
            is over the pixel cap; the message names the path.
    """
    values, scale, _ = _decode(
        Path(path), what=what, hint=hint, missing_hint=_MISSING_HINT, max_pixels=max_pixels
    )
    return _to_uint8(values, scale)


def read_rgb_float(
    path: Path,
    *,
    max_pixels: int | None = None,
    what: str = "image file",
    hint: str = "re-export it",
) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` float32 RGB array in ``[0, 1]``, as displayed.

    Like `read_rgb` but without rounding to 8 bits: a 16-bit value ``v`` reads as
    ``v / 65535``, a float image's values as they are. For 8-bit files the result equals
    ``read_rgb(path) / 255`` in float32.

    Args:
        path: The image file.
        max_pixels: The pixel cap (default `pixel_cap`).
        what: How error messages name the file.
        hint: The remedy error messages suggest.

    Returns:
        A C-contiguous float32 array.

    Raises:
        DataError: If the file is missing, cannot be decoded, holds values outside its range or
            is over the pixel cap; the message names the path.
    """
    missing = _MISSING_HINT if hint == "re-export it" else hint
    values, scale, _ = _decode(
        Path(path), what=what, hint=hint, missing_hint=missing, max_pixels=max_pixels
    )
    out = values.astype(np.float32)
    out /= np.float32(scale)
    if out.shape[-1] == 1:
        return np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def read_mask(path: Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode a mask image to an ``(H, W)`` bool array (non-zero pixels are the object).

    A pixel is the object when any colour channel is non-zero (alpha is ignored), at the file's
    own bit depth (a 16-bit 1 or a float 0.5 count). The EXIF orientation is applied like for
    images (see the module docstring).

    Args:
        path: The mask file.
        max_pixels: The pixel cap (default `pixel_cap`).

    Returns:
        The mask, as displayed.

    Raises:
        DataError: If the file is missing, cannot be decoded or is over the pixel cap; the
            message names the path.
    """
    values, _, _ = _decode(
        Path(path), what="mask file", hint="regenerate it", max_pixels=max_pixels
    )
    return np.ascontiguousarray((values != 0).any(axis=-1))


def open_rgb(
    path: Path,
    *,
    what: str = "image file",
    hint: str = "re-export it",
    max_pixels: int | None = None,
    draft: int | None = None,
) -> Image.Image:
    """Decode an image file to a loaded PIL image of mode ``RGB`` or ``RGBA``, as displayed.

    The same rules as `read_rgb`, except that an alpha channel is kept (mode ``RGBA``)
    for callers that use it; the caller closes the image.

    Args:
        path: The image file.
        what: How error messages name the file.
        hint: The remedy error messages suggest.
        max_pixels: The pixel cap (default `pixel_cap`), applied to the size decoded.
        draft: For JPEG files, decode at a reduced scale (1/2, 1/4 or 1/8) that still gives at
            least ``draft`` pixels on both sides (``PIL.Image.draft``).

    Returns:
        The image.

    Raises:
        DataError: If the file is missing, cannot be decoded, holds values outside its range or
            is over the pixel cap; the message names the path.
    """
    from PIL import Image

    values, scale, alpha = _decode(
        Path(path), what=what, hint=hint, missing_hint=hint, max_pixels=max_pixels, draft=draft
    )
    rgb = _to_uint8(values, scale)
    if alpha is None:
        return Image.fromarray(rgb)
    return Image.fromarray(np.concatenate([rgb, np.ascontiguousarray(alpha)[..., None]], axis=-1))


def encode_image(array: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    """Encode an ``(H, W, 3)`` or ``(H, W)`` uint8 array as JPEG or PNG bytes (deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(array)
    if fmt in ("jpg", "jpeg"):
        img.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        img.save(buf, format="PNG", optimize=False, compress_level=1)
    else:  # pragma: no cover - guarded by the callers' config validation
        raise DataError(f"unknown image format {fmt!r}; use 'jpg' or 'png'")
    return buf.getvalue()
