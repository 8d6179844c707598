"""Sending a stored object: a local file as a file response, a bucket's object streamed a
piece at a time (the API's memory does not grow with the object), or a redirect to a
presigned URL when the client asks for one and the store has them."""

from __future__ import annotations

import io
from collections.abc import Iterator

from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from PIL import Image

from jobs.storage import Storage
from service.errors import problem

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "BMP": "image/bmp",
         "TIFF": "image/tiff", "WEBP": "image/webp", "GIF": "image/gif"}
_SNIFF = 64 * 1024  # enough of an image for its header


def send_object(storage: Storage, key: str, *, media_type: str | None = None,
                headers: dict[str, str] | None = None, redirect_s: int | None = None,
                filename: str | None = None) -> Response:
    """The object under ``key`` (404 when it is gone); an image's type is read from its
    header when ``media_type`` is None. ``redirect_s``: answer 307 to a presigned URL
    valid that long, where the store has them."""
    if redirect_s is not None:
        url = storage.presign(key, redirect_s, filename)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers=headers)
    path = storage.local_path(key)
    if path is not None:
        if not path.is_file():
            raise problem(404, "the file is no longer stored")
        if media_type is None:
            with open(path, "rb") as fh:
                media_type = _image_type(fh.read(_SNIFF))
        return FileResponse(path, media_type=media_type, headers=headers)
    chunks = storage.chunks(key)
    if chunks is None:
        raise problem(404, "the file is no longer stored")
    if media_type is None:
        first = next(chunks, b"")
        media_type = _image_type(first)
        rest = chunks

        def body() -> Iterator[bytes]:
            yield first
            yield from rest
        return StreamingResponse(body(), media_type=media_type, headers=headers)
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


def _image_type(head: bytes) -> str:
    try:
        with Image.open(io.BytesIO(head)) as img:
            return _MIME.get(str(img.format), "application/octet-stream")
    except Exception:  # a header cut short or no image: send the bytes as they are
        return "application/octet-stream"
