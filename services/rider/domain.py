"""Riders: plain data and the rules for creating one; no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.shared import validation


@dataclass(frozen=True)
class Rider:
    rider_id: uuid.UUID
    name: str


def new_rider(name: str) -> Rider:
    return Rider(rider_id=uuid.uuid4(), name=validation.name("name", name))
