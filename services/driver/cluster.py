"""Which driver replica owns which drivers: a consistent-hash ring (services/blocks/ring.py)
over the members SWIM says are alive (services/driver/membership.py), keyed by the H3 cell
of each driver's position, Ringpop's design.

Property: every replica whose view agrees computes the same owner for every cell, so a
request reaching a non-owner is forwarded to the owner in one hop. While views disagree
(a member just died, a partition) two replicas may both act as a cell's owner; nothing
about a reservation depends on it: the fenced reservation in PostgreSQL decides
(services/driver/fenced_reservations.py)."""

from __future__ import annotations

import math
from typing import Protocol

from services.blocks.ring import RESOLUTION, Ring, cell_of
from services.driver.domain import Position

VNODES = 64
# Matching asks the owners of every cell within the match radius of the pickup: the
# centres of neighbouring res-7 cells are about sqrt(3) * 1.41 km apart.
CELL_STEP_KM = math.sqrt(3) * 1.41


class View(Protocol):
    @property
    def me(self) -> str: ...

    @property
    def version(self) -> int: ...

    def alive(self) -> list[str]: ...


class Solo:
    """A cluster of one, owning every cell (the drills' own participants, unit tests)."""

    def __init__(self, me: str = "solo") -> None:
        self.me = me
        self.version = 0

    def alive(self) -> list[str]:
        return [self.me]


class Cluster:
    def __init__(self, membership: View) -> None:
        self.membership = membership
        self._ring: tuple[int, Ring] | None = None

    @property
    def me(self) -> str:
        return self.membership.me

    def ring(self) -> Ring:
        """The ring of the members alive in this replica's view (itself always among them)."""
        version = self.membership.version
        if self._ring is None or self._ring[0] != version:
            self._ring = (version, Ring.of(self.membership.alive(), VNODES))
        return self._ring[1]

    def owner(self, where: Position) -> str:
        return self.ring().owner(cell_of(where.lat, where.lng, RESOLUTION))

    def owns(self, where: Position) -> bool:
        return self.owner(where) == self.me

    def owners_near(self, where: Position, radius_km: float) -> list[str]:
        """The members to ask when matching a pickup here: each owner of a cell within the
        radius, this replica first when it is one of them."""
        steps = max(1, math.ceil(radius_km / CELL_STEP_KM))
        owners = sorted(self.ring().owners_near(cell_of(where.lat, where.lng, RESOLUTION), steps))
        return sorted(owners, key=lambda member: member != self.me)
