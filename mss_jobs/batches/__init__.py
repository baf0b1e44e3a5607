"""Bulk catalog processing: one job spec over many tracks.

    manifest.py   pure, streaming: CSV / JSONL / JSON rows and S3 listings → validated rows or
                  rejections with their line numbers (torch-free: the API runs it)
    rows.py       pure: one row's values → ManifestRow or RowRejection (columns, JobTemplate)
    lines.py      pure: a stream as numbered, decoded physical lines (BOM, UTF-8, overlong)
    intake.py     a stream of rows → a batch, in committed chunks (resumable, idempotent)
    dispatcher.py keeps each batch's jobs flowing to the broker, ≤ max_in_flight at a time

The rows' data layer is `mss_jobs.db`: intake in `batch_intake`, dispatch, cancel and retry in
`batch_dispatch`, counts and the report in `batch_queries`.

Import each name from the module that defines it; this package re-exports nothing.
"""

__all__: list[str] = []
