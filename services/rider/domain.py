"""Riders and ride requests: plain data and the rules for creating them; no I/O."""

from __future__ import annotations

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
