"""Payment's side of the saga: authorize, void and capture at the psp, idempotently.

The psp call carries an idempotency key derived from the ride and the step, so calling
it again after a crash returns the first result instead of moving money twice. The
effect on payment's own tables and the handled-command record (with the reply) commit in
one PostgreSQL transaction; a redelivered command gets the stored reply."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.payment.ledger import capture_postings
from services.shared.clocks import HybridLogicalClock, Timestamp
from services.shared.downstream import Downstream, Unavailable
from services.shared.messages import Outgoing, Poison, envelope, outgoing

REPLIES = "trip.replies"
PSP_TIMEOUT_SECONDS = 5.0
log = logging.getLogger(__name__)


class Deferred(Exception):
    """The psp is unavailable and the outcome of this command must wait for it."""


TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}


class PaymentParticipant:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        psp: psp_pb2_grpc.PspServiceAsyncStub,
        clock: HybridLogicalClock,
        downstream: Downstream,
    ) -> None:
        self.pool = pool
        self.psp = psp
        self.clock = clock
        self.downstream = downstream

    async def _psp(self, call: Any, request: Any) -> psp_pb2.Charge:
        """Every psp call carries an idempotency key, so it may be retried."""
        try:
            charge: psp_pb2.Charge = await self.downstream.call(
                call, request, deadline_seconds=PSP_TIMEOUT_SECONDS, idempotent=True
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in TRANSIENT:
                raise Deferred(f"psp: {error.code().name}: {error.details()}") from None
            raise Poison(f"psp refused: {error.code().name}: {error.details()}") from None
        return charge

    async def _mark_attempt(self, key: str) -> bool:
        """Records that a psp call with this key is about to go out; True if it is the first."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO psp_attempts (idempotency_key) VALUES (%s) ON CONFLICT DO NOTHING", (key,)
            )
            return cursor.rowcount == 1

    async def _unmark_attempt(self, key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM psp_attempts WHERE idempotency_key = %s", (key,))

    async def handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        try:
            return await self._handle(env)
        except (Deferred, Unavailable) as later:
            # The psp cannot answer now. Nothing is recorded as handled and no reply is
            # sent: the orchestrator's step timeout re-sends the same command later. Not
            # aborting keeps this ride from blocking every other ride on its partition.
            log.warning("psp unavailable; the saga will re-send", extra={"fields": {"reason": str(later)}})
            return []

    async def _handle(self, env: saga_pb2.Envelope) -> list[Outgoing]:
        try:
            self.clock.observe(Timestamp.parse(env.hlc))
        except ValueError as error:
            raise Poison(str(error)) from None
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT reply FROM handled_commands WHERE message_id = %s", (env.message_id,))
            ).fetchone()
        if row is not None:
            return [outgoing(REPLIES, saga_pb2.Envelope.FromString(row[0]))]
        kind = env.WhichOneof("body")
        ride = env.ride_id
        reply_id = f"{env.message_id}:reply"
        if kind == "authorize_payment":
            cmd = env.authorize_payment
            first_try = await self._mark_attempt(f"{ride}:authorize")
            try:
                charge = await self._psp(
                    self.psp.Authorize,
                    psp_pb2.AuthorizeRequest(
                        idempotency_key=f"{ride}:authorize",
                        payment_method=cmd.payment_method,
                        amount_cents=cmd.amount_cents,
                        description=f"ride {ride}",
                    ),
                )
            except Unavailable as refused:
                if refused.sent or not first_try:
                    # An attempt went out before: a hold may exist. Only the processor
                    # can say, so wait for it (the idempotent replay will tell).
                    raise Deferred(str(refused)) from None
                # Fallback while the processor is down: nothing was ever sent, so no hold
                # exists, and the ride is refused at once with a retry hint instead of
                # waiting; the rider can book again when the breaker closes.
                await self._unmark_attempt(f"{ride}:authorize")
                charge = psp_pb2.Charge(
                    status=psp_pb2.DECLINED,
                    decline_reason=f"processor_unavailable: retry after {refused.retry_after_seconds:.0f} s",
                )
            if charge.status == psp_pb2.AUTHORIZED:
                reply = envelope(
                    self.clock,
                    reply_id,
                    ride,
                    env.message_id,
                    payment_authorized=saga_pb2.PaymentAuthorized(
                        hold_id=charge.charge_id, amount_cents=cmd.amount_cents
                    ),
                )
                effect = self._record_hold(ride, charge.charge_id, cmd.amount_cents)
            else:
                reason = charge.decline_reason or "declined"
                reply = envelope(
                    self.clock, reply_id, ride, env.message_id, payment_declined=saga_pb2.PaymentDeclined(reason=reason)
                )
                effect = None
        elif kind == "void_payment":
            hold = env.void_payment.hold_id
            await self._psp(self.psp.Void, psp_pb2.VoidRequest(idempotency_key=f"{ride}:void", charge_id=hold))
            reply = envelope(
                self.clock, reply_id, ride, env.message_id, payment_voided=saga_pb2.PaymentVoided(hold_id=hold)
            )
            effect = self._void_hold(ride)
        elif kind == "capture_payment":
            cap = env.capture_payment
            charge = await self._psp(
                self.psp.Capture,
                psp_pb2.CaptureRequest(
                    idempotency_key=f"{ride}:capture", charge_id=cap.hold_id, amount_cents=cap.amount_cents
                ),
            )
            reply = envelope(
                self.clock,
                reply_id,
                ride,
                env.message_id,
                payment_captured=saga_pb2.PaymentCaptured(hold_id=cap.hold_id, amount_cents=charge.captured_cents),
            )
            effect = self._capture(ride, charge.captured_cents, env.message_id)
        else:
            raise Poison(f"payment does not handle messages of type {kind!r}")
        async with self.pool.connection() as conn, conn.transaction():
            if effect is not None:
                await effect(conn)
            await conn.execute(
                "INSERT INTO handled_commands (message_id, reply) VALUES (%s, %s)",
                (env.message_id, reply.SerializeToString()),
            )
        return [outgoing(REPLIES, reply)]

    @staticmethod
    def _record_hold(ride: str, charge_id: str, amount: int) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO holds (ride_id, charge_id, authorized_cents, status) VALUES (%s, %s, %s, 'AUTHORIZED')"
                " ON CONFLICT (ride_id) DO NOTHING",
                (ride, charge_id, amount),
            )

        return effect

    @staticmethod
    def _void_hold(ride: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE holds SET status = 'VOIDED', updated_at = now() WHERE ride_id = %s AND status = 'AUTHORIZED'",
                (ride,),
            )

        return effect

    @staticmethod
    def _capture(ride: str, amount: int, message_id: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            updated = await conn.execute(
                "UPDATE holds SET status = 'CAPTURED', captured_cents = %s, updated_at = now()"
                " WHERE ride_id = %s AND status = 'AUTHORIZED'",
                (amount, ride),
            )
            if updated.rowcount == 1:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO ledger_entries (ride_id, account, amount_cents, message_id) VALUES (%s, %s, %s, %s)",
                        [(ride, account, cents, message_id) for account, cents in capture_postings(amount)],
                    )

        return effect
