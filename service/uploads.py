"""Upload checks and file names.

Validation at upload time is deliberately cheap: the image header is parsed
(format, width, height) and the pixel count bounded, which rejects non-images,
unsupported formats and decompression bombs without decoding any pixels. The
full decode happens in the worker, where a file that is corrupt past its
header (truncated data, bad compressed stream) becomes a per-image error of
the job while the rest of the batch is annotated. This keeps the API's CPU
and memory use per request small and independent of image content.

Client file names are metadata only: they are reduced to a safe base name,
made unique within the job, and used as the COCO ``file_name``; the bytes are
stored under generated names.
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass
from typing import IO

from PIL import Image, UnidentifiedImageError

# Formats a detector can take that Pillow decodes without external tools.
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP", "GIF"})
_MAX_NAME = 200
_FORBIDDEN = set('<>:"|?*')


@dataclass(frozen=True)
class Probe:
    """What the header says: format and size."""

    format: str
    width: int
    height: int


class RejectedError(ValueError):
    """An upload that is refused; the message says why."""


def probe_image(fh: IO[bytes], *, max_pixels: int) -> Probe:
    """Reads only the header of an image; raises :class:`RejectedError` naming the problem."""
    fh.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                fmt, (w, h) = str(img.format), img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedError(f"too many pixels (decompression bomb?): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise RejectedError("not an image (no known image header)") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RejectedError(f"unreadable image header: {exc}") from exc
    finally:
        fh.seek(0)
    if fmt not in ALLOWED_FORMATS:
        raise RejectedError(f"image format {fmt} is not accepted; use one of "
                            f"{', '.join(sorted(ALLOWED_FORMATS))}")
    if w <= 0 or h <= 0:
        raise RejectedError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise RejectedError(f"image is {w}x{h} = {w * h} pixels, more than the limit of "
                            f"{max_pixels}")
    return Probe(fmt, w, h)


def safe_name(raw: str | None, index: int) -> str:
    """A client's file name reduced to a harmless base name (never a path).

    Directories (either slash), control characters, characters Windows
    forbids and leading dots are dropped; an empty result becomes
    ``image_<index>``. Length is capped, keeping the extension.
    """
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in _FORBIDDEN)
    name = name.strip().lstrip(".").strip()
    if not name:
        return f"image_{index:04d}"
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        name = (stem if ext else name)[: _MAX_NAME - len(ext) - 1] + ("." + ext if ext else "")
    return name


def unique_names(names: list[str]) -> list[str]:
    """Makes names unique, keeping the first and numbering repeats (``a.png``, ``a-1.png``)."""
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 0
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        while candidate in seen:
            n += 1
            candidate = f"{stem}-{n}.{ext}" if ext else f"{stem}-{n}"
        seen.add(candidate)
        out.append(candidate)
    return out
