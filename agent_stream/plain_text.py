"""What text from outside may hold where it is one line (a name, an email, a URL, a
secret): no control character. A NUL is no text PostgreSQL stores; a line break would end
up in an HTTP header or split a log line."""
from __future__ import annotations

import re
from typing import Final

# What a one-line value must not hold (the API's schemas say the same with it).
CONTROL_CHARACTERS: Final = r"\x00-\x1f\x7f"
_CONTROL: Final = re.compile(f"[{CONTROL_CHARACTERS}]")
MAX_EMAIL_LENGTH: Final = 254


def one_line(value: str) -> bool:
    """Whether `value` holds no control character."""
    return _CONTROL.search(value) is None


def email_problem(email: str) -> str | None:
    """What is wrong with an email address given for a user (it signs them in), or None:
    the admin's forms and `create-user` check alike."""
    if "@" not in email or len(email) > MAX_EMAIL_LENGTH:
        return "Enter an email address."
    if not one_line(email):
        return "Enter an email address: one line, without control characters."
    return None
