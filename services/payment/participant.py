"""Payment's side of the saga: authorize, void and capture at the psp, idempotently.

The psp call carries an idempotency key derived from the ride and the step, so calling
it again after a crash returns the first result instead of moving money twice. The
effect on payment's own tables and the inbox record (with the reply) commit in one
PostgreSQL transaction (services/blocks/inbox.py); a redelivered command gets the
stored reply.

A psp that cannot answer now (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, or the breaker
open after an attempt went out) is waited for: no reply, the saga re-sends. A psp that
refuses for good gets the same answer however often it is asked, so the command ends in
a stored reply (docs/saga.md, "Permanent payment errors"; handlers.py); only a void
refused while the charge still holds (or took) money is dead-lettered, for a person to
settle."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from ridesaga.saga.v1 import saga_pb2
from services.blocks.downstream import Unavailable
from services.blocks.inbox import Inbox
from services.payment import handlers
from services.payment.adapters import Deferred
from services.payment.handlers import Adapters, Handled
from services.runtime.messages import Outgoing, Poison, observe, outgoing
from services.runtime.topology import Topic

log = logging.getLogger(__name__)
INBOX = Inbox("handled_commands")
Handler = Callable[[saga_pb2.Envelope, Adapters], Awaitable[Handled]]
HANDLERS: dict[str, Handler] = {
    "authorize_payment": handlers.authorize,
    "void_payment": handlers.void,
    "capture_payment": handlers.capture,
}


class PaymentParticipant:
    def __init__(self, pool: AsyncConnectionPool, adapters: Adapters) -> None:
        self.pool = pool
        self.adapters = adapters

    async def handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        observe(self.adapters.clock, env)
        stored = await INBOX.replay_from(self.pool, env.message_id)
        if stored is not None:
            return stored
        kind = env.WhichOneof("body")
        handler = HANDLERS.get(kind or "")
        if handler is None:
            raise Poison(f"payment does not handle messages of type {kind!r}")
        try:
            handled = await handler(env, self.adapters)
        except (Deferred, Unavailable) as later:
            # The psp cannot answer now. Nothing is recorded as handled and no reply is
            # sent: the orchestrator's step timeout re-sends the same command later. Not
            # aborting keeps this ride from blocking every other ride on its partition.
            log.warning("psp unavailable; the saga will re-send", extra={"fields": {"reason": str(later)}})
            return []
        sent = [outgoing(Topic.TRIP_REPLIES, handled.reply)]
        async with self.pool.connection() as conn, conn.transaction():
            if handled.effect is not None:
                await self.adapters.holds.apply(conn, handled.effect)
            await INBOX.record(conn, env.message_id, sent)
        return sent
