"""`ridectl explain`'s pure parts, on hand-built facts: the checks (ledger sum, the order of
the compensations, what saved a ride), DumpLogSegments' output parsed, and the renderers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from ridectl import explain
from ridectl.explain import (
    Inboxed,
    KafkaRecord,
    LogEntry,
    Movement,
    Posting,
    PspKey,
    Reservation,
    Ride,
    Sent,
    SpanFact,
    Story,
    Trace,
    as_json,
    matchings,
    text,
)
from ridectl.rides import UsageError

REPO = Path(__file__).resolve().parents[2]
RIDE = "5b0c3f2e-9d7a-4c1b-8e6f-2a1d3c4b5e6f"
DRIVER = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"

# DumpLogSegments --print-data-log --value-decoder-class ...DefaultDecoder, in the format its
# source prints (a line per batch, "| offset: ..." per record, endTxnMarker in control batches).
DUMP = f"""Dumping /tmp/ridesaga/kafka/data/trip.replies-1/00000000000000000000.log
Log starting offset: 0
baseOffset: 40 lastOffset: 41 count: 2 baseSequence: 0 lastSequence: 1 producerId: 1002 producerEpoch: 3 \
partitionLeaderEpoch: 0 isTransactional: true isControl: false deleteHorizonMs: OptionalLong.empty position: 0 \
CreateTime: 1712345678901 size: 400 magic: 2 compresscodec: none crc: 123456 isvalid: true
| offset: 40 CreateTime: 1712345678901 keySize: 36 valueSize: 120 sequence: 0 headerKeys: [traceparent] \
key: {RIDE} payload: [B@1b2c3d4
| offset: 41 CreateTime: 1712345678901 keySize: 36 valueSize: 120 sequence: 1 headerKeys: [traceparent] \
key: 00000000-0000-0000-0000-000000000000 payload: [B@5e6f7a8
baseOffset: 42 lastOffset: 42 count: 1 baseSequence: -1 lastSequence: -1 producerId: 1002 producerEpoch: 3 \
partitionLeaderEpoch: 0 isTransactional: true isControl: true deleteHorizonMs: OptionalLong.empty position: 400 \
CreateTime: 1712345678950 size: 78 magic: 2 compresscodec: none crc: 654321 isvalid: true
| offset: 42 CreateTime: 1712345678950 keySize: 4 valueSize: 6 sequence: -1 headerKeys: [] endTxnMarker: ABORT \
coordinatorEpoch: 0
baseOffset: 43 lastOffset: 43 count: 1 baseSequence: 2 lastSequence: 2 producerId: 1002 producerEpoch: 4 \
partitionLeaderEpoch: 0 isTransactional: true isControl: false deleteHorizonMs: OptionalLong.empty position: 478 \
CreateTime: 1712345679100 size: 200 magic: 2 compresscodec: none crc: 111 isvalid: true
| offset: 43 CreateTime: 1712345679100 keySize: 36 valueSize: 120 sequence: 2 headerKeys: [traceparent] \
key: {RIDE} payload: [B@9a0b1c2
baseOffset: 44 lastOffset: 44 count: 1 baseSequence: -1 lastSequence: -1 producerId: 1002 producerEpoch: 4 \
partitionLeaderEpoch: 0 isTransactional: true isControl: true deleteHorizonMs: OptionalLong.empty position: 678 \
CreateTime: 1712345679120 size: 78 magic: 2 compresscodec: none crc: 222 isvalid: true
| offset: 44 CreateTime: 1712345679120 keySize: 4 valueSize: 6 sequence: -1 headerKeys: [] endTxnMarker: COMMIT \
coordinatorEpoch: 0
baseOffset: 45 lastOffset: 45 count: 1 baseSequence: 0 lastSequence: 0 producerId: 7 producerEpoch: 0 \
partitionLeaderEpoch: 0 isTransactional: false isControl: false deleteHorizonMs: OptionalLong.empty position: 756 \
CreateTime: 1712345680000 size: 200 magic: 2 compresscodec: none crc: 333 isvalid: true
| offset: 45 CreateTime: 1712345680000 keySize: 36 valueSize: 110 sequence: 0 headerKeys: [traceparent] \
key: {RIDE} payload: [B@3d4e5f6
"""
TRANSACTION_LOG = """Dumping /tmp/ridesaga/kafka/data/__transaction_state-2/00000000000000000000.log
Log starting offset: 0
baseOffset: 0 lastOffset: 0 count: 1 baseSequence: -1 lastSequence: -1 producerId: -1 producerEpoch: -1 \
partitionLeaderEpoch: 0 isTransactional: false isControl: false deleteHorizonMs: OptionalLong.empty position: 0 \
CreateTime: 1712345600000 size: 120 magic: 2 compresscodec: none crc: 1 isvalid: true
| offset: 0 CreateTime: 1712345600000 keySize: 25 valueSize: 37 sequence: -1 headerKeys: [] \
key: {"type":"0","data":{"transactionalId":"payment-participant"}} \
payload: {"version":"0","data":{"producerId":1002,"producerEpoch":4,"transactionTimeoutMs":15000,\
"transactionStatus":"CompleteCommit","transactionPartitions":[],"transactionLastUpdateTimestampMs":1,\
"transactionStartTimestampMs":1}}
| offset: 1 CreateTime: 1712345600001 keySize: 25 valueSize: 5 sequence: -1 headerKeys: [] \
key: {"type":"0","data":{"transactionalId":"gone"}} payload: <DELETE>
"""


def _log(seq: int, step: str, status: str, detail: str = "", message_id: str = "", **epochs: int) -> LogEntry:
    return LogEntry(
        seq,
        step,
        status,
        detail,
        f"1712345678{seq:03d}.0",
        message_id or f"{RIDE}:requested",
        "",
        0,
        1712345678000 + seq * 100,
        epochs.get("sweeper_epoch"),
        epochs.get("epoch_in_force"),
    )


def _ride(state: str = "COMPLETED", outcome: str = "completed") -> Ride:
    return Ride(RIDE, "r1", state, outcome, 1250, DRIVER, 41, "ch_1", "ab" * 16, (), 1712345678000)


def _record(
    topic: str, offset: int, kind: str, message_id: str, committed: bool = True, partition: int = 1
) -> KafkaRecord:
    return KafkaRecord(topic, partition, offset, kind, message_id, "", f"1712345678{offset:03d}.0", committed)


COMPLETED_LOG = (
    _log(1, "authorize_payment", "started", "1250 cents"),
    _log(2, "authorize_payment", "ok", "ch_1", f"{RIDE}:authorize_payment:reply"),
    _log(3, "match_driver", "started", "attempt 1", f"{RIDE}:authorize_payment:reply"),
    _log(4, "match_driver", "offered", DRIVER, f"{RIDE}:reserve_driver:1:reply"),
    _log(5, "driver_accepts", "ok", f"{DRIVER} (pivot)", f"{RIDE}:offer:41"),
    _log(6, "complete_ride", "ok", DRIVER, f"{RIDE}:completed:41"),
    _log(7, "capture_payment", "started", "", f"{RIDE}:completed:41"),
    _log(8, "capture_payment", "ok", "1250 cents", f"{RIDE}:capture_payment:reply"),
    _log(9, "ride", "completed", "", f"{RIDE}:capture_payment:reply"),
)
CANCELLED_LOG = (
    _log(1, "authorize_payment", "started", "1250 cents"),
    _log(2, "authorize_payment", "ok", "ch_1", f"{RIDE}:authorize_payment:reply"),
    _log(3, "match_driver", "started", "attempt 1"),
    _log(4, "match_driver", "offered", DRIVER, f"{RIDE}:reserve_driver:1:reply"),
    _log(5, "release_driver", "compensating", "rider_cancelled", f"{RIDE}:cancel"),
    _log(6, "release_driver", "compensated", "", f"{RIDE}:release_driver:{DRIVER}:41:reply"),
    _log(7, "void_payment", "compensating", "rider_cancelled", f"{RIDE}:release_driver:{DRIVER}:41:reply"),
    _log(8, "void_payment", "compensated", "", f"{RIDE}:void_payment:reply"),
    _log(9, "ride", "cancelled", "rider_cancelled", f"{RIDE}:void_payment:reply"),
)


def _trace() -> Trace:
    spans = (
        SpanFact("a", "", "rider", "RequestRide", 0.0, 900.0, False, True),
        SpanFact("b", "a", "trip", "StartRide", 1.0, 5.0, False, False),
        SpanFact("c", "a", "payment", "payment.commands process capture_payment", 800.0, 99.0, False, True),
        SpanFact("d", "c", "psp", "Capture", 810.0, 80.0, True, True),
    )
    return Trace("ab" * 16, 900.0, spans)


def completed_story() -> Story:
    records = (
        _record("trip.commands", 3, "ride_requested", f"{RIDE}:requested"),
        _record("payment.commands", 7, "authorize_payment", f"{RIDE}:authorize_payment"),
        _record("trip.replies", 40, "payment_authorized", f"{RIDE}:authorize_payment:reply", committed=False),
        _record("trip.replies", 43, "payment_authorized", f"{RIDE}:authorize_payment:reply"),
        _record("driver.commands", 9, "reserve_driver", f"{RIDE}:reserve_driver:1"),
        _record("trip.replies", 45, "driver_accepted", f"{RIDE}:offer:41"),
        _record("payment.commands", 8, "capture_payment", f"{RIDE}:capture_payment"),
        _record("driver.commands", 10, "release_driver", f"{RIDE}:release_driver:{DRIVER}:41"),
    )
    batches = tuple(
        explain.link_batches(records, {("trip.replies", 1): explain.parse_dump(DUMP)}, {1002: "payment-participant"})
    )
    inboxes = (
        Inboxed(
            "payment",
            f"{RIDE}:authorize_payment",
            (Sent("trip.replies", "payment_authorized", f"{RIDE}:authorize_payment:reply", "hold_id=ch_1"),),
        ),
        Inboxed(
            "driver",
            f"{RIDE}:reserve_driver:1",
            (Sent("trip.replies", "driver_offered", f"{RIDE}:reserve_driver:1:reply", "fence=41"),),
        ),
    )
    return Story(
        _ride(),
        COMPLETED_LOG,
        records,
        batches,
        inboxes,
        Reservation(DRIVER, 41, 57, "a-later-ride", False),
        (PspKey("authorize", f"{RIDE}:authorize", True), PspKey("capture", f"{RIDE}:capture", True)),
        (
            Movement("authorize", 1250, f"{RIDE}:authorize", "ch_1"),
            Movement("capture", 1250, f"{RIDE}:capture", "ch_1"),
        ),
        None,
        (Posting("rider", -1250, "m"), Posting("driver", 937, "m"), Posting("platform", 313, "m")),
        _trace(),
        ("Jaeger: an example gap",),
    )


def test_the_ledger_of_a_completed_ride_sums_to_zero_and_an_unbalanced_one_is_told() -> None:
    story = completed_story()
    assert explain.ledger_sum(story) == 0
    assert "ledger sum 0 cents: balanced" in explain.text(story)
    unbalanced = Story(story.ride, story.log, ledger=(Posting("rider", -1250, "m"), Posting("driver", 937, "m")))
    assert explain.ledger_sum(unbalanced) == -313
    assert "UNBALANCED" in explain.text(unbalanced)


def test_compensations_are_told_in_the_order_they_ran_the_reverse_of_the_steps() -> None:
    ran = explain.compensations(CANCELLED_LOG)
    assert [(c.step, c.undoes, c.started_seq, c.done_seq) for c in ran] == [
        ("release_driver", "match_driver", 5, 6),
        ("void_payment", "authorize_payment", 7, 8),
    ]
    assert explain.in_reverse_order(CANCELLED_LOG)
    story = Story(_ride("CANCELLED", "rider_cancelled"), CANCELLED_LOG)
    said = " ".join(explain.text(story).split())
    assert "release_driver (undoes match_driver), then void_payment (undoes authorize_payment)" in said
    assert "NOT the reverse" not in said


def test_compensations_in_the_order_of_the_steps_are_flagged() -> None:
    wrong = (
        *CANCELLED_LOG[:4],
        _log(5, "void_payment", "compensating", "x"),
        _log(6, "void_payment", "compensated"),
        _log(7, "release_driver", "compensating", "x"),
        _log(8, "release_driver", "compensated"),
    )
    assert not explain.in_reverse_order(wrong)
    assert "NOT the reverse of the steps they undid" in explain.text(Story(_ride("CANCELLED", "x"), wrong))


def test_a_completed_ride_has_no_compensation_and_its_final_release_belongs_to_the_capture() -> None:
    story = completed_story()
    assert explain.compensations(story.log) == ()
    release = f"{RIDE}:release_driver:{DRIVER}:41"
    assert explain.section_of("release_driver", release, story) == "capture_payment"
    assert "release_driver" not in explain.sections(story)
    cancelled = Story(_ride("CANCELLED", "rider_cancelled"), CANCELLED_LOG)
    assert explain.section_of("release_driver", release, cancelled) == "release_driver"


def test_dump_log_segments_batches_are_parsed_with_their_records_and_markers() -> None:
    batches = explain.parse_dump(DUMP)
    assert [(b.base_offset, b.last_offset, b.producer_id, b.producer_epoch) for b in batches] == [
        (40, 41, 1002, 3),
        (42, 42, 1002, 3),
        (43, 43, 1002, 4),
        (44, 44, 1002, 4),
        (45, 45, 7, 0),
    ]
    assert [(b.transactional, b.control, b.marker) for b in batches] == [
        (True, False, ""),
        (True, True, "ABORT"),
        (True, False, ""),
        (True, True, "COMMIT"),
        (False, False, ""),
    ]
    assert batches[0].keys == ((40, RIDE), (41, "00000000-0000-0000-0000-000000000000"))


def test_each_record_gets_its_batch_its_transactions_outcome_and_its_producer() -> None:
    story = completed_story()
    by_offset = {b.base_offset: b for b in story.batches}
    aborted, committed, plain = by_offset[40], by_offset[43], by_offset[45]
    assert (aborted.outcome, aborted.producer_epoch, aborted.producer, aborted.named_by) == (
        "ABORT",
        3,
        "payment-participant",
        "__transaction_state",
    )
    assert (committed.outcome, committed.producer_epoch) == ("COMMIT", 4)
    # No transactional id for producer 7: named by who writes driver_accepted.
    assert (plain.transactional, plain.outcome, plain.named_by) == (False, "", "documented mapping")
    assert "RespondToOffer" in plain.producer


def test_a_transaction_without_its_marker_yet_is_open() -> None:
    first = explain.parse_dump(DUMP)[:1]
    record = _record("trip.replies", 40, "payment_authorized", "x")
    (batch,) = explain.link_batches([record], {("trip.replies", 1): first}, {})
    assert (batch.outcome, batch.producer, batch.named_by) == ("open", "loop payment-participant", "documented mapping")


def test_the_transaction_log_maps_producer_ids_to_transactional_ids() -> None:
    assert explain.parse_transaction_log(TRANSACTION_LOG) == {1002: "payment-participant"}


def test_the_dump_tool_is_found_by_its_class_in_the_jars() -> None:
    assert explain.dump_tool(["org/apache/kafka/tools/DumpLogSegments.class"]) == (
        "org.apache.kafka.tools.DumpLogSegments",
        "org.apache.kafka.tools.api.DefaultDecoder",
    )
    assert explain.dump_tool(["kafka/tools/DumpLogSegments.class"]) == (
        "kafka.tools.DumpLogSegments",
        "kafka.serializer.DefaultDecoder",
    )
    assert explain.dump_tool(["kafka/tools/StorageTool.class"]) is None


def test_only_the_segments_holding_the_offsets_are_dumped() -> None:
    names = ["00000000000000000000.log", "00000000000000000100.log", "00000000000000000200.log", "x.index"]
    assert explain.segments_for([5, 150], names) == ["00000000000000000000.log", "00000000000000000100.log"]
    assert explain.segments_for([250], names) == ["00000000000000000200.log"]


def test_what_saved_a_ride_is_read_from_the_records() -> None:
    fenced_id = f"{RIDE}:timeout:AUTHORIZING:0:1712345690000:epoch:2"
    log = (
        *COMPLETED_LOG[:2],
        _log(
            10,
            "authorize_payment",
            "resent",
            "timeout",
            f"{RIDE}:timeout:AUTHORIZING:0:1:epoch:3",
            sweeper_epoch=3,
            epoch_in_force=3,
        ),
    )
    base = completed_story()
    records = (
        *base.records,
        _record("payment.commands", 11, "authorize_payment", f"{RIDE}:authorize_payment"),
        KafkaRecord("trip.commands", 1, 12, "step_timed_out", fenced_id, "", "1712345690000.0", True, 2),
    )
    story = Story(base.ride, log, records, inboxes=(*base.inboxes, Inboxed("trip", fenced_id, ())))
    kinds = {r.kind: r.evidence for r in explain.rescues(story)}
    assert "re-sent (timeout)" in kinds["resent"]
    assert "sweeper epoch 2, older than epoch 3 in force" in kinds["fenced timeout"]
    assert (
        "trip.replies/1@40" in kinds["aborted batch"]
        and "committed again at trip.replies/1@43" in kinds["aborted batch"]
    )
    assert "<ride>:authorize_payment delivered 2 times" in kinds["inbox replay"]
    assert "payment's inbox holds one row" in kinds["inbox replay"]


def test_a_ride_that_met_no_fault_shows_no_rescue() -> None:
    story = completed_story()
    clean = Story(story.ride, story.log, tuple(r for r in story.records if r.committed), inboxes=story.inboxes)
    assert explain.rescues(clean) == ()


def test_the_critical_path_runs_from_the_root_down() -> None:
    assert [s.span_id for s in explain.critical_path(_trace())] == ["a", "c", "d"]


def test_every_line_of_the_text_fits_100_columns_and_names_every_step() -> None:
    for story in (completed_story(), Story(_ride("CANCELLED", "rider_cancelled"), CANCELLED_LOG)):
        said = explain.text(story)
        too_wide = [line for line in said.splitlines() if len(line) > 100]
        assert too_wide == []
        for key in explain.sections(story):
            assert explain.NOTES[key].title in said
    said = " ".join(explain.text(completed_story()).split())
    assert "fence saga's fence 41; driver's stored offer: fence 41; row: now reserved for another ride" in said
    assert "psp key capture <ride>:capture: completed" in said
    assert "batch trip.replies/1@40-41: producer id 1002, epoch 3, transaction ABORT; payment-participant" in said
    assert "Not read:" in said and "an example gap" in said


def test_each_steps_note_is_three_lines_guarantee_uber_and_its_address() -> None:
    for key in explain.NOTES:
        lines = explain._note_lines(key)
        assert len(lines) == 3, (key, lines)
        assert lines[2].strip() == f"[{explain.NOTES[key].ref}] {explain.REFERENCES[explain.NOTES[key].ref]}"


def test_every_address_is_docs_uber_md_reference_of_the_same_number() -> None:
    listed = (REPO / "docs" / "uber.md").read_text().split("## References", 1)[1]
    entries = dict(re.findall(r"^- \[(R\w+)\] (.*?)(?=^- \[|\Z)", listed, flags=re.M | re.S))
    for key, url in explain.REFERENCES.items():
        assert url in entries[key].split(), (key, url)
    assert {note.ref for note in explain.NOTES.values()} <= set(explain.REFERENCES)


def test_json_holds_the_facts_and_what_they_show() -> None:
    found = json.loads(json.dumps(explain.as_json(completed_story())))
    assert found["ride"]["ride_id"] == RIDE
    assert found["ledger_sum"] == 0
    assert found["reservation"]["offered_fence"] == 41
    assert {(r["topic"], r["offset"]) for r in found["records"]} >= {("trip.replies", 40), ("trip.replies", 43)}
    assert [k["key"] for k in found["psp_keys"]] == [f"{RIDE}:authorize", f"{RIDE}:capture"]
    assert found["critical_path"] == ["a", "c", "d"]
    # Aborted at producer epoch 3, committed again by the same producer id at epoch 4.
    [zombie] = found["rescues"]
    assert zombie["kind"] == "fenced zombie"
    assert "epoch 3 and never committed" in zombie["evidence"] and "at epoch 4, which aborted it" in zombie["evidence"]


def test_the_page_is_self_contained_with_the_steps_beside_an_svg_waterfall() -> None:
    page = explain.page(completed_story())
    assert RIDE in page and "<svg" in page and page.count("<rect") == 4
    assert 'fill="#e0902a"' in page  # the critical path
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "https://www.uber.com/en-IN/blog/ubers-advanced-settlement-accounting-system/" in page


@pytest.mark.parametrize("bad", ["42", "not-a-ride", f"{RIDE}x"])
def test_a_malformed_ride_id_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="RIDE_ID must be a ride's UUID"):
        explain.valid_ride_id(bad)
    assert explain.valid_ride_id(RIDE.upper()) == RIDE


def test_an_unknown_ride_is_one_error_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(ride_id: str, roots: object) -> Story:
        raise explain.RideNotFound(f"ride {ride_id} is not in trip's database")

    monkeypatch.setattr(explain, "collect", missing)
    args = argparse.Namespace(ride_id=RIDE, json=False, html=None, drill=None)
    assert explain.run(args) == 1
    err = capsys.readouterr().err
    assert err == f"ridectl: error: NOT_FOUND: ride {RIDE} is not in trip's database\n"


def test_the_command_is_registered_with_its_flags() -> None:
    root = argparse.ArgumentParser(prog="ridectl")
    explain.add_commands(root.add_subparsers(dest="command"))
    args = root.parse_args(["explain", RIDE, "--json", "--html", "page.html"])
    assert (args.handler, args.ride_id, args.json, args.html) == (explain.run, RIDE, True, "page.html")


def _history(ride_id: str) -> list[dict[str, object]]:
    # The booking's invoke carries only the key; the answer and the watch carry the ride.
    return [
        {"time": 0.5, "type": "invoke", "f": "request", "key": "k1", "ride_id": ""},
        {"time": 9.0, "type": "invoke", "f": "request", "key": "k0", "ride_id": ""},
        {"time": 0.6, "type": "ok", "f": "request", "key": "k1", "ride_id": ride_id},
        {"time": 7.5, "type": "ok", "f": "watch", "key": "k1", "ride_id": ride_id},
        {"time": 9.1, "type": "ok", "f": "request", "key": "k0", "ride_id": "someone-else"},
    ]


def test_the_faults_a_ride_met_are_those_overlapping_its_life_in_the_drill() -> None:
    verdict = {
        "faults": [
            {"name": "kill", "target": "trip", "start": 1.0, "end": 2.0, "recovery_seconds": 3.0,
             "detail": {"step": "CAPTURING", "ride_id": RIDE}},
            {"name": "kill", "target": "payment", "start": 8.0, "end": 8.5, "recovery_seconds": None,
             "detail": {"step": "PENDING", "ride_id": "someone-else"}},
            {"name": "pause", "target": "redis", "start": 0.0, "end": 0.4, "recovery_seconds": 0.05, "detail": {}},
        ]
    }  # fmt: skip
    met = explain.faults_met(verdict, _history(RIDE), RIDE)
    assert met is not None
    life, faults = met
    assert life == (0.5, 7.5), "from the booking's invoke, found by its key, to the last event"
    assert [(f.target, f.step, f.aimed_here, f.recovery_s) for f in faults] == [("trip", "CAPTURING", True, 3.0)]
    assert explain.faults_met(verdict, _history(RIDE), DRILL_STRANGER) is None


DRILL_STRANGER = "00000000-0000-4000-8000-000000000000"


def test_the_drill_a_ride_lived_through_is_found_in_the_newest_report_naming_it(tmp_path: Path) -> None:
    for name, valid in (("older", False), ("newer", True)):
        report = tmp_path / name
        report.mkdir()
        (report / "history.jsonl").write_text("\n".join(json.dumps(e) for e in _history(RIDE)) + "\n")
        (report / "verdict.json").write_text(json.dumps({"scenario": name, "valid": valid, "faults": []}))
    (tmp_path / "newer" / "history.jsonl").touch()  # the newest
    drill = explain.read_drill(RIDE, [tmp_path, tmp_path / "missing"])
    assert drill is not None and (drill.scenario, drill.valid, drill.faults) == ("newer", True, ())
    assert explain.read_drill(DRILL_STRANGER, [tmp_path]) is None
    story = dataclasses.replace(completed_story(), drill=drill)
    told = explain.text(story)
    assert "The drill it lived through: newer (valid)" in told and "no fault of the drill overlapped it" in told
    assert json.loads(json.dumps(explain.as_json(story)))["drill"]["life_s"] == [0.5, 7.5]


def test_a_ride_that_met_a_fault_and_needed_no_rescue_says_so() -> None:
    story = completed_story()
    clean = Story(story.ride, story.log, tuple(r for r in story.records if r.committed), inboxes=story.inboxes)
    fault = explain.FaultMet("kill", "trip", "CAPTURING", True, 1.0, 2.0, 3.0)
    drill = explain.DrillFacts("kill-trip-at-CAPTURING", "/tmp/r", True, (0.0, 4.0), (fault,))
    told = explain.text(dataclasses.replace(clean, drill=drill))
    assert "kill trip at CAPTURING, aimed at this ride: +1.0 s to +2.0 s, recovered in 3.0 s" in told
    assert "Nothing of this ride was redone" in told and "What the records show saved it" not in told
    assert "Nothing of this ride was redone" not in explain.text(clean), "said only of a ride that met a fault"


def test_each_matching_attempt_names_the_replica_the_pickup_cells_owner_and_who_was_asked() -> None:
    ring = (
        ("ridesaga.member", "127.0.0.1:7103"),
        ("ridesaga.owners_asked", "127.0.0.1:7103,127.0.0.1:7003"),
        ("ridesaga.pickup_cell", "872830828ffffff"),
        ("ridesaga.pickup_owner", "127.0.0.1:7003"),
        ("ridesaga.positions_read", "R=2: 3 of 3 read, 0 ranked differently"),
    )
    spans = (
        *_trace().spans,
        SpanFact("m2", "b", "driver", "matching: ask the owners near the pickup", 300.0, 2.0, False, False, ring[:1]),
        SpanFact("m1", "b", "driver", "matching: ask the owners near the pickup", 200.0, 3.0, False, False, ring),
    )
    story = dataclasses.replace(completed_story(), trace=Trace("t", 900.0, spans))
    assert [m.member for m in matchings(story.trace)] == ["127.0.0.1:7103", "127.0.0.1:7103"]
    told = " ".join(text(story).split())  # the wrapped lines as one
    assert (
        "ring attempt 1: matched on 127.0.0.1:7103; pickup cell 872830828ffffff (H3 res 7) owned by"
        " 127.0.0.1:7003 in its view; asked 127.0.0.1:7103, 127.0.0.1:7003; candidates' positions through the"
        " quorum, R=2: 3 of 3 read, 0 ranked differently" in told
    )
    assert (
        "ring attempt 2: matched on 127.0.0.1:7103; pickup cell (H3 res 7) owned by in its view; asked no one" in told
    )
    assert json.loads(json.dumps(as_json(story)))["matchings"][0] == {
        "member": "127.0.0.1:7103",
        "cell": "872830828ffffff",
        "owner": "127.0.0.1:7003",
        "asked": ["127.0.0.1:7103", "127.0.0.1:7003"],
        "positions": "R=2: 3 of 3 read, 0 ranked differently",
    }
    assert matchings(None) == () and matchings(_trace()) == ()
