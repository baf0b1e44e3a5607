"""Celery app and tasks: thin adapters from a job id to `mss_jobs.runner` (the job system).

    app.py          create_app(settings) and the lazily built `app` for `celery -A workers.app`
    tasks.py        the task `mss_jobs.separate(job_id)`, `enqueue` for the API
    params.py       a job's params → pipeline and output settings (torch-free, API-reusable)
    context.py      per-process resources: DB sessions, object storage, model cache
    model_cache.py  separators loaded once per (model, device) and process

Importing this package imports neither Celery's app nor torch; import the submodules.
"""

__all__: list[str] = []
