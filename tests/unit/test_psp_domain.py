import math
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.psp import domain
from services.psp.domain import Charge, ChargeStatus, Operation
from services.runtime.errors import Aborted, DomainError, FailedPrecondition, InvalidArgument

VISA = domain.Authorization("tok_visa", 1_000, "ride 42")


def key(operation: Operation = Operation.AUTHORIZE, value: str = "k1", **params: str | int) -> domain.IdempotencyKey:
    return domain.idempotency_key(operation, value, **params)


def authorized(amount: int = 1_000) -> Charge:
    outcome = domain.authorize(domain.Authorization("tok_visa", amount, "ride 42"), key(), declined_by_fault=False)
    return outcome.charge


def captured(amount: int = 800) -> Charge:
    return domain.capture(authorized(), amount, key(Operation.CAPTURE)).charge


@pytest.mark.parametrize(("value", "problem"), [("", "is required"), ("  ", "is required"), ("k" * 256, "at most 255")])
def test_an_idempotency_key_is_required_and_bounded(value: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^idempotency_key: .*{problem}") as error:
        key(value=value)
    assert error.value.field == "idempotency_key"


def test_a_key_of_255_characters_is_accepted() -> None:
    assert key(value="k" * 255).value == "k" * 255


def test_the_fingerprint_binds_the_key_to_operation_and_parameters() -> None:
    same = key(amount_cents=1_000, payment_method="tok_visa")
    assert same.fingerprint == key(payment_method="tok_visa", amount_cents=1_000).fingerprint
    assert same.fingerprint != key(amount_cents=1_001, payment_method="tok_visa").fingerprint
    assert same.fingerprint != key(Operation.CAPTURE, amount_cents=1_000, payment_method="tok_visa").fingerprint


def test_reusing_a_key_with_other_parameters_is_refused_naming_the_key() -> None:
    first = key(value="ride-7:authorize", amount_cents=1_000)
    second = key(value="ride-7:authorize", amount_cents=2_000)
    for completed, age in ((True, 0.0), (False, 0.0), (False, domain.TAKEOVER_AFTER_SECONDS + 1)):
        with pytest.raises(InvalidArgument, match=r"^idempotency_key: 'ride-7:authorize' .*different authorize"):
            domain.reuse(second, first.fingerprint, completed, age)


def test_a_completed_key_replays() -> None:
    k = key(amount_cents=1_000)
    assert domain.reuse(k, k.fingerprint, completed=True, claimed_seconds_ago=3_600.0) is domain.Reuse.REPLAY


def test_a_key_in_flight_is_aborted_until_its_claim_is_abandoned() -> None:
    k = key(amount_cents=1_000)
    with pytest.raises(Aborted, match="in progress"):
        domain.reuse(k, k.fingerprint, completed=False, claimed_seconds_ago=domain.TAKEOVER_AFTER_SECONDS)
    late = domain.TAKEOVER_AFTER_SECONDS + 0.1
    assert domain.reuse(k, k.fingerprint, completed=False, claimed_seconds_ago=late) is domain.Reuse.TAKE_OVER


@pytest.mark.parametrize(
    ("payment_method", "amount", "description", "field"),
    [
        ("", 1_000, "", "payment_method"),
        ("visa", 1_000, "", "payment_method"),
        ("tok_" + "x" * 252, 1_000, "", "payment_method"),
        ("tok_visa", 0, "", "amount_cents"),
        ("tok_visa", -5, "", "amount_cents"),
        ("tok_visa", 1_000, "d" * 501, "description"),
    ],
)
def test_an_authorization_names_its_bad_field(payment_method: str, amount: int, description: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.authorization(payment_method, amount, description)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


def test_an_approved_authorization_holds_the_amount_once() -> None:
    outcome = domain.authorize(VISA, key(value="ride-1:auth"), declined_by_fault=False)
    assert outcome.charge.status is ChargeStatus.AUTHORIZED
    charge = outcome.charge
    assert (charge.authorized_cents, charge.captured_cents, charge.refunded_cents) == (1_000, 0, 0)
    assert outcome.movement is not None
    assert (outcome.movement.kind, outcome.movement.amount_cents) == (Operation.AUTHORIZE, 1_000)
    assert (outcome.movement.charge_id, outcome.movement.idempotency_key) == (outcome.charge.charge_id, "ride-1:auth")
    assert outcome.movement.description == "ride 42"


@pytest.mark.parametrize(
    ("payment_method", "by_fault", "reason"),
    [
        ("tok_chargeDeclined", False, domain.CARD_DECLINED),
        ("tok_chargeDeclined", True, domain.CARD_DECLINED),
        ("tok_visa", True, domain.FAULT_DECLINED),
    ],
)
def test_a_declined_card_is_a_result_that_moves_no_money(payment_method: str, by_fault: bool, reason: str) -> None:
    outcome = domain.authorize(domain.Authorization(payment_method, 1_000, "ride 42"), key(), by_fault)
    assert outcome.charge.status is ChargeStatus.DECLINED
    assert outcome.charge.decline_reason == reason
    assert outcome.charge.authorized_cents == 0
    assert outcome.movement is None


@pytest.mark.parametrize("amount", [1, 800, 1_000])
def test_capture_takes_at_most_the_hold(amount: int) -> None:
    outcome = domain.capture(authorized(1_000), amount, key(Operation.CAPTURE))
    assert outcome.charge.status is ChargeStatus.CAPTURED
    assert outcome.charge.captured_cents == amount
    assert outcome.movement is not None
    assert (outcome.movement.kind, outcome.movement.amount_cents) == (Operation.CAPTURE, amount)


def test_capture_beyond_the_hold_is_refused_naming_the_amounts() -> None:
    with pytest.raises(FailedPrecondition, match="capture of 1001 cents exceeds the 1000 cents authorized"):
        domain.capture(authorized(1_000), 1_001, key(Operation.CAPTURE))


def test_void_releases_the_whole_hold() -> None:
    outcome = domain.void(authorized(1_000), key(Operation.VOID))
    assert outcome.charge.status is ChargeStatus.VOIDED
    assert outcome.movement is not None
    assert (outcome.movement.kind, outcome.movement.amount_cents) == (Operation.VOID, 1_000)


def _declined() -> Charge:
    return domain.authorize(domain.Authorization("tok_chargeDeclined", 1_000, ""), key(), False).charge


@pytest.mark.parametrize(
    ("charge", "operation"),
    [
        (captured(), "capture"),
        (domain.void(authorized(), key(Operation.VOID)).charge, "capture"),
        (_declined(), "capture"),
        (captured(), "void"),
        (domain.void(authorized(), key(Operation.VOID)).charge, "void"),
        (_declined(), "void"),
        (authorized(), "refund"),
        (domain.void(authorized(), key(Operation.VOID)).charge, "refund"),
        (_declined(), "refund"),
    ],
)
def test_each_operation_starts_only_from_its_state(charge: Charge, operation: str) -> None:
    steps = {
        "capture": lambda: domain.capture(charge, 1, key(Operation.CAPTURE)),
        "void": lambda: domain.void(charge, key(Operation.VOID)),
        "refund": lambda: domain.refund(charge, 1, key(Operation.REFUND)),
    }
    with pytest.raises(FailedPrecondition, match=f"charge {charge.charge_id} is {charge.status}"):
        steps[operation]()


def test_refunds_add_up_to_at_most_the_captured_amount() -> None:
    charge = domain.refund(captured(800), 500, key(Operation.REFUND, "r1")).charge
    assert (charge.status, charge.refunded_cents) == (ChargeStatus.CAPTURED, 500)
    with pytest.raises(FailedPrecondition, match="refund of 301 cents exceeds the 300 cents left"):
        domain.refund(charge, 301, key(Operation.REFUND, "r2"))
    outcome = domain.refund(charge, 300, key(Operation.REFUND, "r2"))
    assert outcome.charge.refunded_cents == 800
    assert outcome.movement is not None
    assert (outcome.movement.kind, outcome.movement.amount_cents) == (Operation.REFUND, 300)


@pytest.mark.parametrize("amount", [0, -1])
def test_an_amount_must_be_positive(amount: int) -> None:
    with pytest.raises(InvalidArgument, match=f"^amount_cents: must be positive, got {amount}$"):
        domain.positive_amount("amount_cents", amount)


CHANGES = [Operation.CAPTURE, Operation.VOID, Operation.REFUND]


@given(
    st.integers(min_value=1, max_value=2_000),
    st.lists(st.tuples(st.sampled_from(CHANGES), st.integers(min_value=-5, max_value=2_000)), max_size=12),
)
def test_money_rules_hold_under_any_sequence_of_calls(hold: int, calls: list[tuple[Operation, int]]) -> None:
    """Whatever is asked, captured <= authorized, refunded <= captured, a hold is either
    captured or voided, and the movements account for exactly the money the charge shows."""
    charge = authorized(hold)
    moved = dict.fromkeys(CHANGES, 0)
    for n, (operation, amount) in enumerate(calls):
        k = key(operation, f"k{n}")
        try:
            if operation is Operation.VOID:
                outcome = domain.void(charge, k)
            else:
                step = domain.capture if operation is Operation.CAPTURE else domain.refund
                outcome = step(charge, domain.positive_amount("amount_cents", amount), k)
        except DomainError:
            continue
        charge = outcome.charge
        assert outcome.movement is not None
        moved[outcome.movement.kind] += outcome.movement.amount_cents
    assert 0 <= charge.refunded_cents <= charge.captured_cents <= charge.authorized_cents == hold
    assert (moved[Operation.CAPTURE], moved[Operation.REFUND]) == (charge.captured_cents, charge.refunded_cents)
    assert moved[Operation.VOID] == (hold if charge.status is ChargeStatus.VOIDED else 0)
    assert moved[Operation.CAPTURE] == 0 or moved[Operation.VOID] == 0


@pytest.mark.parametrize(
    ("decline", "error", "latency", "field"),
    [
        (1.5, 0.0, 0, "decline_rate"),
        (math.nan, 0.0, 0, "decline_rate"),
        (0.0, -0.1, 0, "error_rate"),
        (0.0, math.inf, 0, "error_rate"),
        (0.0, 0.0, -1, "latency_ms"),
        (0.0, 0.0, domain.MAX_LATENCY_MS + 1, "latency_ms"),
    ],
)
def test_fault_knobs_are_validated(decline: float, error: float, latency: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as error_info:
        domain.faults(decline, error, latency, outage=False)
    assert error_info.value.field == field


def test_valid_fault_knobs_are_kept() -> None:
    assert domain.faults(0.25, 1.0, 100, True) == domain.Faults(0.25, 1.0, 100, True)


def test_no_faults_never_fail_or_decline() -> None:
    none = domain.Faults()
    assert domain.injected_failure(none, 0.0) is None
    assert not domain.declined_by_fault(none, 0.0)


def test_an_outage_fails_every_call() -> None:
    failure = domain.injected_failure(domain.Faults(outage=True), 0.999)
    assert failure is not None and "outage" in failure


def test_error_and_decline_rates_are_probabilities_of_the_roll() -> None:
    faults = domain.Faults(decline_rate=0.3, error_rate=0.2)
    assert domain.injected_failure(faults, 0.19) is not None
    assert domain.injected_failure(faults, 0.2) is None
    assert domain.declined_by_fault(faults, 0.29)
    assert not domain.declined_by_fault(faults, 0.3)
    certain = domain.Faults(decline_rate=1.0, error_rate=1.0)
    assert domain.injected_failure(certain, 0.999_999) is not None
    assert domain.declined_by_fault(certain, 0.999_999)


def test_each_charge_and_movement_gets_its_own_id() -> None:
    first = domain.authorize(VISA, key(), False)
    second = domain.authorize(VISA, key(), False)
    assert first.charge.charge_id != second.charge.charge_id
    assert first.movement is not None and second.movement is not None
    assert first.movement.movement_id != second.movement.movement_id
    assert isinstance(first.charge.charge_id, uuid.UUID)


def test_a_well_shaped_token_the_processor_does_not_know_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgument, match="payment_method: no such token 'tok_unknownBrand'"):
        domain.authorization("tok_unknownBrand", 1_000, "ride 42")
