"""Where finished call recordings live: a directory (`LocalRecordings`) or an S3-compatible
bucket (`S3Recordings`), behind one small interface.

A call's raw tracks always spool to local disk while it lasts (pipeline/recorder.py); only
the finished stereo WAV goes to the store, which hands back the reference the run keeps
(`recording_path`). Any instance reads any run's recording through that reference: a
path for a directory (as before the store existed), `s3://bucket/key` for a bucket.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from .base import RecordingBytes, RecordingFile, RecordingStore, StoredRecording
from .local import LocalRecordings
from .location import LocalLocation, RecordingsLocation, parse_s3_uri

__all__ = ["LocalRecordings", "RecordingFile", "RecordingBytes", "RecordingStore",
           "StoredRecording", "listed", "open_recordings"]


def listed(ref: str | None) -> bool:
    """Whether a run in a listing has a recording, as far as can be told without asking a
    bucket for each run: an object's reference is only written once it was stored."""
    if not ref:
        return False
    return parse_s3_uri(ref) is not None or Path(ref).is_file()


@contextlib.asynccontextmanager
async def open_recordings(location: RecordingsLocation) -> AsyncIterator[RecordingStore]:
    """The store at `location`, open for the life of the app (a bucket's HTTP client)."""
    if isinstance(location, LocalLocation):
        yield LocalRecordings(location.directory)
        return
    from .s3 import S3Recordings  # botocore is only loaded where a bucket is configured

    async with S3Recordings.connect(location.bucket, location.prefix) as store:
        yield store
