"""The Label Studio ML backend the API serves under ``/ls``: the project's labeling config
(:mod:`.config`), the task images (:mod:`.media`, with the reference safety of
:mod:`.safety`) and one prediction per task from a service job (:mod:`.predict`). The
protocol's routes are in :mod:`service.routers.labelstudio`."""
