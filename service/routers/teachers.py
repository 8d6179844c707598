"""GET /teachers: the teacher cards that live workers serve."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import OwnerDep, RedisDep, SettingsDep
from service.models import TeacherList, TeacherOut, WorkerOut
from worker import queueing

router = APIRouter(tags=["teachers"])


@router.get("/teachers", response_model=TeacherList,
            summary="Teachers served by live workers, with their model cards")
def teachers(_owner: OwnerDep, settings: SettingsDep, redis: RedisDep) -> TeacherList:
    """Workers announce their card with a heartbeat; a worker gone silent drops out."""
    by_sha: dict[str, TeacherOut] = {}
    for w in queueing.live_workers(redis, settings.queue):
        sha = str(w.get("sha256", "unknown"))
        if sha not in by_sha:
            by_sha[sha] = TeacherOut(sha256=sha, checkpoint=w.get("checkpoint"),
                                     card=w.get("card") or {}, default_tta=w.get("default_tta"),
                                     default_fusion=w.get("default_fusion"), workers=[])
        by_sha[sha].workers.append(WorkerOut.model_validate(
            {k: w.get(k) for k in WorkerOut.model_fields}))
    return TeacherList(queue=settings.queue, teachers=list(by_sha.values()))
