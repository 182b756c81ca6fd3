"""Payment's handlers and participant over in-memory adapters (services/payment/handlers.py,
participant.py): a psp that refuses for good (not UNAVAILABLE, DEADLINE_EXCEEDED or
ABORTED) ends every command in a stored reply, never a dead letter that the saga's step
timeout would re-send forever, except a void refused while money is still held; a psp
that cannot answer now leaves the command for the saga to re-send; an open breaker
defers a ride of a rider in good standing. The psp is a fake stub behind the real
PspClient and Downstream, so what the handlers see of its answers is what they see in
the running service; holds, ledger, attempts and the inbox are in memory."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest
from psycopg import sql

from ridesaga.psp.v1 import psp_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.breaker import BreakerConfig, CircuitBreaker
from services.blocks.clocks import HybridLogicalClock
from services.blocks.downstream import Downstream
from services.blocks.retry import Backoff, RetryBudget
from services.payment import domain, handlers
from services.payment.adapters import Deferred, PspClient, Refused
from services.payment.handlers import Adapters, Handled
from services.payment.participant import PaymentParticipant
from services.runtime.messages import PAYMENT_REJECTED, Poison, envelope
from services.runtime.topology import Topic

RIDE = str(uuid.uuid4())
RIDER = str(uuid.uuid4())
CHARGE = str(uuid.uuid4())
Answer = psp_pb2.Charge | grpc.aio.AioRpcError


def _refusal(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@dataclass
class FakePspStub:
    """The psp's gRPC methods: each answers with its configured charge, or raises its
    configured error; every call is listed as (method, idempotency key)."""

    answers: dict[str, Answer] = field(default_factory=dict)
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
class Hold:
    rider_id: str
    payment_method: str
    charge_id: str
    authorized_cents: int
    status: domain.HoldStatus
    captured_cents: int = 0


@dataclass
class FakeHolds:
    """adapters.Holds in memory: the holds table and the ledger, `apply` as its SQL does
    (a hold closes only while open, and only then posts)."""

    holds: dict[str, Hold] = field(default_factory=dict)
    ledger: list[tuple[str, str, int, str]] = field(default_factory=list)  # ride, account, cents, message id

    async def standing(self, rider_id: str) -> domain.Standing:
        paid = sum(1 for h in self.holds.values() if h.rider_id == rider_id and h.status == "CAPTURED")
        deferred = sum(h.authorized_cents for h in self.holds.values() if h.status == "DEFERRED")
        return domain.Standing(paid, deferred)

    async def payment_method(self, ride_id: str) -> str | None:
        hold = self.holds.get(ride_id)
        return hold.payment_method if hold else None

    async def apply(self, conn: object, effect: domain.Effect) -> None:
        if isinstance(effect, domain.RecordHold):
            granted = Hold(
                effect.rider_id, effect.payment_method, effect.charge_id, effect.authorized_cents, effect.status
            )
            self.holds.setdefault(effect.ride_id, granted)
            return
        hold = self.holds.get(effect.ride_id)
        if hold is None or hold.status not in domain.OPEN:
            return
        match effect:
            case domain.VoidHold():
                hold.status = "VOIDED"
            case domain.CaptureHold():
                hold.status, hold.charge_id, hold.captured_cents = "CAPTURED", effect.charge_id, effect.captured_cents
                self._post(effect.ride_id, effect.postings(), effect.message_id)
            case domain.WriteOffHold():
                hold.status = "WRITTEN_OFF"
                self._post(effect.ride_id, effect.postings(), effect.message_id)

    def _post(self, ride_id: str, postings: list[tuple[str, int]], message_id: str) -> None:
        self.ledger.extend((ride_id, account, cents, message_id) for account, cents in postings)

    def entries(self) -> list[tuple[str, int]]:
        return [(account, cents) for _, account, cents, _ in self.ledger]


@dataclass
class FakeAttempts:
    keys: set[str] = field(default_factory=set)

    async def mark(self, key: str) -> bool:
        first = key not in self.keys
        self.keys.add(key)
        return first

    async def unmark(self, key: str) -> None:
        self.keys.discard(key)


@dataclass
class FakeCursor:
    row: tuple[Any, ...] | None

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.row


@dataclass
class FakeInbox:
    """payment's handled_commands as a pool: it answers the inbox's two statements
    (services/blocks/inbox.py), the record's lookup and its insert."""

    rows: dict[str, tuple[list[str], list[bytes]]] = field(default_factory=dict)

    async def execute(self, query: sql.Composable, params: tuple[Any, ...]) -> FakeCursor:
        statement = query.as_string()
        if statement.startswith('SELECT topics, envelopes FROM "handled_commands"'):
            return FakeCursor(self.rows.get(params[0]))
        assert statement.startswith('INSERT INTO "handled_commands" (message_id, topics, envelopes)'), statement
        self.rows[params[0]] = (params[1], params[2])
        return FakeCursor(None)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[FakeInbox]:
        yield self

    def replies(self) -> list[saga_pb2.Envelope]:
        return [saga_pb2.Envelope.FromString(raw) for _, envelopes in self.rows.values() for raw in envelopes]


def _downstream(**overrides: Any) -> Downstream:
    """Retries at once (no jitter to wait out); one failed call opens the breaker."""
    settings: dict[str, Any] = {
        "breaker": BreakerConfig(window=1, minimum_calls=1, open_seconds=60.0),
        "backoff": Backoff(0.0, 0.0),
    }
    return Downstream("payment->psp", **(settings | overrides))


def _opened(downstream: Downstream) -> Downstream:
    """The breaker opened by the processor's earlier failures: calls are refused uncalled."""
    downstream.breaker = CircuitBreaker(downstream.name, BreakerConfig(window=1, minimum_calls=1, open_seconds=60.0))
    downstream.breaker.record(True, 0.0, time.monotonic())
    return downstream


@dataclass
class World:
    stub: FakePspStub = field(default_factory=FakePspStub)
    holds: FakeHolds = field(default_factory=FakeHolds)
    attempts: FakeAttempts = field(default_factory=FakeAttempts)
    inbox: FakeInbox = field(default_factory=FakeInbox)
    downstream: Downstream = field(default_factory=_downstream)
    clock: HybridLogicalClock = field(default_factory=HybridLogicalClock)

    def adapters(self) -> Adapters:
        return Adapters(PspClient(cast(Any, self.stub), self.downstream), self.holds, self.attempts, self.clock)

    def command(self, **body: object) -> saga_pb2.Envelope:
        kind = next(iter(body)).removesuffix("_payment")
        return envelope(self.clock, f"{RIDE}:{kind}_payment", RIDE, "", **body)

    def handle(self, **body: object) -> Handled:
        """Runs the command's handler and commits its effect, as the participant does."""
        handler = {"authorize": handlers.authorize, "void": handlers.void, "capture": handlers.capture}
        command = self.command(**body)

        async def run() -> Handled:
            handled = await handler[next(iter(body)).removesuffix("_payment")](command, self.adapters())
            if handled.effect is not None:
                await self.holds.apply(None, handled.effect)
            return handled

        return asyncio.run(run())

    def participate(self, *commands: saga_pb2.Envelope) -> list[list[saga_pb2.Envelope]]:
        """Each command through the participant, in one event loop; what each sent."""
        participant = PaymentParticipant(cast(Any, self.inbox), self.adapters())

        async def run() -> list[list[saga_pb2.Envelope]]:
            sent = []
            for command in commands:
                records = await participant.handle(command)
                assert all(record.topic == Topic.TRIP_REPLIES for record in records)
                sent.append([saga_pb2.Envelope.FromString(record.value or b"") for record in records])
            return sent

        return asyncio.run(run())


def _authorize(payment_method: str = "tok_unknownBrand", amount_cents: int = 1_200) -> saga_pb2.AuthorizePayment:
    return saga_pb2.AuthorizePayment(rider_id=RIDER, amount_cents=amount_cents, payment_method=payment_method)


def _capture(hold_id: str = CHARGE) -> saga_pb2.CapturePayment:
    return saga_pb2.CapturePayment(hold_id=hold_id, amount_cents=1_000, driver_id=str(uuid.uuid4()))


def _held(world: World, status: domain.HoldStatus, charge_id: str = CHARGE, ride_id: str = RIDE) -> None:
    world.holds.holds[ride_id] = Hold(RIDER, "tok_visa", charge_id, 1_200, status)


# The psp client: every failure is "not now" or "never".


@pytest.mark.parametrize(
    ("code", "answer"),
    [
        (grpc.StatusCode.UNAVAILABLE, Deferred),
        (grpc.StatusCode.DEADLINE_EXCEEDED, Deferred),
        (grpc.StatusCode.ABORTED, Deferred),
        (grpc.StatusCode.INVALID_ARGUMENT, Refused),
        (grpc.StatusCode.FAILED_PRECONDITION, Refused),
        (grpc.StatusCode.NOT_FOUND, Refused),
        # Taken as the processor's final answer (services/blocks/retry.py, NOT_NOW_CODES).
        (grpc.StatusCode.INTERNAL, Refused),
        (grpc.StatusCode.UNKNOWN, Refused),
    ],
)
def test_the_psp_client_sorts_each_failure_into_not_now_or_never(code: grpc.StatusCode, answer: type) -> None:
    stub = FakePspStub({"Capture": _refusal(code, "no")})
    client = PspClient(cast(Any, stub), _downstream(budget=RetryBudget(ratio=0.0, min_per_second=0.0)))
    request = psp_pb2.CaptureRequest(idempotency_key=f"{RIDE}:capture", charge_id=CHARGE, amount_cents=1)
    with pytest.raises(answer) as raised:
        asyncio.run(client.capture(request))
    if answer is Refused:
        assert str(raised.value) == f"{code.name}: no" and cast(Refused, raised.value).code == code


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT])
def test_a_charge_the_psp_does_not_have_is_none(code: grpc.StatusCode) -> None:
    client = PspClient(cast(Any, FakePspStub({"GetCharge": _refusal(code, "no such charge")})), _downstream())
    assert asyncio.run(client.charge(CHARGE)) is None


# Authorize.


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND]
)
def test_a_permanent_authorize_refusal_is_a_stored_payment_rejected_decline(code: grpc.StatusCode) -> None:
    world = World(FakePspStub({"Authorize": _refusal(code, "payment_method: no such token 'tok_unknownBrand'")}))
    (reply,) = world.participate(world.command(authorize_payment=_authorize()))[0]
    assert reply.WhichOneof("body") == "payment_declined"
    assert reply.payment_declined.reason == (
        f"{PAYMENT_REJECTED}: {code.name}: payment_method: no such token 'tok_unknownBrand'"
    )
    assert world.inbox.replies() == [reply], "the reply is stored, so a re-sent command gets it again"
    assert world.stub.calls == [("Authorize", f"{RIDE}:authorize")]
    assert world.holds.holds == {}


def test_a_transient_authorize_failure_is_still_left_for_the_saga_to_resend() -> None:
    world = World(FakePspStub({"Authorize": _refusal(grpc.StatusCode.DEADLINE_EXCEEDED, "slow")}))
    assert world.participate(world.command(authorize_payment=_authorize())) == [[]]
    assert world.inbox.rows == {} and world.holds.holds == {}
    assert world.attempts.keys == {f"{RIDE}:authorize"}, "an attempt went out: a hold may exist"


def test_an_authorized_charge_is_recorded_as_the_rides_hold() -> None:
    world = World(FakePspStub({"Authorize": psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.AUTHORIZED)}))
    handled = world.handle(authorize_payment=_authorize("tok_visa"))
    assert handled.reply.payment_authorized == saga_pb2.PaymentAuthorized(hold_id=CHARGE, amount_cents=1_200)
    assert world.holds.holds == {RIDE: Hold(RIDER, "tok_visa", CHARGE, 1_200, "AUTHORIZED")}


def test_a_declined_card_is_declined_and_holds_nothing() -> None:
    declined = psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.DECLINED, decline_reason="insufficient_funds")
    world = World(FakePspStub({"Authorize": declined}))
    handled = world.handle(authorize_payment=_authorize("tok_visa"))
    assert handled.reply.payment_declined.reason == "insufficient_funds"
    assert handled.effect is None


def test_an_open_breaker_defers_the_ride_of_a_rider_in_good_standing() -> None:
    world = World(downstream=_opened(_downstream()))
    _held(world, "CAPTURED", ride_id=str(uuid.uuid4()))  # a ride already paid
    handled = world.handle(authorize_payment=_authorize("tok_visa"))
    assert handled.reply.payment_authorized.hold_id == f"deferred:{RIDE}"
    assert world.holds.holds[RIDE] == Hold(RIDER, "tok_visa", "", 1_200, "DEFERRED")
    assert world.stub.calls == [] and world.attempts.keys == set(), "nothing went out, and nothing is marked"


def test_an_open_breaker_declines_a_new_rider_at_once_with_a_retry_hint() -> None:
    world = World(downstream=_opened(_downstream()))
    handled = world.handle(authorize_payment=_authorize("tok_visa"))
    assert handled.reply.payment_declined.reason.startswith("processor_unavailable: retry after ")
    assert handled.effect is None and world.attempts.keys == set()


def test_an_open_breaker_waits_for_the_processor_if_an_earlier_delivery_went_out() -> None:
    world = World(downstream=_opened(_downstream()), attempts=FakeAttempts({f"{RIDE}:authorize"}))
    _held(world, "CAPTURED", ride_id=str(uuid.uuid4()))
    assert world.participate(world.command(authorize_payment=_authorize("tok_visa"))) == [[]]
    assert world.inbox.rows == {} and RIDE not in world.holds.holds


def test_a_breaker_opened_by_this_calls_own_attempt_waits_for_the_processor() -> None:
    world = World(FakePspStub({"Authorize": _refusal(grpc.StatusCode.UNAVAILABLE, "connection reset")}))
    _held(world, "CAPTURED", ride_id=str(uuid.uuid4()))
    assert world.participate(world.command(authorize_payment=_authorize("tok_visa"))) == [[]]
    assert world.stub.calls == [("Authorize", f"{RIDE}:authorize")], "the retry was refused by the open breaker"
    assert world.inbox.rows == {} and RIDE not in world.holds.holds


# Void.


@pytest.mark.parametrize(
    ("charge", "why"),
    [
        (_refusal(grpc.StatusCode.NOT_FOUND, f"charge {CHARGE!r} not found"), "the psp never had it"),
        (psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.VOIDED), "already voided"),
        (psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.DECLINED), "declined: it never held money"),
    ],
)
def test_a_refused_void_of_a_charge_that_holds_no_money_completes_the_compensation(charge: Answer, why: str) -> None:
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, f"charge {CHARGE} is voided; it must be authorized")
    world = World(FakePspStub({"Void": refused, "GetCharge": charge}))
    _held(world, "AUTHORIZED")
    (reply,) = world.participate(world.command(void_payment=saga_pb2.VoidPayment(hold_id=CHARGE)))[0]
    assert reply.WhichOneof("body") == "payment_voided" and reply.payment_voided.hold_id == CHARGE, why
    assert world.inbox.replies() == [reply]
    assert world.holds.holds[RIDE].status == "VOIDED"
    assert world.stub.calls == [("Void", f"{RIDE}:void"), ("GetCharge", "")]


@pytest.mark.parametrize("status", [psp_pb2.AUTHORIZED, psp_pb2.CAPTURED])
def test_a_refused_void_while_money_is_held_or_taken_is_dead_lettered(status: psp_pb2.ChargeStatus.ValueType) -> None:
    refused = _refusal(grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key was already used for a different void")
    world = World(FakePspStub({"Void": refused, "GetCharge": psp_pb2.Charge(charge_id=CHARGE, status=status)}))
    _held(world, "AUTHORIZED")
    with pytest.raises(Poison, match=f"hold {CHARGE}.*{psp_pb2.ChargeStatus.Name(status)}"):
        world.participate(world.command(void_payment=saga_pb2.VoidPayment(hold_id=CHARGE)))
    assert world.inbox.rows == {} and world.holds.holds[RIDE].status == "AUTHORIZED"


def test_a_refusal_to_even_read_the_charge_is_dead_lettered() -> None:
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, "no")
    world = World(FakePspStub({"Void": refused, "GetCharge": _refusal(grpc.StatusCode.PERMISSION_DENIED, "no")}))
    with pytest.raises(Poison, match=f"psp refused to read charge {CHARGE}: PERMISSION_DENIED"):
        world.handle(void_payment=saga_pb2.VoidPayment(hold_id=CHARGE))


def test_a_void_while_the_breaker_is_open_is_left_for_the_saga_to_resend() -> None:
    world = World(downstream=_opened(_downstream()))
    _held(world, "AUTHORIZED")
    assert world.participate(world.command(void_payment=saga_pb2.VoidPayment(hold_id=CHARGE))) == [[]]
    assert world.inbox.rows == {} and world.holds.holds[RIDE].status == "AUTHORIZED"


def test_a_deferred_hold_is_voided_without_the_processor() -> None:
    world = World()
    _held(world, "DEFERRED", charge_id="")
    handled = world.handle(void_payment=saga_pb2.VoidPayment(hold_id=f"deferred:{RIDE}"))
    assert handled.reply.payment_voided.hold_id == f"deferred:{RIDE}"
    assert world.holds.holds[RIDE].status == "VOIDED" and world.stub.calls == []


# Capture.


def test_a_capture_posts_the_fare_the_processor_took() -> None:
    taken = psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.CAPTURED, authorized_cents=1_200, captured_cents=1_000)
    world = World(FakePspStub({"Capture": taken}))
    _held(world, "AUTHORIZED")
    handled = world.handle(capture_payment=_capture())
    assert (handled.reply.payment_captured.hold_id, handled.reply.payment_captured.amount_cents) == (CHARGE, 1_000)
    assert world.holds.entries() == [("rider", -1_000), ("driver", 750), ("platform", 250)]
    assert {message_id for *_, message_id in world.holds.ledger} == {f"{RIDE}:capture_payment"}
    assert world.stub.calls == [("Capture", f"{RIDE}:capture")]


def test_a_refused_capture_of_a_charge_the_psp_never_pays_is_written_off() -> None:
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, f"charge {CHARGE} is voided; it must be authorized")
    world = World(
        FakePspStub({"Capture": refused, "GetCharge": psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.VOIDED)})
    )
    _held(world, "AUTHORIZED")
    (reply,) = world.participate(world.command(capture_payment=_capture()))[0]
    assert reply.WhichOneof("body") == "payment_captured"
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (CHARGE, 0)
    assert world.holds.entries() == [("driver", 750), ("platform", -750)], "the platform pays the driver"
    assert world.holds.holds[RIDE].status == "WRITTEN_OFF"
    assert world.inbox.replies() == [reply]
    assert world.stub.calls == [("Capture", f"{RIDE}:capture"), ("GetCharge", "")]


def test_a_refused_capture_of_a_charge_already_captured_records_that_capture() -> None:
    # An earlier attempt captured, its answer was lost, and the key's record has since
    # been reaped: the psp refuses the replay, but its charge shows the money moved.
    refused = _refusal(grpc.StatusCode.FAILED_PRECONDITION, "idempotency_key: its stored response has been reaped")
    captured = psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.CAPTURED, authorized_cents=1_200, captured_cents=1_000)
    world = World(FakePspStub({"Capture": refused, "GetCharge": captured}))
    _held(world, "AUTHORIZED")
    (reply,) = world.participate(world.command(capture_payment=_capture()))[0]
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (CHARGE, 1_000)
    assert world.holds.entries() == [("rider", -1_000), ("driver", 750), ("platform", 250)]
    assert world.holds.holds[RIDE] == Hold(RIDER, "tok_visa", CHARGE, 1_200, "CAPTURED", 1_000)
    assert world.inbox.replies() == [reply]


def test_a_deferred_ride_is_authorized_and_captured_when_the_processor_is_back() -> None:
    new_charge = str(uuid.uuid4())
    world = World(
        FakePspStub(
            {
                "Authorize": psp_pb2.Charge(charge_id=new_charge, status=psp_pb2.AUTHORIZED),
                "Capture": psp_pb2.Charge(charge_id=new_charge, status=psp_pb2.CAPTURED, captured_cents=1_000),
            }
        )
    )
    _held(world, "DEFERRED", charge_id="")
    handled = world.handle(capture_payment=_capture(f"deferred:{RIDE}"))
    assert (handled.reply.payment_captured.hold_id, handled.reply.payment_captured.amount_cents) == (new_charge, 1_000)
    assert world.holds.holds[RIDE].charge_id == new_charge
    assert world.stub.calls == [("Authorize", f"{RIDE}:authorize"), ("Capture", f"{RIDE}:capture")]


def test_a_deferred_ride_the_psp_refuses_for_good_at_settlement_is_written_off() -> None:
    refused = _refusal(grpc.StatusCode.INVALID_ARGUMENT, "payment_method: no such token 'tok_unknownBrand'")
    world = World(FakePspStub({"Authorize": refused}))
    world.holds.holds[RIDE] = Hold(RIDER, "tok_unknownBrand", "", 1_200, "DEFERRED")
    (reply,) = world.participate(world.command(capture_payment=_capture(f"deferred:{RIDE}")))[0]
    assert (reply.payment_captured.hold_id, reply.payment_captured.amount_cents) == (f"deferred:{RIDE}", 0)
    assert world.holds.entries() == [("driver", 750), ("platform", -750)]
    assert world.stub.calls == [("Authorize", f"{RIDE}:authorize")]


def test_a_deferred_capture_with_no_hold_is_dead_lettered() -> None:
    with pytest.raises(Poison, match=f"no deferred hold for ride {RIDE}"):
        World().handle(capture_payment=_capture(f"deferred:{RIDE}"))


# The participant: the inbox around the handlers.


def test_a_redelivered_command_gets_the_stored_reply_and_calls_nothing() -> None:
    world = World(FakePspStub({"Authorize": psp_pb2.Charge(charge_id=CHARGE, status=psp_pb2.AUTHORIZED)}))
    command = world.command(authorize_payment=_authorize("tok_visa"))
    first, again = world.participate(command, command)
    assert again == first and len(first) == 1
    assert world.stub.calls == [("Authorize", f"{RIDE}:authorize")]
    assert list(world.inbox.rows) == [command.message_id]


def test_a_message_payment_does_not_handle_is_poison() -> None:
    world = World()
    stray = envelope(world.clock, f"{RIDE}:release", RIDE, "", release_driver=saga_pb2.ReleaseDriver())
    with pytest.raises(Poison, match="payment does not handle messages of type 'release_driver'"):
        world.participate(stray)


def test_a_command_with_an_unreadable_clock_stamp_is_poison() -> None:
    world = World()
    command = world.command(void_payment=saga_pb2.VoidPayment(hold_id=CHARGE))
    command.hlc = "yesterday"
    with pytest.raises(Poison, match="not an HLC timestamp: 'yesterday'"):
        world.participate(command)
    assert world.stub.calls == []
