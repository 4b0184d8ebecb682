"""Settings for one Agent Stream process, read once from flags and environment."""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from .crypto import KEY_ENV, KEY_FILE_NAME
from .logs import LOG_FORMAT_ENV, LOG_FORMATS, LogFormat
from .recordings.location import LocalLocation, RecordingsLocation, parse_location
from .speech.stt import DECODER_PRIORITIES, DecoderPriority
from .webhooks.targets import ALLOW_PRIVATE_ENV

Choice = TypeVar("Choice", bound=str)

DEFAULT_HOST: Final = "0.0.0.0"
DEFAULT_PORT: Final = 8000
DEFAULT_DB: Final = "./data/agent_stream.db"
# Server processes `serve` runs on one port (`--workers`, AGENT_STREAM_WORKERS).
DEFAULT_WORKERS: Final = 1
# `{PROVIDER}_API_BASE_URL` points a provider's REST API elsewhere (tests: an emulator).
API_BASE_URL_SUFFIX: Final = "_API_BASE_URL"

DECODER_PRIORITY_ENV: Final = "AGENT_STREAM_DECODER_PRIORITY"
# How long the provider has to send `connected` and `start` after the socket opens.
HANDSHAKE_TIMEOUT_SECONDS: Final = 10.0
# How long the provider REST API has to answer a session validation / hangup / transfer.
PROVIDER_API_TIMEOUT_SECONDS: Final = 5.0
# Largest WebSocket message we accept; a JSON-framed 20 ms media event is ~250 bytes.
MAX_STREAM_MESSAGE_BYTES: Final = 64 * 1024
# How long shutdown waits for live calls to finish their runs after closing them.
SHUTDOWN_GRACE_SECONDS: Final = 10.0
# How long one database statement waits for another process's write lock.
DB_BUSY_TIMEOUT_SECONDS: Final = 5.0
# How long a new call waits for a database that refuses writes (locked, disk full) to take
# its run, before it is refused 1011. A live call never waits: see run_writes.py.
RUN_WRITE_RETRY_SECONDS: Final = 10.0
# How long a client has to send a complete request head (request line and headers) after it
# connects, and how long a keep-alive connection may then sit idle before its next one.
REQUEST_HEADER_TIMEOUT_SECONDS: Final = 15.0
# How long a request body has to arrive once its head has; past it the answer is 408.
REQUEST_BODY_TIMEOUT_SECONDS: Final = 30.0
# How often a serving process writes its heartbeat (and looks for lost instances), and how
# old another's heartbeat must be before its open runs are failed as lost (CONTRACT 8).
HEARTBEAT_SECONDS: Final = 5.0
INSTANCE_TIMEOUT_SECONDS: Final = 30.0


def is_postgres_url(target: object) -> bool:
    """Whether a `--db` value names PostgreSQL (else it is a SQLite file's path)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def without_credentials(url: str) -> str:
    """A database URL for logs and messages: its user and password left out."""
    return re.sub(r"//[^@/]*@", "//", url)


@dataclass(frozen=True)
class Settings:
    """Everything `create_app` needs; tests build one pointing at a temp database."""

    # The SQLite database (default), and the folder its key file and recordings go next to.
    db_path: Path = Path(DEFAULT_DB)
    # A `postgresql://` URL: the database instead of `db_path` (several processes and hosts).
    db_url: str | None = field(default=None, repr=False)  # may carry a password
    # PostgreSQL connections per process: open from the start, and at most.
    db_pool_sizes: tuple[int, int] = (10, 30)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Provider name -> its REST API's base URL, where it is not the provider's own default.
    api_base_urls: Mapping[str, str] = field(default_factory=dict)
    # How providers reach this server (https://voice.example.com): signatures, the URLs the
    # admin shows, provider callbacks. Unset: the request's own host.
    public_url: str | None = None
    # The key that encrypts provider secrets (AGENT_STREAM_SECRET_KEY); unset: the key file
    # next to the SQLite database (crypto.py).
    secret_key: str | None = field(default=None, repr=False)
    # AGENT_STREAM_METRICS_TOKEN: then /metrics wants it (or an API key) from every client.
    metrics_token: str | None = field(default=None, repr=False)
    # AGENT_STREAM_WEBHOOKS_ALLOW_PRIVATE=1: webhooks may deliver to loopback and private
    # networks (webhooks/targets.py says why they may not by default).
    webhooks_allow_private: bool = False
    handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    provider_api_timeout: float = PROVIDER_API_TIMEOUT_SECONDS
    max_stream_message_bytes: int = MAX_STREAM_MESSAGE_BYTES
    db_busy_timeout: float = DB_BUSY_TIMEOUT_SECONDS
    run_write_retry_seconds: float = RUN_WRITE_RETRY_SECONDS
    request_header_timeout: float = REQUEST_HEADER_TIMEOUT_SECONDS
    request_body_timeout: float = REQUEST_BODY_TIMEOUT_SECONDS
    # AGENT_STREAM_DECODER_PRIORITY: how the speech decoder shares the CPU (speech/stt.py).
    decoder_priority: DecoderPriority = "idle"
    # Start the speech decoder process at startup, so the first caller does not wait ~1 s
    # for it (tests leave it off: most of them never speak).
    preload_speech: bool = False
    # At start, end what a crash of the previous server left open (runs, recordings). Only
    # the server does; the CLI test call shares the database with a live one and must not.
    recover_at_start: bool = True
    # Server processes `serve` keeps on the port (workers.py); 1 is one process, no parent.
    workers: int = DEFAULT_WORKERS
    # Which of `--workers N` this process is (0 when it serves alone): part of its instance id.
    worker_index: int = 0
    # An instance id other than host:port:worker (the CLI test call's own server).
    instance_name: str | None = None
    heartbeat_interval: float = HEARTBEAT_SECONDS
    instance_timeout: float = INSTANCE_TIMEOUT_SECONDS

    @property
    def instance_id(self) -> str:
        """This serving process, stable across its restarts: host name, port and worker."""
        return self.instance_name or f"{socket.gethostname()}:{self.port}:{self.worker_index}"

    @property
    def database(self) -> str:
        """The database to open: a `postgresql://` URL or the SQLite file's path."""
        return self.db_url or str(self.db_path)

    @property
    def database_shown(self) -> str:
        """The database for a log line: a URL without its user and password."""
        return without_credentials(self.db_url) if self.db_url else str(self.db_path)
    # Where finished recordings go (AGENT_STREAM_RECORDINGS): a directory or
    # s3://bucket/prefix. Unset: `recordings` next to the database.
    recordings: str | None = None
    # AGENT_STREAM_LOG_FORMAT: readable text lines, or one JSON object a line (logs.py).
    log_format: LogFormat = "text"
    # `recordings` parsed, once: a bad value stops the start, not a call.
    recordings_location: RecordingsLocation = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        location = parse_location(self.recordings, default=self._data_dir / "recordings")
        object.__setattr__(self, "recordings_location", location)

    @property
    def _data_dir(self) -> Path:
        return Path(self.db_path).parent

    @property
    def recordings_dir(self) -> Path:
        """Where calls' raw tracks spool while they last, always on local disk: a directory
        store's own (the WAVs stay there), else `recordings` next to the database."""
        if isinstance(self.recordings_location, LocalLocation):
            return self.recordings_location.directory
        return self._data_dir / "recordings"

    @property
    def secret_key_file(self) -> Path:
        """The key file used when AGENT_STREAM_SECRET_KEY is unset: next to the database."""
        return Path(self.db_path).parent / KEY_FILE_NAME

    def api_base_url(self, provider: str, default: str) -> str:
        """The REST API base URL of `provider` (`default` unless configured)."""
        return (self.api_base_urls.get(provider) or default).rstrip("/")

    @classmethod
    def from_env(
        cls,
        *,
        host: str | None = None,
        port: int | None = None,
        db: str | None = None,
        workers: int | None = None,
        worker_index: int = 0,
    ) -> Settings:
        """Flags win over environment variables, which win over defaults. A worker count
        that is not a whole number of 1 or more is a ValueError saying so."""
        database = db or os.environ.get("AGENT_STREAM_DB") or DEFAULT_DB
        postgres = is_postgres_url(database)
        return cls(
            db_path=Path(DEFAULT_DB if postgres else database),
            db_url=database if postgres else None,
            host=host or os.environ.get("AGENT_STREAM_HOST") or DEFAULT_HOST,
            port=int(port or os.environ.get("AGENT_STREAM_PORT") or DEFAULT_PORT),
            api_base_urls={
                name.removesuffix(API_BASE_URL_SUFFIX).lower(): value
                for name, value in os.environ.items()
                if name.endswith(API_BASE_URL_SUFFIX) and value
            },
            public_url=(os.environ.get("AGENT_STREAM_PUBLIC_URL") or "").rstrip("/") or None,
            secret_key=os.environ.get(KEY_ENV) or None,
            metrics_token=os.environ.get("AGENT_STREAM_METRICS_TOKEN") or None,
            webhooks_allow_private=_flag(os.environ.get(ALLOW_PRIVATE_ENV)),
            preload_speech=True,
            recordings=os.environ.get("AGENT_STREAM_RECORDINGS") or None,
            workers=_worker_count(workers, os.environ.get("AGENT_STREAM_WORKERS")),
            worker_index=worker_index,
            log_format=_one_of(LOG_FORMAT_ENV, LOG_FORMATS),
            decoder_priority=_one_of(DECODER_PRIORITY_ENV, DECODER_PRIORITIES),
        )


def _one_of(name: str, choices: tuple[Choice, ...]) -> Choice:
    """The environment variable `name` as one of `choices` (any case); unset or empty is
    the first. Anything else is a ValueError naming them."""
    value = os.environ.get(name)
    chosen = (value or choices[0]).strip().lower()
    for known in choices:
        if chosen == known:
            return known
    raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _flag(value: str | None) -> bool:
    """An on/off environment variable: 1, true, yes or on (any case) is on."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _worker_count(flag: int | None, env_value: str | None) -> int:
    """`--workers`, else AGENT_STREAM_WORKERS, else 1; never less than 1."""
    if flag is not None:
        count, source = flag, "--workers"
    elif env_value:
        source = "AGENT_STREAM_WORKERS"
        try:
            count = int(env_value)
        except ValueError:
            count = 0
    else:
        return DEFAULT_WORKERS
    if count < 1:
        raise ValueError(f"{source} must be a whole number of 1 or more")
    return count
