"""A telephony configuration as operators give it, checked once against its provider's
fields for both the API and the admin: structured problems (a field and a message), and
the values to store, with the account a stream names normalized and the secrets apart.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from ..models import ConfigInput, TelephonyConfig
from ..plain_text import one_line
from ..security import mask_secret
from ..store import Store
from .base import Problem, Provider

MAX_NAME: Final = 120
_NUMBER_RE: Final = re.compile(r"\+?[0-9*#]{2,20}")
_MULTILINE_CONTROL: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # line breaks and tabs allowed


def needs_no_configuration(provider: Provider) -> str | None:
    """Why `provider` takes no configuration (the browser's test call), for the API's and
    the admin's 400; None for a provider that does."""
    if provider.needs_configuration:
        return None
    return (f"provider '{provider.name}': the browser test call needs no configuration "
            "(the signed-in session authorizes it: use Talk to this agent on an agent's page)")


def check_config(
    provider: Provider, raw: Mapping[str, Any], *, creating: bool, blank_keeps_secret: bool = True
) -> tuple[ConfigInput, list[Problem]]:
    """`raw` (an API body, an admin form) as values to store, or the problems with it. A
    secret left out keeps the stored one (so does a blank one in a form, where a password
    field is always posted: `blank_keeps_secret`); a field left out keeps its value."""
    given = ConfigInput()
    problems: list[Problem] = []
    for spec in provider.fields:
        value = raw.get(spec.name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if value is None or (spec.secret and blank_keeps_secret):  # stays as stored
                if creating and spec.required:
                    problems.append(Problem(spec.name, spec.missing_message))
            elif spec.required:
                problems.append(Problem(spec.name, spec.missing_message))
            else:  # an optional field emptied: no longer a secret, nor an account to match
                (given.secrets if spec.secret else given.fields)[spec.name] = ""
                if spec.name == provider.account_field:
                    given.account_id = ""
            continue
        if not isinstance(value, str):
            problems.append(Problem(spec.name, f"{spec.label} must be text."))
            continue
        if len(value) > spec.max_length:
            problems.append(Problem(spec.name, f"That {spec.label.lower()} is too long."))
            continue
        stripped = value.strip()
        if _MULTILINE_CONTROL.search(stripped) if spec.multiline else not one_line(stripped):
            # a token with a line break would end up in an HTTP header
            problems.append(Problem(spec.name, f"That {spec.label.lower()} has a line break or "
                                               "another control character: paste it again."))
            continue
        try:
            checked = provider.check_field(spec.name, value)
        except ValueError as exc:
            problems.append(Problem(spec.name, str(exc)))
            continue
        (given.secrets if spec.secret else given.fields)[spec.name] = checked
        if spec.name == provider.account_field:
            given.account_id = checked
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(Problem("name", "The name must be text."))
    elif isinstance(name, str) and not one_line(name):
        problems.append(Problem("name", "The name is one line, without control characters."))
    elif isinstance(name, str) and name.strip():
        given.name = name.strip()[:MAX_NAME]
    numbers = raw.get("from_numbers")
    if numbers is not None:
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            problems.append(Problem("from_numbers", "From numbers must be a list of phone numbers."))
        elif any(not _NUMBER_RE.fullmatch(n.strip()) for n in numbers):
            problems.append(Problem(
                "from_numbers", "Numbers are digits with an optional leading +, comma-separated."
            ))
        else:
            given.from_numbers = [n.strip() for n in numbers]
    if creating and given.name is None and not problems:
        given.name = given.account_id or provider.title
    return given, problems


def numbers_from_text(text: str) -> list[str]:
    """A form's comma- or line-separated numbers as a list."""
    return [n.strip() for n in re.split(r"[,\n]", text) if n.strip()]


def secret_hints(provider: Provider, config: TelephonyConfig) -> dict[str, Any]:
    """What may be said of a configuration's secrets: whether each is set and, unless it is a
    key, its last four characters."""
    hints: dict[str, Any] = {}
    for spec in provider.fields:
        if spec.secret:
            value = config.secrets.get(spec.name, "")
            hints[f"has_{spec.name}"] = bool(value)
            if spec.hint_shown:
                hints[f"{spec.name}_hint"] = mask_secret(value)
    return hints


async def save_config(
    store: Store,
    provider: Provider,
    organization_id: int,
    given: ConfigInput,
    *,
    config_id: int | None = None,
    revision: int | None = None,
) -> TelephonyConfig:
    """Store a checked configuration: a new one, or the changes to `config_id` (what was
    not given stays). Conflict where the provider allows one configuration per account;
    Stale when `config_id` has changed since it was read at `revision`."""
    if config_id is None:
        return await store.create_telephony_config(
            organization_id, provider.name, replace(given, name=given.name or provider.title),
            one_per_account=provider.one_per_account,
        )
    return await store.update_telephony_config(
        organization_id, config_id, given, one_per_account=provider.one_per_account,
        revision=revision,
    )
