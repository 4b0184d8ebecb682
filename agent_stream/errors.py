"""Typed failures of a call, each carrying the WebSocket close code and reason it ends with."""
from __future__ import annotations

from typing import Final

ROUTING_FAILURE: Final = 1008
SERVER_FAILURE: Final = 1011
HANDSHAKE_FAILURE: Final = 4400
GOING_AWAY: Final = 1001
NORMAL_CLOSURE: Final = 1000
MESSAGE_TOO_BIG: Final = 1009

# What a 503 asks clients to wait before trying again (the database is briefly unavailable).
RETRY_AFTER_SECONDS: Final = 5

# RFC 6455 allows 123 bytes of reason in a close frame.
MAX_REASON_BYTES: Final = 123


def clip_reason(reason: str) -> str:
    """Cut a close reason to what a close frame can carry, on a UTF-8 boundary."""
    data = reason.encode()
    if len(data) <= MAX_REASON_BYTES:
        return reason
    return data[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class NotFound(Exception):
    """A resource does not exist in the caller's organization (404 at the edge)."""


class Conflict(Exception):
    """A write would break a uniqueness rule (409 at the edge)."""


class Stale(Conflict):
    """An edit made from a revision that is no longer the current one (compare-and-set):
    409 at the edge (412 when the API client named it in `If-Match`); the admin shows the
    current state again rather than an error page."""

    def __init__(self, message: str, *, current: int) -> None:
        super().__init__(message)
        self.current = current


class DatabaseUnavailable(Exception):
    """The database refused or could not take a read or write right now: locked by another
    process past the busy timeout, disk full, I/O error. Worth retrying; 503 at the API edge,
    1011 for a call that cannot start."""


class RequestTooSlow(Exception):
    """A client's request body did not arrive within the body timeout (408 at the edge): a
    connection trickling its body must not hold a handler forever."""


class PeerClosed(Exception):
    """The provider closed the socket (or it broke) without a `stop` event."""


class StreamError(Exception):
    """A call ends early; `code` and `reason` go into the close frame and the run."""

    code: int = SERVER_FAILURE

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = clip_reason(reason)


class RoutingError(StreamError):
    """No run may be created: unknown provider, workflow not found, quota exceeded. `kind`
    names the refusal for machines (metrics.REJECTION_REASONS); `reason` for people."""

    code = ROUTING_FAILURE

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


class QuotaExceeded(RoutingError):
    """The workflow owner's monthly minutes or concurrent calls are used up."""


class HandshakeError(StreamError):
    """The provider's handshake or session validation failed."""

    code = HANDSHAKE_FAILURE


class MessageTooBig(StreamError):
    """The peer sent a frame larger than any media event could be."""

    code = MESSAGE_TOO_BIG
