"""Riders and ride requests: plain data, the commands that arrive at the edge, and the
rules for creating riders and requests; no I/O."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from services.runtime import validation
from services.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class Rider:
    rider_id: uuid.UUID
    name: str
    payment_method: str


@dataclass(frozen=True)
class RideRequest:
    rider_id: uuid.UUID
    pickup: tuple[float, float]
    dropoff: tuple[float, float]

    def params(self) -> dict[str, object]:
        return {"pickup": list(self.pickup), "dropoff": list(self.dropoff)}


class RecoveryPoint(enum.StrEnum):
    """How far a ride request got under its key (schema/001_riders.sql): a retry after a
    crash resumes from here instead of redoing the work."""

    STARTED = "started"
    RIDE_CLAIMED = "ride_claimed"
    FINISHED = "finished"


@dataclass(frozen=True)
class RideBooked:
    """The answer to a ride request, stored with its key and replayed to every retry."""

    ride_id: uuid.UUID
    state: str


@dataclass(frozen=True)
class CreateRider:
    name: str
    payment_method: str


@dataclass(frozen=True)
class GetRider:
    rider_id: str


@dataclass(frozen=True)
class RequestRide:
    """As the caller sent it, not yet validated; a point the caller left out is None."""

    rider_id: str
    pickup: tuple[float, float] | None
    dropoff: tuple[float, float] | None
    idempotency_key: str


@dataclass(frozen=True)
class RideRef:
    """Names a ride to read, watch or cancel; not yet validated."""

    ride_id: str


def new_rider(name: str, payment_method: str) -> Rider:
    """A rider with no card given pays with tok_visa. The card is checked for its shape
    only: whether the processor knows it is for the processor to say (validation.py)."""
    method = validation.payment_method("payment_method", payment_method or "tok_visa")
    return Rider(rider_id=uuid.uuid4(), name=validation.name("name", name), payment_method=method)


def ride_request(rider_id: str, pickup: tuple[float, float] | None, dropoff: tuple[float, float] | None) -> RideRequest:
    rider = validation.identifier("rider_id", rider_id)
    if pickup is None:
        raise InvalidArgument("pickup", "is required")
    if dropoff is None:
        raise InvalidArgument("dropoff", "is required")
    start = validation.coordinates("pickup", *pickup)
    end = validation.coordinates("dropoff", *dropoff)
    if start == end:
        raise InvalidArgument("dropoff", "must differ from pickup")
    return RideRequest(rider, start, end)
