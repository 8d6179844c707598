"""The job contract that the API (:mod:`service`) and the workers (:mod:`worker`) share.

- :mod:`jobs.settings`: every setting, read from the environment once, and its mapping
  to constructor arguments.
- :mod:`jobs.storage`: the storage layer (a local directory, or an S3-compatible bucket
  through :mod:`jobs.s3`) that everything the API and the workers exchange goes through.
- :mod:`jobs.store`: the artifact store on that storage: jobs, their records, states,
  logs and outputs, and the per-key index. :mod:`jobs.predlog`: a running job's log.
- :mod:`jobs.teachers`: the registry of teachers by name, and their cards (read without
  torch).
- :mod:`jobs.queueing`: one RQ queue per teacher, worker presence, enqueue and cancel.
- :mod:`jobs.connection`: the Redis connection (``REDIS_URL`` or an embedded server).
- :mod:`jobs.records`: what ``job.json``, ``state.json`` and ``selection.json`` hold.
- :mod:`jobs.submit`: accepting a job (cost bounds, quota, image names; stored, then
  queued, never one without the other).
- :mod:`jobs.ledger`: what a request needs of a key's earlier jobs (pending images,
  a dataset's names), kept in Redis and rebuilt from the store when Redis lost it.
- :mod:`jobs.maintenance`: re-queueing accepted jobs that Redis lost; retention.
- :mod:`jobs.metrics`: the workers' counters, pushed through Redis for the API to export.
- :mod:`jobs.logs`: the job id on every log line of a job.

Nothing here imports torch, FastAPI or the worker.
"""
