"""The psp: a simulated external card processor with Stripe-like semantics and fault
knobs. A thin grpc.aio servicer mapping protobuf to the psp domain; the faults are this
process's state, so a restart clears them."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import grpc

from ridesaga.common.v1 import common_pb2
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.psp import domain
from services.psp.adapters import Claim, PspStore
from services.psp.domain import Charge, Movement, Operation, Outcome
from services.runtime import config, db, validation
from services.runtime.errors import DomainError, NotFound, grpc_errors
from services.runtime.grpc_server import Context, Lifecycle, serve
from services.runtime.periodic import every
from services.runtime.probe import probe
from services.runtime.topology import service

SPEC = service("psp")
REAP_INTERVAL_SECONDS = 60.0


def _to_proto(charge: Charge) -> psp_pb2.Charge:
    return psp_pb2.Charge(
        charge_id=str(charge.charge_id),
        status=psp_pb2.ChargeStatus.Value(charge.status.name),
        authorized_cents=charge.authorized_cents,
        captured_cents=charge.captured_cents,
        refunded_cents=charge.refunded_cents,
        decline_reason=charge.decline_reason,
        description=charge.description,
    )


def _encode(charge: Charge) -> bytes:
    return _to_proto(charge).SerializeToString()


def _movement_to_proto(movement: Movement, created_at_ms: int) -> psp_pb2.Movement:
    return psp_pb2.Movement(
        movement_id=str(movement.movement_id),
        charge_id=str(movement.charge_id),
        kind=psp_pb2.MovementKind.Value(movement.kind.name),
        amount_cents=movement.amount_cents,
        idempotency_key=movement.idempotency_key,
        description=movement.description,
        created_at_ms=created_at_ms,
    )


def _faults_to_proto(faults: domain.Faults) -> psp_pb2.Faults:
    return psp_pb2.Faults(
        decline_rate=faults.decline_rate,
        error_rate=faults.error_rate,
        latency_ms=faults.latency_ms,
        outage=faults.outage,
    )


class PspServicer(psp_pb2_grpc.PspServiceServicer):
    def __init__(self, store: PspStore, roll: Callable[[], float] = random.random) -> None:
        self.store = store
        self.roll = roll
        self.faults = domain.Faults()
        self.calls: Counter[str] = Counter()

    @grpc_errors
    async def Authorize(self, request: psp_pb2.AuthorizeRequest, context: Context) -> psp_pb2.Charge:
        current = await self._inject_faults(context, request.idempotency_key)
        key = domain.idempotency_key(
            Operation.AUTHORIZE,
            request.idempotency_key,
            payment_method=request.payment_method,
            amount_cents=request.amount_cents,
            description=request.description,
        )
        authorization = domain.authorization(request.payment_method, request.amount_cents, request.description)
        declined = domain.declined_by_fault(current, self.roll())
        return await self._once(
            key, lambda claim: self.store.create(claim, domain.authorize(authorization, key, declined))
        )

    @grpc_errors
    async def Capture(self, request: psp_pb2.CaptureRequest, context: Context) -> psp_pb2.Charge:
        await self._inject_faults(context, request.idempotency_key)
        key = domain.idempotency_key(
            Operation.CAPTURE, request.idempotency_key, charge_id=request.charge_id, amount_cents=request.amount_cents
        )
        charge_id = validation.identifier("charge_id", request.charge_id)
        amount = domain.positive_amount("amount_cents", request.amount_cents)
        return await self._change(key, charge_id, lambda charge: domain.capture(charge, amount, key))

    @grpc_errors
    async def Void(self, request: psp_pb2.VoidRequest, context: Context) -> psp_pb2.Charge:
        await self._inject_faults(context, request.idempotency_key)
        key = domain.idempotency_key(Operation.VOID, request.idempotency_key, charge_id=request.charge_id)
        charge_id = validation.identifier("charge_id", request.charge_id)
        return await self._change(key, charge_id, lambda charge: domain.void(charge, key))

    @grpc_errors
    async def Refund(self, request: psp_pb2.RefundRequest, context: Context) -> psp_pb2.Charge:
        await self._inject_faults(context, request.idempotency_key)
        key = domain.idempotency_key(
            Operation.REFUND, request.idempotency_key, charge_id=request.charge_id, amount_cents=request.amount_cents
        )
        charge_id = validation.identifier("charge_id", request.charge_id)
        amount = domain.positive_amount("amount_cents", request.amount_cents)
        return await self._change(key, charge_id, lambda charge: domain.refund(charge, amount, key))

    @grpc_errors
    async def GetCharge(self, request: psp_pb2.GetChargeRequest, context: Context) -> psp_pb2.Charge:
        charge = await self.store.get(validation.identifier("charge_id", request.charge_id))
        if charge is None:
            raise NotFound("charge", request.charge_id)
        return _to_proto(charge)

    @grpc_errors
    async def ListMovements(
        self, request: psp_pb2.ListMovementsRequest, context: Context
    ) -> psp_pb2.ListMovementsReply:
        charge_id = validation.identifier("charge_id", request.charge_id) if request.charge_id else None
        found = await self.store.movements(charge_id, request.description)
        return psp_pb2.ListMovementsReply(movements=[_movement_to_proto(m, at) for m, at in found])

    @grpc_errors
    async def SetFaults(self, request: psp_pb2.Faults, context: Context) -> psp_pb2.Faults:
        self.faults = domain.faults(request.decline_rate, request.error_rate, request.latency_ms, request.outage)
        return _faults_to_proto(self.faults)

    async def GetFaults(self, request: psp_pb2.GetFaultsRequest, context: Context) -> psp_pb2.Faults:
        return _faults_to_proto(self.faults)

    async def Probe(self, request: common_pb2.ProbeRequest, context: Context) -> common_pb2.ProbeReply:
        return await probe(SPEC.name, lambda: db.ready(self.store.pool), [])

    async def CountCalls(self, request: psp_pb2.CountCallsRequest, context: Context) -> psp_pb2.CallCounts:
        prefix = request.idempotency_key_prefix
        return psp_pb2.CallCounts(attempts={k: n for k, n in self.calls.items() if k.startswith(prefix)})

    async def _inject_faults(self, context: Context, idempotency_key: str) -> domain.Faults:
        """Counts the call, then applies the faults in force when it arrived: latency,
        then outage or error."""
        self.calls[idempotency_key] += 1
        current = self.faults
        if current.latency_ms:
            await asyncio.sleep(current.latency_ms / 1000)
        failure = domain.injected_failure(current, self.roll())
        if failure is not None:
            # The processor being down is not a refusal of the request, so no DomainError.
            await context.abort(grpc.StatusCode.UNAVAILABLE, failure)
        return current

    async def _change(
        self, key: domain.IdempotencyKey, charge_id: uuid.UUID, step: Callable[[Charge], Outcome]
    ) -> psp_pb2.Charge:
        return await self._once(key, lambda claim: self.store.change(claim, charge_id, step))

    async def _once(self, key: domain.IdempotencyKey, execute: Callable[[Claim], Awaitable[Charge]]) -> psp_pb2.Charge:
        """Executes a money call at most once per key; a replay returns the stored response.
        A refused call releases its key; a crashed one leaves it for a takeover."""
        claimed = await self.store.claim(key)
        if isinstance(claimed, bytes):
            return psp_pb2.Charge.FromString(claimed)
        try:
            charge = await execute(claimed)
        except DomainError:
            await self.store.release(claimed)
            raise
        return _to_proto(charge)


async def register(server: grpc.aio.Server, lifecycle: Lifecycle) -> None:
    pool = await db.open_pool(config.load(SPEC.name).postgres_dsn(SPEC.name))
    store = PspStore(pool, _encode)
    psp_pb2_grpc.add_PspServiceServicer_to_server(PspServicer(store), server)
    lifecycle.on_close(pool.close)
    # Keys are kept 24 h (docs/saga.md, "Idempotency keys at the edge"), then reaped.
    lifecycle.spawn(
        "reap-keys",
        lambda stopping: every(REAP_INTERVAL_SECONDS, stopping, store.reap_keys, "reaping idempotency keys"),
    )


def main() -> None:
    asyncio.run(serve(config.load(SPEC.name), SPEC.grpc_service, register))


if __name__ == "__main__":
    main()
