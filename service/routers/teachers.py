"""GET /teachers: the registered teachers, their cards, the live workers serving each and the
presets each accepts; GET /options: what the upload form offers."""

from __future__ import annotations

from fastapi import APIRouter

from distill.options import TTA_PRESETS
from jobs import queueing
from jobs.settings import DATASET_PATTERN
from jobs.submit import preset_choices
from service.deps import OwnerDep, RedisDep, RegistryDep, SettingsDep
from service.errors import responses
from service.models import Options, PresetOut, TeacherList, TeacherOut, WorkerOut

router = APIRouter(tags=["teachers"])


@router.get("/teachers", response_model=TeacherList,
            summary="Registered teachers with their model cards and live workers",
            responses=responses(401, 503))
def teachers(_owner: OwnerDep, settings: SettingsDep, redis: RedisDep,
             registry: RegistryDep) -> TeacherList:
    """Cards are read from the checkpoint files (re-read when a file changes); workers
    announce themselves with a heartbeat, and one gone silent drops out."""
    out = []
    for name in registry.names():
        reg = registry.get(name)
        queue = queueing.queue_name(settings.queue, name)
        workers = [WorkerOut.model_validate({k: w.get(k) for k in WorkerOut.model_fields})
                   for w in queueing.live_workers(redis, queue)]
        card = reg.card
        presets, refused = preset_choices(registry, name, settings)
        out.append(TeacherOut(
            name=name, queue=queue, checkpoint=reg.path.name, sha256=reg.sha256,
            task=card.task if card else None, arch=card.arch if card else None,
            categories=card.categories if card else [],
            min_size=card.min_size if card else None, max_size=card.max_size if card else None,
            calibrated=card is not None and card.labeled_stats is not None, error=reg.error,
            card=card.to_dict() if card else None, workers=workers, presets=presets,
            refused_presets=refused))
    return TeacherList(teachers=out)


@router.get("/options", response_model=Options, tags=["options"],
            summary="The presets, limits and name rules the upload form offers",
            responses=responses(401))
def options(_owner: OwnerDep, settings: SettingsDep) -> Options:
    """The named TTA presets with their passes and a description (which ones a teacher
    accepts: ``GET /teachers``), the default preset, the files one upload may carry and
    the dataset-name pattern; the page builds its form from these, not from its own lists."""
    return Options(
        presets=[PresetOut(name=name, passes=spec.passes, description=spec.description)
                 for name, spec in TTA_PRESETS.items()],
        default_preset=settings.tta, max_files=settings.max_files,
        dataset_pattern=DATASET_PATTERN)
