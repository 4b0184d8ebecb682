"""Secrets at rest: provider credentials are stored encrypted with the server's secret key,
so a copy of the database alone reveals none of them (contract section 5).

The key is `AGENT_STREAM_SECRET_KEY` (a Fernet key: urlsafe base64 of 32 random bytes,
`python app.py new-secret-key` prints one) or, when that is unset, the file `secret.key`
next to the SQLite database, created (mode 0600) on the first start. The database keeps a
check value sealed with its key: a start with another key, or with the key file gone, is a
clear error, never a silent re-key that would leave every stored secret unreadable.
"""
from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)

KEY_FILE_NAME: Final = "secret.key"
KEY_ENV: Final = "AGENT_STREAM_SECRET_KEY"
# Sealed with the key into the database, so a start can tell a wrong key at once.
_CHECK_PLAINTEXT: Final = b"agent-stream secret key check"


class SecretKeyError(Exception):
    """The secret key is missing, malformed or not the one this database's secrets need."""


def new_secret_key() -> str:
    """A fresh key for AGENT_STREAM_SECRET_KEY."""
    return Fernet.generate_key().decode()


@dataclass(frozen=True)
class SecretKey:
    """The key and where it came from (so errors can say what to fix)."""

    value: bytes
    source: str  # "AGENT_STREAM_SECRET_KEY" or the key file's path
    created: bool = False  # the key file was made by this start


def load_secret_key(env_value: str | None, key_file: Path) -> SecretKey:
    """The key from the environment, else from `key_file`, created (0600) if it is missing."""
    if env_value:
        return SecretKey(_checked(env_value.strip().encode(), KEY_ENV), KEY_ENV)
    try:
        return SecretKey(_checked(key_file.read_bytes().strip(), str(key_file)), str(key_file))
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    log.info("created the secret key %s (keep it with the database: it opens its secrets)", key_file)
    return SecretKey(key, str(key_file), created=True)


def _checked(key: bytes, source: str) -> bytes:
    try:
        Fernet(key)
    except ValueError:
        raise SecretKeyError(
            f"{source} is not a secret key (urlsafe base64 of 32 bytes); "
            "`python app.py new-secret-key` prints one"
        ) from None
    return key


class SecretBox:
    """Seals and opens the secret fields of a configuration with the server's key."""

    def __init__(self, key: SecretKey) -> None:
        self.key = key
        self._fernet = Fernet(key.value)

    def seal(self, values: dict[str, str]) -> str:
        """`values` encrypted and authenticated, as text for a column."""
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        """What `seal` sealed (empty for nothing stored); SecretKeyError for another key."""
        if not sealed:
            return {}
        try:
            values = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise SecretKeyError(self._wrong_key()) from None
        return {str(k): str(v) for k, v in values.items()}

    def check_value(self) -> str:
        """What the database keeps to recognise this key."""
        return self._fernet.encrypt(_CHECK_PLAINTEXT).decode()

    def verify(self, check_value: str) -> None:
        """SecretKeyError unless `check_value` was sealed with this key."""
        try:
            if self._fernet.decrypt(check_value.encode()) == _CHECK_PLAINTEXT:
                return
        except InvalidToken:
            pass
        raise SecretKeyError(self._wrong_key())

    def _wrong_key(self) -> str:
        if self.key.created:
            return (f"the secret key {self.key.source} was just created, but this database's "
                    "secrets were stored with another key: restore the key file it was created "
                    f"with, or set {KEY_ENV} to that key")
        return (f"the secret key from {self.key.source} does not open this database's secrets: "
                "it is not the key they were stored with")
