"""Typed application keys: everything the app object carries, in one place."""
from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .config import Settings
from .run_writes import RunWriteQueue
from .speech import SpeechServices
from .store import Store

if TYPE_CHECKING:
    from .stream import CallRegistry

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
HTTP = web.AppKey("http", aiohttp.ClientSession)
CALLS: web.AppKey[CallRegistry] = web.AppKey("calls")
SPEECH = web.AppKey("speech", SpeechServices)
RUN_WRITES = web.AppKey("run_writes", RunWriteQueue)
