"""Bulk catalog processing: one job spec over many tracks.

    manifest.py   pure, streaming: CSV / JSONL / JSON rows and S3 listings → validated rows or
                  rejections with their line numbers (torch-free: the API runs it)
    rows.py       pure: one row's values → ManifestRow or RowRejection (columns, JobTemplate)
    lines.py      pure: a stream as numbered, decoded physical lines (BOM, UTF-8, overlong)
    intake.py     a stream of rows → a batch, in committed chunks (resumable, idempotent)
    dispatcher.py keeps each batch's jobs flowing to the broker, ≤ max_in_flight at a time

The rows' data layer (intake, dispatch, cancel, retry, report) is `mss_jobs.db.batches`.
"""

from mss_jobs.batches.manifest import (
    JobTemplate,
    ManifestError,
    ManifestItem,
    ManifestRow,
    RejectionCode,
    RowRejection,
    filter_listing,
    listing_rows,
    parse_s3_prefix,
    read_csv,
    read_json_rows,
    read_jsonl,
)

__all__ = [
    "JobTemplate",
    "ManifestError",
    "ManifestItem",
    "ManifestRow",
    "RejectionCode",
    "RowRejection",
    "filter_listing",
    "listing_rows",
    "parse_s3_prefix",
    "read_csv",
    "read_json_rows",
    "read_jsonl",
]
