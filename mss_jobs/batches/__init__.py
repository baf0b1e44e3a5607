"""Bulk catalog processing: one job spec over many tracks.

    manifest.py   pure, streaming: CSV / JSONL / JSON rows and S3 listings → validated rows or
                  rejections with their line numbers (torch-free: the API runs it)

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
