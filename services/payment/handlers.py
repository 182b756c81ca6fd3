"""Payment's three saga commands, one handler each: the command's envelope and the
adapters in, the reply and the effect on payment's tables out. The participant commits
the effect with its inbox record; the adapters are adapters.py's, or fakes in
tests/unit/test_payment_permanent.py.

A handler may run more than once for one command (the psp could not answer, a crash
before the commit): every psp call carries the step's idempotency key, so running it
again replays the processor's first answer instead of moving money twice. A refusal for
good ends in a reply (domain.py says which), except a void refused while the charge
still holds money: that is Poison, for a person to settle."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import AsyncConnection

from ridesaga.psp.v1 import psp_pb2
from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock
from services.blocks.downstream import Unavailable
from services.payment import domain
from services.payment.adapters import Deferred, Refused
from services.runtime.messages import Poison, envelope

log = logging.getLogger(__name__)


class Psp(Protocol):
    """adapters.PspClient: raises Deferred (not now), Refused (never) or downstream.Unavailable."""

    async def authorize(self, request: psp_pb2.AuthorizeRequest) -> psp_pb2.Charge: ...

    async def void(self, request: psp_pb2.VoidRequest) -> psp_pb2.Charge: ...

    async def capture(self, request: psp_pb2.CaptureRequest) -> psp_pb2.Charge: ...

    async def charge(self, charge_id: str) -> psp_pb2.Charge | None: ...


class Attempts(Protocol):
    async def mark(self, key: str) -> bool: ...

    async def unmark(self, key: str) -> None: ...


class Holds(Protocol):
    async def standing(self, rider_id: str) -> domain.Standing: ...

    async def payment_method(self, ride_id: str) -> str | None: ...

    async def apply(self, conn: AsyncConnection[Any], effect: domain.Effect) -> None: ...


@dataclass(frozen=True)
class Adapters:
    psp: Psp
    holds: Holds
    attempts: Attempts
    clock: HybridLogicalClock


@dataclass(frozen=True)
class Handled:
    """The reply to send and the effect to commit with it (None: the command changes no table)."""

    reply: saga_pb2.Envelope
    effect: domain.Effect | None


def _reply(adapters: Adapters, env: saga_pb2.Envelope, **body: object) -> saga_pb2.Envelope:
    return envelope(adapters.clock, f"{env.message_id}:reply", env.ride_id, env.message_id, **body)


def _authorize_request(ride_id: str, payment_method: str, amount_cents: int) -> psp_pb2.AuthorizeRequest:
    return psp_pb2.AuthorizeRequest(
        idempotency_key=domain.psp_key(ride_id, "authorize"),
        payment_method=payment_method,
        amount_cents=amount_cents,
        description=domain.charge_description(ride_id),
    )


async def authorize(env: saga_pb2.Envelope, adapters: Adapters) -> Handled:
    cmd = env.authorize_payment
    first_try = await adapters.attempts.mark(domain.psp_key(env.ride_id, "authorize"))
    try:
        charge = await adapters.psp.authorize(_authorize_request(env.ride_id, cmd.payment_method, cmd.amount_cents))
    except Unavailable as refused:
        return await _authorize_without_psp(env, adapters, refused, first_try)
    except Refused as refusal:
        # Not a card decline but a request the processor will never accept (an unknown
        # payment method, a key bound to other parameters...): the ride ends instead of
        # re-sending the same refused call every step timeout.
        log.warning("psp rejected the authorization", extra={"fields": {"reason": str(refusal)}})
        return _declined(adapters, env, domain.rejected_reason(str(refusal)))
    if charge.status == psp_pb2.AUTHORIZED:
        return _authorized(adapters, env, hold_id=charge.charge_id, charge_id=charge.charge_id, status="AUTHORIZED")
    return _declined(adapters, env, domain.decline_reason(charge))


async def _authorize_without_psp(
    env: saga_pb2.Envelope, adapters: Adapters, refused: Unavailable, first_try: bool
) -> Handled:
    """The breaker refused the call. If an attempt ever went out a hold may exist, and
    only the processor can say (the idempotent replay will tell): wait for it."""
    if domain.hold_may_exist(refused.sent, first_try):
        raise Deferred(str(refused)) from None
    # Nothing was ever sent, so no hold exists at the processor.
    cmd = env.authorize_payment
    await adapters.attempts.unmark(domain.psp_key(env.ride_id, "authorize"))
    if domain.may_defer(await adapters.holds.standing(cmd.rider_id), cmd.amount_cents):
        # Fallback 1: a rider in good standing rides now; the money is authorized and
        # captured at the psp when it is back (settle later): no charge yet.
        return _authorized(adapters, env, hold_id=domain.deferred_hold_id(env.ride_id), charge_id="", status="DEFERRED")
    # Fallback 2: refused at once with a retry hint instead of waiting.
    return _declined(adapters, env, domain.unavailable_reason(refused.retry_after_seconds))


def _authorized(
    adapters: Adapters, env: saga_pb2.Envelope, *, hold_id: str, charge_id: str, status: domain.Granted
) -> Handled:
    cmd = env.authorize_payment
    authorized = saga_pb2.PaymentAuthorized(hold_id=hold_id, amount_cents=cmd.amount_cents)
    hold = domain.RecordHold(env.ride_id, cmd.rider_id, cmd.payment_method, charge_id, cmd.amount_cents, status)
    return Handled(_reply(adapters, env, payment_authorized=authorized), hold)


def _declined(adapters: Adapters, env: saga_pb2.Envelope, reason: str) -> Handled:
    return Handled(_reply(adapters, env, payment_declined=saga_pb2.PaymentDeclined(reason=reason)), None)


async def void(env: saga_pb2.Envelope, adapters: Adapters) -> Handled:
    hold = env.void_payment.hold_id
    if not domain.is_deferred(hold):
        await _void_at_psp(adapters.psp, env.ride_id, hold)
    return Handled(
        _reply(adapters, env, payment_voided=saga_pb2.PaymentVoided(hold_id=hold)), domain.VoidHold(env.ride_id)
    )


async def _void_at_psp(psp: Psp, ride_id: str, hold: str) -> None:
    try:
        await psp.void(psp_pb2.VoidRequest(idempotency_key=domain.psp_key(ride_id, "void"), charge_id=hold))
    except Refused as refusal:
        status = domain.still_holding(await _processor_record(psp, hold))
        if status is not None:
            log.error(
                "psp refused to void a hold that still holds money; settle it by hand",
                extra={"fields": {"hold_id": hold, "status": status, "reason": str(refusal)}},
            )
            raise Poison(f"psp refused to void hold {hold} ({refusal}) and the charge is {status}") from None
        log.warning(
            "psp refused the void of a charge that holds no money; compensated",
            extra={"fields": {"hold_id": hold, "reason": str(refusal)}},
        )


async def capture(env: saga_pb2.Envelope, adapters: Adapters) -> Handled:
    cap = env.capture_payment
    charge_id = cap.hold_id
    if domain.is_deferred(charge_id):
        charge_id = await _settle_deferred(adapters, env.ride_id, cap.amount_cents) or charge_id
    paid = 0
    if not domain.is_deferred(charge_id):
        paid = await _capture_at_psp(adapters.psp, env.ride_id, charge_id, cap.amount_cents)
    captured = saga_pb2.PaymentCaptured(hold_id=charge_id, amount_cents=paid)
    effect = domain.settlement(env.ride_id, charge_id, paid, cap.amount_cents, env.message_id)
    return Handled(_reply(adapters, env, payment_captured=captured), effect)


async def _settle_deferred(adapters: Adapters, ride_id: str, amount_cents: int) -> str | None:
    """Authorizes a deferred ride at the psp now; its charge id, or None if declined or
    refused for good."""
    payment_method = await adapters.holds.payment_method(ride_id)
    if payment_method is None:
        raise Poison(f"no deferred hold for ride {ride_id}")
    try:
        charge = await adapters.psp.authorize(_authorize_request(ride_id, payment_method, amount_cents))
    except Refused as refusal:
        log.warning("psp rejected a deferred ride's authorization", extra={"fields": {"reason": str(refusal)}})
        return None
    return charge.charge_id if charge.status == psp_pb2.AUTHORIZED else None


async def _capture_at_psp(psp: Psp, ride_id: str, charge_id: str, amount_cents: int) -> int:
    """The cents the processor took; 0 if it refused for good and its record shows it
    never will (then the fare is written off)."""
    request = psp_pb2.CaptureRequest(
        idempotency_key=domain.psp_key(ride_id, "capture"), charge_id=charge_id, amount_cents=amount_cents
    )
    try:
        charge = await psp.capture(request)
    except Refused as refusal:
        found = await _processor_record(psp, charge_id)
        taken = domain.taken_by_refused_capture(found)
        if taken is not None:
            return taken
        status = psp_pb2.ChargeStatus.Name(found.status) if found is not None else "unknown to the psp"
        log.error(
            "psp refused the capture for good; writing the fare off",
            extra={"fields": {"hold_id": charge_id, "status": status, "reason": str(refusal)}},
        )
        return 0
    return charge.captured_cents


async def _processor_record(psp: Psp, charge_id: str) -> psp_pb2.Charge | None:
    """The processor's record of a charge after a refusal; a refusal to read it is Poison."""
    try:
        return await psp.charge(charge_id)
    except Refused as refusal:
        raise Poison(f"psp refused to read charge {charge_id}: {refusal}") from None
