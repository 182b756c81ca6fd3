"""A card processor's charges and their rules; no I/O.

A charge moves AUTHORIZED -> CAPTURED or AUTHORIZED -> VOIDED (DECLINED is final from
the start); every accepted operation yields exactly one money movement, so the processor's
own ledger counts real money independently of its callers. Idempotency keys are scoped to
one operation and bound to a fingerprint of its parameters (Stripe semantics)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, replace

from services.blocks.idempotency import fingerprint, validate_key
from services.runtime.errors import Aborted, FailedPrecondition, InvalidArgument

MAX_PAYMENT_METHOD_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500
MAX_LATENCY_MS = 60_000
# A key still claimed after this long belongs to a request that crashed mid-way: a retry
# may take it over and complete the work.
TAKEOVER_AFTER_SECONDS = 30.0

TOKEN_PREFIX = "tok_"
DECLINED_TOKEN = "tok_chargeDeclined"
# The cards this processor knows, as Stripe's test tokens; any other token is refused
# (INVALID_ARGUMENT, every time): a permanent error the payment service must not retry.
KNOWN_TOKENS = frozenset({"tok_visa", "tok_visa_debit", "tok_mastercard", "tok_amex", DECLINED_TOKEN})
CARD_DECLINED = "card_declined"
FAULT_DECLINED = "declined_by_fault_injection"


class ChargeStatus(enum.StrEnum):
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    DECLINED = "declined"


class Operation(enum.StrEnum):
    """The money calls; each scopes its own idempotency keys and names the movement it makes."""

    AUTHORIZE = "authorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"


@dataclass(frozen=True)
class Charge:
    charge_id: uuid.UUID
    status: ChargeStatus
    payment_method: str
    description: str
    authorized_cents: int
    captured_cents: int = 0
    refunded_cents: int = 0
    decline_reason: str = ""


@dataclass(frozen=True)
class Movement:
    movement_id: uuid.UUID
    charge_id: uuid.UUID
    kind: Operation
    amount_cents: int
    idempotency_key: str
    description: str


@dataclass(frozen=True)
class Outcome:
    """A charge after an operation, and the money that operation moved (none for a decline)."""

    charge: Charge
    movement: Movement | None


@dataclass(frozen=True)
class IdempotencyKey:
    operation: Operation
    value: str
    fingerprint: str


@dataclass(frozen=True)
class Authorization:
    payment_method: str
    amount_cents: int
    description: str


@dataclass(frozen=True)
class Faults:
    decline_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: int = 0
    outage: bool = False


class Reuse(enum.Enum):
    REPLAY = "replay"
    TAKE_OVER = "take over"


def idempotency_key(operation: Operation, value: str, **params: str | int) -> IdempotencyKey:
    """Validates a key and binds it to the request's parameters."""
    validate_key(value)
    return IdempotencyKey(operation, value, fingerprint({"operation": operation.value, **params}))


def reuse(key: IdempotencyKey, stored_fingerprint: str, completed: bool, claimed_seconds_ago: float) -> Reuse:
    """What a request does with a key already on record: replay its stored response, or
    take over a claim abandoned by a crash. Refuses other parameters and calls in flight.

    The psp shares `fingerprint` and `validate_key` with the rider (services/blocks/
    idempotency.py), and this asks the questions of the rider's `on_existing_key` in the
    same order (parameters, stored response, live holder), but keeps its own decision
    because it answers them differently:
    - a claim here is judged by its age on PostgreSQL's clock (`now() - claimed_at`, which
      the takeover's UPDATE compares again in the same transaction, so the decision and
      the compare-and-set agree) and is abandoned only once strictly older than
      TAKEOVER_AFTER_SECONDS. on_existing_key judges a lease, `locked_until_ms`, set and
      compared on the calling process's clock and free from the moment it ends (and the
      rider clears it early, `unlock`, where the psp deletes a refused call's key);
    - a psp call commits its charge, movement and response in one transaction, so a
      takeover redoes it from the start: there is no recovery point for `Resume` to carry;
    - its refusals name the operation the key is scoped to ("a different capture
      request"), and on_existing_key's messages do not."""
    if stored_fingerprint != key.fingerprint:
        raise InvalidArgument(
            "idempotency_key", f"{key.value!r} was already used for a different {key.operation} request"
        )
    if completed:
        return Reuse.REPLAY
    if claimed_seconds_ago > TAKEOVER_AFTER_SECONDS:
        return Reuse.TAKE_OVER
    raise in_progress(key)


def reaped(key: IdempotencyKey) -> FailedPrecondition:
    """A key whose record was reaped is new again, but not one that moved money: the
    processor's own ledger keeps every movement's key for good, so one key never moves
    money twice, however late it is replayed."""
    return FailedPrecondition(
        f"idempotency_key {key.value!r}: a {key.operation} under this key already moved money and its"
        " stored response has been reaped (keys are kept 24 h); use a new key"
    )


def in_progress(key: IdempotencyKey) -> Aborted:
    return Aborted(
        f"idempotency_key {key.value!r}: another {key.operation} request with this key is in progress; retry later"
    )


def positive_amount(field: str, value: int) -> int:
    if value <= 0:
        raise InvalidArgument(field, f"must be positive, got {value}")
    return value


def authorization(payment_method: str, amount_cents: int, description: str) -> Authorization:
    if not payment_method:
        raise InvalidArgument("payment_method", "is required")
    if not payment_method.startswith(TOKEN_PREFIX) or len(payment_method) > MAX_PAYMENT_METHOD_LENGTH:
        raise InvalidArgument("payment_method", f"must be a card token such as 'tok_visa', got {payment_method[:64]!r}")
    if payment_method not in KNOWN_TOKENS:
        raise InvalidArgument("payment_method", f"no such token {payment_method!r}")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument("description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    return Authorization(payment_method, positive_amount("amount_cents", amount_cents), description)


def authorize(request: Authorization, key: IdempotencyKey, declined_by_fault: bool) -> Outcome:
    charge_id = uuid.uuid4()
    reason = CARD_DECLINED if request.payment_method == DECLINED_TOKEN else FAULT_DECLINED if declined_by_fault else ""
    if reason:
        # A declined card holds nothing, so it moves no money.
        declined = Charge(
            charge_id, ChargeStatus.DECLINED, request.payment_method, request.description, 0, decline_reason=reason
        )
        return Outcome(declined, None)
    held = Charge(charge_id, ChargeStatus.AUTHORIZED, request.payment_method, request.description, request.amount_cents)
    return Outcome(held, _movement(held, key, request.amount_cents))


def capture(charge: Charge, amount_cents: int, key: IdempotencyKey) -> Outcome:
    """Captures at most the held amount; the rest of the hold is released with it."""
    _require(charge, ChargeStatus.AUTHORIZED, "captured")
    if amount_cents > charge.authorized_cents:
        raise FailedPrecondition(
            f"capture of {amount_cents} cents exceeds the {charge.authorized_cents} cents "
            f"authorized on charge {charge.charge_id}"
        )
    captured = replace(charge, status=ChargeStatus.CAPTURED, captured_cents=amount_cents)
    return Outcome(captured, _movement(captured, key, amount_cents))


def void(charge: Charge, key: IdempotencyKey) -> Outcome:
    _require(charge, ChargeStatus.AUTHORIZED, "voided")
    voided = replace(charge, status=ChargeStatus.VOIDED)
    return Outcome(voided, _movement(voided, key, charge.authorized_cents))


def refund(charge: Charge, amount_cents: int, key: IdempotencyKey) -> Outcome:
    _require(charge, ChargeStatus.CAPTURED, "refunded")
    refundable = charge.captured_cents - charge.refunded_cents
    if amount_cents > refundable:
        raise FailedPrecondition(
            f"refund of {amount_cents} cents exceeds the {refundable} cents left on charge {charge.charge_id} "
            f"(captured {charge.captured_cents}, refunded {charge.refunded_cents})"
        )
    refunded = replace(charge, refunded_cents=charge.refunded_cents + amount_cents)
    return Outcome(refunded, _movement(refunded, key, amount_cents))


def _require(charge: Charge, status: ChargeStatus, done: str) -> None:
    if charge.status != status:
        raise FailedPrecondition(f"charge {charge.charge_id} is {charge.status}; it must be {status} to be {done}")


def _movement(charge: Charge, key: IdempotencyKey, amount_cents: int) -> Movement:
    return Movement(uuid.uuid4(), charge.charge_id, key.operation, amount_cents, key.value, charge.description)


def faults(decline_rate: float, error_rate: float, latency_ms: int, outage: bool) -> Faults:
    for field, rate in (("decline_rate", decline_rate), ("error_rate", error_rate)):
        if not 0.0 <= rate <= 1.0:
            raise InvalidArgument(field, f"must be in [0, 1], got {rate}")
    if not 0 <= latency_ms <= MAX_LATENCY_MS:
        raise InvalidArgument("latency_ms", f"must be in 0..{MAX_LATENCY_MS}, got {latency_ms}")
    return Faults(decline_rate, error_rate, latency_ms, outage)


def injected_failure(current: Faults, roll: float) -> str | None:
    """Why a call fails before doing anything, given a uniform random roll in [0, 1); None if it does not."""
    if current.outage:
        return "psp outage (injected fault)"
    if roll < current.error_rate:
        return f"psp error (injected fault, error_rate {current.error_rate})"
    return None


def declined_by_fault(current: Faults, roll: float) -> bool:
    return roll < current.decline_rate
