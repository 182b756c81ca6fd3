"""The driver service as a three-replica cluster (`make up DRIVERS=3`): every replica's
SWIM view agrees on three alive members, rides complete while heartbeats, offer streams,
offers and matching are forwarded to the owners of the drivers' cells, and the checker
finds nothing wrong."""

from __future__ import annotations

import asyncio

from drills import checker
from ridectl.members import replica_addresses
from services.driver.client import agreed, views
from tests.e2e.rides import ride_many
from tests.support import status, wait_for

ADDRESSES = {"127.0.0.1:7003", "127.0.0.1:7103", "127.0.0.1:7203"}


def test_three_replicas_agree_and_rides_complete_across_the_ring() -> None:
    assert {"driver", "driver-2", "driver-3"} <= set(status())
    assert set(replica_addresses()) == ADDRESSES
    wait_for(lambda: agreed(asyncio.run(views(sorted(ADDRESSES))), ADDRESSES), 30, "three agreed views")
    for view in asyncio.run(views(sorted(ADDRESSES))):
        assert view.states() == dict.fromkeys(ADDRESSES, "alive")
    outcomes = [b.outcome for b in asyncio.run(ride_many(6, "cluster rider"))]
    assert outcomes == ["completed"] * 6
    report = checker.report(checker.collect())
    assert report["valid"], report["violations"]
