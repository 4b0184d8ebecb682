"""How a webhook delivery proves where it came from, and what of a webhook may be shown."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from yarl import URL

SIGNATURE_HEADER: Final = "X-Agent-Stream-Signature"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
# A generated secret: recognisable in a receiver's configuration, 256 random bits.
SECRET_PREFIX: Final = "whsec_"


def new_secret() -> str:
    """A secret for a webhook created without one (shown once, like an API key)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """`t=UNIX,v1=HEX`: HMAC-SHA256 of `t.body` with the secret. The time is signed with the
    body so a receiver can refuse an old delivery replayed at it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def shown_url(url: str) -> str:
    """A receiver for logs: scheme, host and port only. A path may be the secret itself
    (Slack's and Discord's hooks), a query may carry a token."""
    try:
        parsed = URL(url)
        return str(parsed.origin())
    except (ValueError, TypeError):
        return "(invalid URL)"
