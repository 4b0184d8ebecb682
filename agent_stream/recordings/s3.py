"""Recordings as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), so every
instance serves every run's recording.

The endpoint is `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`; unset: AWS itself), the
credentials and region botocore's usual chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
a profile, an instance role). One aiobotocore client serves the process: uploads are
awaited on the event loop without blocking it, and each is bounded in time, so a bucket
that is down costs a finishing call its recording, never its run.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from yarl import URL

from .base import RecordingBytes, StoredRecording, open_file
from .location import S3Location, parse_s3_uri

log = logging.getLogger(__name__)

# Where no region is configured: any works against a single-endpoint store (MinIO).
DEFAULT_REGION: Final = "us-east-1"
CONNECT_TIMEOUT_SECONDS: Final = 5.0
READ_TIMEOUT_SECONDS: Final = 15.0
MAX_ATTEMPTS: Final = 2
# The most one upload or read may take, retries included: a call's finish waits for it.
OPERATION_TIMEOUT_SECONDS: Final = 30.0
ENDPOINT_ENV: Final = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
# What S3 answers for a key or bucket that is not there.
_MISSING: Final = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})


class S3Recordings:
    """`<run id>.wav` under `prefix` in `bucket`; a run keeps `s3://bucket/key`."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, endpoint: str | None = None) -> None:
        self._client = client
        self.location = S3Location(bucket, prefix.strip("/"))
        self._endpoint = endpoint

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, bucket: str, prefix: str) -> AsyncIterator[S3Recordings]:
        """A store with its own client, closed on exit. Nothing is sent yet: a bucket that
        is missing or refuses shows in the first call's `recording_error`."""
        session = get_session()
        endpoint = next((os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)
        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # A store of its own (MinIO on localhost:9000) has no bucket subdomains.
            s3={"addressing_style": "path"} if endpoint else None,
        )
        async with session.create_client(
            "s3",
            region_name=session.get_config_variable("region") or DEFAULT_REGION,
            endpoint_url=endpoint,
            config=config,
        ) as client:
            yield cls(client, bucket, prefix, endpoint=endpoint)

    async def save(self, wav: Path) -> str:
        """Upload the WAV, then remove the local copy: the bucket holds it now."""
        key = self.location.key(wav.name)
        data = await asyncio.to_thread(wav.read_bytes)
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                await self._client.put_object(
                    Bucket=self.location.bucket, Key=key, Body=data, ContentType="audio/wav"
                )
        except TimeoutError:  # said in the run's logs: asyncio's own has no words
            raise TimeoutError(
                f"the bucket did not answer within {OPERATION_TIMEOUT_SECONDS:g} s"
            ) from None
        await asyncio.to_thread(wav.unlink, missing_ok=True)
        return self.location.uri(key)

    async def open(self, ref: str) -> StoredRecording | None:
        """An object's bytes, or a file's for a run recorded before recordings went to a
        bucket (on this machine only)."""
        where = parse_s3_uri(ref)
        if where is None:
            return await open_file(ref)
        bucket, key = where
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                answer = await self._client.get_object(Bucket=bucket, Key=key)
                async with answer["Body"] as body:
                    return RecordingBytes(await body.read())
        except ClientError as exc:
            if _missing(exc):
                return None
            raise

    async def exists(self, ref: str) -> bool:
        where = parse_s3_uri(ref)
        if where is None:
            return await open_file(ref) is not None
        bucket, key = where
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                await self._client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    async def delete(self, ref: str) -> None:
        where = parse_s3_uri(ref)
        if where is None:
            await asyncio.to_thread(Path(ref).unlink, missing_ok=True)
            return
        bucket, key = where
        async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
            await self._client.delete_object(Bucket=bucket, Key=key)

    def describe(self) -> str:
        where = self.location.uri(self.location.prefix + "/" if self.location.prefix else "")
        if self._endpoint is None:
            return f"bucket {where}"
        return f"bucket {where} at {URL(self._endpoint).with_user(None)}"  # never a password


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING
