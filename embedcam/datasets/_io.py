"""Private file helpers for the dataset readers and the generator: images and atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from embedcam._atomic import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported)
from embedcam.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def is_image(path: Path) -> bool:
    """Whether ``path`` has one of the image suffixes Roboflow exports use."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def _open(path: Path):  # noqa: ANN202 - PIL type kept private
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(
            f"image file {str(path)!r} does not exist; check the export is complete, or pass "
            "skip_invalid=True to skip and report such files"
        )
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(
            f"image file {str(path)!r} is corrupt or not an image ({err}); re-export it, or pass "
            "skip_invalid=True to skip and report such files"
        ) from err


def image_size(path: Path, *, verify: bool = True) -> tuple[int, int]:
    """Return the ``(H, W)`` of an image file, decoding it fully when ``verify`` is true.

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names the path.
    """
    img = _open(path)
    try:
        if verify:
            img.load()
        return int(img.height), int(img.width)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(
            f"image file {str(path)!r} is corrupt ({err}); re-export it, or pass "
            "skip_invalid=True to skip and report such files"
        ) from err
    finally:
        img.close()


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to an ``(H, W, 3)`` uint8 RGB array.

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names the path.
    """
    img = _open(path)
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"image file {str(path)!r} is corrupt ({err}); re-export it") from err
    finally:
        img.close()


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask image to an ``(H, W)`` bool array (non-zero pixels are the object).

    Raises:
        DataError: If the file is missing or cannot be decoded; the message names the path.
    """
    img = _open(path)
    try:
        return np.asarray(img.convert("L")) > 0
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"mask file {str(path)!r} is corrupt ({err}); regenerate it") from err
    finally:
        img.close()


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
