"""RQ worker processes of the pseudo-label service.

A worker loads its teachers once (:mod:`worker.runtime`), serves one queue per
teacher with a short, thread-renewed lease (:mod:`worker.rqworker`), and runs
annotation jobs (:mod:`worker.tasks`). What it shares with the API lives in
:mod:`jobs`.
"""
