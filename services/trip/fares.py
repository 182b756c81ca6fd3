"""Fare estimate: a base fare plus a rate per kilometre of straight-line distance. No I/O."""

from __future__ import annotations

import math

from services.trip.saga import Point

BASE_CENTS = 300
CENTS_PER_KM = 180
EARTH_RADIUS_KM = 6371.0


def distance_km(a: Point, b: Point) -> float:
    """Great-circle distance (haversine)."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat, dlng = lat2 - lat1, math.radians(b.lng - a.lng)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


def estimate_cents(pickup: Point, dropoff: Point) -> int:
    return BASE_CENTS + round(CENTS_PER_KM * distance_km(pickup, dropoff))
