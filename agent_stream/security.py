"""Password and API-key hashing, the shortening/masking that keeps secrets out of logs, and
the reading of a peer's or receiver's IP address that access checks judge."""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping
from typing import Final

_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
API_KEY_PREFIX: Final = "ask_"
# A route variable holding a credential (a one-time token in a URL a provider fetches):
# logs show its first characters only.
SECRET_ROUTE_VARIABLE: Final = "one_time_token"
_UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def hash_password(password: str) -> str:
    """scrypt from the standard library: slow enough for passwords, no extra dependency."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of a password against `hash_password` output."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    actual = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(actual, base64.b64decode(digest))


def new_api_key() -> str:
    """A fresh API key; shown to its owner once, stored only as a hash."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def same_secret(given: str, expected: str) -> bool:
    """A secret a client sent (a token, a signature, a CSRF token) against ours, in
    constant time. What a client sends may hold lone surrogates (aiohttp reads header
    bytes that are not UTF-8 that way; a forged form or JSON may carry any), which
    `str.encode()` and `compare_digest` on text refuse with an exception: such a value
    matches nothing instead."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def hash_api_key(key: str) -> str:
    """API keys carry 256 random bits, so a plain SHA-256 is enough and allows lookup. What
    is hashed may come from a header holding bytes that are not UTF-8 (lone surrogates, see
    `same_secret`): such a key matches none, instead of failing the request."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_one_time_token() -> str:
    """A token for a URL that answers once (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


# One-time tokens are random like API keys: a plain SHA-256 is enough and allows lookup.
hash_one_time_token = hash_api_key

# The admin's sign-in cookie. Sessions are stored by the SHA-256 of its random value (a copy
# of the database signs nobody in); the browser's test call reads it too.
SESSION_COOKIE: Final = "agent_stream_session"
hash_session_token = hash_api_key


def new_session_token() -> str:
    """The random value of a sign-in cookie (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def short_uuid(value: str) -> str:
    """The first block of a uuid: enough to tell agents apart, useless to connect with."""
    return value[:8] + "…" if len(value) > 8 else value


def redact_uuids(text: str) -> str:
    """Shorten every uuid in a log line (paths in the access log carry agent uuids)."""
    return _UUID_RE.sub(lambda m: short_uuid(m.group(0)), text)


def redact_path(path: str, route_variables: Mapping[str, str] | None = None) -> str:
    """A request path fit for a log line: uuids shortened, and the value of a route's
    `SECRET_ROUTE_VARIABLE` (a one-time token a provider fetches) cut to its start."""
    secret = (route_variables or {}).get(SECRET_ROUTE_VARIABLE)
    if secret:
        path = path.replace(secret, secret[:4] + "…")
    return redact_uuids(path)


def mask_secret(secret: str | None) -> str:
    """What a page or API answer may show of a token: dots and its last four characters."""
    if not secret:
        return ""
    return "••••" + secret[-4:] if len(secret) > 8 else "••••"


def parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as written by a socket or a resolver (an IPv6 zone `%eth0` dropped, an
    IPv4-mapped IPv6 address as its IPv4), or None when `text` is no IP address."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
