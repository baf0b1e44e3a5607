"""The HTTP API of mss-jobs (FastAPI). Never imports torch.

main.py     create_app(settings): resources on app.state, routers, error handlers
deps.py     Annotated dependency aliases (settings, sessions, storage, queue)
schemas.py  request and response bodies, apart from the ORM models
service.py  create → commit → enqueue, broker-down handling, job views
queue.py    a torch-free Celery producer for `mss_jobs.separate`
uploads.py  multipart upload into a size-capped temporary file
errors.py   API errors and the HTTP status of every MssError
routes/     one module per resource: jobs, models, health
"""

from mss_jobs.api.main import create_app

__all__ = ["create_app"]
