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
from services.payment.ledger import capture_postings, write_off_postings
from services.shared.clocks import HybridLogicalClock, Timestamp
from services.shared.downstream import Downstream, Unavailable
from services.shared.messages import Outgoing, Poison, envelope, outgoing

REPLIES = "trip.replies"
PSP_TIMEOUT_SECONDS = 5.0
log = logging.getLogger(__name__)


class Deferred(Exception):
    """The psp is unavailable and the outcome of this command must wait for it."""


DEFERRED = "deferred:"  # the hold id of a deferred authorization: "deferred:<ride_id>"
MAX_DEFERRED_FARE_CENTS = 5_000
DEFERRED_RISK_LIMIT_CENTS = 20_000  # all deferred authorizations open at once

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
                # Nothing was ever sent, so no hold exists at the processor.
                await self._unmark_attempt(f"{ride}:authorize")
                if await self._may_defer(cmd.rider_id, cmd.amount_cents):
                    # Fallback 1: a rider in good standing rides now; the money is
                    # authorized and captured at the psp when it is back (settle later).
                    hold_id = f"{DEFERRED}{ride}"
                    authorized = saga_pb2.PaymentAuthorized(hold_id=hold_id, amount_cents=cmd.amount_cents)
                    reply = envelope(self.clock, reply_id, ride, env.message_id, payment_authorized=authorized)
                    effect = self._record_hold(ride, cmd, "", "DEFERRED")
                    charge = None
                else:
                    # Fallback 2: refused at once with a retry hint instead of waiting.
                    charge = psp_pb2.Charge(
                        status=psp_pb2.DECLINED,
                        decline_reason=f"processor_unavailable: retry after {refused.retry_after_seconds:.0f} s",
                    )
            if charge is None:
                pass
            elif charge.status == psp_pb2.AUTHORIZED:
                reply = envelope(
                    self.clock,
                    reply_id,
                    ride,
                    env.message_id,
                    payment_authorized=saga_pb2.PaymentAuthorized(
                        hold_id=charge.charge_id, amount_cents=cmd.amount_cents
                    ),
                )
                effect = self._record_hold(ride, cmd, charge.charge_id, "AUTHORIZED")
            else:
                reason = charge.decline_reason or "declined"
                reply = envelope(
                    self.clock, reply_id, ride, env.message_id, payment_declined=saga_pb2.PaymentDeclined(reason=reason)
                )
                effect = None
        elif kind == "void_payment":
            hold = env.void_payment.hold_id
            if not hold.startswith(DEFERRED):  # a deferred hold exists only here
                await self._psp(self.psp.Void, psp_pb2.VoidRequest(idempotency_key=f"{ride}:void", charge_id=hold))
            reply = envelope(
                self.clock, reply_id, ride, env.message_id, payment_voided=saga_pb2.PaymentVoided(hold_id=hold)
            )
            effect = self._void_hold(ride)
        elif kind == "capture_payment":
            cap = env.capture_payment
            charge_id = cap.hold_id
            if charge_id.startswith(DEFERRED):
                settled = await self._settle_deferred(ride, cap.amount_cents)
                if settled is None:  # the processor declined now: the platform pays the driver
                    captured = saga_pb2.PaymentCaptured(hold_id=cap.hold_id, amount_cents=0)
                    reply = envelope(self.clock, reply_id, ride, env.message_id, payment_captured=captured)
                    effect = self._write_off(ride, cap.amount_cents, env.message_id)
                else:
                    charge_id = settled
            if not charge_id.startswith(DEFERRED):
                charge = await self._psp(
                    self.psp.Capture,
                    psp_pb2.CaptureRequest(
                        idempotency_key=f"{ride}:capture", charge_id=charge_id, amount_cents=cap.amount_cents
                    ),
                )
                captured = saga_pb2.PaymentCaptured(hold_id=charge_id, amount_cents=charge.captured_cents)
                reply = envelope(self.clock, reply_id, ride, env.message_id, payment_captured=captured)
                effect = self._capture(ride, charge_id, charge.captured_cents, env.message_id)
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

    async def _may_defer(self, rider_id: str, amount: int) -> bool:
        """Good standing (a ride already paid) and within the risk limits."""
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) FILTER (WHERE rider_id = %s AND status = 'CAPTURED'),"
                    " coalesce(sum(authorized_cents) FILTER (WHERE status = 'DEFERRED'), 0) FROM holds",
                    (rider_id,),
                )
            ).fetchone()
        paid, exposure = (int(row[0]), int(row[1])) if row else (0, 0)
        return paid > 0 and amount <= MAX_DEFERRED_FARE_CENTS and exposure + amount <= DEFERRED_RISK_LIMIT_CENTS

    async def _settle_deferred(self, ride: str, amount: int) -> str | None:
        """Authorizes a deferred ride at the psp now; its charge id, or None if declined."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT payment_method FROM holds WHERE ride_id = %s", (ride,))).fetchone()
        if row is None:
            raise Poison(f"no deferred hold for ride {ride}")
        charge = await self._psp(
            self.psp.Authorize,
            psp_pb2.AuthorizeRequest(
                idempotency_key=f"{ride}:authorize",
                payment_method=row[0],
                amount_cents=amount,
                description=f"ride {ride}",
            ),
        )
        return charge.charge_id if charge.status == psp_pb2.AUTHORIZED else None

    @staticmethod
    def _record_hold(ride: str, cmd: saga_pb2.AuthorizePayment, charge_id: str, status: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO holds (ride_id, rider_id, payment_method, charge_id, authorized_cents, status)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (ride_id) DO NOTHING",
                (ride, cmd.rider_id, cmd.payment_method, charge_id, cmd.amount_cents, status),
            )

        return effect

    @staticmethod
    def _write_off(ride: str, amount: int, message_id: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            updated = await conn.execute(
                "UPDATE holds SET status = 'WRITTEN_OFF', updated_at = now() WHERE ride_id = %s AND status = 'DEFERRED'",
                (ride,),
            )
            if updated.rowcount == 1:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO ledger_entries (ride_id, account, amount_cents, message_id) VALUES (%s, %s, %s, %s)",
                        [(ride, account, cents, message_id) for account, cents in write_off_postings(amount)],
                    )

        return effect

    @staticmethod
    def _void_hold(ride: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE holds SET status = 'VOIDED', updated_at = now()"
                " WHERE ride_id = %s AND status IN ('AUTHORIZED', 'DEFERRED')",
                (ride,),
            )

        return effect

    @staticmethod
    def _capture(ride: str, charge_id: str, amount: int, message_id: str) -> Any:
        async def effect(conn: AsyncConnection[Any]) -> None:
            updated = await conn.execute(
                "UPDATE holds SET status = 'CAPTURED', charge_id = %s, captured_cents = %s, updated_at = now()"
                " WHERE ride_id = %s AND status IN ('AUTHORIZED', 'DEFERRED')",
                (charge_id, amount, ride),
            )
            if updated.rowcount == 1:
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO ledger_entries (ride_id, account, amount_cents, message_id) VALUES (%s, %s, %s, %s)",
                        [(ride, account, cents, message_id) for account, cents in capture_postings(amount)],
                    )

        return effect
