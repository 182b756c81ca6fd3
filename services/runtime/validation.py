"""Pure request validation shared by every service: each check raises InvalidArgument
naming the field, so every RPC answers bad input the same way."""

from __future__ import annotations

import math
import re
import uuid

from services.runtime.errors import InvalidArgument

MAX_NAME_LENGTH = 100
MAX_PAYMENT_METHOD_LENGTH = 64
CARD_TOKEN = re.compile(r"tok_[A-Za-z0-9_]+")


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


def payment_method(field: str, value: str) -> str:
    """A card token's shape: "tok_" then letters, digits or underscores, 64 characters at
    most. Only the shape: the processor is an external party and the only one that knows
    which tokens exist, so a well-shaped token it does not know passes here and is its
    refusal to make, for good, when the ride's payment is authorized (docs/saga.md,
    "Permanent payment errors")."""
    if len(value) > MAX_PAYMENT_METHOD_LENGTH or CARD_TOKEN.fullmatch(value) is None:
        raise InvalidArgument(
            field,
            f"must be a card token: 'tok_' then letters, digits or '_', at most {MAX_PAYMENT_METHOD_LENGTH}"
            f" characters (such as 'tok_visa'), got {value[:MAX_PAYMENT_METHOD_LENGTH]!r}",
        )
    return value
