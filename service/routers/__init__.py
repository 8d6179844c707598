"""One router per resource: annotate, jobs, datasets, teachers, health."""
