"""How a call ended, decided in one place.

The agent (hang-up, transfer, its own failure), the watchdog (a provider gone quiet), the
socket reader (`stop`, a close, a shutdown) and the lifecycle (an error, a cancellation)
each report what they saw to the call's `CallOutcome`; it settles what the run records and
what the close frame says. The first decision on our side (agent or watchdog) stands: the
close that follows it is its consequence, not the caller hanging up.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from ..errors import (
    GOING_AWAY,
    NORMAL_CLOSURE,
    SERVER_FAILURE,
    HandshakeError,
    MessageTooBig,
    StreamError,
)

# Close reasons of the ends an agent decides.
CLOSE_REASONS: Final = {
    "agent_hangup": "agent hung up",
    "transfer": "call transferred",
    "transfer_unsupported": "transfer not offered by the provider",
    "silence_timeout": "silence timeout",
    "max_duration": "maximum call duration reached",
}


@dataclass(frozen=True)
class Outcome:
    """How a call that got a run ended: the run's state and reason, the close frame."""

    end_reason: str
    close_code: int
    close_reason: str
    state: str = "completed"
    error: str | None = None


SERVER_ERROR: Final = Outcome(
    "server_error", SERVER_FAILURE, "internal server error", "failed", "internal server error"
)
SHUTDOWN: Final = Outcome("server_shutdown", GOING_AWAY, "server shutting down")


class CallOutcome:
    """The reports about one call, and what they add up to."""

    def __init__(self) -> None:
        self.ours: Outcome | None = None  # decided by the agent or the watchdog
        self.shutting_down = False
        self._action_error: str | None = None

    # reports

    def agent_ended(self, end_reason: str) -> Outcome:
        """The agent hung up or transferred (1000, with the reason it chose)."""
        reason = CLOSE_REASONS.get(end_reason, end_reason.replace("_", " "))
        return self._decide(Outcome(end_reason, NORMAL_CLOSURE, reason))

    def agent_failed(self, error: str) -> Outcome:
        """The agent broke (our bug): 1011, the run fails with `error`."""
        return self._decide(Outcome("agent_error", SERVER_FAILURE, "internal server error",
                                    "failed", error))

    def provider_silent(self, seconds: float) -> Outcome:
        """No message from the provider for `seconds`: a dead peer."""
        reason = f"no media from provider for {seconds:g} s"
        return self._decide(Outcome("provider_timeout", SERVER_FAILURE, reason, "failed", reason))

    def action_failed(self, error: str) -> None:
        """A hang-up or transfer the provider refused: the call ends as decided, failed."""
        self._action_error = error

    # what they add up to

    def socket_closed(self) -> Outcome:
        """The socket closed under the reader: our own close, a shutdown, or the caller."""
        if self.ours is not None:
            return self._final(self.ours)
        if self.shutting_down:
            return self._final(SHUTDOWN)
        return self._final(Outcome("caller_hangup", NORMAL_CLOSURE, "stream closed by provider"))

    def stream_stopped(self) -> Outcome:
        """The provider's `stop`: the caller hung up, unless we ended the call first."""
        return self._final(self.ours or Outcome("caller_hangup", NORMAL_CLOSURE, "call ended"))

    def failed(self, exc: StreamError) -> Outcome:
        """The call could not go on (`exc` says why); during a shutdown it is the shutdown."""
        if self.shutting_down:
            return self._final(replace(SHUTDOWN, state="failed", error="server shutting down"))
        return self._final(Outcome(_end_reason_for(exc), exc.code, exc.reason, "failed", exc.reason))

    def cancelled(self) -> Outcome:
        return self._final(replace(SHUTDOWN, state="failed", error="call task cancelled"))

    def crashed(self) -> Outcome:
        """Our bug, logged where it happened."""
        return self._final(SERVER_ERROR)

    def _decide(self, outcome: Outcome) -> Outcome:
        if self.ours is None:
            self.ours = outcome
        return self.ours

    def _final(self, outcome: Outcome) -> Outcome:
        if self._action_error is None:
            return outcome
        return replace(outcome, state="failed", error=self._action_error)


def _end_reason_for(exc: StreamError) -> str:
    """A short machine-readable end reason for a failed run."""
    if isinstance(exc, MessageTooBig):
        return "message_too_big"
    if isinstance(exc, HandshakeError):
        return "handshake_failed"
    return "server_error"
