"""Upload checks and file names.

Validation at upload time is deliberately cheap: the image header is parsed
(format, width, height) and the pixel count bounded, which rejects non-images,
unsupported formats and decompression bombs without decoding any pixels. The
full decode happens in the worker, where a file that is corrupt past its
header (truncated data, bad compressed stream) becomes a per-image error of
the job while the rest of the batch is annotated. This keeps the API's CPU
and memory use per request small and independent of image content.

Client file names are metadata only: a relative path (``cam1/0001.png``) is
kept, each part reduced to safe characters, with no absolute path and no
``..``; it becomes the COCO ``file_name``. The bytes are stored under their
content hash, never under a client's name.
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
_MAX_DEPTH = 8
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


def safe_path(raw: str | None, index: int) -> str:
    """A client's relative file path, each part made harmless (see :func:`safe_name`).

    Either slash separates parts; a leading slash (an absolute path) and ``.``
    parts are dropped; ``..`` is refused with :class:`RejectedError`, since a
    name that climbs out of its folder would collide with another folder's.
    Parts beyond ``_MAX_DEPTH`` keep only the last ones.
    """
    parts = [p for p in unicodedata.normalize("NFC", raw or "").replace("\\", "/").split("/")
             if p.strip() not in ("", ".")]
    if any(p.strip() == ".." for p in parts):
        raise RejectedError("file name climbs out of its folder ('..'); send paths relative "
                            "to the uploaded folder")
    clean = [safe_name(p, index) for p in parts[-_MAX_DEPTH:]]
    return "/".join(clean) if clean else f"image_{index:04d}"


def safe_name(raw: str | None, index: int) -> str:
    """One file name (or path part) reduced to a harmless base name (never a path).

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
