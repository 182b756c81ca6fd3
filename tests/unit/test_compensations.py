"""The compensation plan on its own (property 8): what undoes what, last step first, one
answer at a time, and never past the pivot."""

import dataclasses
import itertools

import pytest

from services.trip import compensations, saga
from services.trip.compensations import RELEASE, VOID
from services.trip.saga import DriverReleased, PaymentVoided, Point, ReleaseDriver, Ride, State, VoidPayment

RIDE = Ride("r1", "u1", "tok_visa", Point(37.77, -122.42), Point(37.80, -122.41), 1234)
OFFERED = dataclasses.replace(RIDE, state=State.OFFERED, hold_id="h1", driver_id="d1", fence=7)


@pytest.mark.parametrize(
    ("hold_id", "driver_held", "expected"),
    [("h1", True, (RELEASE, VOID)), ("h1", False, (VOID,)), ("", True, (RELEASE,)), ("", False, ())],
)
def test_the_plan_undoes_the_steps_done_last_first(hold_id: str, driver_held: bool, expected: tuple[str, ...]) -> None:
    ride = dataclasses.replace(OFFERED, hold_id=hold_id)
    assert compensations.plan(ride, driver_held=driver_held) == expected


@pytest.mark.parametrize("state", sorted(set(State) - saga.BEFORE_PIVOT))
def test_no_ride_past_the_pivot_is_given_a_plan(state: State) -> None:
    with pytest.raises(ValueError, match="past the pivot"):
        compensations.plan(dataclasses.replace(OFFERED, state=state), driver_held=True)


def test_each_compensation_is_sent_as_its_own_command() -> None:
    releasing = dataclasses.replace(OFFERED, compensations=(RELEASE, VOID))
    assert compensations.command(releasing) == ReleaseDriver("d1", 7)
    assert compensations.command(dataclasses.replace(releasing, compensations=(VOID,))) == VoidPayment("h1")


def test_only_the_answer_to_the_awaited_compensation_completes_it() -> None:
    releasing = dataclasses.replace(OFFERED, state=State.COMPENSATING, compensations=(RELEASE, VOID))
    voiding = dataclasses.replace(releasing, compensations=(VOID,))
    assert compensations.answered(releasing, DriverReleased("d1")) == RELEASE
    assert compensations.answered(releasing, DriverReleased("d2")) is None  # another driver's release
    assert compensations.answered(releasing, PaymentVoided("h1")) is None  # out of order: the void waits
    assert compensations.answered(voiding, PaymentVoided("h1")) == VOID
    assert compensations.answered(voiding, DriverReleased("d1")) is None  # a duplicate of the release's answer
    assert compensations.answered(dataclasses.replace(voiding, compensations=()), PaymentVoided("h1")) is None


@pytest.mark.parametrize(("holds_money", "driver_held"), list(itertools.product((True, False), repeat=2)))
def test_run_to_the_end_the_plan_releases_before_it_voids_and_undoes_each_step_once(
    holds_money: bool, driver_held: bool
) -> None:
    ride = dataclasses.replace(OFFERED, hold_id="h1" if holds_money else "")
    ride = dataclasses.replace(ride, compensations=compensations.plan(ride, driver_held=driver_held))
    sent: list[saga.Command] = []
    while ride.compensations:
        sent.append(compensations.command(ride))
        answer: saga.Event = DriverReleased("d1") if isinstance(sent[-1], ReleaseDriver) else PaymentVoided("h1")
        assert compensations.answered(ride, answer) == ride.compensations[0]
        ride = dataclasses.replace(ride, compensations=ride.compensations[1:])
    expected: list[saga.Command] = [ReleaseDriver("d1", 7)] if driver_held else []
    assert sent == expected + ([VoidPayment("h1")] if holds_money else [])
