"""The one Celery task, `mss_jobs.separate(job_id)`: claim the job row, run it, record the outcome.

    claim ─▶ download input ─▶ probe, record the input and decide (result cache)
          ─▶ model (per-process cache) ─▶ separate_file (progress → DB + Celery state,
             cancellation checked) ─▶ upload stems ─▶ record_output (upsert per stem)
          ─▶ mark_succeeded

The steps live beside this module: the claim and the crash cap (`workers.claim`), throttled
progress and the cancellation check (`workers.progress`), reusing a twin's outputs and the
deferral countdown (`workers.result_cache`: once the input's sha256 is known, equal work already
done is copied, equal work running is waited for), the input's local name (`workers.file_names`).
This module wires them into the task and turns each kind of failure into the job's outcome.

Idempotent: a job that is finished, cancelled or unknown is skipped, outputs go to keys derived
from the job id, and every write carries the attempt number from the claim, so a worker that lost
its claim (redelivery after a crash) stops mattering. Failure semantics:

- `PermanentError` (bad input, bad params, unknown model, storage refusal): the job fails with the
  error's code; the task itself *succeeds* (returns "failed"), so Celery never retries it.
- `TransientError` (storage or database hiccup): the job goes back to `queued` with a `retried`
  event naming the error, and Celery retries with exponential backoff and jitter; the retry
  claims the job again (attempt + 1). Once retries are exhausted the job fails with the
  transient error's code.
- Soft time limit: the job fails with `job.time_limit` (not retried: it would time out again).
- Anything else is a bug: the job fails with code `internal` naming the exception type, and the
  exception is re-raised so Celery logs the traceback and Flower shows the task as failed. It is
  not retried; the worker process carries on with the next task.
- The worker process dies (out of memory, segfault, SIGKILL): nothing is written; the broker
  redelivers the task (at once when only the pool process died, after the visibility timeout
  when the whole worker did) and the next worker re-claims the job. A job that has killed
  `MSS_MAX_WORKER_DEATHS` workers fails with `worker.lost` instead of running again (a poison
  pill must not take the fleet down in a loop). A job no redelivery will come for — the hard
  time limit acknowledges the message of the process it kills — is failed with `worker.lost`
  by the reaper (`workers.reaper`).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from typing import Final

from celery import Celery  # type: ignore[import-untyped]
from celery.exceptions import SoftTimeLimitExceeded  # type: ignore[import-untyped]

from mss_jobs.audio.decode import probe
from mss_jobs.core.pipeline import SeparationSettings
from mss_jobs.db.job_transitions import claim_job, mark_failed, mark_succeeded
from mss_jobs.db.recovery import requeue_for_retry
from mss_jobs.db.results import Deferred, Reuse, record_input_and_decide
from mss_jobs.db.session import transaction
from mss_jobs.domain.params import parse_params
from mss_jobs.errors import AudioTooLongError, PermanentError, TransientError
from mss_jobs.queueing import SEPARATE_TASK, broker_priority, send_separate
from mss_jobs.runner import OutputSpec, StemFile
from mss_jobs.settings import Settings
from mss_jobs.storage import output_key
from workers.claim import (
    WORKER_LOST_CODE,
    BoundTask,
    Claim,
    JobLostError,
    Outcome,
    claim_for_delivery,
    record_stem,
    worker_name,
)
from workers.context import LazyWorkerContext, WorkerContext
from workers.file_names import input_name
from workers.progress import (
    PROGRESS_MIN_SECONDS,
    PROGRESS_MIN_STEP,
    SEPARATE_END,
    ProgressReporter,
    separate_reporting,
)
from workers.result_cache import DEFER_MAX_SECONDS, DEFER_SECONDS, defer_countdown, reuse_outputs

__all__ = [
    "DEFER_MAX_SECONDS",
    "DEFER_SECONDS",
    "MAX_RETRIES",
    "PROGRESS_MIN_SECONDS",
    "PROGRESS_MIN_STEP",
    "SEPARATE_TASK",
    "WORKER_LOST_CODE",
    "BoundTask",
    "Outcome",
    "broker_priority",
    "defer_countdown",
    "enqueue",
    "register_tasks",
    "run_separation",
]

log = logging.getLogger(__name__)

MAX_RETRIES: Final = 5
TIME_LIMIT_CODE: Final = "job.time_limit"
INTERNAL_CODE: Final = "internal"


# ---------------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------------


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register `mss_jobs.separate` on `app`; its resources are built per worker process."""
    context = LazyWorkerContext(settings)

    def separate(self: BoundTask, job_id: str) -> Outcome:
        return run_separation(self, job_id, context.get())

    app.task(
        name=SEPARATE_TASK,
        shared=False,  # bound to this app's settings; never added to other apps
        bind=True,
        autoretry_for=(TransientError,),
        retry_backoff=True,
        retry_backoff_max=600,
        retry_jitter=True,
        max_retries=MAX_RETRIES,
    )(separate)


def run_separation(task: BoundTask, job_id: str, context: WorkerContext) -> Outcome:
    """The task body; see the module docstring for what each failure does to the job."""
    try:
        job_uuid = uuid.UUID(job_id)
    except (TypeError, ValueError, AttributeError):
        log.error("job id %r is not a UUID; message dropped", job_id)
        return "skipped"
    claim = claim_for_delivery(task, job_uuid, context)
    if not isinstance(claim, Claim):
        return claim
    return _run_guarded(task, claim, context, may_defer=True)


def _run_guarded(
    task: BoundTask, claim: Claim, context: WorkerContext, *, may_defer: bool
) -> Outcome:
    """Run the claimed job, turning each kind of failure into the job's outcome."""
    log.info("job %s claimed (attempt %d, model %s)", claim.id, claim.attempt, claim.model)
    try:
        return _run_claimed(task, claim, context, may_defer=may_defer)
    except JobLostError:
        log.info("job %s was cancelled or reclaimed; stopped", claim.id)
        return "cancelled"
    except PermanentError as exc:
        _fail(context, claim, code=exc.code, message=str(exc))
        return "failed"
    except TransientError as exc:
        retries = task.request.retries
        if task.max_retries is not None and retries >= task.max_retries:
            _fail(context, claim, code=exc.code, message=f"gave up after retries: {exc}")
        else:
            _requeue(context, claim, exc, retry=retries + 1, max_retries=task.max_retries)
        raise  # autoretry_for schedules the retry (or records the final failure)
    except SoftTimeLimitExceeded:
        limit = context.settings.job_soft_time_limit_seconds
        _fail(context, claim, code=TIME_LIMIT_CODE, message=f"job exceeded its {limit} s limit")
        return "failed"
    except Exception as exc:
        _fail(context, claim, code=INTERNAL_CODE, message=f"{type(exc).__name__}: {exc}")
        raise


def _run_claimed(
    task: BoundTask, claim: Claim, context: WorkerContext, *, may_defer: bool
) -> Outcome:
    params = parse_params(claim.params)
    with tempfile.TemporaryDirectory(prefix="mss-job-") as tmp:
        folder = Path(tmp)
        input_path = folder / input_name(claim.input_uri)
        downloaded = context.storage.download_file(claim.input_uri, input_path)
        info = probe(input_path)
        if info.duration_seconds > context.settings.max_duration_seconds:
            raise AudioTooLongError(
                f"input is {info.duration_seconds:.1f} s long; the limit is "
                f"{context.settings.max_duration_seconds:.0f} s"
            )
        with transaction(context.sessions) as session:
            decision = record_input_and_decide(
                session,
                job_id=claim.id,
                sha256=downloaded.sha256,
                format=info.format,
                sample_rate=info.sample_rate,
                channels=info.channels,
                duration_seconds=info.duration_seconds,
                attempt=claim.attempt,
                may_defer=may_defer,
            )
        if decision is None:
            raise JobLostError
        if isinstance(decision, Deferred):
            return _publish_deferred(task, claim, context, decision)
        if isinstance(decision, Reuse) and reuse_outputs(claim, context, decision):
            return "succeeded"

        separator = context.models.get(claim.model)
        progress = ProgressReporter(task, claim, context)
        separation = separate_reporting(
            input_path,
            folder / "stems",
            separator=separator,
            settings=SeparationSettings.for_job(separator, params),
            output=OutputSpec.for_job(params),
            progress=progress,
        )
        stems = separation.stems
        for index, stem in enumerate(stems):
            # Checked before every upload: a job cancelled meanwhile gets no further objects.
            share = (1.0 - SEPARATE_END) * index / len(stems)
            progress.report("upload", SEPARATE_END + share, force=True)
            _deliver(stem, claim, context)

    with transaction(context.sessions) as session:
        if mark_succeeded(session, job_id=claim.id, attempt=claim.attempt) is None:
            raise JobLostError
    log.info("job %s succeeded (%d stems)", claim.id, len(separation.stems))
    return "succeeded"


def _publish_deferred(
    task: BoundTask, claim: Claim, context: WorkerContext, deferred: Deferred
) -> Outcome:
    """Publish the (committed, now queued) job again with a countdown, on the queue it came
    from; if the broker refuses, claim it back and run it here rather than leave it queued with
    no message."""
    countdown = defer_countdown(
        deferred.deferrals, visibility_timeout=context.settings.visibility_timeout_seconds
    )
    delivery = task.request.delivery_info or {}
    queue = str(delivery.get("routing_key") or context.settings.queue_interactive)
    try:
        enqueue(task.app, claim.id, queue=queue, priority=claim.priority, countdown=countdown)
    except Exception:
        log.exception("job %s: could not publish it again after deferring; running it", claim.id)
        with transaction(context.sessions) as session:
            row = claim_job(session, job_id=claim.id, worker=worker_name(task))
            again = Claim.of(row) if row is not None else None
        if again is None:
            return "skipped"  # cancelled meanwhile, or a duplicate message took it
        return _run_guarded(task, again, context, may_defer=False)
    log.info(
        "job %s deferred for %.0f s (deferral %d): job %s runs the same work",
        claim.id,
        countdown,
        deferred.deferrals,
        deferred.twin,
    )
    return "deferred"


def _deliver(stem: StemFile, claim: Claim, context: WorkerContext) -> None:
    storage = context.storage
    key = output_key(storage.prefix, claim.id, stem.stem, stem.path.suffix)
    stored = storage.upload_file(stem.path, key)
    record_stem(context, claim, stem, stored)


def _requeue(
    context: WorkerContext,
    claim: Claim,
    error: TransientError,
    *,
    retry: int,
    max_retries: int | None,
) -> None:
    """Put the job back to `queued` while Celery's retry waits (best effort: if the database is
    what failed, the retry re-claims the job from `running` instead)."""
    log.warning("job %s: %s: %s; retry %d follows", claim.id, error.code, error, retry)
    try:
        with transaction(context.sessions) as session:
            requeue_for_retry(
                session,
                job_id=claim.id,
                attempt=claim.attempt,
                code=error.code,
                message=str(error),
                retry=retry,
                max_retries=max_retries,
            )
    except Exception:
        log.exception("could not put job %s back to queued for its retry", claim.id)


def _fail(context: WorkerContext, claim: Claim, *, code: str, message: str) -> None:
    log.warning("job %s failed: %s: %s", claim.id, code, message)
    try:
        with transaction(context.sessions) as session:
            mark_failed(session, job_id=claim.id, code=code, message=message, attempt=claim.attempt)
    except Exception:  # the database may be what failed; the message is logged above
        log.exception("could not record the failure of job %s", claim.id)


# ---------------------------------------------------------------------------------------------
# enqueueing (called by the API after the job row is committed)
# ---------------------------------------------------------------------------------------------


enqueue = send_separate
"""Send `mss_jobs.separate(job_id)` to `queue`: `mss_jobs.queueing.send_separate`, under the name
the worker's callers know."""
