"""Payment's rules, with no I/O: the psp idempotency key of each step of a ride, when a
ride may go ahead on a deferred hold, what a refusal from the processor means for each
command, and the effect each command has on payment's holds and ledger.

Properties: every psp call of one step of one ride carries the same key, so a retry, a
redelivered command or a restart replays the first call instead of moving money twice;
a hold changes only while it is open (authorized or deferred): once voided, captured or
written off, no later command changes it or posts to the ledger for it again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ridesaga.psp.v1 import psp_pb2
from services.payment.ledger import capture_postings, write_off_postings
from services.runtime.messages import PAYMENT_REJECTED

Step = Literal["authorize", "void", "capture"]
HoldStatus = Literal["AUTHORIZED", "DEFERRED", "CAPTURED", "VOIDED", "WRITTEN_OFF"]
Granted = Literal["AUTHORIZED", "DEFERRED"]  # how a hold starts: by the processor, or by payment alone
# A hold that a void, a capture or a write-off may still close; once closed it stays so.
OPEN: tuple[HoldStatus, ...] = ("AUTHORIZED", "DEFERRED")

DEFERRED = "deferred:"  # the hold id of a deferred authorization: "deferred:<ride_id>"
MAX_DEFERRED_FARE_CENTS = 5_000
DEFERRED_RISK_LIMIT_CENTS = 20_000  # all deferred authorizations open at once
# A charge in these states holds no money: voiding it again has nothing left to release.
HOLDS_NOTHING = frozenset({psp_pb2.VOIDED, psp_pb2.DECLINED})


def psp_key(ride_id: str, step: Step) -> str:
    """The idempotency key of one step of one ride's payment, the same on every attempt."""
    return f"{ride_id}:{step}"


def charge_description(ride_id: str) -> str:
    """How every psp call names its ride; the checker finds a ride's money by it
    (drills/checker.py, RIDE_PREFIX)."""
    return f"ride {ride_id}"


def deferred_hold_id(ride_id: str) -> str:
    return f"{DEFERRED}{ride_id}"


def is_deferred(hold_id: str) -> bool:
    """A deferred hold exists only in payment's tables: the processor has no charge for it."""
    return hold_id.startswith(DEFERRED)


@dataclass(frozen=True)
class Standing:
    paid_rides: int  # this rider's rides captured
    deferred_cents: int  # every rider's deferred holds still open


def may_defer(standing: Standing, amount_cents: int) -> bool:
    """Whether a ride may go ahead while the processor cannot be asked: a rider in good
    standing (a ride already paid), a small fare, and the platform's open risk within its limit."""
    return (
        standing.paid_rides > 0
        and amount_cents <= MAX_DEFERRED_FARE_CENTS
        and standing.deferred_cents + amount_cents <= DEFERRED_RISK_LIMIT_CENTS
    )


def hold_may_exist(sent: bool, first_try: bool) -> bool:
    """After the breaker refused an authorization: whether the processor may hold money
    for it all the same, because an attempt went out (this call's, or an earlier delivery's)."""
    return sent or not first_try


def rejected_reason(refusal: str) -> str:
    """The decline reason of an authorization the processor refused for good (not a card
    decline): "payment_rejected: <gRPC code>: <the psp's message>"."""
    return f"{PAYMENT_REJECTED}: {refusal}"


def unavailable_reason(retry_after_seconds: float) -> str:
    """The decline reason of an authorization refused at once, the processor being out of reach."""
    return f"processor_unavailable: retry after {retry_after_seconds:.0f} s"


def decline_reason(charge: psp_pb2.Charge) -> str:
    return charge.decline_reason or "declined"


def still_holding(found: psp_pb2.Charge | None) -> str | None:
    """After a refused void: the charge's status if the processor's record shows it still
    holds (or took) the rider's money, which needs a person, not a retry; None if it holds
    nothing (no such charge, voided, declined), and the compensation is complete."""
    if found is None or found.status in HOLDS_NOTHING:
        return None
    return psp_pb2.ChargeStatus.Name(found.status)


def taken_by_refused_capture(found: psp_pb2.Charge | None) -> int | None:
    """The cents a refused capture took all the same: the processor's record shows the
    charge captured (say an earlier capture went through and its key was reaped since).
    None if it never will pay: the fare is written off."""
    return found.captured_cents if found is not None and found.status == psp_pb2.CAPTURED else None


@dataclass(frozen=True)
class RecordHold:
    """A hold granted: by the processor (AUTHORIZED, its charge id) or by payment alone
    (DEFERRED, no charge yet). A hold already recorded for the ride is kept."""

    ride_id: str
    rider_id: str
    payment_method: str
    charge_id: str
    authorized_cents: int
    status: Granted


@dataclass(frozen=True)
class VoidHold:
    ride_id: str


@dataclass(frozen=True)
class CaptureHold:
    """The fare the processor took: the hold is captured and the fare posted."""

    ride_id: str
    charge_id: str
    captured_cents: int
    message_id: str

    def postings(self) -> list[tuple[str, int]]:
        return capture_postings(self.captured_cents)


@dataclass(frozen=True)
class WriteOffHold:
    """A fare the processor will never pay: the hold is written off and the platform pays the driver."""

    ride_id: str
    fare_cents: int
    message_id: str

    def postings(self) -> list[tuple[str, int]]:
        return write_off_postings(self.fare_cents)


Effect = RecordHold | VoidHold | CaptureHold | WriteOffHold


def settlement(
    ride_id: str, charge_id: str, paid_cents: int, fare_cents: int, message_id: str
) -> CaptureHold | WriteOffHold:
    """The effect of a capture. Past the pivot nothing is undone: what the processor took
    is captured; a fare it took nothing of is written off (the ride completes all the same)."""
    if paid_cents:
        return CaptureHold(ride_id, charge_id, paid_cents, message_id)
    return WriteOffHold(ride_id, fare_cents, message_id)
