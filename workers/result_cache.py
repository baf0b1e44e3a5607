"""Edge: the worker's side of the result cache (`mss_jobs.db.results`) — reusing a twin's outputs,
and how long a job deferred behind a running twin waits.

Once the input's sha256 is known, a job that is not `force` and whose input content, model and
params equal those of a succeeded job copies that job's outputs to its own keys (server-side) and
succeeds with `reused_from` set, loading no model; if those objects are gone meanwhile, it
separates after all. If instead a job with the same key is running, the job goes back to `queued`
(a `deferred` event: neither a retry nor a worker death) and is published again with a countdown
(`defer_countdown`: 10 s, doubling up to 2 min, on the queue and at the priority it came with);
when it comes back it reuses the twin's result, or separates if the twin failed.
"""

from __future__ import annotations

import logging
from typing import Final

from mss_jobs.db.results import Reuse, mark_reused
from mss_jobs.db.session import transaction
from mss_jobs.errors import InputNotFoundError
from mss_jobs.storage import output_key
from workers.claim import Claim, JobLostError, record_stem
from workers.context import WorkerContext
from workers.file_names import stored_extension

__all__ = ["DEFER_MAX_SECONDS", "DEFER_SECONDS", "defer_countdown", "reuse_outputs"]

log = logging.getLogger(__name__)

DEFER_SECONDS: Final = 10.0
"""How long a job deferred behind a running twin waits before it looks again; doubled on every
further deferral up to `DEFER_MAX_SECONDS` (and to half the visibility timeout: a countdown
message is held unacknowledged by a worker, and Redis would redeliver it after that timeout)."""
DEFER_MAX_SECONDS: Final = 120.0


def defer_countdown(deferrals: int, *, visibility_timeout: float) -> float:
    """Seconds before a deferred job is delivered again: `DEFER_SECONDS`, doubled for each
    earlier deferral, at most `DEFER_MAX_SECONDS` and half the broker's visibility timeout."""
    if deferrals < 1:
        raise ValueError(f"{deferrals=} must be at least 1")
    growth = DEFER_SECONDS * 2.0 ** min(deferrals - 1, 16)
    return max(1.0, min(growth, DEFER_MAX_SECONDS, visibility_timeout / 2))


def reuse_outputs(claim: Claim, context: WorkerContext, reuse: Reuse) -> bool:
    """Copy the source's outputs to this job's own keys and succeed; False when they are gone
    (the source was deleted, or its objects replaced): the caller separates instead.

    Own copies, not references: deleting either job never takes the other's outputs. Raises
    `JobLostError` once the job is no longer ours.
    """
    storage = context.storage
    for output in reuse.outputs:
        extension = stored_extension(output.uri, fallback=output.format)
        key = output_key(storage.prefix, claim.id, output.stem, extension)
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
        record_stem(context, claim, output, stored)
    with transaction(context.sessions) as session:
        reused = mark_reused(session, job_id=claim.id, attempt=claim.attempt, source=reuse.source)
    if reused is None:
        raise JobLostError
    log.info(
        "job %s succeeded with the outputs of job %s (%d stems, no model run)",
        claim.id,
        reuse.source,
        len(reuse.outputs),
    )
    return True
