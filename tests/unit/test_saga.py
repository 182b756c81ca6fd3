"""The ride saga's state machine, step by step: the happy path, every failure before the
pivot (compensated in reverse order), the pivot itself, and late or duplicate replies."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime.messages import PAYMENT_REJECTED
from services.trip import compensations, saga
from services.trip.saga import (
    AuthorizePayment,
    CancelRequested,
    CapturePayment,
    DriverAccepted,
    DriverDeclined,
    DriverOffered,
    DriverReleased,
    NoDriverAvailable,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentDeclined,
    PaymentVoided,
    Point,
    ReleaseDriver,
    ReserveDriver,
    Ride,
    RideRequested,
    State,
    StepTimedOut,
    TripCompleted,
    VoidPayment,
)

NOW = 1_000_000
RIDE = Ride("r1", "u1", "tok_visa", Point(37.77, -122.42), Point(37.80, -122.41), 1234)


def run(ride: Ride, *events: saga.Event) -> tuple[Ride, list[saga.Command]]:
    commands: list[saga.Command] = []
    for event in events:
        decision = saga.decide(ride, event, NOW)
        ride = decision.ride
        commands += decision.commands
    return ride, commands


def offered(ride: Ride = RIDE) -> Ride:
    ride, _ = run(ride, RideRequested(), PaymentAuthorized("h1", 1234), DriverOffered("d1", 7, 1))
    return ride


def test_the_happy_path_authorizes_first_then_matches_then_captures() -> None:
    ride, commands = run(
        RIDE,
        RideRequested(),
        PaymentAuthorized("h1", 1234),
        DriverOffered("d1", 7, 1),
        DriverAccepted("d1", 7, 1),
        TripCompleted("d1", 7),
        PaymentCaptured("h1", 1234),
    )
    assert ride.state == State.COMPLETED and ride.outcome == "completed" and ride.deadline_ms is None
    assert commands == [
        AuthorizePayment(1234),
        ReserveDriver(1, ()),
        saga.ConfirmDriver("d1", 7),
        CapturePayment("h1", 1234, "d1"),
        ReleaseDriver("d1", 7),
    ]


def test_a_declined_card_cancels_with_nothing_to_undo() -> None:
    ride, commands = run(RIDE, RideRequested(), PaymentDeclined("card_declined"))
    assert (ride.state, ride.outcome) == (State.CANCELLED, "card_declined")
    assert commands == [AuthorizePayment(1234)]


def test_cancel_before_pickup_releases_the_driver_then_voids_the_hold() -> None:
    ride, commands = run(offered(), CancelRequested("rider_cancelled"))
    assert ride.state == State.COMPENSATING
    assert commands == [ReleaseDriver("d1", 7)]
    ride, commands = run(ride, PaymentVoided("h1"))  # out of order: not the compensation awaited
    assert ride.state == State.COMPENSATING and commands == []
    ride, commands = run(ride, DriverReleased("d1"))
    assert commands == [VoidPayment("h1")]
    ride, commands = run(ride, PaymentVoided("h1"))
    assert (ride.state, ride.outcome, commands) == (State.CANCELLED, "rider_cancelled", [])


def test_no_compensation_after_the_pivot() -> None:
    ride, _ = run(offered(), DriverAccepted("d1", 7, 1))
    assert ride.state == State.ACCEPTED
    decision = saga.decide(ride, CancelRequested("rider_cancelled"), NOW)
    assert decision.ride == ride and decision.commands == []
    assert decision.log[0].status == "refused"


def test_a_ride_whose_driver_never_reports_the_end_is_completed_forward() -> None:
    ride, _ = run(offered(), DriverAccepted("d1", 7, 1))
    ride, commands = run(ride, StepTimedOut("ACCEPTED", 1))
    assert ride.state == State.CAPTURING and commands == [CapturePayment("h1", 1234, "d1")]


def test_a_decline_releases_that_driver_and_rematches_without_them() -> None:
    ride, commands = run(offered(), DriverDeclined("d1", 7, 1, "declined"))
    assert ride.state == State.MATCH_BACKOFF and ride.excluded == ("d1",)
    assert commands == [ReleaseDriver("d1", 7)]
    ride, commands = run(ride, StepTimedOut("MATCH_BACKOFF", 1))
    assert ride.state == State.MATCHING and commands == [ReserveDriver(2, ("d1",))]


def test_an_unanswered_offer_counts_as_a_decline() -> None:
    ride, commands = run(offered(), StepTimedOut("OFFERED", 1))
    assert ride.state == State.MATCH_BACKOFF and commands == [ReleaseDriver("d1", 7)]


def test_matching_gives_up_after_the_last_attempt_and_voids_the_hold() -> None:
    ride, _ = run(RIDE, RideRequested(), PaymentAuthorized("h1", 1234))
    for attempt in range(1, saga.MAX_MATCH_ATTEMPTS):
        ride, _ = run(ride, NoDriverAvailable(attempt), StepTimedOut("MATCH_BACKOFF", attempt))
    ride, commands = run(ride, NoDriverAvailable(saga.MAX_MATCH_ATTEMPTS))
    assert (ride.state, ride.outcome) == (State.COMPENSATING, "no_driver")
    assert commands == [VoidPayment("h1")]


def test_giving_up_after_a_declined_last_offer_releases_the_driver_before_voiding_the_hold() -> None:
    """Both compensations in reverse order (property 8): the void waits for the release's
    answer, instead of both going out at once on two topics."""
    ride, _ = run(RIDE, RideRequested(), PaymentAuthorized("h1", 1234))
    for attempt in range(1, saga.MAX_MATCH_ATTEMPTS):
        ride, _ = run(ride, NoDriverAvailable(attempt), StepTimedOut("MATCH_BACKOFF", attempt))
    ride, _ = run(ride, DriverOffered("d9", 11, saga.MAX_MATCH_ATTEMPTS))
    for last in (DriverDeclined("d9", 11, saga.MAX_MATCH_ATTEMPTS, "declined"), StepTimedOut("OFFERED", 8)):
        given_up, commands = run(ride, last)
        assert (given_up.state, given_up.outcome) == (State.COMPENSATING, "no_driver")
        assert given_up.compensations == (compensations.RELEASE, compensations.VOID)
        assert commands == [ReleaseDriver("d9", 11)]
        done, commands = run(given_up, saga.DriverReleased("d9"))
        assert done.state == State.COMPENSATING and commands == [VoidPayment("h1")]
        done, commands = run(done, saga.PaymentVoided("h1"))
        assert done.state == State.CANCELLED and commands == []


def test_a_permanent_payment_refusal_cancels_the_ride_naming_it() -> None:
    reason = f"{PAYMENT_REJECTED}: INVALID_ARGUMENT: payment_method: no such token 'tok_unknownBrand'"
    ride, commands = run(RIDE, RideRequested(), saga.PaymentDeclined(reason))
    assert (ride.state, ride.outcome, commands) == (State.CANCELLED, "payment_rejected", [AuthorizePayment(1234)])


def test_a_new_ride_has_a_deadline_so_a_lost_start_is_swept() -> None:
    ride = saga.new_ride("r1", "u1", "tok_visa", Point(1, 2), Point(3, 4), 500, NOW)
    assert (ride.state, ride.deadline_ms) == (State.PENDING, NOW + saga.STEP_TIMEOUT_MS[State.PENDING])
    started, commands = run(ride, StepTimedOut("PENDING", 0))
    assert started.state == State.AUTHORIZING and commands == [AuthorizePayment(500)]


def test_cancel_while_authorizing_waits_for_the_outcome_then_voids() -> None:
    ride, _ = run(RIDE, RideRequested(), CancelRequested("rider_cancelled"))
    assert ride.state == State.AUTHORIZING and ride.cancel_requested
    ride, commands = run(ride, PaymentAuthorized("h1", 1234))
    assert ride.state == State.COMPENSATING and commands == [VoidPayment("h1")]


def test_a_late_offer_after_cancellation_is_released() -> None:
    ride, _ = run(RIDE, RideRequested(), PaymentAuthorized("h1", 1234), CancelRequested("rider_cancelled"))
    ride, commands = run(ride, DriverOffered("d9", 3, 1))
    assert commands == [ReleaseDriver("d9", 3)]


def test_an_offer_for_a_superseded_attempt_is_released() -> None:
    ride, _ = run(offered(), DriverDeclined("d1", 7, 1, "declined"), StepTimedOut("MATCH_BACKOFF", 1))
    ride2, commands = run(ride, DriverOffered("d5", 8, 1))
    assert ride2 == ride and commands == [ReleaseDriver("d5", 8)]


def test_timeouts_resend_the_same_command() -> None:
    ride, first = run(RIDE, RideRequested())
    ride, again = run(ride, StepTimedOut("AUTHORIZING", 0))
    assert first == again == [AuthorizePayment(1234)]
    assert saga.message_id("r1", first[0]) == saga.message_id("r1", again[0])


@pytest.mark.parametrize("late_ms", [0, 500, 7_000, 45_000, 600_000])
def test_a_late_timeout_makes_the_resent_command_wait_longer_before_the_next(late_ms: int) -> None:
    # The sweeper's timeout arrives late_ms after the deadline: the saga's queues are that
    # far behind, and the first ReserveDriver (or its reply) is probably still in them.
    matching, _ = run(RIDE, RideRequested(), PaymentAuthorized("h1", 1234))
    assert matching.state == State.MATCHING and matching.deadline_ms is not None
    now = matching.deadline_ms + late_ms
    decision = saga.decide(matching, StepTimedOut("MATCHING", 1), now)
    assert decision.commands == [ReserveDriver(1, ())]
    wait = decision.ride.deadline_ms - now  # type: ignore[operator]
    assert wait == saga.STEP_TIMEOUT_MS[State.MATCHING] + min(2 * late_ms, saga.MAX_RESEND_EXTRA_MS)
    assert wait >= 2 * min(late_ms, saga.MAX_RESEND_EXTRA_MS // 2), "never re-sent faster than the backlog drains"


def test_every_state_with_a_deadline_handles_its_timeout() -> None:
    for state in saga.STEP_TIMEOUT_MS:
        ride = dataclasses.replace(
            RIDE,
            state=state,
            hold_id="h1",
            driver_id="d1",
            fence=7,
            match_attempt=1,
            compensations=(compensations.VOID,),
        )
        decision = saga.decide(ride, StepTimedOut(state.value, 1), NOW)
        assert decision.log and decision.log[0].step != "ignored", state


EVENTS = st.sampled_from(
    [
        RideRequested(),
        PaymentAuthorized("h1", 1234),
        PaymentDeclined("card_declined"),
        PaymentVoided("h1"),
        PaymentCaptured("h1", 1234),
        DriverOffered("d1", 7, 1),
        DriverOffered("d2", 9, 2),
        DriverAccepted("d1", 7, 1),
        DriverAccepted("d2", 9, 2),
        DriverDeclined("d1", 7, 1, "declined"),
        NoDriverAvailable(1),
        NoDriverAvailable(2),
        DriverReleased("d1"),
        DriverReleased("d2"),
        TripCompleted("d1", 7),
        TripCompleted("d2", 9),
        CancelRequested("rider_cancelled"),
        *(StepTimedOut(s.value, a) for s in State for a in (0, 1, 2)),
    ]
)


@settings(max_examples=400)
@given(st.lists(EVENTS, max_size=40))
def test_whatever_arrives_the_saga_keeps_its_promises(events: list[saga.Event]) -> None:
    ride = RIDE
    passed_pivot = False
    for event in events:
        before = ride
        decision = saga.decide(ride, event, NOW)
        ride = decision.ride
        if before.state in saga.TERMINAL:
            assert ride.state == before.state  # terminal states are final
        if ride.state in (State.ACCEPTED, State.CAPTURING, State.COMPLETED) and before.state != ride.state:
            passed_pivot = passed_pivot or ride.state == State.ACCEPTED
        if passed_pivot:
            assert ride.state != State.COMPENSATING
            assert not any(isinstance(c, VoidPayment) and c.hold_id == ride.hold_id for c in decision.commands)
        if ride.state == State.CAPTURING:
            assert ride.hold_id and ride.driver_id
        if ride.state == State.COMPLETED and before.state != State.COMPLETED:
            assert decision.commands == [ReleaseDriver(ride.driver_id, ride.fence)]


@pytest.mark.parametrize("state", sorted(saga.TERMINAL))
def test_terminal_states_have_no_deadline(state: State) -> None:
    ride, _ = run(RIDE, RideRequested(), PaymentDeclined("card_declined"))
    assert ride.deadline_ms is None or state != ride.state


def test_each_resend_of_one_step_waits_twice_as_long_up_to_a_bound_and_a_new_step_starts_over() -> None:
    ride, _ = run(RIDE, RideRequested(), PaymentAuthorized("h1", 1234))
    waits = []
    for _ in range(5):  # every timeout arrives on time: only the count of re-sends grows
        assert ride.deadline_ms is not None
        now = ride.deadline_ms
        decision = saga.decide(ride, StepTimedOut("MATCHING", 1), now)
        assert decision.commands == [ReserveDriver(1, ())], "the same command, every time"
        ride = decision.ride
        waits.append(ride.deadline_ms - now)  # type: ignore[operator]
    timeout = saga.STEP_TIMEOUT_MS[State.MATCHING]
    assert waits == [timeout, 2 * timeout, 4 * timeout, timeout + saga.MAX_RESEND_EXTRA_MS, timeout + 60_000]
    offered_now = saga.decide(ride, DriverOffered("d1", 7, 1), NOW).ride
    assert offered_now.resends == 0, "the next step's timeouts start from its own timeout"
