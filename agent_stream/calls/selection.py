"""Which stored telephony configuration a call uses (contract section 7), within the
workflow's organization and provider: the one a custom parameter names (its id or name);
otherwise the ones naming the account the stream names (a 4400 when none does, never a
fallback; among several, the one whose numbers hold the called number); otherwise, for a
stream that names no account (or a provider whose configurations name none: the account
field is optional for some), the organization's only one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..errors import HandshakeError
from ..models import TelephonyConfig
from ..providers.base import CONFIG_PARAMETER, CallStart, Provider
from ..store import Store


class ConfigSource(Protocol):
    """Where configurations come from: the store, or the CLI test call's stand-in."""

    async def configs(
        self, organization_id: int, provider: str, *, account_id: str | None = None
    ) -> list[TelephonyConfig]: ...


@dataclass(frozen=True)
class StoredConfigs:
    """The organization's stored configurations."""

    store: Store

    async def configs(
        self, organization_id: int, provider: str, *, account_id: str | None = None
    ) -> list[TelephonyConfig]:
        return await self.store.find_telephony_configs(organization_id, provider, account_id=account_id)


@dataclass(frozen=True)
class Selected:
    config: TelephonyConfig
    by: str  # "custom parameter", the account field, or "only configuration"


async def select_config(
    source: ConfigSource,
    provider: Provider,
    organization_id: int,
    *,
    account_id: str | None,
    start: CallStart | None,
) -> Selected:
    """The configuration the call uses, with the secrets it needs, or the 4400 that says
    why there is none."""
    title = provider.title
    named = start.custom_parameters.get(CONFIG_PARAMETER) if start else None
    if named:
        for config in await source.configs(organization_id, provider.name):
            if str(config.id) == named or config.name == named:
                return _chosen(provider, config, "custom parameter")
        raise HandshakeError(f"no {title} telephony configuration {named[:40]!r}")
    if account_id is not None and provider.account_field is not None:
        configs = await source.configs(organization_id, provider.name, account_id=account_id)
        if not configs:
            everything = await source.configs(organization_id, provider.name)
            if not any(c.account_id for c in everything):  # none names an account (optional)
                return _only(provider, everything)
            raise HandshakeError(
                f"no {title} telephony configuration for {provider.account_label} {account_id}"
            )
        if len(configs) > 1 and start is not None and start.called:
            configs = [c for c in configs if start.called in c.from_numbers] or configs
        if len(configs) > 1:
            raise HandshakeError(
                f"{len(configs)} {title} configurations for {provider.account_label} {account_id}:"
                f" name one with the {CONFIG_PARAMETER} parameter"
            )
        return _chosen(provider, configs[0], provider.account_field or "account")
    return _only(provider, await source.configs(organization_id, provider.name))


def _only(provider: Provider, configs: list[TelephonyConfig]) -> Selected:
    """For a stream that names no account: the organization's only configuration."""
    if not configs:
        raise HandshakeError(f"no {provider.title} telephony configuration")
    if len(configs) > 1:
        raise HandshakeError(
            f"{len(configs)} {provider.title} configurations and nothing to choose: name one "
            f"with the {CONFIG_PARAMETER} parameter"
        )
    return _chosen(provider, configs[0], "only configuration")


def _chosen(provider: Provider, config: TelephonyConfig, by: str) -> Selected:
    """The configuration chosen, if it has the secrets a call needs: a configuration
    without a required secret cannot validate a call, and the 4400 says so."""
    for field in provider.fields:
        if field.secret and field.required and not config.value(field.name):
            name = config.account_id or config.name
            raise HandshakeError(f"{provider.title} configuration for {name} has no {field.label.lower()}")
    return Selected(config, by)
