"""Query parameters read the one way: a value that is not what the parameter takes is a 400 naming it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from core.errors import ApplicationError


def query_int(query: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """``?name=`` as an integer (``default`` when absent or empty); anything else is a 400 naming it."""
    value = query.get(name)
    if value in (None, ""):
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise ApplicationError(f"must be an integer, got {str(value)[:40]!r}", field=name) from None


def query_float(query: Mapping[str, str], name: str, default: float | None = None) -> float | None:
    """``?name=`` as a finite number (``default`` when absent or empty); anything else is a 400."""
    value = query.get(name)
    if value in (None, ""):
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ApplicationError(f"must be a number, got {str(value)[:40]!r}", field=name) from None
    if not math.isfinite(number):
        raise ApplicationError(f"must be a finite number, got {str(value)[:40]!r}", field=name)
    return number


def query_choice(query: Mapping[str, str], name: str, choices: Iterable[str], default: str) -> str:
    """``?name=`` as one of ``choices`` (``default`` when absent); anything else is a 400 listing them."""
    options = list(choices)
    value = query.get(name) or default
    if value not in options:
        raise ApplicationError(f"must be one of {', '.join(options)}, got {str(value)[:40]!r}", field=name)
    return value
