"""Celery app and tasks: thin adapters from a job id to `mss_jobs.runner` (the job system).

    app.py          create_app(settings) and the lazily built `app` for `celery -A workers.app`
    tasks.py        the task `mss_jobs.separate(job_id)`, `enqueue` for the API
    claim.py        claiming the job row (crash cap); Claim / Outcome / BoundTask
    progress.py     throttled progress to SQL and Celery state; the cancellation check
    result_cache.py reusing a twin's outputs; the deferral countdown
    file_names.py   the input's local name, a stored output's extension
    reaper.py       fails (or hands back) jobs whose worker vanished
    embedded.py     the in-process worker of embedded mode
    flower.py       `mss-jobs flower`
    params.py       a job's params → pipeline and output settings (torch-free, API-reusable)
    context.py      per-process resources: DB sessions, object storage, model cache
    model_cache.py  separators loaded once per (model, device) and process

Importing this package imports neither Celery's app nor torch; import the submodules.
"""

__all__: list[str] = []
