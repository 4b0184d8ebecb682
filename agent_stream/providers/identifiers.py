"""Identifiers that come from a provider's stream, checked before they go anywhere, and
provider API URLs built from encoded path segments.

A call id, session or stream id from a `start` event ends up in a REST URL that carries the
customer's credentials: `..` there once turned session validation into a read of the domain
itself (which answered 200, so a call with no live session passed) and the agent's hang-up
into a DELETE of the domain. So every identifier must match a narrow character set, and
every URL is built from percent-encoded segments that no `/`, `?` or dot-segment can bend.
"""
from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote

from yarl import URL

# Letters and digits first, then also . _ : - (Twilio and Exotel SIDs, Telnyx's "v3:..."
# call control ids, UUIDs, Asterisk's "1700000000.42" channel ids all fit).
_IDENTIFIER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
IDENTIFIER_RULE: Final = "letters, digits and . _ : - only (at most 128, starting with a letter or digit)"

# One DNS label, and a name of such labels: what a provider's domain or host may be.
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_DOMAIN_LENGTH: Final = 253


def is_identifier(value: object) -> bool:
    """True when `value` is a string a provider URL and a log line may carry as it is."""
    return isinstance(value, str) and _IDENTIFIER_RE.fullmatch(value) is not None


def is_domain_name(value: str) -> bool:
    """True for a lower-case DNS name: labels of letters, digits and inner dashes."""
    return len(value) <= MAX_DOMAIN_LENGTH and _DOMAIN_RE.fullmatch(value) is not None


def api_url(base: str, *segments: str, trailing_slash: bool = False) -> URL:
    """`base` followed by `segments`, each percent-encoded whole; empty and dot segments
    are refused, as no identifier that passed `is_identifier` can be one. Some APIs (Plivo)
    name every resource with a trailing slash: `trailing_slash` adds it."""
    for segment in segments:
        if segment in ("", ".", ".."):
            raise ValueError(f"refusing the URL path segment {segment!r}")
    root = URL(base)
    path = "/".join(quote(segment, safe="") for segment in segments)
    slash = "/" if trailing_slash else ""
    return root.with_path(f"{root.raw_path.rstrip('/')}/{path}{slash}", encoded=True)
