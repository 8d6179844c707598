"""Image decoding: every odd input becomes RGB or a clear ImageDecodeError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from distill.errors import ImageDecodeError
from distill.images import load_image, open_image


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_rgb_png_round_trips() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    t = load_image(_encode(Image.fromarray(arr)))
    assert t.shape == (3, 20, 30)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy() * 255, arr, atol=1e-3)


def test_grayscale_becomes_three_equal_channels() -> None:
    t = load_image(_encode(Image.new("L", (8, 6), 100)))
    assert t.shape == (3, 6, 8)
    assert float(t.min()) == float(t.max()) == pytest.approx(100 / 255)


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    img.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    t = load_image(_encode(img))
    assert t[:, 1, 1].tolist() == [1.0, 1.0, 1.0]
    assert t[:, 0, 0].tolist() == [0.0, 0.0, 1.0]


def test_sixteen_bit_uses_full_range() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I")
    t = load_image(_encode(img))
    assert t[0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0], abs=1 / 255)


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    t = load_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert t.shape == (3, 40, 20)  # portrait after rotation
    assert t[:, :8, :].mean() > 0.9  # the white band is now on top


def test_palette_and_cmyk() -> None:
    assert load_image(_encode(Image.new("P", (5, 5), 3))).shape == (3, 5, 5)
    assert load_image(_encode(Image.new("CMYK", (5, 5), (0, 0, 0, 0)), "JPEG")).shape == (3, 5, 5)


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        open_image(data)


def test_truncated_file_is_a_decode_error() -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(arr))
    with pytest.raises(ImageDecodeError, match="corrupt"):
        open_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # 3000 x 3000 of one colour compresses to a few KiB but is 9 Mpx.
    data = _encode(Image.new("L", (3000, 3000), 0))
    assert len(data) < 100_000
    with pytest.raises(ImageDecodeError, match="pixels"):
        open_image(data, max_pixels=1_000_000)
