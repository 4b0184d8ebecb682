"""How the process logs: readable text by default, or one JSON object a line
(`AGENT_STREAM_LOG_FORMAT=json`) for log shippers (contract section 9).

Every line about a call names its run: the call's handler task sets `CALL_FIELDS` once, and
the tasks it starts inherit it, so lines logged anywhere below a call (pipeline, speech,
providers, run writes) carry `run`, `agent` (the shortened uuid) and `provider` without each
module passing them along.
"""
from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Any, Final, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")
LOG_FORMAT_ENV: Final = "AGENT_STREAM_LOG_FORMAT"

# The fields a call adds to its lines, in the order a text line shows them.
CALL_KEYS: Final = ("run", "agent", "provider")

# What the current task is about: a dict one call owns and fills in as it learns (the
# provider at once, the run once it exists), shared by the tasks it starts.
CALL_FIELDS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "agent_stream_call_fields", default=None
)


class CallFieldsFilter(logging.Filter):
    """Adds the current call's fields to a record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = CALL_FIELDS.get()
        if fields:
            for key, value in fields.items():
                if not getattr(record, key, None):
                    setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL [worker N] logger: [run R agent A] message`, as the process always wrote."""

    def __init__(self, worker: int | None) -> None:
        tag = "" if worker is None else f"[worker {worker}] "
        super().__init__(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        about = " ".join(
            f"{key} {value}" for key in ("run", "agent") if (value := getattr(record, key, None))
        )
        if about:
            record.message = f"[{about}] {record.message}"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the call's
    fields when the line is about a call, the worker, and a traceback as `exception`."""

    def __init__(self, worker: int | None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CALL_KEYS:
            value = getattr(record, key, None)
            if value:
                line[key] = str(value)
        if self.worker is not None:
            line["worker"] = self.worker
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: int = logging.INFO, *, log_format: LogFormat = "text", worker: int | None = None
) -> None:
    """Stdlib logging to stderr in the chosen format. Pipecat logs through loguru: its
    output (and its import banner) is kept to warnings and above and handed to the same
    handler, so a JSON log has no stray text lines; this must run before pipecat is
    imported. `worker` names which worker of `--workers` wrote a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if log_format == "json" else TextFormatter(worker))
    handler.addFilter(CallFieldsFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)

    from loguru import logger

    logger.remove()
    logger.add(_to_stdlib, level="WARNING", format="{message}")


def _to_stdlib(message: Any) -> None:
    """A loguru record (pipecat's) as a stdlib one under its module's logger name."""
    record = message.record
    logging.getLogger(record["name"] or "pipecat").log(
        record["level"].no, "%s", record["message"]
    )
