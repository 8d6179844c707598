"""Client file names are metadata only: a relative path (``cam1/0001.png``, or a
referenced object's key below its source) is kept, each part reduced to safe
characters, with no absolute path and no ``..``; it becomes the COCO
``file_name``. Bytes are stored under their content hash, never under a name.
"""

from __future__ import annotations

import unicodedata

_MAX_NAME = 200
_MAX_DEPTH = 8
_FORBIDDEN = set('<>:"|?*')


class RejectedError(ValueError):
    """An upload that is refused; the message says why."""


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
