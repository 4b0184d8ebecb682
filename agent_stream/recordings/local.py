"""Recordings as files in a directory: the layout from before the store existed
(`<directory>/<run id>.wav`, the run keeping the file's path)."""
from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from .base import RecordingFile, open_file
from .location import parse_s3_uri

log = logging.getLogger(__name__)


class LocalRecordings:
    """The calls' tracks spool in `directory` and merge there: saving keeps the WAV where
    it is (one on other disk is moved in)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def save(self, wav: Path) -> str:
        target = self.directory / wav.name
        if wav != target:
            await asyncio.to_thread(self._move, wav, target)
        return str(target)

    def _move(self, wav: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(wav, target)

    async def open(self, ref: str) -> RecordingFile | None:
        if parse_s3_uri(ref) is not None:
            log.warning("a run's recording is in a bucket, and recordings here go to a directory")
            return None
        return await open_file(ref)

    async def exists(self, ref: str) -> bool:
        return await self.open(ref) is not None

    async def delete(self, ref: str) -> None:
        if parse_s3_uri(ref) is None:
            await asyncio.to_thread(Path(ref).unlink, missing_ok=True)

    def describe(self) -> str:
        return f"directory {self.directory}"
