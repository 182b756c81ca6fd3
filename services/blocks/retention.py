"""How long an idempotent consumer must remember a handled command: longer than Kafka
can redeliver it.

Kafka redelivers a command only while it is still in its topic: after a crash before the
consumed offset was committed, or when the group's committed offsets are gone
(`offsets.retention.minutes`, 7 days after a group empties) and the consumer starts
again from the earliest record (`auto.offset.reset=earliest`, services/blocks/exactly_once.py).
A record stays in its topic for the topic's retention, and up to one segment roll more:
Kafka deletes whole segments, each once its newest record is older than the retention,
and a segment rolls after `log.roll.hours` (168 h by default) or 1 GiB. The local stack
keeps 24 h (`log.retention.hours=24`, deploy/local/files.py); compose and Kubernetes set
no retention, so Kafka's default of 168 h applies. A record can therefore be redelivered
for at most 168 h + 168 h = 14 days, under every deployment; a handled command older
than that can never come back, and its record may go."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, Literal

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from services.runtime.periodic import every

KAFKA_DEFAULT_RETENTION = timedelta(hours=168)  # log.retention.hours when a deployment sets none
KAFKA_DEFAULT_SEGMENT_ROLL = timedelta(hours=168)  # log.roll.hours
LONGEST_IN_TOPIC = KAFKA_DEFAULT_RETENTION + KAFKA_DEFAULT_SEGMENT_ROLL
# A day beyond the longest a command can stay in its topic, for the clock skew between
# the brokers and PostgreSQL and for a segment whose deletion runs late.
HANDLED_RETENTION = LONGEST_IN_TOPIC + timedelta(days=1)


# The idempotency records of each process, each with the time it was written: trip's
# processed messages, the participants' handled commands, and payment's marks of psp
# calls sent (asked only while the command that sent them can still be redelivered).
Record = Literal["processed_messages", "handled_commands", "psp_attempts"]
WRITTEN_AT: dict[Record, str] = {
    "processed_messages": "processed_at",
    "handled_commands": "handled_at",
    "psp_attempts": "at",
}
REAP_INTERVAL_SECONDS = 60.0


async def forget_handled(pool: AsyncConnectionPool, table: Record, keep: timedelta = HANDLED_RETENTION) -> int:
    """Deletes the records older than `keep`: no redelivery will ever ask for them again.
    Every replica may run it; deleting what another replica deleted already is harmless."""
    query = sql.SQL("DELETE FROM {} WHERE {} < now() - %s").format(
        sql.Identifier(table), sql.Identifier(WRITTEN_AT[table])
    )
    async with pool.connection() as conn:
        cursor = await conn.execute(query, (keep,))
        return cursor.rowcount


def reaper(pool: AsyncConnectionPool, table: Record) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """The background task that forgets `table`'s old records, for Lifecycle.spawn."""
    return lambda stopping: every(
        REAP_INTERVAL_SECONDS, stopping, lambda: forget_handled(pool, table), f"reaping {table}"
    )
