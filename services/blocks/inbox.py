"""The inbox: an idempotent consumer over PostgreSQL (the "idempotent consumer" pattern;
Kafka delivers at least once, so a handler must be able to see a message twice).

Property: a message's effect and the record that it was handled, with every record it
sent, commit in one PostgreSQL transaction, or neither does; a message delivered again
(after a crash, a rebalance, an aborted Kafka transaction) gets the same records back and
runs nothing a second time. Each service's inbox is a table of (message_id, topics,
envelopes): trip's `processed_messages`, driver's and payment's `handled_commands`, reaped
once Kafka can no longer redeliver (services/blocks/retention.py).

Two ways in: `once()` when the whole handling is database work (trip's orchestrator), and
`replay()` then `record()` when the handling must call out between the two (payment calls
the processor, driver takes Redis locks): the call out is idempotent by its own key, and
the effect and the record still commit together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from ridesaga.saga.v1 import saga_pb2
from services.runtime.messages import Outgoing, outgoing

Table = Literal["processed_messages", "handled_commands"]


@dataclass(frozen=True)
class Inbox:
    table: Table

    async def replay(self, conn: AsyncConnection[Any], message_id: str) -> list[Outgoing] | None:
        """The records sent when this message was handled, sent again; None if it never was."""
        query = sql.SQL("SELECT topics, envelopes FROM {} WHERE message_id = %s").format(sql.Identifier(self.table))
        row = await (await conn.execute(query, (message_id,))).fetchone()
        if row is None:
            return None
        return [outgoing(topic, saga_pb2.Envelope.FromString(raw)) for topic, raw in zip(row[0], row[1], strict=True)]

    async def replay_from(self, pool: AsyncConnectionPool, message_id: str) -> list[Outgoing] | None:
        async with pool.connection() as conn:
            return await self.replay(conn, message_id)

    async def record(self, conn: AsyncConnection[Any], message_id: str, sent: list[Outgoing]) -> None:
        """Records the message as handled, with what it sent; call inside the effect's transaction."""
        query = sql.SQL("INSERT INTO {} (message_id, topics, envelopes) VALUES (%s, %s, %s)").format(
            sql.Identifier(self.table)
        )
        await conn.execute(query, (message_id, [o.topic for o in sent], [o.value or b"" for o in sent]))

    async def once(
        self,
        pool: AsyncConnectionPool,
        message_id: str,
        handle: Callable[[AsyncConnection[Any]], Awaitable[list[Outgoing]]],
    ) -> list[Outgoing]:
        """Replays the stored records, or runs `handle` and records what it sent, all in one
        transaction (which also serializes two deliveries of one message)."""
        async with pool.connection() as conn, conn.transaction():
            stored = await self.replay(conn, message_id)
            if stored is not None:
                return stored
            sent = await handle(conn)
            await self.record(conn, message_id, sent)
            return sent
