"""JSON as the standard has it, for everything we parse from outside.

Python's `json` accepts `NaN`, `Infinity` and `-Infinity`; no other JSON parser does, and
SQLite's JSON functions refuse a document holding them, so a provider message or an API
body carrying one could never be stored. Such input is refused where it arrives.
"""
from __future__ import annotations

import json
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing NaN and the infinities (a ValueError, like any bad JSON)."""
    return json.loads(text, parse_constant=_refuse_constant)
