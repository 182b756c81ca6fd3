"""`ridectl explain` against the running stack: every fact it tells about one real ride is
checked here against the databases and Kafka, read independently."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from deploy.local import paths
from services.rider.client import DOWNTOWN, WHARF, RiderClient
from services.runtime.messages import decode
from services.runtime.topology import INFRA, Group
from tests.e2e.rides import LOS_ANGELES, PATIENT
from tests.support import chromium, db_rows, ride_story, ridectl, wait_for


def _book(pickup: tuple[float, float], cancel: bool = False) -> str:
    with RiderClient(retry=PATIENT) as client:
        rider = client.create_rider("Explained")
        booked = client.book(rider.rider_id, pickup, WHARF)
        if cancel:
            # Once the hold is placed and matching has begun, so there is something to undo.
            wait_for(
                lambda: client.get_ride(booked.ride_id).state in ("MATCHING", "MATCH_BACKOFF"),
                30,
                f"ride {booked.ride_id} to be matching",
                explain=lambda: ride_story(booked.ride_id),
            )
            client.cancel(booked.ride_id)
        followed = client.follow(booked.ride_id, 120)
    assert followed.terminal and followed.ride is not None, ride_story(booked.ride_id)
    return booked.ride_id


def _explained(ride_id: str, *extra: str) -> dict[str, Any]:
    """`ridectl explain --json`, once the trace has reached Jaeger (spans arrive in batches)."""

    def ready() -> dict[str, Any] | None:
        result = ridectl("explain", ride_id, "--json", *extra)
        assert result.returncode == 0, result.stderr
        found: dict[str, Any] = json.loads(result.stdout)
        return found if found["trace"] and found["critical_path"] else None

    return wait_for(ready, 60, f"the story of ride {ride_id} with its trace", interval=1.0)


def _first_at(topic: str, partition: int, offset: int, isolation: str = "read_committed") -> Any:
    """The first record a consumer of `isolation` reads from `offset` on, read on its own."""
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{INFRA.kafka}",
            "group.id": f"test-explain-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        msg = wait_for(lambda: consumer.poll(1.0), 20, f"a record from {topic}/{partition}@{offset}")
        assert msg.error() is None, msg.error()
        return msg
    finally:
        consumer.close()


def _record_at(topic: str, partition: int, offset: int) -> tuple[bytes | None, str]:
    """The key and message id of the committed record at one offset."""
    msg = _first_at(topic, partition, offset)
    assert msg.offset() == offset
    return msg.key(), decode(msg.value()).message_id


def _check_common(ride_id: str, found: dict[str, Any]) -> None:
    assert found["ride"]["ride_id"] == ride_id
    (state, trace_id) = db_rows("trip", "SELECT state, trace_id FROM rides WHERE ride_id = %s", (ride_id,))[0]
    assert (found["ride"]["state"], found["ride"]["trace_id"]) == (state, trace_id)
    log = db_rows("trip", "SELECT seq, step, status, hlc FROM saga_log WHERE ride_id = %s ORDER BY seq", (ride_id,))
    assert [(e["seq"], e["step"], e["status"], e["hlc"]) for e in found["log"]] == [tuple(row) for row in log]
    committed = [r for r in found["records"] if r["committed"]]
    assert committed, "no Kafka record of the ride"
    for r in committed:
        key, message_id = _record_at(r["topic"], r["partition"], r["offset"])
        assert key == ride_id.encode() and message_id == r["message_id"], r
    assert {r["message_id"] for r in committed} >= {f"{ride_id}:requested", f"{ride_id}:authorize_payment"}
    for inbox in found["inboxes"]:
        table = "processed_messages" if inbox["service"] == "trip" else "handled_commands"
        rows = db_rows(inbox["service"], f"SELECT topics FROM {table} WHERE message_id = %s", (inbox["message_id"],))
        assert rows and list(rows[0][0]) == [s["topic"] for s in inbox["sent"]], inbox
    keys = db_rows(
        "psp",
        "SELECT operation, idempotency_key FROM idempotency_keys WHERE idempotency_key LIKE %s",
        (f"{ride_id}:%",),
    )
    assert sorted((k["operation"], k["key"]) for k in found["psp_keys"]) == sorted(tuple(k) for k in keys)
    moved = db_rows(
        "psp", "SELECT kind, amount_cents FROM money_movements WHERE description = %s", (f"ride {ride_id}",)
    )
    assert sorted((m["kind"], m["amount_cents"]) for m in found["movements"]) == sorted(tuple(m) for m in moved)
    ledger = db_rows(
        "payment", "SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries WHERE ride_id = %s", (ride_id,)
    )
    assert found["ledger_sum"] == ledger[0][0] == 0
    # Jaeger, read through its other API (v1; explain reads v3): the same trace, the same spans.
    with urllib.request.urlopen(f"http://127.0.0.1:{INFRA.jaeger_query}/api/traces/{trace_id}", timeout=10) as r:
        [stored] = json.load(r)["data"]
    told = {s["span_id"]: s for s in found["trace"]["spans"]}
    by_id = {s["spanID"]: s for s in stored["spans"]}
    assert set(told) <= set(by_id) and len(told) > 20  # spans still arriving may only add
    for span_id, span in told.items():
        assert round(span["duration_ms"] * 1000) == by_id[span_id]["duration"], span
        assert span["operation"] == by_id[span_id]["operationName"], span
    assert set(found["critical_path"]) <= set(told)
    _check_batches(found)
    assert found["gaps"] == [], found["gaps"]


# Who writes each kind of record, by design: the saga loops in Kafka transactions under
# their group's transactional id, the gRPC entrypoints with a plain idempotent producer.
WRITER = {
    "authorize_payment": Group.ORCHESTRATOR, "capture_payment": Group.ORCHESTRATOR, "void_payment": Group.ORCHESTRATOR,
    "reserve_driver": Group.ORCHESTRATOR, "confirm_driver": Group.ORCHESTRATOR, "release_driver": Group.ORCHESTRATOR,
    "payment_authorized": Group.PAYMENT, "payment_captured": Group.PAYMENT, "payment_voided": Group.PAYMENT,
    "payment_declined": Group.PAYMENT, "driver_offered": Group.DRIVER, "driver_released": Group.DRIVER,
    "no_driver_available": Group.DRIVER, "ride_requested": None, "cancel_requested": None,
    "driver_accepted": None, "driver_declined": None, "trip_completed": None, "step_timed_out": None,
}  # fmt: skip


def _check_batches(found: dict[str, Any]) -> None:
    """Every committed record sits in exactly one batch, from the producer that design says
    writes it, in a committed transaction when that producer is transactional."""
    for r in (r for r in found["records"] if r["committed"]):
        [batch] = [
            b for b in found["batches"]
            if (b["topic"], b["partition"]) == (r["topic"], r["partition"])
            and b["base_offset"] <= r["offset"] <= b["last_offset"]
        ]  # fmt: skip
        writer = WRITER[r["message_type"]]
        if writer is None:
            assert not batch["transactional"], (r, batch)
        else:
            assert batch["transactional"] and batch["outcome"] == "COMMIT", (r, batch)
            assert batch["named_by"] == "__transaction_state" and batch["producer"].startswith(writer.value), batch


def test_a_completed_rides_story_matches_the_databases_and_kafka(tmp_path: Path) -> None:
    ride_id = _book(DOWNTOWN)
    found = _explained(ride_id)
    assert found["ride"]["state"] == "COMPLETED"
    _check_common(ride_id, found)
    driver_id = found["ride"]["driver_id"]
    offered = db_rows(
        "driver",
        "SELECT envelopes FROM handled_commands WHERE message_id LIKE %s",
        (f"{ride_id}:reserve_driver:%",),
    )
    fences = {
        env.driver_offered.fence
        for (envelopes,) in offered
        for env in (decode(bytes(raw)) for raw in envelopes)
        if env.WhichOneof("body") == "driver_offered" and env.driver_offered.driver_id == driver_id
    }
    (row_fence,) = db_rows("driver", "SELECT fence FROM drivers WHERE driver_id = %s", (driver_id,))[0]
    reservation = found["reservation"]
    assert reservation["offered_fence"] in fences and reservation["offered_fence"] == found["ride"]["fence"]
    assert reservation["row_fence"] == row_fence >= reservation["offered_fence"]
    assert found["compensations"] == []
    assert {k["operation"] for k in found["psp_keys"]} >= {"authorize", "capture"}

    _check_page(ride_id, found, tmp_path)


def _check_page(ride_id: str, found: dict[str, Any], tmp_path: Path) -> None:
    """The --html page, loaded in headless Chromium: no console error, its script ran, one
    bar per span; a screenshot is left in reports/explain.png."""
    page = tmp_path / "ride.html"
    result = ridectl("explain", ride_id, "--html", str(page))
    assert result.returncode == 0, result.stderr
    dom, shot_log = chromium(page, "explain.png", "1500,1800", tmp_path / "profile")
    report = paths.REPO / "reports"
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert [line for line in console if "Error" in line or "Uncaught" in line] == [], console
    summary = re.search(r'<span id="summary">(\d+) spans drawn, (\d+) on the critical path', dom.stdout)
    assert summary is not None, "the page's script ran"
    spans_on_page = int(summary.group(1))
    assert spans_on_page == len(re.findall(r'<rect class="span"', dom.stdout)) >= len(found["trace"]["spans"])
    assert int(summary.group(2)) >= len(found["critical_path"]) > 0
    assert ride_id in dom.stdout and found["ride"]["trace_id"] in dom.stdout
    assert (report / "explain.png").stat().st_size > 10_000, shot_log[-500:]


def test_a_cancelled_rides_compensations_are_told_in_the_order_they_ran() -> None:
    ride_id = _book(LOS_ANGELES, cancel=True)  # no driver there: cancelled while matching
    found = _explained(ride_id)
    assert found["ride"]["state"] == "CANCELLED"
    _check_common(ride_id, found)
    compensated = db_rows(
        "trip",
        "SELECT step FROM saga_log WHERE ride_id = %s AND status = 'compensating' ORDER BY seq",
        (ride_id,),
    )
    assert [c["step"] for c in found["compensations"]] == [step for (step,) in compensated]
    assert [c["step"] for c in found["compensations"]] == ["void_payment"], "no driver was held, the hold was"
    assert found["compensations_in_reverse_order"]


def test_an_unknown_or_malformed_ride_is_one_error_line() -> None:
    unknown = ridectl("explain", str(uuid.uuid4()))
    assert unknown.returncode == 1 and unknown.stderr.startswith("ridectl: error: NOT_FOUND")
    assert len(unknown.stderr.strip().splitlines()) == 1
    malformed = ridectl("explain", "not-a-ride")
    assert malformed.returncode == 2 and "ridectl: error: INVALID_ARGUMENT" in malformed.stderr


def test_a_ride_that_lived_through_a_kill_says_which_fault_it_met_and_what_saved_it(tmp_path: Path) -> None:
    drilled = ridectl(
        "drill", "run", "kill-payment-at-CAPTURING", "--rides", "8", "--rate", "4", "--report", str(tmp_path), "--json"
    )
    assert drilled.returncode == 0, (drilled.stdout[-3000:], drilled.stderr[-3000:])
    [fault] = json.loads(drilled.stdout)["faults"]
    ride_id = fault["detail"]["ride_id"]  # the ride the kill waited for, at CAPTURING
    found = _explained(ride_id, "--drill", str(tmp_path))
    assert found["ride"]["state"] == "COMPLETED"
    _check_common(ride_id, found)
    drill = found["drill"]
    assert drill["scenario"] == "kill-payment-at-CAPTURING" and drill["valid"] is True
    [met] = [f for f in drill["faults"] if f["aimed_here"]]
    assert (met["name"], met["target"], met["step"]) == ("kill", "payment", "CAPTURING")
    assert (met["start_s"], met["end_s"], met["recovery_s"]) == (
        fault["start"],
        fault["end"],
        fault["recovery_seconds"],
    )
    # Each rescue it claims is in the records: read here from the sources themselves.
    for rescue in found["rescues"]:
        if rescue["kind"] == "resent":
            seq = int(rescue["evidence"].split()[1].rstrip(":"))
            assert db_rows("trip", "SELECT status FROM saga_log WHERE seq = %s", (seq,)) == [("resent",)]
        elif rescue["kind"] in ("aborted batch", "fenced zombie"):
            where = next(w for w in rescue["evidence"].split() if "@" in w)
            topic, rest = where.split("/")
            partition, offset = (int(x) for x in rest.split("@"))
            # read_uncommitted sees the aborted record there; read_committed skips past it.
            assert _first_at(topic, partition, offset, "read_uncommitted").offset() == offset, rescue
            assert _first_at(topic, partition, offset).offset() > offset, rescue
    told = ridectl("explain", ride_id, "--drill", str(tmp_path))
    assert told.returncode == 0, told.stderr
    assert "The drill it lived through: kill-payment-at-CAPTURING (valid)" in told.stdout
    assert "kill payment at CAPTURING, aimed at this ride" in told.stdout
