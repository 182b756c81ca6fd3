"""The simulated driver fleet's pure part: where drivers start and how they wander.

Positions stay inside a bounding box over San Francisco; each step is a small random
walk, reflected at the box's edges."""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.driver.domain import Position


@dataclass(frozen=True)
class Area:
    south: float
    north: float
    west: float
    east: float

    def contains(self, where: Position) -> bool:
        return self.south <= where.lat <= self.north and self.west <= where.lng <= self.east


SAN_FRANCISCO = Area(south=37.70, north=37.81, west=-122.52, east=-122.36)
STEP_DEGREES = 0.0008


def spawn(area: Area, rng: random.Random) -> Position:
    return Position(rng.uniform(area.south, area.north), rng.uniform(area.west, area.east))


def _reflect(value: float, low: float, high: float) -> float:
    if value < low:
        return low + (low - value)
    if value > high:
        return high - (value - high)
    return value


def wander(where: Position, area: Area, rng: random.Random) -> Position:
    lat = _reflect(where.lat + rng.uniform(-STEP_DEGREES, STEP_DEGREES), area.south, area.north)
    lng = _reflect(where.lng + rng.uniform(-STEP_DEGREES, STEP_DEGREES), area.west, area.east)
    return Position(lat, lng)
