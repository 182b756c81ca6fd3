"""Two payment replicas behind the mesh (`make up REPLICAS=payment=2`): when one fails,
the callers' sidecars eject it from their load balancing and rides keep completing
(Kafka hands the failed replica's partitions to the other)."""

from __future__ import annotations

import asyncio
import urllib.request

from deploy.local import paths
from deploy.local.supervisor import Supervisor
from drills import checker
from ridectl.probe import mesh_probe
from services.runtime.topology import service
from tests.e2e.rides import ride_many
from tests.support import status, wait_for


def _trip_envoy_stat(name: str) -> int:
    url = f"http://127.0.0.1:{service('trip').admin_port}/stats?filter=^cluster\\.payment\\.{name}$"
    with urllib.request.urlopen(url, timeout=5) as response:
        line = response.read().decode().strip()
    return int(line.rsplit(":", 1)[1]) if line else 0


def test_a_failed_replica_is_ejected_and_rides_keep_completing() -> None:
    assert {"payment", "payment-envoy", "payment-2", "payment-2-envoy"} <= set(status())
    supervisor = Supervisor(paths.RUN)
    supervisor.stop("payment-2")  # its sidecar stays up and answers 503: nothing behind it
    try:

        def ejected() -> bool:
            mesh_probe()  # trip calls payment through its sidecar, round robin over both
            return _trip_envoy_stat("outlier_detection.ejections_active") >= 1

        wait_for(ejected, 60, "trip's sidecar to eject the failed payment replica", interval=0)
        # While ejected, every call from trip to payment reaches the healthy replica.
        assert all(mesh_probe()["complete"] for _ in range(10))
        assert all(b.outcome == "completed" for b in asyncio.run(ride_many(5, "replica rider")))
    finally:
        supervisor.start("payment-2")
    report = checker.report(checker.collect())
    assert report["valid"], report["violations"]
