"""services/driver/cluster.py: ownership of cells follows the alive members of the view."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.blocks.ring import Ring, cell_of
from services.driver.cluster import Cluster, Solo
from services.driver.domain import Position

DOWNTOWN = Position(37.7793, -122.4193)


@dataclass
class View:
    me: str
    members: list[str] = field(default_factory=list)
    version: int = 0

    def alive(self) -> list[str]:
        return sorted(self.members)


def test_every_replica_with_the_same_view_names_the_same_owner() -> None:
    members = ["127.0.0.1:7003", "127.0.0.1:7103", "127.0.0.1:7203"]
    clusters = [Cluster(View(me, members)) for me in members]
    spots = [Position(37.70 + i * 0.01, -122.50 + i * 0.013) for i in range(40)]
    for spot in spots:
        owners = {c.owner(spot) for c in clusters}
        assert len(owners) == 1
        assert sum(c.owns(spot) for c in clusters) == 1
        assert owners == {Ring.of(members, 64).owner(cell_of(spot.lat, spot.lng))}


def test_the_ring_follows_the_view_and_a_lone_replica_owns_everything() -> None:
    view = View("a:1", ["a:1", "b:1"])
    cluster = Cluster(view)
    spots = [Position(37.70 + i * 0.01, -122.50 + i * 0.013) for i in range(40)]
    assert not all(cluster.owns(spot) for spot in spots)
    view.members, view.version = ["a:1"], 1  # b died, as this replica's SWIM view says
    assert all(cluster.owns(spot) for spot in spots)
    assert all(Cluster(Solo()).owns(spot) for spot in spots)


def test_matching_asks_each_owner_near_the_pickup_once_itself_first() -> None:
    members = ["127.0.0.1:7003", "127.0.0.1:7103", "127.0.0.1:7203"]
    for me in members:
        asked = Cluster(View(me, members)).owners_near(DOWNTOWN, 15.0)
        assert len(asked) == len(set(asked))
        assert set(asked) <= set(members)
        if me in asked:
            assert asked[0] == me
    # A 15 km radius covers enough cells for every member to own some of them.
    assert set(Cluster(View(members[0], members)).owners_near(DOWNTOWN, 15.0)) == set(members)
