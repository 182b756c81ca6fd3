"""Drivers and their availability; no I/O.

A driver is available for matching while its heartbeats keep arriving. Two detectors
judge that: the phi accrual detector (services/blocks/failure_detectors.py), which adapts
to each driver's own heartbeat rhythm and takes a silent driver out within seconds, and
a fixed timeout of MAX_SILENCE_MS behind it, which also covers drivers this process has
no history for yet (after a restart)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum

import h3  # type: ignore[import-untyped, unused-ignore]

from services.runtime import validation
from services.runtime.errors import InvalidArgument

MAX_SILENCE_MS = 15_000
MAX_RADIUS_KM = 50.0
MAX_NEARBY = 50


@dataclass(frozen=True)
class Driver:
    driver_id: uuid.UUID
    name: str


@dataclass(frozen=True)
class Position:
    lat: float
    lng: float


@dataclass(frozen=True)
class NearbyQuery:
    center: Position
    radius_km: float
    limit: int


def new_driver(name: str) -> Driver:
    return Driver(driver_id=uuid.uuid4(), name=validation.name("name", name))


def position(field: str, lat: float, lng: float) -> Position:
    lat, lng = validation.coordinates(field, lat, lng)
    return Position(lat, lng)


def nearby_query(center: Position, radius_km: float, limit: int) -> NearbyQuery:
    if not 0.0 < radius_km <= MAX_RADIUS_KM:
        raise InvalidArgument("radius_km", f"must be in (0, {MAX_RADIUS_KM}], got {radius_km}")
    if not 0 < limit <= MAX_NEARBY:
        raise InvalidArgument("limit", f"must be in 1..{MAX_NEARBY}, got {limit}")
    return NearbyQuery(center, radius_km, limit)


def distance_km(a: Position, b: Position) -> float:
    """Along the earth's surface (h3's great-circle distance)."""
    return float(h3.great_circle_distance((a.lat, a.lng), (b.lat, b.lng), unit="km"))


def position_value(where: Position, heard_ms: int) -> str:
    """A position as the quorum store keeps it (services/driver/quorum_store.py)."""
    return json.dumps({"lat": where.lat, "lng": where.lng, "at_ms": heard_ms}, separators=(",", ":"))


def position_of(value: str) -> Position | None:
    """A stored position back, None if the value is not one (a key written by hand)."""
    try:
        found = json.loads(value)
        return Position(float(found["lat"]), float(found["lng"]))
    except (ValueError, TypeError, KeyError):
        return None


def is_available(last_heard_ms: float | None, now_ms: float, phi_suspects: bool = False) -> bool:
    return last_heard_ms is not None and now_ms - last_heard_ms <= MAX_SILENCE_MS and not phi_suspects


class Acceptance(StrEnum):
    """Where a driver's acceptance stands, as the driver service can see it."""

    CONFIRMED = "confirmed"  # the saga took it: the pivot passed, the driver is on the ride
    PENDING = "pending"  # published, not yet decided by the saga
    WITHDRAWN = "withdrawn"  # the saga moved on first (a timeout, a cancel): released


def acceptance(reservation: tuple[str | None, int, bool] | None, ride_id: str, fence: int) -> Acceptance:
    """Judges the driver's row (ride_id, fence, confirmed) for the offer (ride_id, fence):
    only trip's ConfirmDriver makes an acceptance true; a reservation that is no longer
    this offer's means the saga released the driver instead."""
    if reservation is None or reservation[0] != ride_id or reservation[1] != fence:
        return Acceptance.WITHDRAWN
    return Acceptance.CONFIRMED if reservation[2] else Acceptance.PENDING


def answer_message_id(ride_id: uuid.UUID, driver_id: uuid.UUID, fence: int) -> str:
    """The one id of a driver's answer to one offer, however often the app sends it: the
    saga's inbox counts it once. Fence tokens count per driver, so two drivers offered the
    same ride may hold the same fence: the driver is part of the id, or the second
    driver's answer would be taken for a repeat of the first's and dropped."""
    return f"{ride_id}:offer:{driver_id}:{fence}"


def completion_message_id(ride_id: uuid.UUID, driver_id: uuid.UUID, fence: int) -> str:
    """The one id of a driver's report that the ride ended (as answer_message_id)."""
    return f"{ride_id}:completed:{driver_id}:{fence}"
