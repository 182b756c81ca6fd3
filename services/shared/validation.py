"""Pure request validation shared by every service: each check raises InvalidArgument
naming the field, so every RPC answers bad input the same way."""

from __future__ import annotations

import math
import uuid

from services.shared.errors import InvalidArgument

MAX_NAME_LENGTH = 100


def name(field: str, value: str) -> str:
    cleaned = value.strip()
    if not cleaned:
        raise InvalidArgument(field, "is required")
    if len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_NAME_LENGTH} characters")
    return cleaned


def identifier(field: str, value: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"must be a UUID, got {value[:64]!r}") from None


def coordinates(field: str, lat: float, lng: float) -> tuple[float, float]:
    if not (math.isfinite(lat) and math.isfinite(lng)):
        raise InvalidArgument(field, "latitude and longitude must be finite numbers")
    if not -90.0 <= lat <= 90.0:
        raise InvalidArgument(field, f"latitude {lat} is outside -90..90")
    if not -180.0 <= lng <= 180.0:
        raise InvalidArgument(field, f"longitude {lng} is outside -180..180")
    return lat, lng
