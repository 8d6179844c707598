"""Robust image decoding: whatever a user uploads becomes an RGB float tensor or a clear error.

Handles EXIF orientation, grayscale, palette, RGBA (composited on white so
transparent regions do not turn black), CMYK, and 16-bit images (scaled by
their full range rather than clipped). Decompression bombs are refused by
pixel count before the pixels are decoded.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from distill.errors import DataError, ImageDecodeError
from distill.options import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_image(data: bytes | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Opens, bounds-checks and fully decodes an image as 8-bit RGB.

    Raises :class:`ImageDecodeError` naming the reason (not an image,
    truncated, too many pixels).
    """
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        with warnings.catch_warnings():
            # Pillow warns, rather than fails, between its limit and twice it: refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"image is {w}x{h} = {w * h} pixels, "
                                       f"more than the limit of {max_pixels}")
            img.load()
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
        raise ImageDecodeError(f"corrupt image: {exc}") from exc
    return to_rgb(ImageOps.exif_transpose(img))


def to_rgb(img: Image.Image) -> Image.Image:
    """Converts any Pillow mode to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data uses its full range; a plain cast to 8 bits would saturate.
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB Pillow image -> float tensor (3, H, W) in [0, 1], as torchvision detectors take."""
    import torch  # here, so that decoding and listing (the API, the client) need no torch

    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_image(data: bytes | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decodes bytes or a file into a (3, H, W) float tensor; see :func:`open_image`."""
    return to_tensor(open_image(data, max_pixels=max_pixels))


def list_images(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Image files inside ``folder`` (by suffix; with ``recursive``, in its subfolders
    too, hidden ones excepted), sorted by path."""
    if not folder.is_dir():
        raise DataError(f"image folder {str(folder)!r} does not exist")
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))
