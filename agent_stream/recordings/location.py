"""Where finished recordings go (`AGENT_STREAM_RECORDINGS`): a directory or an S3 bucket.

Parsed once, with the settings, so a mistyped bucket URL stops the start, not a call.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

S3_SCHEME: Final = "s3://"


@dataclass(frozen=True)
class LocalLocation:
    """Recordings are files in `directory` (where the calls' raw tracks spool too)."""

    directory: Path


@dataclass(frozen=True)
class S3Location:
    """Recordings are objects `<prefix>/<run id>.wav` in an S3-compatible bucket."""

    bucket: str
    prefix: str  # without leading or trailing slashes; may be empty

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, key: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{key}"


RecordingsLocation = LocalLocation | S3Location


def parse_location(value: str | None, *, default: Path) -> RecordingsLocation:
    """`s3://bucket/prefix` or a directory; unset or empty: `default`."""
    if not value:
        return LocalLocation(default)
    if value.startswith(S3_SCHEME):
        bucket, _, prefix = value.removeprefix(S3_SCHEME).partition("/")
        if not bucket:
            raise ValueError(f"no bucket in the recordings location {value!r} (s3://bucket/prefix)")
        return S3Location(bucket, prefix.strip("/"))
    if "://" in value:
        raise ValueError(f"recordings go to a directory or s3://bucket/prefix, not {value!r}")
    return LocalLocation(Path(value))


def parse_s3_uri(ref: str) -> tuple[str, str] | None:
    """The bucket and key of a reference `s3://bucket/key`; None for anything else."""
    if not ref.startswith(S3_SCHEME):
        return None
    bucket, _, key = ref.removeprefix(S3_SCHEME).partition("/")
    return (bucket, key) if bucket and key else None
