"""A run's recording as an HTTP answer, for the API and the admin alike: a file with
aiohttp's own Range support, bytes from a bucket with the same (players seek)."""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from ..errors import NotFound
from .base import RecordingBytes, RecordingFile, RecordingStore

log = logging.getLogger(__name__)

WAV: Final = "audio/wav"
# `Range: bytes=-0` asks for the last zero bytes: unsatisfiable (RFC 9110 14.1.2), where
# aiohttp's range parsing (and so FileResponse) would answer the whole file.
_EMPTY_SUFFIX: Final = re.compile(r"bytes=-0+", re.ASCII)


async def recording_response(
    request: web.Request, store: RecordingStore, ref: str | None, *,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """The WAV `ref` points to; NotFound when there is none, 503 when the store does not
    answer (never a 500: a bucket that is down is not our bug)."""
    if not ref:
        raise NotFound("this run has no recording")
    try:
        recording = await store.open(ref)
    except Exception as exc:  # noqa: BLE001 - a store that fails is said, not a traceback
        log.warning("recording not read from %s: %s: %s", store.describe(), type(exc).__name__, exc)
        raise web.HTTPServiceUnavailable(reason="the recordings store did not answer") from None
    if recording is None:
        raise NotFound("this run's recording is missing from the recordings store")
    all_headers = {"Content-Type": WAV, **(headers or {})}
    if _EMPTY_SUFFIX.fullmatch(request.headers.get("Range", "").strip()):
        if isinstance(recording, RecordingFile):
            size = (await asyncio.to_thread(recording.path.stat)).st_size
        else:
            size = len(recording.data)
        return _unsatisfiable(size, all_headers | {"Accept-Ranges": "bytes"})
    if isinstance(recording, RecordingFile):
        return web.FileResponse(recording.path, headers=all_headers)
    return _bytes_response(request, recording, all_headers)


def _bytes_response(
    request: web.Request, recording: RecordingBytes, headers: dict[str, str]
) -> web.Response:
    """Whole, or the one byte range asked for (206), as FileResponse answers a file."""
    data, size = recording.data, len(recording.data)
    headers = headers | {"Accept-Ranges": "bytes"}
    if "Range" not in request.headers:
        return web.Response(body=data, headers=headers)
    try:
        start, stop, _ = request.http_range.indices(size)
    except ValueError:
        start, stop = size, size  # malformed: unsatisfiable, as aiohttp answers for a file
    if start >= stop:
        return _unsatisfiable(size, headers)
    return web.Response(
        status=206, body=data[start:stop],
        headers=headers | {"Content-Range": f"bytes {start}-{stop - 1}/{size}"},
    )


def _unsatisfiable(size: int, headers: dict[str, str]) -> web.Response:
    """416, saying how many bytes there are, as RFC 9110 asks."""
    return web.Response(status=416, headers=headers | {"Content-Range": f"bytes */{size}"})
