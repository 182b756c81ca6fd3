"""The inbox (services/blocks/inbox.py) against the real tables, trip's
`processed_messages` and driver's `handled_commands`, and the driver participant's
release and confirmation through it, fenced by the reservation's token
(services/driver/fenced_reservations.py). Needs the stack's PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.failure_detectors import PhiAccrualDetector
from services.blocks.fencing import FencedLock
from services.blocks.inbox import Inbox, Table
from services.driver.adapters import DriverLocations
from services.driver.cluster import Cluster, Solo
from services.driver.matching import Matching
from services.driver.offers import OfferHub
from services.driver.participant import DriverParticipant
from services.runtime.messages import Outgoing, envelope, outgoing
from services.runtime.topology import INFRA, Topic

CLOCK = HybridLogicalClock()
DATABASES: dict[Table, str] = {"processed_messages": "trip", "handled_commands": "driver"}


def _dsn(database: str) -> str:
    return f"host=127.0.0.1 port={INFRA.postgres} dbname={database} user={database}"


def _record(message_id: str, topic: Topic) -> Outgoing:
    released = saga_pb2.DriverReleased(driver_id="d1")
    return outgoing(topic, envelope(CLOCK, message_id, str(uuid.uuid4()), "", driver_released=released))


def _forget(database: str, message_id: str, table: str) -> None:
    with psycopg.connect(_dsn(database), autocommit=True) as conn:
        conn.execute(f"DELETE FROM {table} WHERE message_id = %s".encode(), (message_id,))


async def _handled_twice(table: Table, message_id: str, sent: list[Outgoing]) -> tuple[list[Outgoing], int]:
    runs = 0

    async def handle(conn: AsyncConnection[Any]) -> list[Outgoing]:
        nonlocal runs
        runs += 1
        return sent

    async with AsyncConnectionPool(_dsn(DATABASES[table]), min_size=1, max_size=2, open=False) as pool:
        first = await Inbox(table).once(pool, message_id, handle)
        again = await Inbox(table).once(pool, message_id, handle)
        assert [(r.topic, r.value) for r in first] == [(r.topic, r.value) for r in sent]
    return again, runs


@pytest.mark.parametrize("table", sorted(DATABASES))
def test_what_a_message_sent_is_stored_and_sent_again(table: Table) -> None:
    message_id = f"test-inbox:{uuid.uuid4()}"
    sent = [_record(f"{message_id}:a", Topic.TRIP_REPLIES), _record(f"{message_id}:b", Topic.DRIVER_COMMANDS)]
    try:
        again, runs = asyncio.run(_handled_twice(table, message_id, sent))
        assert runs == 1
        assert [(r.topic, r.key, r.value) for r in again] == [(r.topic, r.key, r.value) for r in sent]
    finally:
        _forget(DATABASES[table], message_id, table)


@pytest.mark.parametrize("table", sorted(DATABASES))
def test_handled_with_nothing_sent_is_stored_as_handled(table: Table) -> None:
    message_id = f"test-inbox:{uuid.uuid4()}"
    try:
        assert asyncio.run(_handled_twice(table, message_id, [])) == ([], 1)
    finally:
        _forget(DATABASES[table], message_id, table)


async def _failing_once(message_id: str) -> None:
    async def handle(conn: AsyncConnection[Any]) -> list[Outgoing]:
        raise RuntimeError("the effect failed")

    async with AsyncConnectionPool(_dsn("trip"), min_size=1, max_size=1, open=False) as pool:
        with pytest.raises(RuntimeError):
            await Inbox("processed_messages").once(pool, message_id, handle)
        assert await Inbox("processed_messages").replay_from(pool, message_id) is None


def test_a_handling_that_fails_leaves_no_record() -> None:
    asyncio.run(_failing_once(f"test-inbox:{uuid.uuid4()}"))


def _reserved_driver(ride_id: str, fence: int) -> uuid.UUID:
    driver_id = uuid.uuid4()
    with psycopg.connect(_dsn("driver"), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO drivers (driver_id, name, ride_id, fence) VALUES (%s, 'inbox test', %s, %s)",
            (driver_id, ride_id, fence),
        )
    return driver_id


def _row(driver_id: uuid.UUID) -> tuple[Any, ...]:
    with psycopg.connect(_dsn("driver"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT ride_id, fence, confirmed FROM drivers WHERE driver_id = %s", (driver_id,)
        ).fetchone()
    assert row is not None
    return (str(row[0]) if row[0] else None, row[1], row[2])


def _command(ride_id: str, message_id: str, **body: object) -> saga_pb2.Envelope:
    return envelope(CLOCK, message_id, ride_id, "", **body)


async def _participate(*commands: saga_pb2.Envelope) -> list[list[Outgoing]]:
    """Each command through the driver participant; release and confirm touch no Redis."""
    client = aioredis.Redis(host="127.0.0.1", port=INFRA.redis)
    async with AsyncConnectionPool(_dsn("driver"), min_size=1, max_size=2, open=False) as pool:
        locations = DriverLocations(client)
        matching = Matching(locations, PhiAccrualDetector(), Cluster(Solo()))
        participant = DriverParticipant(pool, locations, FencedLock(client), OfferHub(), CLOCK, matching)
        sent = [await participant.handle(command) for command in commands]
    await client.aclose()
    return sent


def test_a_stale_release_changes_nothing_and_its_redelivery_gets_the_same_reply() -> None:
    ride_id = str(uuid.uuid4())
    driver_id = _reserved_driver(ride_id, 5)
    stale = _command(
        ride_id,
        f"{ride_id}:release_driver:{driver_id}:4",
        release_driver=saga_pb2.ReleaseDriver(driver_id=str(driver_id), fence=4),
    )
    current = _command(
        ride_id,
        f"{ride_id}:release_driver:{driver_id}:5",
        release_driver=saga_pb2.ReleaseDriver(driver_id=str(driver_id), fence=5),
    )
    try:
        first, again = asyncio.run(_participate(stale, stale))
        assert _row(driver_id) == (ride_id, 5, False)  # a stale token releases nothing
        assert [r.topic for r in first] == [Topic.TRIP_REPLIES]
        assert [r.value for r in again] == [r.value for r in first]  # the stored reply, not a new one
        assert saga_pb2.Envelope.FromString(first[0].value or b"").WhichOneof("body") == "driver_released"
        asyncio.run(_participate(current))
        assert _row(driver_id) == (None, 5, False)
    finally:
        with psycopg.connect(_dsn("driver"), autocommit=True) as conn:
            conn.execute("DELETE FROM drivers WHERE driver_id = %s", (driver_id,))
            conn.execute("DELETE FROM handled_commands WHERE message_id LIKE %s", (f"{ride_id}:%",))


def test_a_confirmation_sends_nothing_and_is_recorded_as_handled() -> None:
    ride_id = str(uuid.uuid4())
    driver_id = _reserved_driver(ride_id, 5)
    message_id = f"{ride_id}:confirm_driver:{driver_id}:5"
    confirm = _command(ride_id, message_id, confirm_driver=saga_pb2.ConfirmDriver(driver_id=str(driver_id), fence=5))
    try:
        assert asyncio.run(_participate(confirm, confirm)) == [[], []]
        assert _row(driver_id) == (ride_id, 5, True)
        with psycopg.connect(_dsn("driver"), autocommit=True) as conn:
            stored = conn.execute(
                "SELECT topics, envelopes FROM handled_commands WHERE message_id = %s", (message_id,)
            ).fetchall()
        assert stored == [([], [])]
    finally:
        with psycopg.connect(_dsn("driver"), autocommit=True) as conn:
            conn.execute("DELETE FROM drivers WHERE driver_id = %s", (driver_id,))
            conn.execute("DELETE FROM handled_commands WHERE message_id = %s", (message_id,))
