"""Job ids on log lines: what the worker wraps around the processing of a job.

The formatting itself is :mod:`distill.logs` (stdlib only, so that the core's
command line sets it up for every subcommand, the API and the worker
included); the job id is a notion of the job contract, so its context lives
here. Inside ``with job_context(job_id):`` every record, whoever logs it
(the task, the teacher, RQ), carries ``job_id`` in both formats.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from distill.logs import current_context, log_context


def job_context(job_id: str) -> AbstractContextManager[None]:
    """A block whose log records carry ``job_id``."""
    return log_context(job_id=job_id)


def current_job_id() -> str | None:
    """The job id the current block logs with, if any."""
    return current_context().get("job_id")
