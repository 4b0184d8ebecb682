"""Telephony providers: which ones exist, and which ones Agent Stream can stream for."""
from __future__ import annotations

from typing import Final

SUPPORTED_PROVIDERS: Final = frozenset({"cloudonix"})
# Known providers whose media streams are not implemented yet: 1011, never 1008.
UNSUPPORTED_PROVIDERS: Final = frozenset({"twilio", "plivo", "telnyx", "vonage", "ari"})
