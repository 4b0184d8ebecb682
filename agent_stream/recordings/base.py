"""The interface of a recordings store and what it hands back to serve."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordingFile:
    """A recording on this machine's disk: served from the file (with Range requests)."""

    path: Path


@dataclass(frozen=True)
class RecordingBytes:
    """A recording read whole from a bucket (a few MB at most)."""

    data: bytes


StoredRecording = RecordingFile | RecordingBytes


class RecordingStore(Protocol):
    """What the recorder, the start's recovery, the API and the admin need of a store."""

    async def save(self, wav: Path) -> str:
        """Keep the finished WAV `wav` (named `<run id>.wav`, on local disk) and return the
        reference a run keeps to read it back. Raises when the store refuses it."""
        ...

    async def open(self, ref: str) -> StoredRecording | None:
        """The recording a run's reference points to; None when it is not there."""
        ...

    async def exists(self, ref: str) -> bool:
        """Whether the recording a reference points to is there, without reading it."""
        ...

    async def delete(self, ref: str) -> None:
        """Remove a recording; one already gone is not an error."""
        ...

    def describe(self) -> str:
        """Where recordings go, for the start's log line: no credentials."""
        ...


async def open_file(ref: str) -> RecordingFile | None:
    """A reference that is a path on this machine (a directory store's, or one written
    before the store existed), if the file is there."""
    path = Path(ref)
    return RecordingFile(path) if await asyncio.to_thread(path.is_file) else None
