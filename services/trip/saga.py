"""The ride saga (docs/saga.md) as a pure state machine: `decide(ride, event, now)`
returns the ride's next state, the commands to send and the saga-log entries. No I/O.

Money first (authorize, then match), the driver's acceptance is the pivot: before it
every step is compensated in reverse order (compensations.py says what undoes what);
after it the saga only moves forward (capture, with retries). Every command's message id
is deterministic, so re-sending one after a timeout is recognised by its receiver."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum

from services.runtime.messages import PAYMENT_REJECTED
from services.trip import compensations


class State(StrEnum):
    PENDING = "PENDING"
    AUTHORIZING = "AUTHORIZING"
    MATCHING = "MATCHING"
    MATCH_BACKOFF = "MATCH_BACKOFF"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    CAPTURING = "CAPTURING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({State.COMPLETED, State.CANCELLED})
BEFORE_PIVOT = frozenset({State.PENDING, State.AUTHORIZING, State.MATCHING, State.MATCH_BACKOFF, State.OFFERED})

MAX_MATCH_ATTEMPTS = 8
# How long each step may take before the sweeper's StepTimedOut moves the saga on.
STEP_TIMEOUT_MS = {
    State.PENDING: 5_000,
    State.AUTHORIZING: 15_000,
    State.MATCHING: 10_000,
    State.OFFERED: 6_000,
    State.ACCEPTED: 30_000,
    State.CAPTURING: 15_000,
    State.COMPENSATING: 15_000,
}
PROCESSOR_UNAVAILABLE = "processor_unavailable"
# A re-sent command waits at most this much longer than its step's timeout (resend_wait_ms).
MAX_RESEND_EXTRA_MS = 60_000


def match_backoff_ms(attempt: int) -> int:
    """Wait before re-matching: riders queue for a driver instead of failing at once."""
    return min(4_000, 500 * attempt)


@dataclass(frozen=True)
class Point:
    lat: float
    lng: float


@dataclass(frozen=True)
class Ride:
    ride_id: str
    rider_id: str
    payment_method: str
    pickup: Point
    dropoff: Point
    fare_cents: int
    state: State = State.PENDING
    hold_id: str = ""
    driver_id: str = ""
    fence: int = 0
    match_attempt: int = 0
    excluded: tuple[str, ...] = ()
    cancel_requested: bool = False
    outcome: str = ""
    compensations: tuple[str, ...] = ()
    deadline_ms: int | None = None
    resends: int = 0  # re-sends of the current step's command (resend_wait_ms)


# Events (replies and inputs of the orchestrator).
@dataclass(frozen=True)
class RideRequested:
    pass


@dataclass(frozen=True)
class CancelRequested:
    reason: str


@dataclass(frozen=True)
class StepTimedOut:
    step: str
    attempt: int


@dataclass(frozen=True)
class PaymentAuthorized:
    hold_id: str
    amount_cents: int


@dataclass(frozen=True)
class PaymentDeclined:
    reason: str


@dataclass(frozen=True)
class PaymentVoided:
    hold_id: str


@dataclass(frozen=True)
class PaymentCaptured:
    hold_id: str
    amount_cents: int


@dataclass(frozen=True)
class DriverOffered:
    driver_id: str
    fence: int
    attempt: int


@dataclass(frozen=True)
class DriverAccepted:
    driver_id: str
    fence: int
    attempt: int


@dataclass(frozen=True)
class DriverDeclined:
    driver_id: str
    fence: int
    attempt: int
    reason: str


@dataclass(frozen=True)
class NoDriverAvailable:
    attempt: int


@dataclass(frozen=True)
class DriverReleased:
    driver_id: str


@dataclass(frozen=True)
class TripCompleted:
    driver_id: str
    fence: int


Event = (
    RideRequested
    | CancelRequested
    | StepTimedOut
    | PaymentAuthorized
    | PaymentDeclined
    | PaymentVoided
    | PaymentCaptured
    | DriverOffered
    | DriverAccepted
    | DriverDeclined
    | NoDriverAvailable
    | DriverReleased
    | TripCompleted
)


# Commands to participants.
@dataclass(frozen=True)
class AuthorizePayment:
    amount_cents: int


@dataclass(frozen=True)
class VoidPayment:
    hold_id: str


@dataclass(frozen=True)
class CapturePayment:
    hold_id: str
    amount_cents: int
    driver_id: str


@dataclass(frozen=True)
class ReserveDriver:
    attempt: int
    excluded: tuple[str, ...]


@dataclass(frozen=True)
class ReleaseDriver:
    driver_id: str
    fence: int


@dataclass(frozen=True)
class ConfirmDriver:
    """The pivot, told to the driver: only now is the acceptance answered "accepted"."""

    driver_id: str
    fence: int


Command = AuthorizePayment | VoidPayment | CapturePayment | ReserveDriver | ReleaseDriver | ConfirmDriver


def message_id(ride_id: str, command: Command) -> str:
    """Deterministic: the same command re-sent after a timeout keeps its id."""
    match command:
        case AuthorizePayment():
            return f"{ride_id}:authorize_payment"
        case VoidPayment():
            return f"{ride_id}:void_payment"
        case CapturePayment():
            return f"{ride_id}:capture_payment"
        case ReserveDriver(attempt=attempt):
            return f"{ride_id}:reserve_driver:{attempt}"
        case ReleaseDriver(driver_id=driver_id, fence=fence):
            return f"{ride_id}:release_driver:{driver_id}:{fence}"
        case ConfirmDriver(driver_id=driver_id, fence=fence):
            return f"{ride_id}:confirm_driver:{driver_id}:{fence}"


@dataclass(frozen=True)
class LogEntry:
    step: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    ride: Ride
    commands: list[Command] = field(default_factory=list)
    log: list[LogEntry] = field(default_factory=list)


def _enter(ride: Ride, state: State, now_ms: int, **changes: object) -> Ride:
    timeout = STEP_TIMEOUT_MS.get(state)
    deadline = None if state in TERMINAL or timeout is None else now_ms + timeout
    return dataclasses.replace(ride, state=state, deadline_ms=deadline, resends=0, **changes)  # type: ignore[arg-type]


def resend_wait_ms(state: State, deadline_ms: int | None, now_ms: int, resends: int = 0) -> int:
    """How long a re-sent command waits before it may be re-sent again: the step's timeout,
    doubled for each re-send before it, plus twice the time the timeout itself took to
    arrive; at most MAX_RESEND_EXTRA_MS more than the timeout. A step that keeps timing out
    is probably waiting on a participant that is behind (its queue holds the first
    command), and a late timeout says trip's own queues are behind: re-sending at the
    usual pace would add duplicates faster than the backlog drains, a retry storm that
    keeps the system slow after the load that caused it is gone."""
    timeout = STEP_TIMEOUT_MS[state]
    late = max(0, now_ms - deadline_ms) if deadline_ms is not None else 0
    backoff = timeout * ((1 << min(resends, 8)) - 1)
    return timeout + min(backoff + 2 * late, MAX_RESEND_EXTRA_MS)


def _resend(ride: Ride, now_ms: int) -> Ride:
    """The ride, in the same state, waiting for the re-sent command (resend_wait_ms)."""
    wait = resend_wait_ms(ride.state, ride.deadline_ms, now_ms, ride.resends)
    return dataclasses.replace(ride, deadline_ms=now_ms + wait, resends=ride.resends + 1)


def new_ride(
    ride_id: str, rider_id: str, payment_method: str, pickup: Point, dropoff: Point, fare_cents: int, now_ms: int
) -> Ride:
    """A requested ride: PENDING, with a deadline like every live state, so a ride whose
    RideRequested never reached the orchestrator is started by the sweeper instead."""
    return _enter(Ride(ride_id, rider_id, payment_method, pickup, dropoff, fare_cents), State.PENDING, now_ms)


def _match(ride: Ride, now_ms: int, log: list[LogEntry], commands: list[Command]) -> Decision:
    attempt = ride.match_attempt + 1
    matching = _enter(ride, State.MATCHING, now_ms, match_attempt=attempt, driver_id="", fence=0)
    log.append(LogEntry("match_driver", "started", f"attempt {attempt}"))
    return Decision(matching, [*commands, ReserveDriver(attempt, ride.excluded)], log)


def _rematch_or_give_up(ride: Ride, now_ms: int, log: list[LogEntry], *, driver_held: bool = False) -> Decision:
    """Matches again after a backoff, or gives up after MAX_MATCH_ATTEMPTS. A driver still
    held (an offer declined or unanswered) is released first: when giving up, as the first
    compensation, before the hold is voided (reverse order)."""
    if ride.match_attempt >= MAX_MATCH_ATTEMPTS:
        log.append(LogEntry("match_driver", "failed", f"no driver after {ride.match_attempt} attempts"))
        return _compensate(ride, "no_driver", now_ms, log, [], driver_held=driver_held)
    commands: list[Command] = [ReleaseDriver(ride.driver_id, ride.fence)] if driver_held else []
    waiting = dataclasses.replace(
        ride,
        state=State.MATCH_BACKOFF,
        deadline_ms=now_ms + match_backoff_ms(ride.match_attempt),
        driver_id="",
        fence=0,
    )
    log.append(LogEntry("match_driver", "retrying", f"after attempt {ride.match_attempt}"))
    return Decision(waiting, commands, log)


def _compensate(
    ride: Ride, outcome: str, now_ms: int, log: list[LogEntry], commands: list[Command], *, driver_held: bool = False
) -> Decision:
    """Cancels the ride, first undoing what it did (compensations.plan)."""
    pending = compensations.plan(ride, driver_held=driver_held)
    if not pending:
        log.append(LogEntry("ride", "cancelled", outcome))
        return Decision(_enter(ride, State.CANCELLED, now_ms, outcome=outcome), commands, log)
    compensating = _enter(ride, State.COMPENSATING, now_ms, outcome=outcome, compensations=pending)
    log.append(LogEntry(pending[0], "compensating", outcome))
    return Decision(compensating, [*commands, compensations.command(compensating)], log)


def _compensation_done(ride: Ride, step: str, now_ms: int, log: list[LogEntry]) -> Decision:
    """One compensation answered: the next one is sent only now, or the ride is cancelled."""
    log.append(LogEntry(step, "compensated"))
    rest = ride.compensations[1:]
    if not rest:
        log.append(LogEntry("ride", "cancelled", ride.outcome))
        return Decision(_enter(ride, State.CANCELLED, now_ms, compensations=()), [], log)
    nxt = _enter(ride, State.COMPENSATING, now_ms, compensations=rest)
    log.append(LogEntry(rest[0], "compensating", ride.outcome))
    return Decision(nxt, [compensations.command(nxt)], log)


def _stale(ride: Ride, event: Event) -> Decision:
    """A reply that no longer matches the saga (late, duplicate, superseded). A driver
    reserved or a hold placed for nothing is undone; anything else is ignored."""
    match event:
        case DriverOffered(driver_id=d, fence=f) | DriverAccepted(driver_id=d, fence=f):
            return Decision(ride, [ReleaseDriver(d, f)], [LogEntry("release_driver", "stale offer", d)])
        case PaymentAuthorized(hold_id=hold) if ride.state in TERMINAL and hold != ride.hold_id:
            return Decision(ride, [VoidPayment(hold)], [LogEntry("void_payment", "stale hold", hold)])
    if isinstance(event, DriverReleased):
        return Decision(ride)  # the expected answer to a release nobody waits for
    return Decision(ride, [], [LogEntry("ignored", type(event).__name__, ride.state.value)])


def decide(ride: Ride, event: Event, now_ms: int) -> Decision:
    log: list[LogEntry] = []
    state = ride.state
    match state, event:
        case State.PENDING, RideRequested() | StepTimedOut(step="PENDING"):
            log.append(LogEntry("authorize_payment", "started", f"{ride.fare_cents} cents"))
            return Decision(_enter(ride, State.AUTHORIZING, now_ms), [AuthorizePayment(ride.fare_cents)], log)
        case State.AUTHORIZING, PaymentAuthorized(hold_id=hold):
            log.append(LogEntry("authorize_payment", "ok", hold))
            authorized = dataclasses.replace(ride, hold_id=hold)
            if ride.cancel_requested:
                return _compensate(authorized, "rider_cancelled", now_ms, log, [])
            return _match(authorized, now_ms, log, [])
        case State.AUTHORIZING, PaymentDeclined(reason=reason):
            # Payment answers "processor unavailable" at once while its breaker is open.
            outcome = next(
                (
                    o
                    for prefix, o in (
                        (PROCESSOR_UNAVAILABLE, "payment_unavailable"),
                        (PAYMENT_REJECTED, PAYMENT_REJECTED),
                    )
                    if reason.startswith(prefix)
                ),
                "card_declined",
            )
            log += [LogEntry("authorize_payment", "failed", reason), LogEntry("ride", "cancelled", outcome)]
            return Decision(_enter(ride, State.CANCELLED, now_ms, outcome=outcome), [], log)
        case State.AUTHORIZING, StepTimedOut(step="AUTHORIZING"):
            log.append(LogEntry("authorize_payment", "resent", "timeout"))
            return Decision(_resend(ride, now_ms), [AuthorizePayment(ride.fare_cents)], log)
        case State.MATCHING, DriverOffered(driver_id=d, fence=f, attempt=a) if a == ride.match_attempt:
            log.append(LogEntry("match_driver", "offered", d))
            return Decision(_enter(ride, State.OFFERED, now_ms, driver_id=d, fence=f), [], log)
        case State.MATCHING, NoDriverAvailable(attempt=a) if a == ride.match_attempt:
            return _rematch_or_give_up(ride, now_ms, log)
        case State.MATCHING, StepTimedOut(step="MATCHING", attempt=a) if a == ride.match_attempt:
            log.append(LogEntry("match_driver", "resent", "timeout"))
            return Decision(_resend(ride, now_ms), [ReserveDriver(a, ride.excluded)], log)
        case State.MATCH_BACKOFF, StepTimedOut(step="MATCH_BACKOFF"):
            return _match(ride, now_ms, log, [])
        case State.OFFERED, DriverAccepted(driver_id=d, fence=f) if (d, f) == (ride.driver_id, ride.fence):
            log.append(LogEntry("driver_accepts", "ok", f"{d} (pivot)"))
            return Decision(_enter(ride, State.ACCEPTED, now_ms), [ConfirmDriver(d, f)], log)
        case State.OFFERED, DriverDeclined(driver_id=d, fence=f, reason=reason) if (d, f) == (
            ride.driver_id,
            ride.fence,
        ):
            log.append(LogEntry("driver_accepts", "declined", f"{d}: {reason}"))
            declined = dataclasses.replace(ride, excluded=(*ride.excluded, d))
            return _rematch_or_give_up(declined, now_ms, log, driver_held=True)
        case State.OFFERED, StepTimedOut(step="OFFERED", attempt=a) if a == ride.match_attempt:
            log.append(LogEntry("driver_accepts", "declined", f"{ride.driver_id}: no answer"))
            declined = dataclasses.replace(ride, excluded=(*ride.excluded, ride.driver_id))
            return _rematch_or_give_up(declined, now_ms, log, driver_held=True)
        case State.ACCEPTED, TripCompleted(driver_id=d) if d == ride.driver_id:
            log += [LogEntry("complete_ride", "ok", d), LogEntry("capture_payment", "started")]
            capture = CapturePayment(ride.hold_id, ride.fare_cents, ride.driver_id)
            return Decision(_enter(ride, State.CAPTURING, now_ms), [capture], log)
        case State.ACCEPTED, StepTimedOut(step="ACCEPTED"):
            # Past the pivot there is no undo: a ride whose driver never reported its end
            # is completed by the sweeper and settled.
            log += [
                LogEntry("complete_ride", "presumed", "no report from the driver"),
                LogEntry("capture_payment", "started"),
            ]
            capture = CapturePayment(ride.hold_id, ride.fare_cents, ride.driver_id)
            return Decision(_enter(ride, State.CAPTURING, now_ms), [capture], log)
        case State.CAPTURING, PaymentCaptured(amount_cents=amount):
            log += [LogEntry("capture_payment", "ok", f"{amount} cents"), LogEntry("ride", "completed")]
            done = _enter(ride, State.COMPLETED, now_ms, outcome="completed")
            return Decision(done, [ReleaseDriver(ride.driver_id, ride.fence)], log)
        case State.CAPTURING, StepTimedOut(step="CAPTURING"):
            log.append(LogEntry("capture_payment", "resent", "timeout"))
            capture = CapturePayment(ride.hold_id, ride.fare_cents, ride.driver_id)
            return Decision(_resend(ride, now_ms), [capture], log)
        case State.COMPENSATING, DriverReleased() | PaymentVoided() if step := compensations.answered(ride, event):
            return _compensation_done(ride, step, now_ms, log)
        case State.COMPENSATING, StepTimedOut(step="COMPENSATING"):
            log.append(LogEntry(ride.compensations[0], "resent", "timeout"))
            return Decision(_resend(ride, now_ms), [compensations.command(ride)], log)
        case State.PENDING, CancelRequested(reason=reason):
            log.append(LogEntry("ride", "cancelled", reason))
            return Decision(_enter(ride, State.CANCELLED, now_ms, outcome=reason), [], log)
        case State.AUTHORIZING, CancelRequested():
            log.append(LogEntry("cancel", "waiting", "for the authorization's outcome"))
            return Decision(dataclasses.replace(ride, cancel_requested=True), [], log)
        case State.MATCHING | State.MATCH_BACKOFF, CancelRequested(reason=reason):
            return _compensate(ride, reason, now_ms, log, [])
        case State.OFFERED, CancelRequested(reason=reason):
            return _compensate(ride, reason, now_ms, log, [], driver_held=True)
        case _, CancelRequested():
            return Decision(ride, [], [LogEntry("cancel", "refused", f"ride is {state.value}")])
    return _stale(ride, event)
