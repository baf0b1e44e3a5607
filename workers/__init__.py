"""Celery app and tasks: thin adapters from a job id to `mss_jobs.runner` (the job system)."""
