"""The one Celery task, `mss_jobs.separate(job_id)`: claim the job row, run it, record the outcome.

    claim ─▶ download input ─▶ probe, record the input and decide (result cache)
          ─▶ model (per-process cache) ─▶ separate_file (progress → DB + Celery state,
             cancellation checked) ─▶ upload stems ─▶ record_output (upsert per stem)
          ─▶ mark_succeeded

Result cache (`mss_jobs.db.results`): once the input's sha256 is known, a job that is not `force`
and whose input content, model and params equal those of a succeeded job copies that job's
outputs to its own keys (server-side) and succeeds with `reused_from` set, loading no model; if
those objects are gone meanwhile, it separates after all. If instead a job with the same key is
running, the job goes back to `queued` (a `deferred` event: neither a retry nor a worker death)
and is published again with a countdown (10 s, doubling up to 2 min, on the queue and at the
priority it came with); when it comes back it reuses the twin's result, or separates if the twin
failed.

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
import os
import re
import tempfile
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol, cast

from celery import Celery  # type: ignore[import-untyped]
from celery.exceptions import SoftTimeLimitExceeded  # type: ignore[import-untyped]

from mss_jobs.audio.decode import probe
from mss_jobs.db.jobs import (
    Reclaim,
    claim_job,
    give_up_after_worker_deaths,
    mark_failed,
    mark_succeeded,
    record_output,
    requeue_for_retry,
    update_progress,
)
from mss_jobs.db.models import Job
from mss_jobs.db.results import (
    Deferred,
    ReusableOutput,
    Reuse,
    mark_reused,
    record_input_and_decide,
)
from mss_jobs.db.session import transaction
from mss_jobs.errors import AudioTooLongError, InputNotFoundError, PermanentError, TransientError
from mss_jobs.queueing import SEPARATE_TASK, broker_priority, separate_task_id
from mss_jobs.runner import FileSeparation, RunProgress, StemFile, separate_file
from mss_jobs.settings import Settings
from mss_jobs.storage import output_key, sanitize_filename
from workers.context import LazyWorkerContext, WorkerContext
from workers.params import parse_params

__all__ = [
    "DEFER_MAX_SECONDS",
    "DEFER_SECONDS",
    "MAX_RETRIES",
    "SEPARATE_TASK",
    "WORKER_LOST_CODE",
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
WORKER_LOST_CODE: Final = "worker.lost"
"""The job's worker went away without reporting: it died too often (the crash cap), or it was
killed by the hard time limit or lost with its message (the reaper)."""

PROGRESS_MIN_SECONDS: Final = 1.0
"""Progress goes to the database at most this often (or on a 5 % step), which also bounds how
late a cancellation is noticed: `update_progress` returns False once the job is not ours."""
PROGRESS_MIN_STEP: Final = 0.05
_ANALYZE_SHARE: Final = 0.1
"""Share of the progress bar for the statistics pass; separation gets the rest up to 0.95 and
the upload the last 5 %."""
_SEPARATE_END: Final = 0.95

DEFER_SECONDS: Final = 10.0
"""How long a job deferred behind a running twin waits before it looks again; doubled on every
further deferral up to `DEFER_MAX_SECONDS` (and to half the visibility timeout: a countdown
message is held unacknowledged by a worker, and Redis would redeliver it after that timeout)."""
DEFER_MAX_SECONDS: Final = 120.0

_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")

Outcome = str
"""What the task returns: "succeeded", "failed", "cancelled", "skipped" or "deferred"."""


class _Request(Protocol):
    id: str | None
    retries: int
    hostname: str | None
    delivery_info: Mapping[str, Any] | None


class BoundTask(Protocol):
    """The parts of a bound Celery task this module uses (Celery ships no type hints)."""

    request: _Request
    max_retries: int | None
    app: Celery

    def update_state(self, *, state: str, meta: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class _Claim:
    """The claimed row as plain values, usable after its session closed."""

    id: uuid.UUID
    attempt: int
    model: str
    params: dict[str, Any]
    input_uri: str
    priority: int

    @classmethod
    def of(cls, job: Job) -> _Claim:
        return cls(job.id, job.attempts, job.model, dict(job.params), job.input_uri, job.priority)


class _JobLostError(Exception):
    """The job stopped being ours (cancelled, or reclaimed after a redelivery)."""


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
    claim = _claim(task, job_uuid, context)
    if not isinstance(claim, _Claim):
        return claim
    return _run_guarded(task, claim, context, may_defer=True)


def _run_guarded(
    task: BoundTask, claim: _Claim, context: WorkerContext, *, may_defer: bool
) -> Outcome:
    """Run the claimed job, turning each kind of failure into the job's outcome."""
    log.info("job %s claimed (attempt %d, model %s)", claim.id, claim.attempt, claim.model)
    try:
        return _run_claimed(task, claim, context, may_defer=may_defer)
    except _JobLostError:
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


def _claim(task: BoundTask, job_id: uuid.UUID, context: WorkerContext) -> _Claim | Outcome:
    """Claim the job for this delivery, or say why not ("skipped", or "failed" by the cap)."""
    reclaim = _reclaim_reason(task)
    with transaction(context.sessions) as session:
        if reclaim is Reclaim.REDELIVERY:
            lost = give_up_after_worker_deaths(
                session,
                job_id=job_id,
                max_deaths=context.settings.max_worker_deaths,
                code=WORKER_LOST_CODE,
            )
            if lost is not None:
                log.error("job %s failed: %s: %s", job_id, WORKER_LOST_CODE, lost.error_message)
                return "failed"
        row = claim_job(session, job_id=job_id, worker=_worker_name(task), reclaim=reclaim)
        claim = _Claim.of(row) if row is not None else None
    if claim is None:
        log.info("job %s is not claimable (finished, cancelled or unknown); skipped", job_id)
        return "skipped"
    return claim


def _reclaim_reason(task: BoundTask) -> Reclaim | None:
    """A redelivered message means the worker running it died; a retry means our own previous
    attempt met a transient error. Either may find the row still `running` from before."""
    delivery = task.request.delivery_info or {}
    if delivery.get("redelivered"):
        return Reclaim.REDELIVERY
    if task.request.retries > 0:
        return Reclaim.RETRY
    return None


def _run_claimed(
    task: BoundTask, claim: _Claim, context: WorkerContext, *, may_defer: bool
) -> Outcome:
    params = parse_params(claim.params)
    with tempfile.TemporaryDirectory(prefix="mss-job-") as tmp:
        folder = Path(tmp)
        input_path = folder / _input_name(claim.input_uri)
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
            raise _JobLostError
        if isinstance(decision, Deferred):
            return _publish_deferred(task, claim, context, decision)
        if isinstance(decision, Reuse) and _reuse(claim, context, decision):
            return "succeeded"

        separator = context.models.get(claim.model)
        progress = _ProgressReporter(task, claim, context)
        separation = _separate(
            input_path,
            folder / "stems",
            separator=separator,
            settings=params.separation_settings(separator),
            output=params.output_spec(),
            progress=progress,
        )
        stems = separation.stems
        for index, stem in enumerate(stems):
            # Checked before every upload: a job cancelled meanwhile gets no further objects.
            share = (1.0 - _SEPARATE_END) * index / len(stems)
            progress.report("upload", _SEPARATE_END + share, force=True)
            _deliver(stem, claim, context)

    with transaction(context.sessions) as session:
        if mark_succeeded(session, job_id=claim.id, attempt=claim.attempt) is None:
            raise _JobLostError
    log.info("job %s succeeded (%d stems)", claim.id, len(separation.stems))
    return "succeeded"


def _reuse(claim: _Claim, context: WorkerContext, reuse: Reuse) -> bool:
    """Copy the source's outputs to this job's own keys and succeed; False when they are gone
    (the source was deleted, or its objects replaced): the caller separates instead.

    Own copies, not references: deleting either job never takes the other's outputs.
    """
    storage = context.storage
    for output in reuse.outputs:
        key = output_key(storage.prefix, claim.id, output.stem, _extension(output.uri, output))
        try:
            stored = storage.copy(output.uri, key)
        except InputNotFoundError:
            log.warning(
                "job %s: the outputs of job %s are gone; separating instead", claim.id, reuse.source
            )
            return False
        if stored.sha256 != output.sha256:
            log.warning(
                "job %s: output %s of job %s changed since it was recorded; separating instead",
                claim.id,
                output.stem,
                reuse.source,
            )
            return False
        with transaction(context.sessions) as session:
            row = record_output(
                session,
                job_id=claim.id,
                stem=output.stem,
                uri=stored.uri,
                size_bytes=stored.bytes,
                sha256=stored.sha256,
                format=output.format,
                sample_rate=output.sample_rate,
                channels=output.channels,
                duration_seconds=output.duration_seconds,
                attempt=claim.attempt,
            )
        if row is None:
            raise _JobLostError
    with transaction(context.sessions) as session:
        reused = mark_reused(session, job_id=claim.id, attempt=claim.attempt, source=reuse.source)
    if reused is None:
        raise _JobLostError
    log.info(
        "job %s succeeded with the outputs of job %s (%d stems, no model run)",
        claim.id,
        reuse.source,
        len(reuse.outputs),
    )
    return True


def _extension(uri: str, output: ReusableOutput) -> str:
    """The stored object's extension (what `_deliver` named it), else the output's format."""
    suffix = PurePosixPath(uri).suffix
    return suffix if _SAFE_SUFFIX.match(suffix) else output.format


def defer_countdown(deferrals: int, *, visibility_timeout: float) -> float:
    """Seconds before a deferred job is delivered again: `DEFER_SECONDS`, doubled for each
    earlier deferral, at most `DEFER_MAX_SECONDS` and half the broker's visibility timeout."""
    if deferrals < 1:
        raise ValueError(f"{deferrals=} must be at least 1")
    growth = DEFER_SECONDS * 2.0 ** min(deferrals - 1, 16)
    return max(1.0, min(growth, DEFER_MAX_SECONDS, visibility_timeout / 2))


def _publish_deferred(
    task: BoundTask, claim: _Claim, context: WorkerContext, deferred: Deferred
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
            row = claim_job(session, job_id=claim.id, worker=_worker_name(task))
            again = _Claim.of(row) if row is not None else None
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


def _separate(
    path: Path, out_dir: Path, *, progress: _ProgressReporter, **options: Any
) -> FileSeparation:
    # separate_file is a generator; closing it early runs its cleanup (partial files removed).
    events = cast(Generator[RunProgress | FileSeparation], separate_file(path, out_dir, **options))
    try:
        for event in events:
            if isinstance(event, FileSeparation):
                return event
            progress.report(*_progress_of(event))
    finally:
        events.close()
    raise AssertionError("separate_file ended without a result")


def _progress_of(event: RunProgress) -> tuple[str, float]:
    fraction = event.done / event.total if event.total else 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    if event.stage == "analyze":
        return "analyze", _ANALYZE_SHARE * fraction
    return "separate", _ANALYZE_SHARE + (_SEPARATE_END - _ANALYZE_SHARE) * fraction


def _deliver(stem: StemFile, claim: _Claim, context: WorkerContext) -> None:
    storage = context.storage
    key = output_key(storage.prefix, claim.id, stem.stem, stem.path.suffix)
    stored = storage.upload_file(stem.path, key)
    with transaction(context.sessions) as session:
        row = record_output(
            session,
            job_id=claim.id,
            stem=stem.stem,
            uri=stored.uri,
            size_bytes=stored.bytes,
            sha256=stored.sha256,
            format=stem.format,
            sample_rate=stem.sample_rate,
            channels=stem.channels,
            duration_seconds=stem.frames / stem.sample_rate,
            attempt=claim.attempt,
        )
    if row is None:
        raise _JobLostError


def _requeue(
    context: WorkerContext,
    claim: _Claim,
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


def _fail(context: WorkerContext, claim: _Claim, *, code: str, message: str) -> None:
    log.warning("job %s failed: %s: %s", claim.id, code, message)
    try:
        with transaction(context.sessions) as session:
            mark_failed(session, job_id=claim.id, code=code, message=message, attempt=claim.attempt)
    except Exception:  # the database may be what failed; the message is logged above
        log.exception("could not record the failure of job %s", claim.id)


class _ProgressReporter:
    """Throttled progress: to the job row (which doubles as the cancellation check) and to
    Celery's task state (a no-op without a result backend)."""

    def __init__(self, task: BoundTask, claim: _Claim, context: WorkerContext) -> None:
        self.task = task
        self.claim = claim
        self.context = context
        self.celery_state = True
        self._last_time = float("-inf")
        self._last_progress = 0.0
        self._last_stage: str | None = None

    def report(self, stage: str, progress: float, *, force: bool = False) -> None:
        """Write progress if due; raises `_JobLostError` once the job is no longer ours."""
        now = time.monotonic()
        due = (
            force
            or stage != self._last_stage
            or now - self._last_time >= PROGRESS_MIN_SECONDS
            or progress - self._last_progress >= PROGRESS_MIN_STEP
        )
        if not due:
            return
        self._last_time, self._last_progress, self._last_stage = now, progress, stage
        with transaction(self.context.sessions) as session:
            ours = update_progress(
                session,
                job_id=self.claim.id,
                progress=progress,
                stage=stage,
                attempt=self.claim.attempt,
            )
        if not ours:
            raise _JobLostError
        if self.celery_state:
            meta = {"job_id": str(self.claim.id), "stage": stage, "progress": round(progress, 4)}
            try:
                self.task.update_state(state="PROGRESS", meta=meta)
            except NotImplementedError:  # no result backend configured: progress is in SQL
                self.celery_state = False


def _input_name(uri: str) -> str:
    """The input's own file name, made safe, so errors name what the user submitted
    (`song.wav: not a decodable audio file`) and decoders see its extension."""
    name = PurePosixPath(uri.rsplit("?", 1)[0]).name
    suffix = PurePosixPath(name).suffix
    if not name or not _SAFE_SUFFIX.match(suffix):
        return "input.bin" if not name else f"{sanitize_filename(name)}.bin"
    return sanitize_filename(name)


def _worker_name(task: BoundTask) -> str:
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# enqueueing (called by the API after the job row is committed)
# ---------------------------------------------------------------------------------------------


def enqueue(
    app: Celery,
    job_id: uuid.UUID | str,
    *,
    queue: str,
    priority: int,
    countdown: float | None = None,
) -> str:
    """Send `mss_jobs.separate(job_id)` to `queue`; returns the Celery task id.

    Call only after the transaction that created (or re-queued) the job has committed. With
    `countdown`, a worker holds the message that many seconds before running it.
    """
    result = app.send_task(
        SEPARATE_TASK,
        args=[str(job_id)],
        task_id=separate_task_id(job_id),
        queue=queue,
        priority=broker_priority(priority),
        countdown=countdown,
    )
    return str(result.id)
