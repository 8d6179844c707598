"""A Label Studio project's finished annotations as COCO with the labeled set's
categories (``distill labelstudio-fetch``): the human corrections of pseudo-labels, to
merge into the labeled set of the next teacher.

The project's labeling config maps label values back to categories and keypoints with
the same conventions the backend predicts with (:mod:`.config`), so a project that was
pre-annotated by this service reads back unchanged. The tasks come from Label Studio's
JSON export of annotated tasks; with an images folder each task's image is downloaded
there (as the backend fetches them, :mod:`.media`) under its COCO ``file_name``:
``d=`` of a local-storage URL (``cam1/0001.png``), ``upload/<project>/<name>`` for an
upload, the bucket and key of a cloud URL, the path of a web URL.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from distill.errors import DataError
from distill.fileio import atomic_writer
from distill.imports.labelstudio import Imported, LabelMap, latest_annotation, tasks_to_coco
from service.integrations.labelstudio.config import LabelingConfig, parse_config
from service.integrations.labelstudio.media import LabelStudio
from service.uploads import probe_image

MAX_IMAGE_BYTES = 256 * 1024 * 1024


def label_map(config: LabelingConfig, categories: list[dict[str, Any]]) -> LabelMap:
    """Label value -> category (and keypoint), the inverse of the backend's mapping."""
    plan = config.plan(1)
    boxes: dict[str, int] = {}
    points: dict[str, tuple[int, int]] = {}
    for cat in categories:
        label = plan.box_label(cat)
        if label is not None:
            boxes.setdefault(label, int(cat["id"]))
        for j, name in enumerate(cat.get("keypoints") or []):
            point = plan.point_label(cat, j, str(name))
            if point is not None:
                points.setdefault(point, (int(cat["id"]), j))
    return LabelMap(boxes, points)


def file_name(value: Any, task_id: Any) -> str:
    """The image's COCO ``file_name`` (see the module docstring); ``task<id>.png`` when
    the URL gives no safe relative path."""
    text = str(value or "")
    parts = urlsplit(text)
    if parts.path.startswith("/data/local-files"):
        name = (parse_qs(parts.query).get("d") or [""])[0]
    elif parts.path.startswith("/data/upload/"):
        name = parts.path.removeprefix("/data/")
    elif parts.scheme in ("http", "https", "s3", "gs", "azure-blob"):
        name = (parts.netloc + parts.path) if parts.scheme not in ("http", "https") \
            else parts.path
    else:
        name = text
    path = PurePosixPath(name.strip("/"))
    if not name.strip("/") or ".." in path.parts or "\\" in name:
        return f"task{task_id}.png"
    return path.as_posix()


def fetch_corrections(studio: LabelStudio, project: int, categories: list[dict[str, Any]],
                      images_dir: Path | None = None) -> Imported:
    """The project's annotated tasks as COCO with ``categories``; images downloaded into
    ``images_dir`` when given (also giving the size of a task annotated as empty)."""
    config = parse_config(str(studio.get_json(f"/api/projects/{project}")["label_config"]))
    tasks = studio.get_json(f"/api/projects/{project}/export",
                            {"exportType": "JSON", "download_all_tasks": "false"})
    if not isinstance(tasks, list):
        raise DataError(f"Label Studio's export of project {project} is not a task list")

    def name(task: dict[str, Any]) -> str:
        return file_name((task.get("data") or {}).get(config.data_key), task.get("id"))

    sizes: dict[Any, tuple[int, int]] = {}
    for task in tasks if images_dir is not None else []:
        if latest_annotation(task) is None:
            continue
        urls = studio.image_urls((task.get("data") or {}).get(config.data_key), task.get("id"))
        data = studio.fetch(urls, MAX_IMAGE_BYTES)
        probe = probe_image(io.BytesIO(data), max_pixels=1 << 40)
        sizes[task.get("id")] = (probe.width, probe.height)
        with atomic_writer(Path(images_dir or ".") / name(task)) as fh:
            fh.write(data)
    return tasks_to_coco(tasks, categories, label_map(config, categories), name, sizes)
