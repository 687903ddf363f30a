"""The one image decoder: displayed orientation, true bit depth, a pixel cap, every PIL mode."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from embedcam import cli
from embedcam.datasets import _io
from embedcam.datasets._io import image_size, read_mask, read_rgb, read_rgb_float
from embedcam.datasets.composite import load_cutout
from embedcam.errors import ConfigurationError, DataError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _stored_4x2() -> Image.Image:
    """A 4 wide x 2 high RGB image: red top-left, blue bottom-right, the rest white."""
    img = Image.new("RGB", (4, 2), WHITE)
    img.putpixel((0, 0), RED)
    img.putpixel((3, 1), BLUE)
    return img


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(width: int, height: int, depth: int, color: int, raw: bytes) -> bytes:
    """A PNG written byte by byte (PIL cannot write 16-bit colour or huge headers)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def _png16(values: np.ndarray, color: int) -> bytes:
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))
    return _png(w, h, 16, color, raw)


def _bomb(tmp_path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` grey pixels (the data is not there)."""
    p = tmp_path / f"bomb_{width}x{height}.png"
    p.write_bytes(_png(width, height, 8, 0, b"\x00" * 64))
    return p


# -- 1. EXIF orientation --------------------------------------------------------------------------


def test_exif_orientation_6_is_read_as_displayed(tmp_path: Path) -> None:
    p = tmp_path / "rot.png"
    _stored_4x2().save(p, exif=_exif(6))  # 6: rotate 90 degrees clockwise to display
    rgb = read_rgb(p)
    assert rgb.shape == (4, 2, 3)
    # stored top-left -> displayed top-right; stored bottom-right -> displayed bottom-left
    assert tuple(rgb[0, 1]) == RED and tuple(rgb[3, 0]) == BLUE
    assert tuple(rgb[0, 0]) == WHITE
    assert image_size(p) == (4, 2)
    assert image_size(p, verify=False) == (4, 2)
    assert read_mask(p).shape == (4, 2)
    assert tuple(cli._read_image(p).shape) == (3, 4, 2)
    assert cli._image_size(p) == (4, 2)


def test_exif_orientation_of_a_jpeg_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (32, 16), WHITE)
    img.paste(RED, (0, 0, 8, 8))  # one uniform 8x8 block survives JPEG almost exactly
    p = tmp_path / "rot.jpg"
    img.save(p, quality=100, subsampling=0, exif=_exif(8))  # 8: rotate 90 counter-clockwise
    rgb = read_rgb(p).astype(int)
    assert rgb.shape == (32, 16, 3)
    assert image_size(p, verify=False) == (32, 16)
    # stored top-left block -> displayed bottom-left block
    assert np.abs(rgb[28, 4] - RED).max() <= 3
    assert np.abs(rgb[4, 4] - WHITE).max() <= 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pil(tmp_path: Path, orientation: int) -> None:
    rng = np.random.default_rng(orientation)
    stored = Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8))
    p = tmp_path / f"o{orientation}.png"
    stored.save(p, exif=_exif(orientation))
    with Image.open(p) as img:
        want = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert np.array_equal(read_rgb(p), want)
    assert image_size(p, verify=False) == want.shape[:2]


def test_exif_orientation_applies_to_masks_and_cutouts(tmp_path: Path) -> None:
    mask = Image.new("L", (4, 2), 0)
    mask.putpixel((0, 0), 255)
    p = tmp_path / "mask.png"
    mask.save(p, exif=_exif(6))
    m = read_mask(p)
    assert m.shape == (4, 2) and m[0, 1] and m.sum() == 1

    rgba = Image.new("RGBA", (60, 20), (0, 0, 0, 0))
    rgba.paste((200, 10, 10, 255), (10, 5, 30, 15))  # a 20 wide x 10 high object
    q = tmp_path / "cut.png"
    rgba.save(q, exif=_exif(6))
    cut = load_cutout(q)
    assert cut.rgb.shape == (20, 10, 3) and cut.mask.shape == (20, 10)


# -- 2. true bit depth ----------------------------------------------------------------------------


def test_16_bit_grey_png_is_scaled_by_65535(tmp_path: Path) -> None:
    p = tmp_path / "g16.png"
    Image.fromarray(np.array([[200, 65535], [0, 1000]], dtype=np.uint16)).save(p)
    with Image.open(p) as img:
        assert img.mode == "I;16"
    x = cli._read_image(p)
    assert abs(float(x[0, 0, 0]) - 200 / 65535) < 1e-6
    assert tuple(x.shape) == (3, 2, 2)  # (C, H, W)
    assert abs(float(x[1, 1, 0]) - 0.0) < 1e-9 and abs(float(x[2, 0, 1]) - 1.0) < 1e-6
    assert abs(float(x[0, 1, 1]) - 1000 / 65535) < 1e-6
    f = read_rgb_float(p)
    assert f.dtype == np.float32 and f.shape == (2, 2, 3)
    u = read_rgb(p)
    assert u.dtype == np.uint8
    assert u[..., 0].tolist() == [[1, 255], [0, 4]]  # round(v * 255 / 65535)


def test_16_bit_grey_tiff_and_16_bit_masks(tmp_path: Path) -> None:
    p = tmp_path / "g16.tif"
    Image.fromarray(np.array([[300, 65535]], dtype=np.uint16)).save(p)
    assert abs(float(read_rgb_float(p)[0, 0, 1]) - 300 / 65535) < 1e-6
    m = tmp_path / "m16.png"
    Image.fromarray(np.array([[0, 1, 256]], dtype=np.uint16)).save(m)
    assert read_mask(m).tolist() == [[False, True, True]]


def test_16_bit_colour_png_keeps_the_high_byte(tmp_path: Path) -> None:
    # PIL decodes 16-bit RGB(A) PNGs to 8 bits (the high byte): documented, within 1/255
    p = tmp_path / "rgb16.png"
    p.write_bytes(_png16(np.array([[[200, 32896, 65535]]], dtype=np.uint16), 2))
    assert read_rgb(p).tolist() == [[[0, 128, 255]]]
    q = tmp_path / "rgba16.png"
    q.write_bytes(_png16(np.array([[[51400, 0, 65535, 0]]], dtype=np.uint16), 6))
    assert read_rgb(q).tolist() == [[[200, 0, 255]]]  # alpha dropped


def test_32_bit_integer_tiff_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "i32.tif"
    Image.fromarray(np.array([[5, 70000]], dtype=np.int32)).save(p)
    with pytest.raises(DataError, match=r"i32\.tif'.*32-bit integer"):
        read_rgb(p)


# -- 3. float TIFFs -------------------------------------------------------------------------------


def test_float_tiff_in_unit_range_is_read_as_intensity(tmp_path: Path) -> None:
    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.5, 1.0], [0.0, 0.25]], dtype=np.float32)).save(p)
    with Image.open(p) as img:
        assert img.mode == "F"
    f = read_rgb_float(p)
    assert f[..., 1].tolist() == [[0.5, 1.0], [0.0, 0.25]]
    assert read_rgb(p)[..., 2].tolist() == [[128, 255], [0, 64]]
    assert read_mask(p).tolist() == [[True, True], [False, True]]


@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan"), float("inf")])
def test_float_tiff_outside_unit_range_is_refused(tmp_path: Path, bad: float) -> None:
    p = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.5, bad]], dtype=np.float32)).save(p)
    with pytest.raises(DataError, match=r"f\.tif'.*\[0, 1\]"):
        read_rgb(p)
    with pytest.raises(DataError, match=r"f\.tif'.*\[0, 1\]"):
        cli._read_image(p)


# -- 4. the pixel cap -----------------------------------------------------------------------------


def test_cap_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    p = _bomb(tmp_path, 9000, 8000)  # 72 MP: over embedcam's cap, under PIL's own limit
    for call in (read_rgb, read_mask, read_rgb_float, image_size):
        with pytest.raises(DataError, match=r"bomb_9000x8000\.png' has 9000 x 8000 = 72,000,000"):
            call(p)
    with pytest.raises(DataError, match="EMBEDCAM_MAX_PIXELS"):
        image_size(p, verify=False)
    with pytest.raises(DataError, match="72,000,000 pixels"):
        cli._image_size(p)


@pytest.mark.parametrize("side", [12000, 20000])  # 144 MP warns in PIL, 400 MP raises in PIL
def test_cap_replaces_pil_bomb_warnings_and_errors(tmp_path: Path, side: int) -> None:
    p = _bomb(tmp_path, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=rf"{p.name}'.*{side * side:,} pixels"):
            read_rgb(p)
        with pytest.raises(DataError, match=rf"{p.name}'.*{side * side:,} pixels"):
            image_size(p, verify=False)


def test_a_raised_cap_names_pils_own_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _bomb(tmp_path, 20000, 20000)
    monkeypatch.setenv("EMBEDCAM_MAX_PIXELS", "500000000")
    with pytest.raises(DataError, match=r"within embedcam's cap.*PIL\.Image\.MAX_IMAGE_PIXELS"):
        image_size(p, verify=False)


def test_cap_can_be_raised_or_lowered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "small.png"
    Image.new("RGB", (100, 50), RED).save(p)
    assert read_rgb(p).shape == (50, 100, 3)
    with pytest.raises(DataError, match=r"small\.png' has 100 x 50 = 5,000 pixels.*4,999"):
        read_rgb(p, max_pixels=4999)
    assert read_rgb(p, max_pixels=5000).shape == (50, 100, 3)
    monkeypatch.setattr(_io, "MAX_PIXELS", 4000)
    with pytest.raises(DataError, match="over the cap of 4,000"):
        image_size(p, verify=False)
    monkeypatch.setenv("EMBEDCAM_MAX_PIXELS", "10000")
    assert image_size(p, verify=False) == (50, 100)
    monkeypatch.setenv("EMBEDCAM_MAX_PIXELS", "lots")
    with pytest.raises(ConfigurationError, match="EMBEDCAM_MAX_PIXELS"):
        read_rgb(p)
    big = _bomb(tmp_path, 9000, 8000)
    monkeypatch.setenv("EMBEDCAM_MAX_PIXELS", "80000000")
    assert image_size(big, verify=False) == (8000, 9000)
    with pytest.raises(DataError, match="is corrupt"):  # past the cap: decoded, found truncated
        read_rgb(big)


def test_cap_counts_the_drafted_size_of_a_background(tmp_path: Path) -> None:
    from embedcam.datasets.composite import _decode

    p = tmp_path / "bg.jpg"
    Image.new("RGB", (400, 200), GREEN).save(p)
    with pytest.raises(DataError, match="80,000"):
        _decode(p, "background photo", max_pixels=10_000)
    img = _decode(p, "background photo", draft=50, max_pixels=20_000)  # decoded at 1/4
    assert img.size == (100, 50) and img.mode == "RGB"


# -- 5. every other mode and every broken file ---------------------------------------------------


def test_alpha_is_dropped_and_palette_transparency_keeps_its_colour(tmp_path: Path) -> None:
    p = tmp_path / "rgba.png"
    Image.new("RGBA", (2, 1), (10, 20, 30, 0)).save(p)
    assert read_rgb(p).tolist() == [[[10, 20, 30], [10, 20, 30]]]
    q = tmp_path / "p.png"
    pal = Image.new("P", (2, 1))
    pal.putpalette([10, 20, 30, 40, 50, 60])
    pal.putpixel((1, 0), 1)
    pal.save(q, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_rgb(q).tolist() == [[[10, 20, 30], [40, 50, 60]]]


def test_la_one_bit_and_cmyk(tmp_path: Path) -> None:
    la = tmp_path / "la.png"
    Image.new("LA", (1, 1), (77, 0)).save(la)
    assert read_rgb(la).tolist() == [[[77, 77, 77]]]
    one = tmp_path / "one.png"
    bits = Image.new("1", (2, 1), 0)
    bits.putpixel((1, 0), 1)
    bits.save(one)
    assert read_rgb(one).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    assert read_mask(one).tolist() == [[False, True]]
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk, quality=100)
    assert np.abs(read_rgb(cmyk).astype(int) - RED).max() <= 3


def test_multi_frame_files_read_their_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), c) for c in (RED, GREEN, BLUE)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=50, loop=0)
    tif = tmp_path / "pages.tif"
    frames[1].save(tif, save_all=True, append_images=[frames[0], frames[2]])
    assert np.abs(read_rgb(gif).astype(int) - RED).max() <= 3
    assert read_rgb(tif).tolist() == np.full((4, 4, 3), GREEN).tolist()


def _broken(tmp_path: Path) -> dict[str, Path]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), GREEN).save(buf, format="PNG", compress_level=0)
    png = tmp_path / "cut.png"
    png.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buf, format="JPEG"
    )
    jpg = tmp_path / "cut.jpg"
    jpg.write_bytes(buf.getvalue()[:400])
    txt = tmp_path / "notes.png"
    txt.write_text("this is not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    return {"truncated png": png, "truncated jpeg": jpg, "text": txt, "zero bytes": empty}


@pytest.mark.parametrize("case", ["truncated png", "truncated jpeg", "text", "zero bytes"])
def test_broken_files_raise_data_error_naming_the_path(tmp_path: Path, case: str) -> None:
    p = _broken(tmp_path)[case]
    for call in (read_rgb, read_mask, read_rgb_float, image_size):
        with pytest.raises(DataError, match=rf"{p.name}' is corrupt"):
            call(p)
    with pytest.raises(DataError, match=rf"input image '.*{p.name}' is corrupt.*from the inputs"):
        cli._read_image(p)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    for call in (read_rgb, read_mask, image_size):
        with pytest.raises(DataError, match=r"nope\.png' does not exist"):
            call(tmp_path / "nope.png")
