"""Telephony providers: the registry of those Agent Stream streams for (and their other
names). The rest of the service finds a provider here, by name, and speaks to it only
through `base.Provider`."""
from __future__ import annotations

from typing import Final

from .asterisk import AsteriskProvider
from .base import Provider
from .cloudonix import CloudonixProvider
from .exotel import ExotelProvider
from .plivo import PlivoProvider
from .telnyx import TelnyxProvider
from .twilio import TwilioProvider
from .vonage import VonageProvider
from .web import WebProvider

PROVIDERS: Final[dict[str, Provider]] = {
    provider.name: provider
    for provider in (
        CloudonixProvider(), TwilioProvider(), TelnyxProvider(), PlivoProvider(), VonageProvider(),
        AsteriskProvider(), ExotelProvider(), WebProvider(),
    )
}
# What the CLI test call and the call simulator speak unless told otherwise: the first.
DEFAULT_PROVIDER: Final = next(iter(PROVIDERS))
# Other names a stream URL may use ("ari" for Asterisk).
ALIASES: Final[dict[str, Provider]] = {
    alias: provider for provider in PROVIDERS.values() for alias in provider.aliases
}


def provider_named(name: str) -> Provider | None:
    """The provider a stream URL or a configuration names (or an alias of it, like "ari")."""
    return PROVIDERS.get(name) or ALIASES.get(name)
