"""RQ workers of the pseudo-label service, plus what service and workers share.

The worker loads a teacher once and runs annotation jobs from a Redis queue
(:mod:`worker.tasks`, :mod:`worker.rqworker`). The job store on disk
(:mod:`worker.store`), the Redis connection (:mod:`worker.connection`), the
queue contract (:mod:`worker.queueing`) and the settings
(:mod:`worker.settings`) live here too, because the HTTP service imports them
while this package must not import the HTTP stack.
"""
