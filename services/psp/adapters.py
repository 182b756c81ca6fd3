"""The psp's PostgreSQL adapter: charges, money movements and idempotency keys.

A money call claims its key in one short transaction, then commits the charge, its
movement and the key's stored response together in a second one, holding the charge's
row lock (SELECT ... FOR UPDATE) so two calls on one charge serialize."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.blocks.idempotency import KEEP_MS
from services.psp import domain
from services.psp.domain import Charge, ChargeStatus, IdempotencyKey, Movement, Operation, Outcome
from services.runtime.errors import NotFound

Encode = Callable[[Charge], bytes]
"""Turns a charge into the response bytes stored with its key and replayed verbatim."""

_CHARGE_COLUMNS = (
    "charge_id, status, payment_method, description, authorized_cents, captured_cents, refunded_cents, decline_reason"
)
_KEY = "operation = %s AND idempotency_key = %s"


@dataclass(frozen=True)
class Claim:
    """The right to execute one request under its key, held until completed or released."""

    key: IdempotencyKey
    owner: uuid.UUID

    @property
    def scope(self) -> tuple[str, str]:
        """The key's primary key: keys are scoped to one operation."""
        return (self.key.operation.value, self.key.value)


class PspStore:
    def __init__(self, pool: AsyncConnectionPool, encode: Encode) -> None:
        self.pool = pool
        self.encode = encode

    async def claim(self, key: IdempotencyKey) -> Claim | bytes:
        """Claims the key, or returns the response stored for it (a replay). Raises
        InvalidArgument for other parameters under the key, Aborted while it is in flight."""
        claim = Claim(key, uuid.uuid4())
        async with self.pool.connection() as conn, conn.transaction():
            inserted = await (
                await conn.execute(
                    "INSERT INTO idempotency_keys (operation, idempotency_key, fingerprint, owner)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                    (*claim.scope, key.fingerprint, claim.owner),
                )
            ).fetchone()
            if inserted:
                return claim
            row = await (
                await conn.execute(
                    "SELECT fingerprint, response, extract(epoch FROM now() - claimed_at)::float8"
                    f" FROM idempotency_keys WHERE {_KEY}",
                    claim.scope,
                )
            ).fetchone()
            if row is None:  # released by its owner a moment ago
                raise domain.in_progress(key)
            fingerprint, response, claimed_seconds_ago = row
            if domain.reuse(key, fingerprint, response is not None, claimed_seconds_ago) is domain.Reuse.REPLAY:
                return bytes(response)
            taken = await (
                await conn.execute(
                    "UPDATE idempotency_keys SET owner = %s, claimed_at = now()"
                    f" WHERE {_KEY} AND response IS NULL AND claimed_at < now() - make_interval(secs => %s)"
                    " RETURNING 1",
                    (claim.owner, *claim.scope, domain.TAKEOVER_AFTER_SECONDS),
                )
            ).fetchone()
            if taken is None:
                raise domain.in_progress(key)
            return claim

    async def release(self, claim: Claim) -> None:
        """Frees a key whose request was refused, so nothing is stored under it."""
        async with self.pool.connection() as conn:
            await conn.execute(
                f"DELETE FROM idempotency_keys WHERE {_KEY} AND owner = %s AND response IS NULL",
                (*claim.scope, claim.owner),
            )

    async def create(self, claim: Claim, outcome: Outcome) -> Charge:
        charge = outcome.charge
        async with self.pool.connection() as conn, conn.transaction():
            await self._hold(conn, claim)
            await conn.execute(
                f"INSERT INTO charges ({_CHARGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    charge.charge_id,
                    charge.status.value,
                    charge.payment_method,
                    charge.description,
                    charge.authorized_cents,
                    charge.captured_cents,
                    charge.refunded_cents,
                    charge.decline_reason,
                ),
            )
            await self._complete(conn, claim, outcome)
        return charge

    async def change(self, claim: Claim, charge_id: uuid.UUID, step: Callable[[Charge], Outcome]) -> Charge:
        """Applies `step` to the charge under its row lock; a refusal raised by `step` rolls back."""
        async with self.pool.connection() as conn, conn.transaction():
            await self._hold(conn, claim)
            locked = f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE charge_id = %s FOR UPDATE"
            row = await (await conn.execute(locked, (charge_id,))).fetchone()
            if row is None:
                raise NotFound("charge", str(charge_id))
            outcome = step(_charge(row))
            charge = outcome.charge
            await conn.execute(
                "UPDATE charges SET status = %s, captured_cents = %s, refunded_cents = %s, updated_at = now()"
                " WHERE charge_id = %s",
                (charge.status.value, charge.captured_cents, charge.refunded_cents, charge.charge_id),
            )
            await self._complete(conn, claim, outcome)
        return charge

    async def reap_keys(self, keep_seconds: float = KEEP_MS / 1000) -> int:
        """Deletes the keys completed (or last claimed) longer ago than `keep_seconds`. The
        money movements keep their keys, so a reaped key can never move money again."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM idempotency_keys WHERE coalesce(completed_at, claimed_at) < now() - make_interval(secs => %s)",
                (keep_seconds,),
            )
            return cursor.rowcount

    async def get(self, charge_id: uuid.UUID) -> Charge | None:
        async with self.pool.connection() as conn:
            row = await (
                await conn.execute(f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE charge_id = %s", (charge_id,))
            ).fetchone()
        return _charge(row) if row else None

    async def movements(self, charge_id: uuid.UUID | None, description: str) -> list[tuple[Movement, int]]:
        """(movement, created_at_ms), oldest first; an empty filter matches everything."""
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT movement_id, charge_id, kind, amount_cents, idempotency_key, description,"
                    " (extract(epoch FROM created_at) * 1000)::bigint FROM money_movements"
                    " WHERE (%(charge_id)s::uuid IS NULL OR charge_id = %(charge_id)s)"
                    " AND (%(description)s = '' OR description = %(description)s)"
                    " ORDER BY created_at, movement_id",
                    {"charge_id": charge_id, "description": description},
                )
            ).fetchall()
        return [(Movement(row[0], row[1], Operation(row[2]), row[3], row[4], row[5]), row[6]) for row in rows]

    async def _hold(self, conn: AsyncConnection[Any], claim: Claim) -> None:
        """Locks the key's row and checks the claim is still ours: a request that lost its
        claim to a takeover must not execute a second time."""
        row = await (
            await conn.execute(
                f"SELECT owner, response IS NOT NULL FROM idempotency_keys WHERE {_KEY} FOR UPDATE",
                claim.scope,
            )
        ).fetchone()
        if row is None or row[0] != claim.owner or row[1]:
            raise domain.in_progress(claim.key)

    async def _complete(self, conn: AsyncConnection[Any], claim: Claim, outcome: Outcome) -> None:
        movement = outcome.movement
        if movement is not None:
            moved = await (
                await conn.execute(
                    "INSERT INTO money_movements"
                    " (movement_id, charge_id, kind, amount_cents, idempotency_key, description)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (kind, idempotency_key) DO NOTHING RETURNING 1",
                    (
                        movement.movement_id,
                        movement.charge_id,
                        movement.kind.value,
                        movement.amount_cents,
                        movement.idempotency_key,
                        movement.description,
                    ),
                )
            ).fetchone()
            if moved is None:  # the key's record was reaped; its movement was not
                raise domain.reaped(claim.key)
        await conn.execute(
            f"UPDATE idempotency_keys SET response = %s, completed_at = now() WHERE {_KEY}",
            (self.encode(outcome.charge), *claim.scope),
        )


def _charge(row: tuple[Any, ...]) -> Charge:
    return Charge(row[0], ChargeStatus(row[1]), row[2], row[3], row[4], row[5], row[6], row[7])
