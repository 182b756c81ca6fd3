"""The inbox's contract (services/blocks/inbox.py), over an in-memory table whose
transactions commit or roll back like PostgreSQL's: a message is handled once, what it
sent is sent again on every redelivery, "handled, sent nothing" is not "never handled",
and a handling that fails leaves no record. The SQL itself runs against the real tables
in tests/integration/test_inbox.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from psycopg import sql

from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.inbox import Inbox
from services.runtime.messages import Outgoing, envelope, outgoing
from services.runtime.topology import Topic

CLOCK = HybridLogicalClock()
Rows = dict[str, tuple[list[str], list[bytes]]]


@dataclass
class FakeCursor:
    row: tuple[Any, ...] | None

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.row


@dataclass
class FakeDatabase:
    """One inbox table, as a pool of one connection: writes in a transaction are kept
    only if it ends without an exception."""

    table: str
    committed: Rows = field(default_factory=dict)
    pending: Rows | None = None

    async def execute(self, query: sql.Composable, params: tuple[Any, ...]) -> FakeCursor:
        statement = query.as_string()
        rows = self.committed if self.pending is None else {**self.committed, **self.pending}
        if statement == f'SELECT topics, envelopes FROM "{self.table}" WHERE message_id = %s':
            return FakeCursor(rows.get(params[0]))
        assert statement == f'INSERT INTO "{self.table}" (message_id, topics, envelopes) VALUES (%s, %s, %s)'
        assert params[0] not in rows, "a second record of one message breaks the primary key"
        (self.committed if self.pending is None else self.pending)[params[0]] = (params[1], params[2])
        return FakeCursor(None)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.pending = {}
        try:
            yield
            self.committed.update(self.pending)
        finally:
            self.pending = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeDatabase]:
        yield self


def _record(message_id: str, topic: Topic = Topic.TRIP_REPLIES) -> Outgoing:
    released = saga_pb2.DriverReleased(driver_id="d1")
    return outgoing(topic, envelope(CLOCK, message_id, "r1", "m0", driver_released=released))


def _once(inbox: Inbox, db: FakeDatabase, message_id: str, sent: list[Outgoing]) -> tuple[list[Outgoing], int]:
    """What `once` returns for the message, and how often it ran the handler."""
    runs = 0

    async def handle(conn: Any) -> list[Outgoing]:
        nonlocal runs
        runs += 1
        return sent

    return asyncio.run(inbox.once(cast(Any, db), message_id, handle)), runs


def _shape(records: list[Outgoing]) -> list[tuple[str, bytes | None, bytes | None]]:
    return [(record.topic, record.key, record.value) for record in records]


@pytest.mark.parametrize("table", ["processed_messages", "handled_commands"])
def test_a_redelivered_message_gets_what_it_sent_and_runs_nothing(table: Any) -> None:
    inbox, db = Inbox(table), FakeDatabase(table)
    sent = [_record("m1:reply"), _record("m1:command", Topic.DRIVER_COMMANDS)]
    first, runs = _once(inbox, db, "m1", sent)
    again, reruns = _once(inbox, db, "m1", [_record("other")])
    assert (runs, reruns) == (1, 0)
    assert _shape(again) == _shape(first) == _shape(sent)  # the same records, in the same order
    assert _once(inbox, db, "m2", [])[1] == 1  # another message is handled on its own


def test_handled_with_nothing_sent_is_not_never_handled() -> None:
    """ConfirmDriver, or a timeout fenced as stale: recorded with no records, so a
    redelivery sends nothing and runs nothing."""
    inbox, db = Inbox("handled_commands"), FakeDatabase("handled_commands")
    assert asyncio.run(inbox.replay_from(cast(Any, db), "m1")) is None
    assert _once(inbox, db, "m1", []) == ([], 1)
    assert asyncio.run(inbox.replay_from(cast(Any, db), "m1")) == []
    assert _once(inbox, db, "m1", [_record("m1:reply")]) == ([], 0)


def test_a_handling_that_fails_leaves_no_record() -> None:
    inbox, db = Inbox("processed_messages"), FakeDatabase("processed_messages")

    async def failing(conn: Any) -> list[Outgoing]:
        raise RuntimeError("the effect failed")

    with pytest.raises(RuntimeError):
        asyncio.run(inbox.once(cast(Any, db), "m1", failing))
    assert db.committed == {}
    assert _once(inbox, db, "m1", [_record("m1:reply")])[1] == 1  # the redelivery runs it
