"""Payment's adapters: holds, ledger entries and psp attempts in PostgreSQL, and the psp
behind the sidecar, called through one Downstream (bulkhead, breaker, retry budget).

The psp client sorts every failed call into two answers (docs/saga.md, "Permanent
payment errors"): Deferred, *not now* (the outcome must wait for the processor), and
Refused, *never* (asking again gets the same answer). A hold's writes run in the
caller's transaction, so the participant commits them with its inbox record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.blocks.downstream import Downstream
from services.blocks.retry import NOT_NOW_CODES
from services.payment.domain import (
    OPEN,
    CaptureHold,
    Effect,
    HoldStatus,
    RecordHold,
    Standing,
    VoidHold,
    WriteOffHold,
)

PSP_TIMEOUT_SECONDS = 5.0
# GetCharge's answers for a charge the processor does not have: none by that id, or an id
# it could never have issued.
NO_SUCH_CHARGE = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


class Deferred(Exception):
    """The psp is unavailable and the outcome of this command must wait for it."""


class Refused(Exception):
    """The psp refused the call for good: asking again gets the same answer."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class PspClient:
    """Every call carries an idempotency key (or only reads), so each may be retried.
    The breaker's own refusal (downstream.Unavailable) passes through: what it means
    depends on whether an attempt went out, which only the handler knows."""

    def __init__(self, stub: psp_pb2_grpc.PspServiceAsyncStub, downstream: Downstream) -> None:
        self.stub = stub
        self.downstream = downstream

    async def _call(self, method: Callable[..., Awaitable[psp_pb2.Charge]], request: Any) -> psp_pb2.Charge:
        try:
            return await self.downstream.call(method, request, deadline_seconds=PSP_TIMEOUT_SECONDS, idempotent=True)
        except grpc.aio.AioRpcError as error:
            if error.code() in NOT_NOW_CODES:
                raise Deferred(f"psp: {error.code().name}: {error.details()}") from None
            raise Refused(error.code(), error.details() or "") from None

    async def authorize(self, request: psp_pb2.AuthorizeRequest) -> psp_pb2.Charge:
        return await self._call(self.stub.Authorize, request)

    async def void(self, request: psp_pb2.VoidRequest) -> psp_pb2.Charge:
        return await self._call(self.stub.Void, request)

    async def capture(self, request: psp_pb2.CaptureRequest) -> psp_pb2.Charge:
        return await self._call(self.stub.Capture, request)

    async def charge(self, charge_id: str) -> psp_pb2.Charge | None:
        """The processor's own record of a charge, the authority after a refusal; None if
        it has no such charge."""
        try:
            return await self._call(self.stub.GetCharge, psp_pb2.GetChargeRequest(charge_id=charge_id))
        except Refused as refusal:
            if refusal.code in NO_SUCH_CHARGE:
                return None
            raise


class Attempts:
    """psp calls about to go out, by idempotency key: a call the open breaker refused may
    be answered "processor unavailable" only if no attempt of it ever went out."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def mark(self, key: str) -> bool:
        """Records that a call with this key is about to go out; True if it is the first."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO psp_attempts (idempotency_key) VALUES (%s) ON CONFLICT DO NOTHING", (key,)
            )
            return cursor.rowcount == 1

    async def unmark(self, key: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("DELETE FROM psp_attempts WHERE idempotency_key = %s", (key,))


class Holds:
    """Each ride's hold and the ledger entries of the money it moved."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def standing(self, rider_id: str) -> Standing:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT count(*) FILTER (WHERE rider_id = %s AND status = 'CAPTURED'),"
                    " coalesce(sum(authorized_cents) FILTER (WHERE status = 'DEFERRED'), 0) FROM holds",
                    (rider_id,),
                )
            ).fetchone()
        return Standing(int(row[0]), int(row[1])) if row else Standing(0, 0)

    async def payment_method(self, ride_id: str) -> str | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute("SELECT payment_method FROM holds WHERE ride_id = %s", (ride_id,))
            ).fetchone()
        return str(row[0]) if row else None

    async def apply(self, conn: AsyncConnection[Any], effect: Effect) -> None:
        """Writes a command's effect in the caller's transaction."""
        match effect:
            case RecordHold():
                await conn.execute(
                    "INSERT INTO holds (ride_id, rider_id, payment_method, charge_id, authorized_cents, status)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (ride_id) DO NOTHING",
                    (
                        effect.ride_id,
                        effect.rider_id,
                        effect.payment_method,
                        effect.charge_id,
                        effect.authorized_cents,
                        effect.status,
                    ),
                )
            case VoidHold():
                await _close(conn, effect.ride_id, "VOIDED")
            case CaptureHold():
                if await _capture(conn, effect):
                    await _post(conn, effect.ride_id, effect.postings(), effect.message_id)
            case WriteOffHold():
                if await _close(conn, effect.ride_id, "WRITTEN_OFF"):
                    await _post(conn, effect.ride_id, effect.postings(), effect.message_id)


# Each closes the ride's hold only if it is still open (domain.OPEN); True if this one did.
async def _close(conn: AsyncConnection[Any], ride_id: str, status: HoldStatus) -> bool:
    cursor = await conn.execute(
        "UPDATE holds SET status = %s, updated_at = now() WHERE ride_id = %s AND status = ANY(%s)",
        (status, ride_id, list(OPEN)),
    )
    return cursor.rowcount == 1


async def _capture(conn: AsyncConnection[Any], effect: CaptureHold) -> bool:
    cursor = await conn.execute(
        "UPDATE holds SET status = 'CAPTURED', charge_id = %s, captured_cents = %s, updated_at = now()"
        " WHERE ride_id = %s AND status = ANY(%s)",
        (effect.charge_id, effect.captured_cents, effect.ride_id, list(OPEN)),
    )
    return cursor.rowcount == 1


async def _post(conn: AsyncConnection[Any], ride_id: str, postings: list[tuple[str, int]], message_id: str) -> None:
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO ledger_entries (ride_id, account, amount_cents, message_id) VALUES (%s, %s, %s, %s)",
            [(ride_id, account, cents, message_id) for account, cents in postings],
        )
