"""Payment's answer to a psp that refuses for good (not UNAVAILABLE, DEADLINE_EXCEEDED or
ABORTED): every such refusal ends in a stored reply, never a dead letter that the saga's
step timeout would re-send forever, except a void refused while money is still held.
A fake psp stub and a fake pool that records what would be written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from ridesaga.psp.v1 import psp_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.downstream import Downstream
from services.payment.participant import PaymentParticipant
from services.runtime.messages import PAYMENT_REJECTED, Poison, envelope

RIDE = str(uuid.uuid4())
CHARGE = str(uuid.uuid4())


def _refusal(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@dataclass
class FakePsp:
    """Each method answers with its configured charge, or raises its configured error."""

    answers: dict[str, psp_pb2.Charge | grpc.aio.AioRpcError]
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def _answer(self, method: str, request: Any) -> psp_pb2.Charge:
        self.calls.append((method, getattr(request, "idempotency_key", "")))
        answer = self.answers[method]
        if isinstance(answer, grpc.aio.AioRpcError):
            raise answer
        return answer

    async def Authorize(self, request: psp_pb2.AuthorizeRequest, timeout: float) -> psp_pb2.Charge:
        return await self._answer("Authorize", request)

    async def Capture(self, request: psp_pb2.CaptureRequest, timeout: float) -> psp_pb2.Charge:
        return await self._answer("Capture", request)

    async def Void(self, request: psp_pb2.VoidRequest, timeout: float) -> psp_pb2.Charge:
        return await self._answer("Void", request)

    async def GetCharge(self, request: psp_pb2.GetChargeRequest, timeout: float) -> psp_pb2.Charge:
        return await self._answer("GetCharge", request)


@dataclass
class FakeCursor:
    written: list[tuple[str, Any]]
    row: tuple[Any, ...] | None = None
    rowcount: int = 1

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.row

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.written.extend((sql, row) for row in rows)

    async def __aenter__(self) -> FakeCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@dataclass
class FakeConnection:
    """A database with no handled command and no hold yet; every write changes one row."""

    written: list[tuple[str, Any]]
    rows: dict[str, tuple[Any, ...]]

    async def execute(self, sql: str, params: tuple[Any, ...] = ()) -> FakeCursor:
        if sql.startswith("SELECT"):
            return FakeCursor(self.written, next((row for table, row in self.rows.items() if table in sql), None))
        self.written.append((sql, params))
        return FakeCursor(self.written)

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.written)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


@dataclass
class FakePool:
    rows: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    written: list[tuple[str, Any]] = field(default_factory=list)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self.written, self.rows)

    def handled(self) -> list[saga_pb2.Envelope]:
        return [saga_pb2.Envelope.FromString(params[1]) for sql, params in self.written if "handled_commands" in sql]

    def ledger(self) -> list[tuple[str, int]]:
        return [(row[1], row[2]) for sql, row in self.written if "ledger_entries" in sql]


def _handle(psp: FakePsp, pool: FakePool, **body: object) -> list[saga_pb2.Envelope]:
    clock = HybridLogicalClock()
    participant = PaymentParticipant(cast(Any, pool), cast(Any, psp), clock, Downstream("payment->psp"))
    command = envelope(clock, f"{RIDE}:command", RIDE, "", **body)
    sent = asyncio.run(participant.handle(command))
    return [saga_pb2.Envelope.FromString(record.value or b"") for record in sent]


def _authorize() -> saga_pb2.AuthorizePayment:
    return saga_pb2.AuthorizePayment(rider_id=str(uuid.uuid4()), amount_cents=1_200, payment_method="tok_unknownBrand")


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND]
)
def test_a_permanent_authorize_refusal_is_a_stored_payment_rejected_decline(code: grpc.StatusCode) -> None:
    psp, pool = FakePsp({"Authorize": _refusal(code, "payment_method: no such token 'tok_unknownBrand'")}), FakePool()
    (reply,) = _handle(psp, pool, authorize_payment=_authorize())
    assert reply.WhichOneof("body") == "payment_declined"
    assert reply.payment_declined.reason == (
        f"{PAYMENT_REJECTED}: {code.name}: payment_method: no such token 'tok_unknownBrand'"
    )
    assert pool.handled() == [reply], "the reply is stored, so a re-sent command gets it again"
    assert psp.calls == [("Authorize", f"{RIDE}:authorize")]


def test_a_transient_authorize_failure_is_still_left_for_the_saga_to_resend() -> None:
    psp, pool = FakePsp({"Authorize": _refusal(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")}), FakePool()
    assert _handle(psp, pool, authorize_payment=_authorize()) == []
    assert pool.handled() == []


@pytest.mark.parametrize(
    ("charge", "why"),
    [
        (_refusal(grpc.StatusCode.NOT_FOUND, f"charge {CHARGE!r} not found"), "the psp never had it"),
        (psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.VOIDED), "already voided"),
        (psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.DECLINED), "declined: it never held money"),
    ],
)
def test_a_refused_void_of_a_charge_that_holds_no_money_completes_the_compensation(
    charge: psp_pb2.Charge | grpc.aio.AioRpcError, why: str
) -> None:
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, f"charge {CHARGE} is voided; it must be authorized")
    psp, pool = FakePsp({"Void": refused, "GetCharge": charge}), FakePool()
    (reply,) = _handle(psp, pool, void_payment=saga_pb2.VoidPayment(hold_id=CHARGE))
    assert reply.WhichOneof("body") == "payment_voided" and reply.payment_voided.hold_id == CHARGE, why
    assert pool.handled() == [reply]
    assert psp.calls == [("Void", f"{RIDE}:void"), ("GetCharge", "")]


@pytest.mark.parametrize("status", [psp_pb2.AUTHORIZED, psp_pb2.CAPTURED])
def test_a_refused_void_while_money_is_held_or_taken_is_dead_lettered(status: psp_pb2.ChargeStatus.ValueType) -> None:
    refused = _refusal(grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key was already used for a different void")
    psp = FakePsp({"Void": refused, "GetCharge": psp_pb2.Charge(charge_id=CHARGE, status=status)})
    pool = FakePool()
    with pytest.raises(Poison, match=f"hold {CHARGE}.*{psp_pb2.ChargeStatus.Name(status)}"):
        _handle(psp, pool, void_payment=saga_pb2.VoidPayment(hold_id=CHARGE))
    assert pool.handled() == []


def _capture() -> saga_pb2.CapturePayment:
    return saga_pb2.CapturePayment(hold_id=CHARGE, amount_cents=1_000, driver_id=str(uuid.uuid4()))


def test_a_refused_capture_of_a_charge_the_psp_never_pays_is_written_off() -> None:
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, f"charge {CHARGE} is voided; it must be authorized")
    psp = FakePsp({"Capture": refused, "GetCharge": psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.VOIDED)})
    pool = FakePool()
    (reply,) = _handle(psp, pool, capture_payment=_capture())
    assert reply.WhichOneof("body") == "payment_captured"
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (CHARGE, 0)
    assert pool.ledger() == [("driver", 750), ("platform", -750)], "the platform pays the driver"
    assert pool.handled() == [reply]
    assert psp.calls == [("Capture", f"{RIDE}:capture"), ("GetCharge", "")]


def test_a_refused_capture_of_a_charge_already_captured_records_that_capture() -> None:
    # An earlier attempt captured, its answer was lost, and the key's record has since
    # been reaped: the psp refuses the replay, but its charge shows the money moved.
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, "idempotency_key: its stored response has been reaped")
    captured = psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.CAPTURED, authorized_cents=1_200, captured_cents=1_000)
    psp, pool = FakePsp({"Capture": refused, "GetCharge": captured}), FakePool()
    (reply,) = _handle(psp, pool, capture_payment=_capture())
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (CHARGE, 1_000)
    assert pool.ledger() == [("rider", -1_000), ("driver", 750), ("platform", 250)]
    assert pool.handled() == [reply]


def test_a_deferred_ride_the_psp_refuses_for_good_at_settlement_is_written_off() -> None:
    refused = _refusal(grpc.StatusCode.INVALID_ARGUMENT, "payment_method: no such token 'tok_unknownBrand'")
    psp, pool = FakePsp({"Authorize": refused}), FakePool(rows={"FROM holds": ("tok_unknownBrand",)})
    deferred = saga_pb2.CapturePayment(hold_id=f"deferred:{RIDE}", amount_cents=1_000, driver_id=str(uuid.uuid4()))
    (reply,) = _handle(psp, pool, capture_payment=deferred)
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (f"deferred:{RIDE}", 0)
    assert pool.ledger() == [("driver", 750), ("platform", -750)]
    assert psp.calls == [("Authorize", f"{RIDE}:authorize")]
