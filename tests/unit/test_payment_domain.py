"""Payment's rules as plain functions (services/payment/domain.py): the psp keys, when a
ride may be deferred, what the processor's record means after a refusal, and the
postings of a capture's settlement."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drills.checker import RIDE_PREFIX
from ridesaga.psp.v1 import psp_pb2
from services.payment import domain
from services.payment.domain import DEFERRED_RISK_LIMIT_CENTS, MAX_DEFERRED_FARE_CENTS, Standing
from services.runtime.messages import PAYMENT_REJECTED

RIDE = str(uuid.uuid4())
CHARGE = str(uuid.uuid4())


def test_each_step_of_a_ride_has_its_own_key_the_same_on_every_attempt() -> None:
    keys = [domain.psp_key(RIDE, step) for step in ("authorize", "void", "capture")]
    assert keys == [f"{RIDE}:authorize", f"{RIDE}:void", f"{RIDE}:capture"]
    assert domain.psp_key(RIDE, "capture") == domain.psp_key(RIDE, "capture")
    assert domain.psp_key(str(uuid.uuid4()), "capture") not in keys


def test_the_checker_finds_a_rides_charges_by_their_description() -> None:
    assert domain.charge_description(RIDE).removeprefix(RIDE_PREFIX) == RIDE


def test_a_deferred_hold_is_told_from_a_processors_charge() -> None:
    assert domain.deferred_hold_id(RIDE) == f"deferred:{RIDE}"
    assert domain.is_deferred(domain.deferred_hold_id(RIDE))
    assert not domain.is_deferred(CHARGE)


@pytest.mark.parametrize(
    ("standing", "amount", "deferred"),
    [
        (Standing(paid_rides=0, deferred_cents=0), 1_000, False),  # no ride paid yet
        (Standing(paid_rides=1, deferred_cents=0), 1_000, True),
        (Standing(paid_rides=1, deferred_cents=0), MAX_DEFERRED_FARE_CENTS, True),
        (Standing(paid_rides=1, deferred_cents=0), MAX_DEFERRED_FARE_CENTS + 1, False),  # too big a fare
        (Standing(paid_rides=3, deferred_cents=DEFERRED_RISK_LIMIT_CENTS - 1_000), 1_000, True),
        (Standing(paid_rides=3, deferred_cents=DEFERRED_RISK_LIMIT_CENTS - 999), 1_000, False),  # over the limit
    ],
)
def test_a_ride_is_deferred_only_in_good_standing_and_within_the_risk_limits(
    standing: Standing, amount: int, deferred: bool
) -> None:
    assert domain.may_defer(standing, amount) is deferred


@pytest.mark.parametrize(
    ("sent", "first_try", "may_exist"), [(False, True, False), (True, True, True), (False, False, True)]
)
def test_a_hold_may_exist_once_any_attempt_went_out(sent: bool, first_try: bool, may_exist: bool) -> None:
    assert domain.hold_may_exist(sent, first_try) is may_exist


def test_the_decline_reasons() -> None:
    assert (
        domain.rejected_reason("INVALID_ARGUMENT: no such token")
        == f"{PAYMENT_REJECTED}: INVALID_ARGUMENT: no such token"
    )
    assert domain.unavailable_reason(4.6) == "processor_unavailable: retry after 5 s"
    assert domain.decline_reason(psp_pb2.Charge(status=psp_pb2.DECLINED)) == "declined"
    assert (
        domain.decline_reason(psp_pb2.Charge(status=psp_pb2.DECLINED, decline_reason="expired_card")) == "expired_card"
    )


@pytest.mark.parametrize(
    ("found", "holding"),
    [
        (None, None),
        (psp_pb2.Charge(status=psp_pb2.VOIDED), None),
        (psp_pb2.Charge(status=psp_pb2.DECLINED), None),
        (psp_pb2.Charge(status=psp_pb2.AUTHORIZED), "AUTHORIZED"),
        (psp_pb2.Charge(status=psp_pb2.CAPTURED), "CAPTURED"),
        (psp_pb2.Charge(), "CHARGE_STATUS_UNSPECIFIED"),  # not known to hold nothing: a person looks
    ],
)
def test_a_refused_void_completes_only_if_the_charge_holds_nothing(
    found: psp_pb2.Charge | None, holding: str | None
) -> None:
    assert domain.still_holding(found) == holding


@pytest.mark.parametrize(
    ("found", "taken"),
    [
        (psp_pb2.Charge(status=psp_pb2.CAPTURED, captured_cents=900), 900),
        (psp_pb2.Charge(status=psp_pb2.AUTHORIZED), None),
        (psp_pb2.Charge(status=psp_pb2.VOIDED), None),
        (None, None),
    ],
)
def test_a_refused_capture_took_money_only_if_the_charge_shows_it_captured(
    found: psp_pb2.Charge | None, taken: int | None
) -> None:
    assert domain.taken_by_refused_capture(found) == taken


def test_a_capture_settles_what_the_processor_took_and_writes_off_what_it_never_pays() -> None:
    assert domain.settlement(RIDE, CHARGE, 900, 1_000, "m") == domain.CaptureHold(RIDE, CHARGE, 900, "m")
    assert domain.settlement(RIDE, CHARGE, 0, 1_000, "m") == domain.WriteOffHold(RIDE, 1_000, "m")


@given(paid=st.integers(min_value=0, max_value=10**9), fare=st.integers(min_value=1, max_value=10**9))
def test_every_settlement_only_moves_money(paid: int, fare: int) -> None:
    postings = domain.settlement(RIDE, CHARGE, paid, fare, "m").postings()
    assert sum(cents for _, cents in postings) == 0
    driver = sum(cents for account, cents in postings if account == "driver")
    assert driver == (paid or fare) * 75 // 100, "the driver is paid whether or not the processor paid"
