"""GET /teachers: the registered teachers, their cards, and the live workers serving each."""

from __future__ import annotations

from fastapi import APIRouter

from jobs import queueing
from service.deps import OwnerDep, RedisDep, RegistryDep, SettingsDep
from service.errors import responses
from service.models import TeacherList, TeacherOut, WorkerOut

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
        out.append(TeacherOut(
            name=name, queue=queue, checkpoint=reg.path.name, sha256=reg.sha256,
            task=card.task if card else None, arch=card.arch if card else None,
            categories=card.categories if card else [],
            min_size=card.min_size if card else None, max_size=card.max_size if card else None,
            calibrated=card is not None and card.labeled_stats is not None, error=reg.error,
            card=card.to_dict() if card else None, workers=workers))
    return TeacherList(teachers=out)
