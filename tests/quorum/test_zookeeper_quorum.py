"""With ZooKeeper as a three-node ensemble (`make up ZK_NODES=3`), losing one node keeps
the system working: rides complete and the sweeper can still elect a new leader, because
two of three is still a majority."""

from __future__ import annotations

import asyncio
import os
import signal

import psycopg

from deploy.local import paths
from deploy.local.supervisor import Supervisor
from services.runtime.topology import INFRA
from tests.e2e.rides import ride_many
from tests.support import status, wait_for

TRIP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=trip user=trip"


def _leader() -> tuple[int, str]:
    with psycopg.connect(TRIP_DB) as conn:
        row = conn.execute("SELECT epoch, leader FROM sweeper_epoch WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def test_the_ensemble_survives_the_loss_of_one_node() -> None:
    components = status()
    assert {"zookeeper-1", "zookeeper-2", "zookeeper-3"} <= set(components)
    supervisor = Supervisor(paths.RUN)
    supervisor.stop("zookeeper-2")
    try:
        assert status()["zookeeper-2"]["state"] == "down"
        assert all(b.state == "COMPLETED" for b in asyncio.run(ride_many(10, "quorum rider")))
        # The sweeper leader dies; its successor is elected by the two remaining nodes.
        epoch, leader = wait_for(lambda: _leader() if _leader()[0] > 0 else None, 30, "a sweeper leader")
        os.kill(components[leader]["pid"], signal.SIGKILL)
        new_epoch, _ = wait_for(lambda: _leader() if _leader()[0] > epoch else None, 30, "a new sweeper leader")
        assert new_epoch > epoch
        assert all(b.state == "COMPLETED" for b in asyncio.run(ride_many(5, "quorum rider")))
    finally:
        supervisor.start("zookeeper-2")
