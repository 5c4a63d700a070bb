"""Checks on values handed to the registry, so bad input is refused with what was wrong before any write."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from emp_pipeline.registry.errors import InvalidRegistryInputError


def canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidRegistryInputError(
            f"value is not plain finite JSON ({error}): pass dicts/lists of str, int, finite float, bool"
        ) from error


def finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def require_aware(name: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRegistryInputError(f"{name}={value!r} is naive: pass a timezone-aware datetime (UTC)")
    return value


def check_member(name: str, value: str, allowed: type[Any]) -> str:
    values = [member.value for member in allowed]
    if value not in values:
        raise InvalidRegistryInputError(f"{name}={value!r} is not one of {', '.join(values)}")
    return str(value)
