"""Upload checks and file names.

Validation at upload time is deliberately cheap: the image header is parsed
(format, width, height) and the pixel count bounded, which rejects non-images,
unsupported formats and decompression bombs without decoding any pixels. The
full decode happens in the worker, where a file that is corrupt past its
header (truncated data, bad compressed stream) becomes a per-image error of
the job while the rest of the batch is annotated. This keeps the API's CPU
and memory use per request small and independent of image content.

Client file names are metadata only (:mod:`jobs.names`, re-exported here).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import IO

from PIL import Image, UnidentifiedImageError

from jobs.names import RejectedError, safe_name, safe_path

__all__ = ["ALLOWED_FORMATS", "Probe", "RejectedError", "probe_image", "safe_name", "safe_path"]

# Formats a detector can take that Pillow decodes without external tools.
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF", "WEBP", "GIF"})


@dataclass(frozen=True)
class Probe:
    """What the header says: format and size."""

    format: str
    width: int
    height: int


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
