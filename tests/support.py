"""Helpers shared by the tiers that talk to the running stack."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from deploy.local import paths
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.rider.client import DOWNTOWN, ONCE, WHARF, RiderClient
from services.runtime.topology import service

T = TypeVar("T")


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The code and message of a call that must fail (the test fails if it succeeds)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    raise AssertionError("the call succeeded; it was expected to be refused")


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
    explain: Callable[[], str] | None = None,
) -> T:
    """Polls `condition` until it returns something truthy; fails naming `what` after
    `timeout`, with whatever `explain` says about the state it was stuck in."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def ride_story(ride_id: str) -> str:
    """A ride's state and saga log from the trip database, and the sweeper's leadership:
    what a test prints when a ride does not end in time."""
    rides = db_rows(
        "trip", "SELECT state, driver_id, match_attempt, deadline_ms FROM rides WHERE ride_id = %s", (ride_id,)
    )
    log = db_rows("trip", "SELECT at, step, status, detail FROM saga_log WHERE ride_id = %s ORDER BY seq", (ride_id,))
    leader = db_rows("trip", "SELECT epoch, leader, since FROM sweeper_epoch", ())
    runs = db_rows("trip", "SELECT sweeper, epoch, runs, last_run FROM sweeper_runs", ())
    lines = [f"ride {ride_id}: {rides}", *(f"  {row}" for row in log), f"sweeper epoch {leader}, runs {runs}"]
    return "\n".join(lines)


def ridectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(paths.VENV / "bin" / "ridectl"), *args], capture_output=True, text=True, check=False)


def status() -> dict[str, dict[str, Any]]:
    result = ridectl("status", "--json")
    return {c["name"]: c for c in json.loads(result.stdout)["components"]}


def sidecar_channel(name: str) -> grpc.Channel:
    """A channel to a service's public address: its sidecar's ingress listener."""
    return grpc.insecure_channel(f"127.0.0.1:{service(name).ingress_port}")


def db_rows(dbname: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Reads a service's database directly, as the checker does."""
    import psycopg

    from services.runtime.topology import INFRA

    with psycopg.connect(f"host=127.0.0.1 port={INFRA.postgres} dbname={dbname} user=postgres") as conn:
        return conn.execute(sql.encode(), params).fetchall()


def request_ride(stub: rider_pb2_grpc.RiderServiceStub, rider_id: str) -> rider_pb2.RideRequested:
    """RequestRide from downtown to the wharf under a fresh idempotency key: one attempt,
    its refusal raised (the rate-limit test counts them)."""
    booked = RiderClient(stub=stub, retry=ONCE).book(rider_id, DOWNTOWN, WHARF)
    return rider_pb2.RideRequested(ride_id=booked.ride_id, state=booked.state)


def book_ride(stub: rider_pb2_grpc.RiderServiceStub, name: str) -> rider_pb2.RideRequested:
    """A new rider called `name` and one ride requested for them."""
    rider = RiderClient(stub=stub, retry=ONCE).create_rider(name)
    return request_ride(stub, rider.rider_id)


def chromium(page: Path, screenshot: str, window: str, profile: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """Loads a local page in headless Chromium (the flags the machine's closed network
    needs): its rendered DOM (stdout) and console log (stderr), and a screenshot left in
    reports/<screenshot>; returns the DOM run and the screenshot run's stderr."""
    report = paths.REPO / "reports"
    report.mkdir(exist_ok=True)
    chrome = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
    ]  # fmt: skip
    dom = subprocess.run(
        [*chrome, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    shot = subprocess.run(
        [*chrome, f"--screenshot={report / screenshot}", f"--window-size={window}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return dom, shot.stderr
