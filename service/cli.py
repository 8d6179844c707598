"""``distill serve`` (the API, optionally with a worker), ``distill client annotate`` and
``distill labelstudio-fetch``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from distill.cli_args import add_selection_arguments, selection_from_args
from distill.coco import objects
from distill.options import FUSIONS
from distill.processes import stop_process
from jobs.settings import Settings, get_settings, overlay

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Adds ``serve`` and ``client`` to the ``distill`` command line."""
    p = sub.add_parser("serve", help="run the HTTP API (add --with-worker for a one-command setup)",
                       description="Settings come from DISTILL_* variables and REDIS_URL; "
                                   "without REDIS_URL an embedded Redis keeps its data in the "
                                   "data directory.")
    p.add_argument("--host", help="bind address (DISTILL_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (DISTILL_PORT, default 8000)")
    p.add_argument("--data-dir", help="data directory (DISTILL_DATA_DIR)")
    p.add_argument("--with-worker", action="store_true",
                   help="also start one worker process against the same Redis and data")
    p.add_argument("--teacher", help="a teacher checkpoint, registered under its file stem "
                                     "(DISTILL_TEACHER; several: DISTILL_TEACHERS)")
    p.set_defaults(func=_cmd_serve)

    c = sub.add_parser("client", help="talk to a running service")
    csub = c.add_subparsers(dest="client_command", required=True)
    a = csub.add_parser(
        "annotate", help="pseudo-label a folder, or images in a bucket, through the service",
        description="A folder is uploaded in batches. An s3://bucket/prefix/ (ending in /), "
                    "an s3:// or https:// URI, or a text file of such URIs (one per line) is "
                    "sent as a by-reference request: the service reads the images where they "
                    "are (its DISTILL_REFERENCE_ALLOW must cover them) and makes the batches "
                    "itself (DISTILL_REFERENCE_BATCH_SIZE; --batch-size is for uploads). "
                    "Either way a rerun of the same command continues where it stopped.")
    a.add_argument("images", help="folder of images, s3://bucket/prefix/, a URI, or a file "
                                  "of URIs")
    a.add_argument("--url", default=os.environ.get("DISTILL_URL", "http://127.0.0.1:8000"))
    a.add_argument("--key", default=os.environ.get("DISTILL_API_KEY"),
                   help="API key (default: $DISTILL_API_KEY)")
    a.add_argument("--out", required=True, help="COCO JSON to write")
    a.add_argument("--batch-size", type=int, default=16, help="images per uploaded batch")
    a.add_argument("--dataset", help="dataset name grouping the batches (default: generated)")
    a.add_argument("--recursive", action="store_true",
                   help="include subfolders (or the prefix's sub-prefixes); each image is "
                        "named by its relative path (cam1/0001.png), so equal names in two "
                        "folders stay apart")
    a.add_argument("--teacher", help="registered teacher name (default: the only one)")
    a.add_argument("--tta", help="transform preset (default: the service's)")
    a.add_argument("--fusion", choices=FUSIONS)
    add_selection_arguments(a, service=True)
    a.add_argument("--poll", type=float, default=1.0, help="seconds between status polls")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_client_annotate)

    f = sub.add_parser(
        "labelstudio-fetch", help="a Label Studio project's finished annotations, merged "
                                  "into a labeled set (COCO)",
        description="Reads the annotated tasks of a Label Studio project (the corrected "
                    "pseudo-labels), maps their labels to the labeled set's categories and "
                    "keypoints through the project's labeling config, and writes the "
                    "labeled set with them added (an image it has already takes the "
                    "corrected annotations).")
    f.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio (default: $LABEL_STUDIO_URL)")
    f.add_argument("--key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                   help="a Label Studio token (default: $LABEL_STUDIO_API_KEY)")
    f.add_argument("--project", type=int, required=True, help="the project's id")
    f.add_argument("--labeled", type=Path, required=True,
                   help="the labeled set (COCO): its categories, and what is merged into")
    f.add_argument("--out", type=Path, required=True, help="COCO file to write")
    f.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="download the annotated tasks' images into DIR, named by file_name")
    f.add_argument("--corrections-only", action="store_true",
                   help="write only the project's annotations, not merged")
    f.set_defaults(func=_cmd_labelstudio_fetch)


def _overrides(args: argparse.Namespace) -> Settings:
    return overlay(get_settings(), {"host": args.host, "port": args.port,
                                    "data_dir": args.data_dir, "teacher": args.teacher})


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from distill.errors import ConfigError
    from jobs.connection import RedisHandle, connect
    from jobs.settings import teacher_paths
    from service.app import create_app
    from service.auth import check_auth_settings

    settings = _overrides(args)
    check_auth_settings(settings)  # before anything is started
    if args.with_worker and not teacher_paths(settings):
        raise ConfigError("--with-worker needs a teacher: --teacher PATH, DISTILL_TEACHER or "
                          "DISTILL_TEACHERS")
    embedded: RedisHandle | None = None
    if not settings.redis_url:
        # Started here, not in the app, so that the worker can be pointed at the same server.
        embedded = connect(settings)
        settings = settings.model_copy(update={"redis_url": embedded.url})
    app = create_app(settings)
    worker: subprocess.Popen[bytes] | None = None
    try:
        if args.with_worker:
            env = {**os.environ, "REDIS_URL": str(settings.redis_url),
                   "DISTILL_DATA_DIR": str(Path(settings.data_dir).resolve()),
                   "DISTILL_QUEUE": settings.queue}
            if settings.teacher is not None:
                env["DISTILL_TEACHER"] = str(Path(settings.teacher).resolve())
            worker = subprocess.Popen([sys.executable, "-m", "distill.cli", "worker"], env=env)
            log.info("started worker process %d", worker.pid)
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal; these
        # handlers turn that into an exception so that the worker and Redis are stopped too.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _raise_stopped)
        # log_config=None: uvicorn's own lines (access log included) go through the root
        # handler of distill.logs, so DISTILL_LOG_FORMAT=json covers them too.
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                    log_config=None)
    except _StoppedError:
        log.info("stopped by signal")
    finally:
        if worker is not None:
            stop_process(worker)  # warm: the job in flight finishes, within the grace
        if embedded is not None:
            embedded.close()
    return 0


class _StoppedError(Exception):
    """``distill serve`` received SIGTERM or SIGINT."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise _StoppedError(signal.Signals(signum).name)


def _cmd_client_annotate(args: argparse.Namespace) -> int:
    from service.client import ClientOptions, annotate_folder_remote
    from service.client_refs import annotate_references_remote, is_reference

    options = ClientOptions(batch_size=max(1, args.batch_size), dataset=args.dataset,
                            teacher=args.teacher, tta=args.tta, fusion=args.fusion,
                            recursive=args.recursive,
                            selection=selection_from_args(args), poll_s=args.poll,
                            progress=not args.quiet)
    if is_reference(args.images):
        coco = annotate_references_remote(args.url.rstrip("/"), args.key, args.images,
                                          Path(args.out), options)
    else:
        coco = annotate_folder_remote(args.url.rstrip("/"), args.key, Path(args.images),
                                      Path(args.out), options)
    print(f"wrote {args.out}: {len(objects(coco))} pseudo-labels on "
          f"{len(coco['images'])} images ({len(coco['info'].get('errors', []))} failed)")
    return 0


def _cmd_labelstudio_fetch(args: argparse.Namespace) -> int:
    from distill.coco import load_coco
    from distill.imports.labelstudio import write_corrections
    from service.integrations.labelstudio.annotations import fetch_corrections
    from service.integrations.labelstudio.media import LabelStudio

    labeled = load_coco(args.labeled)
    found = fetch_corrections(LabelStudio(args.url, args.key), args.project,
                              labeled["categories"], args.images)
    print(write_corrections(labeled, found.coco, found.skipped, args.out,
                            corrections_only=args.corrections_only,
                            source=f"project {args.project}"))
    return 0
