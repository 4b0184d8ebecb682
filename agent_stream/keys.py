"""Typed application keys: everything the app object carries, in one place."""
from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .calls.run_writes import RunWriteQueue
from .config import Settings
from .recordings import RecordingStore
from .speech import SpeechServices
from .store import Store

if TYPE_CHECKING:
    from .calls.registry import CallRegistry
    from .calls.selection import ConfigSource
    from .metrics import Metrics
    from .webhooks.delivery import WebhookSender

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
HTTP = web.AppKey("http", aiohttp.ClientSession)
CALLS: web.AppKey[CallRegistry] = web.AppKey("calls")
SPEECH = web.AppKey("speech", SpeechServices)
RUN_WRITES = web.AppKey("run_writes", RunWriteQueue)
# Where finished recordings go and are read back from: a directory or a bucket.
RECORDINGS: web.AppKey[RecordingStore] = web.AppKey("recordings")
# Where calls find telephony configurations: the store (the CLI test call adds a stand-in).
CONFIG_SOURCE: web.AppKey[ConfigSource] = web.AppKey("config_source")
# The series /metrics shows (metrics.py).
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# The webhook sender of a serving process (absent in the CLI test call's server).
WEBHOOKS: web.AppKey[WebhookSender] = web.AppKey("webhooks")
