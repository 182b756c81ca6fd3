"""A consistent-hash ring with virtual nodes (Karger et al. 1997, as Uber's Ringpop shards
by it) over the alive replicas of the driver service, whose keys are H3 cells: a replica
owns the drivers and the pickups of its cells.

Each member sits at `vnodes` points of a 64-bit circle; a key belongs to the member of the
first point at or after the key's hash, going round. Property: a key's owner depends only
on the set of members, in any order and in any process (the hash is blake2b, never the
salted `hash()`); when a member joins only keys moving to it change owner, when one leaves
only its own keys do, about 1/N of them either way; with enough virtual nodes each member
owns close to 1/N of the keys. Pure: the membership comes from SWIM, the cells from h3."""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import h3  # type: ignore[import-untyped, unused-ignore]

RESOLUTION: int = 7
"""An H3 res-7 hexagon averages 5.16 km² with 1.41 km edges (h3's table of cell statistics,
`h3.average_hexagon_area(7, "km^2")`): a driver at city speed stays in one for minutes, so
the handover when it crosses into a cell another replica owns is rare, a pickup's ring of
neighbours (7 cells, about 36 km²) is a fair matching radius, and a city holds thousands of
cells, enough for the ring to spread them evenly."""


class EmptyRing(LookupError):
    """No member is alive to own a key."""


def _point(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def cell_of(lat: float, lng: float, resolution: int = RESOLUTION) -> str:
    """The H3 cell holding a point, the key a driver's position or a pickup is sharded by."""
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"lat must be in [-90, 90], got {lat}")
    if not -180.0 <= lng <= 180.0:
        raise ValueError(f"lng must be in [-180, 180], got {lng}")
    return str(h3.latlng_to_cell(lat, lng, resolution))


@dataclass(frozen=True)
class Ring:
    members: tuple[str, ...]
    vnodes: int
    _points: tuple[int, ...] = field(repr=False)
    _owners: tuple[str, ...] = field(repr=False)

    @classmethod
    def of(cls, members: Iterable[str], vnodes: int = 64) -> Ring:
        """The ring of these members. A name given twice is refused rather than merged: two
        replicas claiming one name is a misconfiguration the ring would otherwise hide."""
        names = list(members)
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, got {vnodes}")
        twice = sorted(name for name, count in Counter(names).items() if count > 1)
        if twice:
            raise ValueError(f"duplicate member names: {', '.join(twice)}")
        # Sorting by (point, member) makes even a 64-bit collision resolve the same everywhere.
        circle = sorted((_point(f"{member}#{i}"), member) for member in names for i in range(vnodes))
        return cls(
            tuple(sorted(names)),
            vnodes,
            tuple(point for point, _ in circle),
            tuple(member for _, member in circle),
        )

    def _first(self, key: str) -> int:
        if not self._points:
            raise EmptyRing(f"the ring has no members: no replica is alive to own {key}")
        return bisect_left(self._points, _point(key)) % len(self._points)

    def owner(self, key: str) -> str:
        """The member that owns `key` (a cell id, or any string)."""
        return self._owners[self._first(key)]

    def owners(self, key: str, n: int) -> tuple[str, ...]:
        """The preference list: the first n distinct members going round from `key`, the
        owner first; fewer if the ring has fewer members."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        start = self._first(key)
        wanted = min(n, len(self.members))
        found: list[str] = []
        for i in range(len(self._points)):
            member = self._owners[(start + i) % len(self._points)]
            if member not in found:
                found.append(member)
                if len(found) == wanted:
                    break
        return tuple(found)

    def owners_near(self, cell: str, k: int = 1) -> dict[str, tuple[str, ...]]:
        """Who to ask when matching a ride: each member owning a cell within k steps of the
        pickup's cell, with those cells (sorted)."""
        if not h3.is_valid_cell(cell):
            raise ValueError(f"cell is not an H3 cell: {cell!r}")
        if k < 0:
            raise ValueError(f"k must be at least 0, got {k}")
        near: dict[str, list[str]] = {}
        for neighbour in sorted(str(c) for c in h3.grid_disk(cell, k)):
            near.setdefault(self.owner(neighbour), []).append(neighbour)
        return {member: tuple(cells) for member, cells in near.items()}

    def load(self, keys: Iterable[str]) -> dict[str, int]:
        """How many of `keys` each member owns, every member listed, those owning none at 0."""
        counts = dict.fromkeys(self.members, 0)
        for key in keys:
            counts[self.owner(key)] += 1
        return counts


def moved(before: Ring, after: Ring, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The handovers a membership change causes: key -> (old owner, new owner), for the keys
    whose owner changed."""
    changes: dict[str, tuple[str, str]] = {}
    for key in keys:
        old, new = before.owner(key), after.owner(key)
        if old != new:
            changes[key] = (old, new)
    return changes
