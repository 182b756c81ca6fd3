"""Payment's side of the saga: authorize, void and capture at the psp, idempotently.

The psp call carries an idempotency key derived from the ride and the step, so calling
it again after a crash returns the first result instead of moving money twice. The
effect on payment's own tables and the handled-command record (with the reply) commit in
one PostgreSQL transaction; a redelivered command gets the stored reply.

A psp that cannot answer now (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED) is waited for: no
reply, the saga re-sends. A psp that refuses for good gets the same answer however often
it is asked, so the command ends in a stored reply (docs/saga.md, "Permanent payment
errors"): an authorization is rejected, a void of a charge that holds no money is done,
a capture the processor will never pay is written off. Only a void refused while the
charge still holds (or took) money is dead-lettered, for a person to settle."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock, Timestamp
from services.blocks.downstream import Downstream, Unavailable
from services.payment.ledger import capture_postings, write_off_postings
from services.runtime.messages import PAYMENT_REJECTED, Outgoing, Poison, envelope, outgoing

REPLIES = "trip.replies"
PSP_TIMEOUT_SECONDS = 5.0
log = logging.getLogger(__name__)


class Deferred(Exception):
    """The psp is unavailable and the outcome of this command must wait for it."""


class Refused(Exception):
    """The psp refused the call for good: asking again gets the same answer."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


DEFERRED = "deferred:"  # the hold id of a deferred authorization: "deferred:<ride_id>"
MAX_DEFERRED_FARE_CENTS = 5_000
DEFERRED_RISK_LIMIT_CENTS = 20_000  # all deferred authorizations open at once

TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
# A charge in these states holds no money: voiding it again has nothing left to release.
HOLDS_NOTHING = {psp_pb2.VOIDED, psp_pb2.DECLINED}


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
        """Every psp call carries an idempotency key (or only reads), so it may be retried."""
        try:
            charge: psp_pb2.Charge = await self.downstream.call(
                call, request, deadline_seconds=PSP_TIMEOUT_SECONDS, idempotent=True
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in TRANSIENT:
                raise Deferred(f"psp: {error.code().name}: {error.details()}") from None
            raise Refused(error.code(), error.details() or "") from None
        return charge

    async def _charge(self, charge_id: str) -> psp_pb2.Charge | None:
        """The processor's own record of a charge, the authority after a refusal; None if
        it has no such charge (NOT_FOUND, or an id it could never have issued)."""
        try:
            return await self._psp(self.psp.GetCharge, psp_pb2.GetChargeRequest(charge_id=charge_id))
        except Refused as refusal:
            if refusal.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                return None
            raise Poison(f"psp refused to read charge {charge_id}: {refusal}") from None

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
            except Refused as refusal:
                # Not a card decline but a request the processor will never accept (an
                # unknown payment method, a key bound to other parameters...): the ride
                # ends instead of re-sending the same refused call every step timeout.
                log.warning("psp rejected the authorization", extra={"fields": {"reason": str(refusal)}})
                charge = psp_pb2.Charge(status=psp_pb2.DECLINED, decline_reason=f"{PAYMENT_REJECTED}: {refusal}")
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
                await self._void_at_psp(ride, hold)
            reply = envelope(
                self.clock, reply_id, ride, env.message_id, payment_voided=saga_pb2.PaymentVoided(hold_id=hold)
            )
            effect = self._void_hold(ride)
        elif kind == "capture_payment":
            cap = env.capture_payment
            charge_id = cap.hold_id
            if charge_id.startswith(DEFERRED):
                charge_id = await self._settle_deferred(ride, cap.amount_cents) or charge_id
            paid = 0
            if not charge_id.startswith(DEFERRED):
                paid = await self._capture_at_psp(ride, charge_id, cap.amount_cents)
            captured = saga_pb2.PaymentCaptured(hold_id=charge_id, amount_cents=paid)
            reply = envelope(self.clock, reply_id, ride, env.message_id, payment_captured=captured)
            if paid:
                effect = self._capture(ride, charge_id, paid, env.message_id)
            else:
                # Past the pivot nothing is undone: the processor will never pay this
                # fare, so the platform pays the driver (the ride completes, written off).
                effect = self._write_off(ride, cap.amount_cents, env.message_id)
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

    async def _void_at_psp(self, ride: str, hold: str) -> None:
        """Voids the hold. A refusal still completes the compensation if the processor's
        record shows the charge holds no money (none, voided, declined); if it is still
        authorized or was captured, the rider's money needs a person, not a retry."""
        try:
            await self._psp(self.psp.Void, psp_pb2.VoidRequest(idempotency_key=f"{ride}:void", charge_id=hold))
        except Refused as refusal:
            charge = await self._charge(hold)
            if charge is not None and charge.status not in HOLDS_NOTHING:
                status = psp_pb2.ChargeStatus.Name(charge.status)
                log.error(
                    "psp refused to void a hold that still holds money; settle it by hand",
                    extra={"fields": {"hold_id": hold, "status": status, "reason": str(refusal)}},
                )
                raise Poison(f"psp refused to void hold {hold} ({refusal}) and the charge is {status}") from None
            log.warning(
                "psp refused the void of a charge that holds no money; compensated",
                extra={"fields": {"hold_id": hold, "reason": str(refusal)}},
            )

    async def _capture_at_psp(self, ride: str, charge_id: str, amount: int) -> int:
        """Captures the fare; the cents the processor took, 0 if it refused for good and
        its record shows it never will (then the fare is written off). A refusal of a
        charge already captured (say its key was reaped) is that capture, not a loss."""
        try:
            request = psp_pb2.CaptureRequest(
                idempotency_key=f"{ride}:capture", charge_id=charge_id, amount_cents=amount
            )
            charge = await self._psp(self.psp.Capture, request)
        except Refused as refusal:
            found = await self._charge(charge_id)
            if found is not None and found.status == psp_pb2.CAPTURED:
                return found.captured_cents
            status = psp_pb2.ChargeStatus.Name(found.status) if found is not None else "unknown to the psp"
            log.error(
                "psp refused the capture for good; writing the fare off",
                extra={"fields": {"hold_id": charge_id, "status": status, "reason": str(refusal)}},
            )
            return 0
        return charge.captured_cents

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
        """Authorizes a deferred ride at the psp now; its charge id, or None if declined
        or refused for good."""
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT payment_method FROM holds WHERE ride_id = %s", (ride,))).fetchone()
        if row is None:
            raise Poison(f"no deferred hold for ride {ride}")
        try:
            charge = await self._psp(
                self.psp.Authorize,
                psp_pb2.AuthorizeRequest(
                    idempotency_key=f"{ride}:authorize",
                    payment_method=row[0],
                    amount_cents=amount,
                    description=f"ride {ride}",
                ),
            )
        except Refused as refusal:
            log.warning("psp rejected a deferred ride's authorization", extra={"fields": {"reason": str(refusal)}})
            return None
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
                "UPDATE holds SET status = 'WRITTEN_OFF', updated_at = now()"
                " WHERE ride_id = %s AND status IN ('AUTHORIZED', 'DEFERRED')",
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
