"""The psp through its sidecar: Stripe-like money rules, idempotency keys (docs/saga.md,
"Idempotency keys at the edge"), its own ledger of money movements, fault knobs, and bad
input (the status codes of services/runtime/errors.py)."""

import argparse
import asyncio
import json
import uuid
from collections.abc import Callable, Iterator

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from psycopg_pool import AsyncConnectionPool

from ridectl import psp_cmd
from ridesaga.common.v1 import common_pb2
from ridesaga.psp.v1 import psp_pb2, psp_pb2_grpc
from services.psp import domain
from services.psp.adapters import PspStore
from services.runtime.topology import INFRA
from tests.support import sidecar_channel, status_of

CALL_TIMEOUT = 10.0
PSP_DB = f"host=127.0.0.1 port={INFRA.postgres} dbname=psp user=psp"
Psp = psp_pb2_grpc.PspServiceStub


@pytest.fixture(scope="module")
def psp() -> Iterator[Psp]:
    with sidecar_channel("psp") as channel:
        yield Psp(channel)


@pytest.fixture
def faulty(psp: Psp) -> Iterator[Psp]:
    """The psp, with every fault cleared again however the test ends."""
    yield psp
    psp.SetFaults(psp_pb2.Faults(), timeout=CALL_TIMEOUT)


def _key() -> str:
    return f"test-{uuid.uuid4()}"


def _ride() -> str:
    # Not "ride <id>": these charges belong to no ride, and the checker must not count them.
    return f"psp-test {uuid.uuid4()}"


def _authorize(
    psp: Psp, amount: int = 1_000, method: str = "tok_visa", key: str = "", description: str = ""
) -> psp_pb2.Charge:
    request = psp_pb2.AuthorizeRequest(
        idempotency_key=key or _key(),
        payment_method=method,
        amount_cents=amount,
        description=description or _ride(),
    )
    charge: psp_pb2.Charge = psp.Authorize(request, timeout=CALL_TIMEOUT)
    return charge


def _capture(psp: Psp, charge_id: str, amount: int, key: str = "") -> psp_pb2.Charge:
    request = psp_pb2.CaptureRequest(idempotency_key=key or _key(), charge_id=charge_id, amount_cents=amount)
    charge: psp_pb2.Charge = psp.Capture(request, timeout=CALL_TIMEOUT)
    return charge


def _void(psp: Psp, charge_id: str, key: str = "") -> psp_pb2.Charge:
    charge: psp_pb2.Charge = psp.Void(
        psp_pb2.VoidRequest(idempotency_key=key or _key(), charge_id=charge_id), timeout=CALL_TIMEOUT
    )
    return charge


def _refund(psp: Psp, charge_id: str, amount: int, key: str = "") -> psp_pb2.Charge:
    request = psp_pb2.RefundRequest(idempotency_key=key or _key(), charge_id=charge_id, amount_cents=amount)
    charge: psp_pb2.Charge = psp.Refund(request, timeout=CALL_TIMEOUT)
    return charge


def _movements(psp: Psp, charge_id: str = "", description: str = "") -> list[tuple[int, int]]:
    """(kind, amount_cents) of the matching movements, oldest first."""
    reply = psp.ListMovements(
        psp_pb2.ListMovementsRequest(charge_id=charge_id, description=description), timeout=CALL_TIMEOUT
    )
    return [(m.kind, m.amount_cents) for m in reply.movements]


def test_a_replay_returns_the_stored_charge_and_moves_money_once(psp: Psp) -> None:
    key = _key()
    first = _authorize(psp, 1_500, key=key, description="psp-test replay")
    assert first.status == psp_pb2.AUTHORIZED and first.authorized_cents == 1_500
    assert _authorize(psp, 1_500, key=key, description="psp-test replay") == first
    assert _movements(psp, first.charge_id) == [(psp_pb2.AUTHORIZE, 1_500)]

    captured = _capture(psp, first.charge_id, 1_200, key=key)
    assert _capture(psp, first.charge_id, 1_200, key=key) == captured
    assert _movements(psp, first.charge_id) == [(psp_pb2.AUTHORIZE, 1_500), (psp_pb2.CAPTURE, 1_200)]
    listed = psp.ListMovements(psp_pb2.ListMovementsRequest(charge_id=first.charge_id), timeout=CALL_TIMEOUT)
    assert {m.idempotency_key for m in listed.movements} == {key}
    assert {m.description for m in listed.movements} == {"psp-test replay"}


def test_a_replay_returns_the_response_of_its_time(psp: Psp) -> None:
    key, ride = _key(), _ride()
    authorized = _authorize(psp, key=key, description=ride)
    _void(psp, authorized.charge_id)
    assert _authorize(psp, key=key, description=ride) == authorized
    assert psp.GetCharge(psp_pb2.GetChargeRequest(charge_id=authorized.charge_id)).status == psp_pb2.VOIDED


def test_a_key_reused_with_other_parameters_is_refused_and_nothing_runs(psp: Psp) -> None:
    key, ride = _key(), _ride()
    _authorize(psp, 1_000, key=key, description=ride)
    code, message = status_of(lambda: _authorize(psp, 2_000, key=key, description=ride))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith("idempotency_key:") and key in message
    assert _movements(psp, description=ride) == [(psp_pb2.AUTHORIZE, 1_000)]


def test_keys_are_scoped_to_their_operation(psp: Psp) -> None:
    key = _key()
    charge = _authorize(psp, 1_000, key=key)
    _capture(psp, charge.charge_id, 1_000, key=key)
    _refund(psp, charge.charge_id, 400, key=key)
    kinds = [kind for kind, _ in _movements(psp, charge.charge_id)]
    assert kinds == [psp_pb2.AUTHORIZE, psp_pb2.CAPTURE, psp_pb2.REFUND]


def test_concurrent_calls_with_one_key_execute_once(psp: Psp) -> None:
    key, ride = _key(), _ride()
    request = psp_pb2.AuthorizeRequest(
        idempotency_key=key, payment_method="tok_visa", amount_cents=700, description=ride
    )
    calls = [psp.Authorize.future(request, timeout=CALL_TIMEOUT) for _ in range(10)]
    charges, aborted = [], []
    for call in calls:
        try:
            charges.append(call.result())
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED, error.details()
            assert "in progress" in (error.details() or "")
            aborted.append(error)
    assert len(charges) + len(aborted) == 10
    assert charges, "the call that executed must succeed"
    assert len({c.charge_id for c in charges}) == 1
    assert _movements(psp, description=ride) == [(psp_pb2.AUTHORIZE, 700)]


def test_capture_and_void_racing_on_one_charge_cannot_both_win(psp: Psp) -> None:
    for _ in range(5):
        charge = _authorize(psp, 1_000)
        capture = psp.Capture.future(
            psp_pb2.CaptureRequest(idempotency_key=_key(), charge_id=charge.charge_id, amount_cents=1_000),
            timeout=CALL_TIMEOUT,
        )
        void = psp.Void.future(
            psp_pb2.VoidRequest(idempotency_key=_key(), charge_id=charge.charge_id), timeout=CALL_TIMEOUT
        )
        won = []
        for call in (capture, void):
            try:
                won.append(call.result().status)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert len(won) == 1
        assert len(_movements(psp, charge.charge_id)) == 2


def test_a_key_in_flight_is_aborted_and_an_abandoned_one_is_taken_over(psp: Psp) -> None:
    """A request that crashed after claiming its key leaves the claim behind: a retry is
    ABORTED while the claim is fresh and completes the work once it is abandoned."""
    key, ride = _key(), _ride()
    params: dict[str, str | int] = {"payment_method": "tok_visa", "amount_cents": 900, "description": ride}
    fingerprint = domain.idempotency_key(domain.Operation.AUTHORIZE, key, **params).fingerprint
    with psycopg.connect(PSP_DB, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO idempotency_keys (operation, idempotency_key, fingerprint, owner) VALUES (%s, %s, %s, %s)",
            ("authorize", key, fingerprint, uuid.uuid4()),
        )
        code, message = status_of(lambda: _authorize(psp, 900, key=key, description=ride))
        assert code == grpc.StatusCode.ABORTED and "in progress" in message and key in message
        conn.execute(
            "UPDATE idempotency_keys SET claimed_at = now() - make_interval(secs => %s)"
            " WHERE operation = 'authorize' AND idempotency_key = %s",
            (domain.TAKEOVER_AFTER_SECONDS + 1, key),
        )
    charge = _authorize(psp, 900, key=key, description=ride)
    assert charge.status == psp_pb2.AUTHORIZED
    assert _authorize(psp, 900, key=key, description=ride) == charge
    assert _movements(psp, description=ride) == [(psp_pb2.AUTHORIZE, 900)]


def test_capture_takes_at_most_the_hold(psp: Psp) -> None:
    charge = _authorize(psp, 1_000)
    code, message = status_of(lambda: _capture(psp, charge.charge_id, 1_001))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "1001" in message and "1000" in message
    captured = _capture(psp, charge.charge_id, 800)
    assert (captured.status, captured.authorized_cents, captured.captured_cents) == (psp_pb2.CAPTURED, 1_000, 800)
    assert psp.GetCharge(psp_pb2.GetChargeRequest(charge_id=charge.charge_id), timeout=CALL_TIMEOUT) == captured
    code, _ = status_of(lambda: _capture(psp, charge.charge_id, 100))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_refused_call_releases_its_key(psp: Psp) -> None:
    charge, key = _authorize(psp, 1_000), _key()
    code, _ = status_of(lambda: _capture(psp, charge.charge_id, 5_000, key=key))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = status_of(lambda: _capture(psp, charge.charge_id, 5_000, key=key))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert _movements(psp, charge.charge_id) == [(psp_pb2.AUTHORIZE, 1_000)]


def test_void_only_releases_an_uncaptured_hold(psp: Psp) -> None:
    captured = _authorize(psp, 1_000)
    _capture(psp, captured.charge_id, 1_000)
    code, message = status_of(lambda: _void(psp, captured.charge_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "captured" in message

    held = _authorize(psp, 1_000)
    voided = _void(psp, held.charge_id)
    assert voided.status == psp_pb2.VOIDED
    assert _movements(psp, held.charge_id) == [(psp_pb2.AUTHORIZE, 1_000), (psp_pb2.VOID, 1_000)]
    code, _ = status_of(lambda: _capture(psp, held.charge_id, 1_000))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    code, _ = status_of(lambda: _void(psp, held.charge_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_refunds_never_exceed_the_captured_amount(psp: Psp) -> None:
    charge = _authorize(psp, 1_000)
    code, _ = status_of(lambda: _refund(psp, charge.charge_id, 100))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    _capture(psp, charge.charge_id, 800)
    assert _refund(psp, charge.charge_id, 500).refunded_cents == 500
    code, message = status_of(lambda: _refund(psp, charge.charge_id, 301))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "301" in message and "300" in message
    assert _refund(psp, charge.charge_id, 300).refunded_cents == 800
    code, _ = status_of(lambda: _refund(psp, charge.charge_id, 1))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert _movements(psp, charge.charge_id) == [
        (psp_pb2.AUTHORIZE, 1_000),
        (psp_pb2.CAPTURE, 800),
        (psp_pb2.REFUND, 500),
        (psp_pb2.REFUND, 300),
    ]


def test_a_declined_card_is_a_result_that_moves_no_money(psp: Psp) -> None:
    ride = _ride()
    charge = _authorize(psp, 1_000, method="tok_chargeDeclined", description=ride)
    assert (charge.status, charge.decline_reason, charge.authorized_cents) == (psp_pb2.DECLINED, "card_declined", 0)
    assert charge.description == ride
    code, _ = status_of(lambda: _capture(psp, charge.charge_id, 1_000))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert _movements(psp, description=ride) == []


def test_faults_are_set_read_and_cleared(faulty: Psp) -> None:
    wanted = psp_pb2.Faults(decline_rate=0.25, error_rate=0.5, latency_ms=10, outage=True)
    assert faulty.SetFaults(wanted, timeout=CALL_TIMEOUT) == wanted
    assert faulty.GetFaults(psp_pb2.GetFaultsRequest(), timeout=CALL_TIMEOUT) == wanted
    assert faulty.SetFaults(psp_pb2.Faults(), timeout=CALL_TIMEOUT) == psp_pb2.Faults()
    assert faulty.GetFaults(psp_pb2.GetFaultsRequest(), timeout=CALL_TIMEOUT) == psp_pb2.Faults()


def test_the_decline_rate_declines_approvable_cards(faulty: Psp) -> None:
    faulty.SetFaults(psp_pb2.Faults(decline_rate=1.0), timeout=CALL_TIMEOUT)
    ride = _ride()
    charge = _authorize(faulty, 1_000, description=ride)
    assert charge.status == psp_pb2.DECLINED and charge.decline_reason
    assert _movements(faulty, description=ride) == []


def test_errors_and_outages_fail_money_calls_only(faulty: Psp) -> None:
    charge = _authorize(faulty, 1_000)
    for faults in (psp_pb2.Faults(error_rate=1.0), psp_pb2.Faults(outage=True)):
        faulty.SetFaults(faults, timeout=CALL_TIMEOUT)
        for call in (
            lambda: _authorize(faulty),
            lambda: _capture(faulty, charge.charge_id, 1_000),
            lambda: _void(faulty, charge.charge_id),
            lambda: _refund(faulty, charge.charge_id, 1),
        ):
            code, _ = status_of(call)
            assert code == grpc.StatusCode.UNAVAILABLE
        assert faulty.GetCharge(psp_pb2.GetChargeRequest(charge_id=charge.charge_id), timeout=CALL_TIMEOUT) == charge
        assert _movements(faulty, charge.charge_id) == [(psp_pb2.AUTHORIZE, 1_000)]
        assert faulty.Probe(common_pb2.ProbeRequest(), timeout=CALL_TIMEOUT).ready
    faulty.SetFaults(psp_pb2.Faults(), timeout=CALL_TIMEOUT)
    assert _capture(faulty, charge.charge_id, 1_000).status == psp_pb2.CAPTURED


def test_latency_delays_money_calls_only(faulty: Psp) -> None:
    charge = _authorize(faulty, 1_000)
    faulty.SetFaults(psp_pb2.Faults(latency_ms=30_000), timeout=CALL_TIMEOUT)
    code, _ = status_of(
        lambda: faulty.Void(psp_pb2.VoidRequest(idempotency_key=_key(), charge_id=charge.charge_id), timeout=1.0)
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert faulty.GetCharge(psp_pb2.GetChargeRequest(charge_id=charge.charge_id), timeout=CALL_TIMEOUT) == charge


def _ridectl_faults(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    psp_cmd.add_arguments(parser)
    assert psp_cmd.faults(parser.parse_args([*argv, "--json"])) == 0
    shown: dict[str, object] = json.loads(capsys.readouterr().out)
    return shown


def test_ridectl_changes_only_the_faults_it_names(faulty: Psp, capsys: pytest.CaptureFixture[str]) -> None:
    none = {"decline_rate": 0.0, "error_rate": 0.0, "latency_ms": 0, "outage": False}
    assert _ridectl_faults(capsys, "--clear") == none
    assert _ridectl_faults(capsys, "--latency-ms", "5") == {**none, "latency_ms": 5}
    assert _ridectl_faults(capsys, "--decline-rate", "0.5") == {**none, "latency_ms": 5, "decline_rate": 0.5}
    assert _ridectl_faults(capsys) == {**none, "latency_ms": 5, "decline_rate": 0.5}
    assert _ridectl_faults(capsys, "--clear", "--outage") == {**none, "outage": True}
    assert _ridectl_faults(capsys, "--no-outage") == none
    with pytest.raises(grpc.RpcError) as error:
        _ridectl_faults(capsys, "--error-rate", "2")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _refused(method: Callable[..., object], request: Message, starts: str) -> None:
    """The call is refused as bad input, with a message that starts with `starts`."""
    code, message = status_of(lambda: method(request, timeout=CALL_TIMEOUT))
    assert (code, message[: len(starts)]) == (grpc.StatusCode.INVALID_ARGUMENT, starts), message


def test_bad_input_on_every_money_call(psp: Psp) -> None:
    charge = _authorize(psp).charge_id
    for request, starts in (
        (psp_pb2.AuthorizeRequest(payment_method="tok_visa", amount_cents=1), "idempotency_key: is required"),
        (
            psp_pb2.AuthorizeRequest(idempotency_key="k" * 256, payment_method="tok_visa", amount_cents=1),
            "idempotency_key:",
        ),
        (psp_pb2.AuthorizeRequest(idempotency_key=_key(), amount_cents=1), "payment_method: is required"),
        (psp_pb2.AuthorizeRequest(idempotency_key=_key(), payment_method="visa", amount_cents=1), "payment_method:"),
        (psp_pb2.AuthorizeRequest(idempotency_key=_key(), payment_method="tok_visa"), "amount_cents: must be positive"),
        (psp_pb2.AuthorizeRequest(idempotency_key=_key(), payment_method="tok_visa", amount_cents=-1), "amount_cents:"),
    ):
        _refused(psp.Authorize, request, starts)
    longest = _key().ljust(255, "k")
    assert _authorize(psp, key=longest).status == psp_pb2.AUTHORIZED

    for capture, starts in (
        (psp_pb2.CaptureRequest(charge_id=charge, amount_cents=1), "idempotency_key: is required"),
        (psp_pb2.CaptureRequest(idempotency_key=_key(), amount_cents=1), "charge_id: is required"),
        (psp_pb2.CaptureRequest(idempotency_key=_key(), charge_id="ch_1", amount_cents=1), "charge_id: must be a UUID"),
        (psp_pb2.CaptureRequest(idempotency_key=_key(), charge_id=charge), "amount_cents: must be positive"),
    ):
        _refused(psp.Capture, capture, starts)
    for void, starts in (
        (psp_pb2.VoidRequest(charge_id=charge), "idempotency_key: is required"),
        (psp_pb2.VoidRequest(idempotency_key=_key(), charge_id="42"), "charge_id: must be a UUID"),
    ):
        _refused(psp.Void, void, starts)
    for refund, starts in (
        (psp_pb2.RefundRequest(charge_id=charge, amount_cents=1), "idempotency_key: is required"),
        (psp_pb2.RefundRequest(idempotency_key=_key(), amount_cents=1), "charge_id: is required"),
        (psp_pb2.RefundRequest(idempotency_key=_key(), charge_id=charge, amount_cents=-3), "amount_cents:"),
    ):
        _refused(psp.Refund, refund, starts)
    assert _movements(psp, charge) == [(psp_pb2.AUTHORIZE, 1_000)]


def test_unknown_charges_are_not_found(psp: Psp) -> None:
    unknown = str(uuid.uuid4())
    not_found = grpc.StatusCode.NOT_FOUND
    for call in (
        lambda: _capture(psp, unknown, 1),
        lambda: _void(psp, unknown),
        lambda: _refund(psp, unknown, 1),
        lambda: psp.GetCharge(psp_pb2.GetChargeRequest(charge_id=unknown), timeout=CALL_TIMEOUT),
    ):
        code, message = status_of(call)
        assert code == not_found and unknown in message
    assert _movements(psp, unknown) == []


def test_bad_input_on_every_read_and_fault_call(faulty: Psp) -> None:
    _refused(faulty.GetCharge, psp_pb2.GetChargeRequest(), "charge_id: is required")
    _refused(faulty.GetCharge, psp_pb2.GetChargeRequest(charge_id="x"), "charge_id: must be a UUID")
    _refused(faulty.ListMovements, psp_pb2.ListMovementsRequest(charge_id="x"), "charge_id: must be a UUID")
    for faults, field in (
        (psp_pb2.Faults(decline_rate=1.5), "decline_rate:"),
        (psp_pb2.Faults(decline_rate=float("nan")), "decline_rate:"),
        (psp_pb2.Faults(error_rate=-0.1), "error_rate:"),
        (psp_pb2.Faults(latency_ms=-1), "latency_ms:"),
    ):
        _refused(faulty.SetFaults, faults, field)
    assert faulty.GetFaults(psp_pb2.GetFaultsRequest(), timeout=CALL_TIMEOUT) == psp_pb2.Faults()


def _age(keys: list[str], hours: float) -> None:
    """Moves the keys' claim and completion `hours` into the past, as if that time had passed."""
    with psycopg.connect(PSP_DB, autocommit=True) as conn:
        conn.execute(
            "UPDATE idempotency_keys SET claimed_at = claimed_at - %s * interval '1 hour',"
            " completed_at = completed_at - %s * interval '1 hour' WHERE idempotency_key = ANY(%s)",
            (hours, hours, keys),
        )


def _kept(keys: list[str]) -> set[str]:
    with psycopg.connect(PSP_DB, autocommit=True) as conn:
        rows = conn.execute("SELECT idempotency_key FROM idempotency_keys WHERE idempotency_key = ANY(%s)", (keys,))
        return {row[0] for row in rows}


def _reap() -> int:
    """The psp's own reaper (it runs every minute in the service), run once now."""

    async def reap() -> int:
        async with AsyncConnectionPool(PSP_DB, min_size=1, max_size=1) as pool:
            return await PspStore(pool, lambda charge: b"").reap_keys()

    return asyncio.run(reap())


def test_keys_are_reaped_after_24_hours_and_a_reaped_key_never_moves_money_twice(psp: Psp) -> None:
    moved, declined, young = _key(), _key(), _key()
    ride = _ride()
    charge = _authorize(psp, 700, key=moved, description=ride)
    refused = _authorize(psp, method=domain.DECLINED_TOKEN, key=declined, description=ride)
    kept = _authorize(psp, 900, key=young, description=ride)
    _age([moved, declined], hours=24.5)
    _age([young], hours=23.5)

    assert _reap() >= 2
    assert _kept([moved, declined, young]) == {young}
    assert _authorize(psp, 900, key=young, description=ride) == kept, "a key younger than 24 h is replayed"

    code, message = status_of(lambda: _authorize(psp, 700, key=moved, description=ride))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and moved in message and "reaped" in message
    assert _movements(psp, description=ride) == [(psp_pb2.AUTHORIZE, 700), (psp_pb2.AUTHORIZE, 900)]
    assert _kept([moved]) == set(), "the refused call released the key"
    assert psp.GetCharge(psp_pb2.GetChargeRequest(charge_id=charge.charge_id)).status == psp_pb2.AUTHORIZED

    again = _authorize(psp, method=domain.DECLINED_TOKEN, key=declined, description=ride)
    assert again.status == psp_pb2.DECLINED and again.charge_id != refused.charge_id, "a reaped key is new again"
