"""`ridectl explain RIDE_ID`: the story of one real ride, told only from the system's own
records: trip's saga log, the Kafka records keyed by the ride (and, from Kafka's own log
segments, the producer and transaction of each batch), the participants' inboxes, the
driver's fence, the processor's keys and money, the ledger, and the ride's trace.

The facts are collected by small I/O functions, one per source, into frozen dataclasses;
everything after that (the checks, the terminal text, `--json`, the `--html` page) is pure.
A source that cannot be read leaves a named gap in the story instead of a guess."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import html
import json
import re
import subprocess
import sys
import textwrap
import time
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from deploy.local import components, files, paths, stack
from deploy.local.errors import StackError
from ridectl import rides, trace
from ridectl.drill import DEFAULT_REPORTS as DRILL_REPORTS
from ridesaga.saga.v1 import saga_pb2
from services.blocks.ring import RESOLUTION
from services.driver.matching import (
    ASKED_ATTRIBUTE,
    CELL_ATTRIBUTE,
    MATCHING_SPAN,
    MEMBER_ATTRIBUTE,
    OWNER_ATTRIBUTE,
    QUORUM_ATTRIBUTE,
)
from services.payment.domain import charge_description
from services.runtime.messages import Poison, decode
from services.runtime.topology import INFRA, Group, Topic

WIDTH = 100
T = TypeVar("T")

# ---------------------------------------------------------------------------------------
# The facts
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ride:
    """trip's `rides` row."""

    ride_id: str
    rider_id: str
    state: str
    outcome: str
    fare_cents: int
    driver_id: str
    fence: int
    hold_id: str
    trace_id: str
    compensations: tuple[str, ...]
    created_ms: int


@dataclass(frozen=True)
class LogEntry:
    """One row of trip's `saga_log`; for a timeout, the sweeper epoch it carried and the
    epoch in force when the orchestrator applied it."""

    seq: int
    step: str
    status: str
    detail: str
    hlc: str
    message_id: str
    message_hlc: str
    sender_wall_ms: int
    at_ms: int
    sweeper_epoch: int | None = None
    epoch_in_force: int | None = None


@dataclass(frozen=True)
class KafkaRecord:
    """A record keyed by the ride; `committed`: seen by a read_committed consumer (False:
    only read_uncommitted saw it, so its transaction was aborted or is still open)."""

    topic: str
    partition: int
    offset: int
    message_type: str
    message_id: str
    causation_id: str
    hlc: str
    committed: bool
    sweeper_epoch: int | None = None


@dataclass(frozen=True)
class Batch:
    """The log batch holding some of the ride's records, as DumpLogSegments prints it."""

    topic: str
    partition: int
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    transactional: bool
    outcome: str  # COMMIT or ABORT (its transaction's marker), "open", or "" if not transactional
    producer: str  # the transactional id, or the documented producer of the topic's messages
    named_by: str  # "__transaction_state" or "documented mapping"


@dataclass(frozen=True)
class Sent:
    topic: str
    message_type: str
    message_id: str
    detail: str


@dataclass(frozen=True)
class Inboxed:
    """One inbox row: a message some service handled and the records it sent (stored, so a
    second delivery gets them again): trip's processed_messages, driver's and payment's
    handled_commands."""

    service: str
    message_id: str
    sent: tuple[Sent, ...]


@dataclass(frozen=True)
class Reservation:
    """The driver's side of the ride's reservation: the token in the driver's stored
    DriverOffered reply, and the driver's row now."""

    driver_id: str
    offered_fence: int | None
    row_fence: int
    row_ride_id: str | None
    confirmed: bool


@dataclass(frozen=True)
class PspKey:
    operation: str
    key: str
    completed: bool


@dataclass(frozen=True)
class Movement:
    kind: str
    amount_cents: int
    key: str
    charge_id: str


@dataclass(frozen=True)
class Hold:
    status: str
    charge_id: str
    authorized_cents: int
    captured_cents: int


@dataclass(frozen=True)
class Posting:
    account: str
    amount_cents: int
    message_id: str


@dataclass(frozen=True)
class SpanFact:
    span_id: str
    parent_span_id: str
    service: str
    operation: str
    start_ms: float  # from the trace's start
    duration_ms: float
    error: bool
    critical: bool
    attributes: tuple[tuple[str, str], ...] = ()  # the span's own, sorted by key


@dataclass(frozen=True)
class Trace:
    trace_id: str
    total_ms: float
    spans: tuple[SpanFact, ...]


@dataclass(frozen=True)
class Story:
    ride: Ride
    log: tuple[LogEntry, ...]
    records: tuple[KafkaRecord, ...] = ()
    batches: tuple[Batch, ...] = ()
    inboxes: tuple[Inboxed, ...] = ()
    reservation: Reservation | None = None
    psp_keys: tuple[PspKey, ...] = ()
    movements: tuple[Movement, ...] = ()
    hold: Hold | None = None
    ledger: tuple[Posting, ...] = ()
    trace: Trace | None = None
    gaps: tuple[str, ...] = ()  # the sources that could not be read, and why
    drill: DrillFacts | None = None  # the drill the ride lived through, if a report has it


@dataclass(frozen=True)
class FaultMet:
    """A fault of the drill whose window (injection to recovery) overlaps the ride's life;
    times are seconds since the drill started, as in its report."""

    name: str
    target: str
    step: str  # the saga state the fault waited for, if any
    aimed_here: bool  # injected when this very ride was observed at `step`
    start_s: float
    end_s: float
    recovery_s: float | None


@dataclass(frozen=True)
class DrillFacts:
    scenario: str
    report: str  # the report's folder
    valid: bool
    life_s: tuple[float, float]  # the ride's first and last event in the drill's history
    faults: tuple[FaultMet, ...]


# ---------------------------------------------------------------------------------------
# How each step is kept, here and at Uber (texts and addresses from docs/uber.md)
# ---------------------------------------------------------------------------------------

REFERENCES = {
    "R1": "https://www.uber.com/blog/open-source-orchestration-tool-cadence-overview/",
    "R2": "https://github.com/uber/cadence/blob/master/docs/03_concepts/01_workflows.md",
    "R3": "https://github.com/uber/cadence/blob/master/docs/03_concepts/02_activities.md",
    "R6": "https://www.uber.com/blog/money-scale-strong-data/",
    "R7": "https://www.uber.com/en-IN/blog/ubers-advanced-settlement-accounting-system/",
    "R8": "https://www.uber.com/blog/fulfillment-platform-rearchitecture/",
    "R9": "https://www.uber.com/blog/building-ubers-fulfillment-platform/",
    "R17": "https://www.uber.com/blog/kafka-async-queuing-with-consumer-proxy/",
    "R22": "https://www.jaegertracing.io/docs/2.1",
}


@dataclass(frozen=True)
class Note:
    title: str
    guarantee: str
    uber: str
    ref: str  # a key of REFERENCES


_COMPENSATION = Note(
    "compensate, last step first",
    "undo last step first: release the driver, then void the hold; fixed ids, undone once",
    "Cadence's example runs cleanup activities in a catch block: compensation is code",
    "R2",
)
NOTES: dict[str, Note] = {
    "start": Note(
        "the request, with an idempotency key",
        "one key books at most one ride; the start record has the fixed id <ride>:requested",
        "Cadence: at most one open workflow per workflow ID and domain; a second start fails",
        "R2",
    ),
    "authorize_payment": Note(
        "authorize payment: the hold",
        "money first; the psp key <ride>:authorize makes a retry replay the first answer",
        "Cadence retries a failed activity under a retry policy; failures are expected",
        "R3",
    ),
    "match_driver": Note(
        "match a driver: the fenced reservation",
        "the driver's row refuses a token older than the newest it has seen: one ride per driver",
        "matching a trip with a driver is a database transaction on a consistent store",
        "R9",
    ),
    "driver_accepts": Note(
        "offer and accept: the pivot",
        "the pivot: once the saga takes the acceptance, nothing before it is ever undone",
        "Uber's platform also confirms a driver upfront for reservations and offers batches",
        "R8",
    ),
    "complete_ride": Note(
        "complete",
        "the drop-off is reported once; a silent driver's ride is moved forward by the sweeper",
        "a Cadence workflow may sleep for 30 days: durable timers survive failures",
        "R2",
    ),
    "capture_payment": Note(
        "capture",
        "the capture takes at most the hold, under <ride>:capture; past the pivot, no undo",
        "Uber processes about 1.2 billion settlements a month from 50+ payment processors",
        "R7",
    ),
    "ledger": Note(
        "the ledger",
        "every posting sums to zero: the rider pays, the driver and the platform receive",
        "Gulfstream: built on double-entry accounting, and can reconcile itself",
        "R6",
    ),
    "release_driver": _COMPENSATION,
    "void_payment": _COMPENSATION,
    "cancel": Note(
        "the rider's cancel",
        "a cancel before the pivot compensates; one that loses the race is refused, not OK",
        "Cadence's example handles cancellation in workflow code, in a catch block",
        "R2",
    ),
    "sweeper": Note(
        "the sweeper: timeouts, fenced by epoch",
        "every live step has a deadline; a timeout from a replaced leader's epoch is refused",
        "Cadence keeps timers in the orchestrator, persisted with the workflow",
        "R1",
    ),
    "kafka": Note(
        "the records that carried it",
        "a batch's outputs and offsets commit in one transaction; aborted ones stay unread",
        "most message queueing at Uber leaves autocommit off: at-least-once is required",
        "R17",
    ),
    "trace": Note(
        "the trace",
        "one ride is one trace: every gRPC call, sidecar and Kafka hop",
        "Jaeger: released as open source by Uber in 2016, now a CNCF graduated project",
        "R22",
    ),
}
SECTIONS = (
    "start",
    "authorize_payment",
    "match_driver",
    "driver_accepts",
    "complete_ride",
    "capture_payment",
    "ledger",
    "cancel",
    "release_driver",
    "void_payment",
    "sweeper",
)
SECTION_OF_TYPE = {
    "ride_requested": "start",
    "authorize_payment": "authorize_payment",
    "payment_authorized": "authorize_payment",
    "payment_declined": "authorize_payment",
    "reserve_driver": "match_driver",
    "driver_offered": "match_driver",
    "no_driver_available": "match_driver",
    "driver_accepted": "driver_accepts",
    "driver_declined": "driver_accepts",
    "confirm_driver": "driver_accepts",
    "trip_completed": "complete_ride",
    "capture_payment": "capture_payment",
    "payment_captured": "capture_payment",
    "cancel_requested": "cancel",
    "release_driver": "release_driver",
    "driver_released": "release_driver",
    "void_payment": "void_payment",
    "payment_voided": "void_payment",
    "step_timed_out": "sweeper",
}
SECTION_OF_STEP = {
    "authorize_payment": "authorize_payment",
    "match_driver": "match_driver",
    "driver_accepts": "driver_accepts",
    "complete_ride": "complete_ride",
    "capture_payment": "capture_payment",
    "cancel": "cancel",
    "release_driver": "release_driver",
    "void_payment": "void_payment",
}
# The command in a message id "<ride>:<command>:...", as its message type.
COMMAND_OF_ID = {
    "requested": "ride_requested",
    "cancel": "cancel_requested",
    "timeout": "step_timed_out",
    "offer": "driver_accepted",
    "completed": "trip_completed",
    **{kind: kind for kind in SECTION_OF_TYPE},
}
UNDOES = {"release_driver": "match_driver", "void_payment": "authorize_payment"}

# Who writes each message type (services/trip/entrypoint.py, services/trip/sweeper.py, the
# loops of services/blocks/exactly_once.py, services/driver/entrypoint.py): the name of a
# batch's producer when Kafka's transaction log cannot say it.
_PUBLISHER = "idempotent publisher, not transactional"
_PRODUCERS = {
    "ride_requested": f"trip's StartRide ({_PUBLISHER})",
    "cancel_requested": f"trip's CancelRide ({_PUBLISHER})",
    "step_timed_out": f"the sweeper ({_PUBLISHER})",
    "driver_accepted": f"driver's RespondToOffer ({_PUBLISHER})",
    "driver_declined": f"driver's RespondToOffer ({_PUBLISHER})",
    "trip_completed": f"driver's CompleteTrip ({_PUBLISHER})",
    **dict.fromkeys(
        ("authorize_payment", "void_payment", "capture_payment", "reserve_driver", "release_driver", "confirm_driver"),
        f"loop {Group.ORCHESTRATOR.value}",
    ),
    **dict.fromkeys(
        ("payment_authorized", "payment_declined", "payment_voided", "payment_captured"),
        f"loop {Group.PAYMENT.value}",
    ),
    **dict.fromkeys(("driver_offered", "no_driver_available", "driver_released"), f"loop {Group.DRIVER.value}"),
}


# ---------------------------------------------------------------------------------------
# Pure: what the facts show
# ---------------------------------------------------------------------------------------


def valid_ride_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise rides.UsageError(f"RIDE_ID must be a ride's UUID, got {text!r}") from None


def ledger_sum(story: Story) -> int:
    return sum(p.amount_cents for p in story.ledger)


@dataclass(frozen=True)
class Compensation:
    step: str
    undoes: str
    started_seq: int
    done_seq: int | None


def compensations(log: Iterable[LogEntry]) -> tuple[Compensation, ...]:
    """The compensations in the order they ran, each with the step it undid."""
    started: dict[str, int] = {}
    done: dict[str, int] = {}
    for e in log:
        if e.step in UNDOES and e.status == "compensating":
            started.setdefault(e.step, e.seq)
        elif e.step in UNDOES and e.status == "compensated":
            done.setdefault(e.step, e.seq)
    return tuple(
        Compensation(step, UNDOES[step], seq, done.get(step))
        for step, seq in sorted(started.items(), key=lambda s: s[1])
    )


def in_reverse_order(log: tuple[LogEntry, ...]) -> bool:
    """Whether the compensations ran in the reverse order of the steps they undid (each
    step's moment: its last success, authorize_payment ok or match_driver offered)."""
    done_at = {
        step: max((e.seq for e in log if e.step == step and e.status in ("ok", "offered")), default=-1)
        for step in UNDOES.values()
    }
    ran = compensations(log)
    return [c.undoes for c in ran] == sorted((c.undoes for c in ran), key=lambda s: -done_at[s])


@dataclass(frozen=True)
class Rescue:
    kind: str
    evidence: str


def rescues(story: Story) -> tuple[Rescue, ...]:
    """What the records show saved a ride that met faults: a re-sent command, a timeout
    fenced by a stale sweeper epoch, an aborted Kafka batch, a message delivered twice."""
    found = [
        Rescue("resent", f"saga_log {e.seq}: {e.step} re-sent ({e.detail}) under the same message id")
        for e in story.log
        if e.status == "resent"
    ]
    found += [
        Rescue("stale epoch applied", f"saga_log {e.seq}: epoch {e.sweeper_epoch} applied under {e.epoch_in_force}")
        for e in story.log
        if e.sweeper_epoch is not None and e.sweeper_epoch != e.epoch_in_force
    ]
    logged = {e.message_id for e in story.log}
    in_force = max((e.epoch_in_force for e in story.log if e.epoch_in_force is not None), default=None)
    trip_inbox = {i.message_id: i for i in story.inboxes if i.service == "trip"}
    for r in story.records:
        stored = trip_inbox.get(r.message_id)
        if (
            r.message_type == "step_timed_out"
            and r.committed
            and r.message_id not in logged
            and stored
            and not stored.sent
        ):
            newer = (
                f", older than epoch {in_force} in force"
                if in_force is not None and in_force > (r.sweeper_epoch or 0)
                else ""
            )
            found.append(
                Rescue(
                    "fenced timeout",
                    f"{_where(r)}: a timeout from sweeper epoch {r.sweeper_epoch}{newer}; trip's inbox"
                    " holds it with nothing sent and the saga log has no entry from it",
                )
            )
    committed_ids = {(r.topic, r.message_id): r for r in story.records if r.committed}
    for r in story.records:
        if not r.committed:
            again = committed_ids.get((r.topic, r.message_id))
            found.append(_aborted(r, again, story.batches))
    twice = Counter((r.topic, r.message_id) for r in story.records if r.committed)
    for (topic, message_id), n in sorted(twice.items()):
        if n > 1:
            at = ", ".join(
                _where(r) for r in story.records if r.committed and (r.topic, r.message_id) == (topic, message_id)
            )
            held = [i.service for i in story.inboxes if i.message_id == message_id]
            inbox = f"; handled once: {held[0]}'s inbox holds one row" if held else ""
            found.append(Rescue("inbox replay", f"{_short(message_id, story)} delivered {n} times ({at}){inbox}"))
    return tuple(found)


def _batch_of(r: KafkaRecord, batches: tuple[Batch, ...]) -> Batch | None:
    return next(
        (
            b
            for b in batches
            if (b.topic, b.partition) == (r.topic, r.partition) and b.base_offset <= r.offset <= b.last_offset
        ),
        None,
    )


def _aborted(r: KafkaRecord, again: KafkaRecord | None, batches: tuple[Batch, ...]) -> Rescue:
    """An aborted record; a fenced zombie when the same transactional producer committed it
    again at a newer epoch (its successor's registration aborted the dead one's transaction)."""
    seen = f"{_where(r)} {r.message_type}: read_uncommitted sees it, read_committed skips it"
    if again is None:
        return Rescue("aborted batch", seen)
    then = f"; committed again at {_where(again)}"
    if again.hlc == r.hlc:
        then += " with the same HLC (the stored command, re-sent by the inbox's replay)"
    old, new = _batch_of(r, batches), _batch_of(again, batches)
    if old and new and old.producer_id == new.producer_id and new.producer_epoch > old.producer_epoch:
        return Rescue(
            "fenced zombie",
            f"{old.producer} wrote {_where(r)} {r.message_type} at producer epoch {old.producer_epoch} and"
            f" never committed; its successor took the same transactional id at epoch {new.producer_epoch},"
            f" which aborted it{then}",
        )
    return Rescue("aborted batch", seen + then)


def _where(r: KafkaRecord) -> str:
    return f"{r.topic}/{r.partition}@{r.offset}"


def _short(text: str, story: Story) -> str:
    """The ride's and its driver's ids, as <ride> and <driver>."""
    shorter = text.replace(story.ride.ride_id, "<ride>")
    return shorter.replace(story.ride.driver_id, "<driver>") if story.ride.driver_id else shorter


@dataclass(frozen=True)
class Matched:
    """One matching attempt in the driver cluster, from its span (services/driver/matching.py)."""

    member: str  # the replica that matched
    cell: str  # the pickup's H3 cell
    owner: str  # its owner in that replica's view
    asked: tuple[str, ...]  # the owners of the cells near the pickup, asked for drivers
    positions: str = ""  # how the candidates' positions were read through the quorum


def matchings(t: Trace | None) -> tuple[Matched, ...]:
    """The ride's matching attempts, in the order they ran."""
    if t is None:
        return ()
    found = []
    for span in sorted((s for s in t.spans if s.operation == MATCHING_SPAN), key=lambda s: s.start_ms):
        attributes = dict(span.attributes)
        asked = tuple(a for a in attributes.get(ASKED_ATTRIBUTE, "").split(",") if a)
        found.append(
            Matched(
                attributes.get(MEMBER_ATTRIBUTE, ""),
                attributes.get(CELL_ATTRIBUTE, ""),
                attributes.get(OWNER_ATTRIBUTE, ""),
                asked,
                attributes.get(QUORUM_ATTRIBUTE, ""),
            )
        )
    return tuple(found)


def _matched_text(number: int, m: Matched) -> str:
    return (
        f"attempt {number}: matched on {m.member}; pickup cell {m.cell} (H3 res {RESOLUTION}) owned by"
        f" {m.owner} in its view; asked {', '.join(m.asked) or 'no one'}"
        + (f"; candidates' positions through the quorum, {m.positions}" if m.positions else "")
    )


def critical_path(t: Trace) -> tuple[SpanFact, ...]:
    """The critical spans from the root down: each the child of the one before."""
    marked = {s.span_id: s for s in t.spans if s.critical}
    chain = [s for s in marked.values() if s.parent_span_id not in marked][:1]
    while chain:
        nxt = [s for s in marked.values() if s.parent_span_id == chain[-1].span_id]
        if not nxt:
            break
        chain.append(nxt[0])
    return tuple(chain)


def section_of(message_type: str, message_id: str, story: Story) -> str:
    """The saga step a message belongs to. A release of the ride's own driver is its
    compensation only on a ride that compensated; on a completed ride it frees the driver
    after the capture; any other release lets go of a driver who declined."""
    section = SECTION_OF_TYPE.get(message_type, "")
    if section != "release_driver":
        return section
    own = message_id.startswith(f"{story.ride.ride_id}:release_driver:{story.ride.driver_id}:{story.ride.fence}")
    if own and any(c.step == "release_driver" for c in compensations(story.log)):
        return "release_driver"
    return "capture_payment" if own and story.ride.state == "COMPLETED" else "match_driver"


def command_type(message_id: str) -> str:
    """The message type named by a message id's second part: `<ride>:authorize_payment`."""
    parts = message_id.split(":")
    return COMMAND_OF_ID.get(parts[1], "") if len(parts) > 1 else ""


def faults_met(
    verdict: dict[str, Any], history: list[dict[str, Any]], ride_id: str
) -> tuple[tuple[float, float], tuple[FaultMet, ...]] | None:
    """The ride's life in a drill's history (from its request to its last event, matched
    by the idempotency key its booking used) and the faults whose window overlaps it: a
    fault lasts from its injection to its end plus the recovery the drill measured."""
    keys = {e["key"] for e in history if e.get("ride_id") == ride_id and e.get("key")}
    times = [float(e["time"]) for e in history if e.get("ride_id") == ride_id or (e.get("key") in keys)]
    if not times:
        return None
    life = (min(times), max(times))
    met = []
    for f in verdict.get("faults", []):
        recovery = f.get("recovery_seconds")
        start, end = float(f["start"]), float(f["end"])
        if start <= life[1] and end + (recovery or 0.0) >= life[0]:
            detail = f.get("detail", {})
            aimed = detail.get("ride_id") == ride_id
            met.append(FaultMet(f["name"], f["target"], detail.get("step", ""), aimed, start, end, recovery))
    return life, tuple(met)


def sections(story: Story) -> list[str]:
    """The steps the ride went through, in the saga's order."""
    seen = {SECTION_OF_STEP.get(e.step, "") for e in story.log}
    seen |= {section_of(r.message_type, r.message_id, story) for r in story.records}
    if story.ledger:
        seen.add("ledger")
    return [s for s in SECTIONS if s in seen or s == "start"]


# ---------------------------------------------------------------------------------------
# Pure: parsing Kafka's DumpLogSegments output
# ---------------------------------------------------------------------------------------

DUMP_TOOLS = (
    # (the class, the decoder that prints a value on one line whatever its bytes)
    ("org.apache.kafka.tools.DumpLogSegments", "org.apache.kafka.tools.api.DefaultDecoder"),  # Kafka 4
    ("kafka.tools.DumpLogSegments", "kafka.serializer.DefaultDecoder"),  # Kafka 3 and before
)
_PAIR = re.compile(r"(\w+): (\S+)")
_TXN_RECORD = re.compile(r" key: (\{.*\}) payload: (\{.*\})\s*$")


@dataclass(frozen=True)
class DumpedBatch:
    base_offset: int
    last_offset: int
    producer_id: int
    producer_epoch: int
    transactional: bool
    control: bool
    marker: str  # a control batch's COMMIT or ABORT
    keys: tuple[tuple[int, str], ...]  # (offset, key) of each record printed with its key


def dump_tool(jar_entries: Iterable[str]) -> tuple[str, str] | None:
    """The DumpLogSegments class (and its one-line decoder) found among the jars' entries."""
    entries = set(jar_entries)
    for cls, decoder in DUMP_TOOLS:
        if cls.replace(".", "/") + ".class" in entries:
            return cls, decoder
    return None


def parse_dump(text: str) -> list[DumpedBatch]:
    """Batches from `DumpLogSegments --print-data-log`: a line per batch (`baseOffset: ...`),
    then a line per record (`| offset: ...`, with `key: ...` or, in a control batch,
    `endTxnMarker: ...`)."""
    batches: list[DumpedBatch] = []
    for line in text.splitlines():
        if line.startswith("baseOffset:"):
            f = dict(_PAIR.findall(line))
            batches.append(
                DumpedBatch(
                    int(f["baseOffset"]),
                    int(f["lastOffset"]),
                    int(f["producerId"]),
                    int(f["producerEpoch"]),
                    f["isTransactional"] == "true",
                    f["isControl"] == "true",
                    "",
                    (),
                )
            )
        elif line.startswith("| offset:") and batches:
            f = dict(_PAIR.findall(line))
            last = batches[-1]
            if "endTxnMarker" in f:
                batches[-1] = dataclasses.replace(last, marker=f["endTxnMarker"])
            elif "key" in f:
                batches[-1] = dataclasses.replace(last, keys=(*last.keys, (int(f["offset"]), f["key"])))
    return batches


def parse_transaction_log(text: str) -> dict[int, str]:
    """producer id -> transactional id, from `DumpLogSegments --transaction-log-decoder`
    over __transaction_state (the coordinator's own record of each transactional id)."""
    found: dict[int, str] = {}
    for line in text.splitlines():
        match = _TXN_RECORD.search(line) if line.startswith("| offset:") else None
        if match is None:
            continue
        try:
            key, value = json.loads(match.group(1)), json.loads(match.group(2))
        except json.JSONDecodeError:
            continue
        txn_id, producer = _field(key, "transactionalId"), _field(value, "producerId")
        if isinstance(txn_id, str) and isinstance(producer, int):
            found[producer] = txn_id
    return found


def _field(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        if name in node:
            return node[name]
        for child in node.values():
            found = _field(child, name)
            if found is not None:
                return found
    return None


def segments_for(offsets: Iterable[int], names: Iterable[str]) -> list[str]:
    """The segment files (named by their base offset) that hold the given offsets."""
    bases = sorted((int(Path(n).stem), n) for n in names if n.endswith(".log") and Path(n).stem.isdigit())
    chosen = set()
    for offset in offsets:
        holding = [n for base, n in bases if base <= offset]
        if holding:
            chosen.add(holding[-1])
    return sorted(chosen)


def link_batches(
    records: Iterable[KafkaRecord],
    dumped: dict[tuple[str, int], list[DumpedBatch]],
    transactional_ids: dict[int, str],
) -> tuple[Batch, ...]:
    """The batch of each of the ride's records, with its transaction's outcome (the next
    marker of the same producer in the partition) and its producer's name."""
    found: dict[tuple[str, int, int], Batch] = {}
    for r in records:
        log = dumped.get((r.topic, r.partition), [])
        held = next((b for b in log if b.base_offset <= r.offset <= b.last_offset and not b.control), None)
        if held is None or (r.topic, r.partition, held.base_offset) in found:
            continue
        outcome = ""
        if held.transactional:
            marker = next(
                (
                    b
                    for b in log
                    if b.control and b.producer_id == held.producer_id and b.base_offset > held.last_offset
                ),
                None,
            )
            outcome = marker.marker if marker else "open"
        named = transactional_ids.get(held.producer_id)
        found[(r.topic, r.partition, held.base_offset)] = Batch(
            r.topic,
            r.partition,
            held.base_offset,
            held.last_offset,
            held.producer_id,
            held.producer_epoch,
            held.transactional,
            outcome,
            named or _PRODUCERS.get(r.message_type, "unknown producer"),
            "__transaction_state" if named else "documented mapping",
        )
    return tuple(found.values())


# ---------------------------------------------------------------------------------------
# Pure: the renderers
# ---------------------------------------------------------------------------------------


def _clip(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _wrap(text: str, first: str, rest: str = " " * 12) -> list[str]:
    """`text` in lines of at most WIDTH columns, the first after `first`, the others after `rest`."""
    wrapped = textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)
    return wrapped or [first.rstrip()]


def _note_lines(key: str) -> list[str]:
    note = NOTES[key]
    return [
        *_wrap(note.guarantee, "     keeps  ", " " * 12),
        *_wrap(f"{note.uber} [{note.ref}]", "     uber   ", " " * 12),
        _clip(f"            [{note.ref}] {REFERENCES[note.ref]}"),
    ]


def _record_lines(r: KafkaRecord, story: Story) -> list[str]:
    flag = "" if r.committed else " (not committed)"
    return _wrap(f"{_where(r):<22} {r.message_type:<20} {_short(r.message_id, story)}{flag}", "     kafka  ")


def _batch_lines(b: Batch) -> list[str]:
    txn = f"transaction {b.outcome}" if b.transactional else "not transactional"
    span = f"{b.base_offset}" if b.base_offset == b.last_offset else f"{b.base_offset}-{b.last_offset}"
    return _wrap(
        f"batch {b.topic}/{b.partition}@{span}: producer id {b.producer_id}, epoch {b.producer_epoch},"
        f" {txn}; {b.producer} ({b.named_by})",
        " " * 12,
        " " * 14,
    )


def _inbox_lines(i: Inboxed, story: Story) -> list[str]:
    table = "processed_messages" if i.service == "trip" else "handled_commands"
    head = f"{i.service}.{table} {_short(i.message_id, story)}"
    if not i.sent:
        return _wrap(f"{head}: nothing sent", "     inbox  ")
    lines = _wrap(f"{head} sent:", "     inbox  ")
    for s in i.sent:
        lines += _wrap(f"{s.topic} {s.message_type} {_short(s.message_id, story)} {s.detail}", " " * 12, " " * 14)
    return lines


def _section_lines(number: int, key: str, story: Story) -> list[str]:
    lines = [f"{number}. {NOTES[key].title}"]
    for r in story.records:
        if section_of(r.message_type, r.message_id, story) == key:
            lines += _record_lines(r, story)
            for b in story.batches:
                if (b.topic, b.partition) == (r.topic, r.partition) and b.base_offset <= r.offset <= b.last_offset:
                    lines += _batch_lines(b)
    for i in story.inboxes:
        if i.service != "trip" and section_of(command_type(i.message_id), i.message_id, story) == key:
            lines += _inbox_lines(i, story)
    if key == "match_driver":
        for number, matched in enumerate(matchings(story.trace), start=1):
            lines += _wrap(_matched_text(number, matched), "     ring   ")
    if key == "match_driver" and story.reservation:
        lines += _wrap(_reservation_text(story.reservation, story.ride), "     fence  ")
    if key in ("authorize_payment", "capture_payment", "void_payment"):
        operation = key.split("_")[0]
        for k in story.psp_keys:
            if k.operation == operation:
                state = "completed" if k.completed else "claimed, not completed"
                lines += _wrap(f"key {k.operation} {_short(k.key, story)}: {state}", "     psp    ")
        for m in story.movements:
            if m.kind == operation:
                lines += _wrap(f"moved {m.kind} {m.amount_cents} cents, charge {m.charge_id}", "     psp    ")
    if key == "ledger":
        lines += [_clip(f"     ledger {p.account:<9} {p.amount_cents:>+9} cents") for p in story.ledger]
        total = ledger_sum(story)
        lines.append(f"     ledger sum {total} cents: {'balanced' if total == 0 else 'UNBALANCED'}")
    return lines + _note_lines(key)


def _reservation_text(r: Reservation, ride: Ride) -> str:
    offered = "no stored offer" if r.offered_fence is None else f"driver's stored offer: fence {r.offered_fence}"
    if r.row_ride_id == ride.ride_id:
        now = f"row: reserved for this ride, fence {r.row_fence}" + (", confirmed" if r.confirmed else "")
    elif r.row_ride_id:
        now = f"row: now reserved for another ride, fence {r.row_fence}"
    else:
        now = f"row: free, fence {r.row_fence}"
    return f"saga's fence {ride.fence}; {offered}; {now}"


def text(story: Story) -> str:
    ride = story.ride
    lines = [
        _clip(f"ride {ride.ride_id}  {ride.state} ({ride.outcome or '-'})  fare {ride.fare_cents / 100:.2f}"),
        _clip(f"driver {ride.driver_id or '-'}  fence {ride.fence}  trace {ride.trace_id or '-'}"),
        "<ride> and <driver> below stand for these ids.",
        "",
        "Saga log (trip.saga_log), HLC order:",
        "  seq  +seconds  step              status       hlc               detail",
    ]
    start = story.log[0].at_ms if story.log else ride.created_ms
    for e in story.log:
        epoch = (
            f" [sweeper epoch {e.sweeper_epoch}, in force {e.epoch_in_force}]" if e.sweeper_epoch is not None else ""
        )
        columns = f"  {e.seq:<4} {(e.at_ms - start) / 1000:+8.3f}  {e.step:<17} {e.status:<12} {e.hlc:<17} "
        detail = _short(f"{e.detail}{epoch}", story)
        if len(columns) + len(detail) <= WIDTH:
            lines.append((columns + detail).rstrip())
        else:  # a long detail (a driver id, a psp message) goes below its row
            lines += [columns.rstrip(), *_wrap(detail, " " * 8, " " * 8)]
    lines += ["", "The steps, each with its records and how it is kept:"]
    for number, key in enumerate(sections(story), start=1):
        lines += ["", *_section_lines(number, key, story)]
    ran = compensations(story.log)
    if ran:
        order = ", then ".join(f"{c.step} (undoes {c.undoes})" for c in ran)
        lines += ["", *_wrap(f"Compensations, in the order they ran: {order}.", "", "  ")]
        if not in_reverse_order(story.log):
            lines.append("  NOT the reverse of the steps they undid.")
    lines += _drill_lines(story.drill)
    saved = rescues(story)
    if saved:
        lines += ["", "What the records show saved it:"]
        for r in saved:
            lines += _wrap(f"{r.kind}: {r.evidence}", "  - ", "    ")
    elif story.drill and story.drill.faults:
        lines += ["", *_wrap(NOTHING_REDONE, "", "  ")]
    lines += ["", *_trace_lines(story.trace)]
    lines += ["", "Kafka, in general:", *_note_lines("kafka")]
    if story.gaps:
        lines += ["", "Not read:"]
        for gap in story.gaps:
            lines += _wrap(gap, "  - ", "    ")
    return "\n".join(lines)


NOTHING_REDONE = (
    "Nothing of this ride was redone: no aborted batch, no message delivered twice, no command"
    " re-sent. The fault fell between two of its transactions, and what they had committed was enough."
)


def _drill_lines(d: DrillFacts | None) -> list[str]:
    if d is None:
        return []
    verdict = "valid" if d.valid else "INVALID"
    lines = ["", _clip(f"The drill it lived through: {d.scenario} ({verdict}), report {d.report}")]
    lines.append(f"  its life in the drill: +{d.life_s[0]:.1f} s to +{d.life_s[1]:.1f} s")
    if not d.faults:
        lines.append("  no fault of the drill overlapped it")
    for f in d.faults:
        at = f" at {f.step}" if f.step else ""
        aimed = ", aimed at this ride" if f.aimed_here else ""
        back = f", recovered in {f.recovery_s:.1f} s" if f.recovery_s is not None else ", recovery not measured"
        lines += _wrap(f"{f.name} {f.target}{at}{aimed}: +{f.start_s:.1f} s to +{f.end_s:.1f} s{back}", "  - ", "    ")
    return lines


def _trace_lines(t: Trace | None) -> list[str]:
    if t is None:
        return ["No trace read from Jaeger."]
    lines = [_clip(f"Critical path of trace {t.trace_id} ({len(t.spans)} spans, {t.total_ms:.1f} ms):")]
    for s in critical_path(t):
        mark = "!" if s.error else " "
        lines.append(_clip(f" {mark} {s.start_ms:9.1f} {s.duration_ms:9.1f} ms  {s.service:<14} {s.operation}"))
    return lines + _note_lines("trace")


def as_json(story: Story) -> dict[str, Any]:
    """The facts, and what they show."""
    return {
        **dataclasses.asdict(story),
        "ledger_sum": ledger_sum(story),
        "compensations": [dataclasses.asdict(c) for c in compensations(story.log)],
        "compensations_in_reverse_order": in_reverse_order(story.log),
        "rescues": [dataclasses.asdict(r) for r in rescues(story)],
        "critical_path": [s.span_id for s in critical_path(story.trace)] if story.trace else [],
        "matchings": [dataclasses.asdict(m) for m in matchings(story.trace)],
        "sections": sections(story),
    }


def _waterfall_svg(t: Trace | None) -> str:
    if t is None or not t.spans:
        return "<p>No trace read from Jaeger.</p>"
    row, width, label = 16, 420, 240
    total = max(t.total_ms, 0.001)
    parts = []
    for n, s in enumerate(t.spans):
        y = n * row
        x = label + width * s.start_ms / total
        w = max(1.0, width * s.duration_ms / total)
        fill = "#e0902a" if s.critical else "#7aa6d8"
        stroke = ' stroke="#c0392b" stroke-width="2"' if s.error else ""
        name = html.escape(f"{s.service}: {s.operation}")
        parts.append(
            f'<text x="0" y="{y + 12}" class="l">{name[:40]}</text>'
            f'<rect class="span" data-critical="{int(s.critical)}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}"'
            f' height="10" fill="{fill}"{stroke}>'
            f"<title>{name}: +{s.start_ms:.1f} ms, {s.duration_ms:.1f} ms</title></rect>"
        )
    height = row * len(t.spans)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label + width + 10}" height="{height}"'
        f' role="img" aria-label="trace waterfall">{"".join(parts)}</svg>'
    )


def page(story: Story) -> str:
    """One self-contained page: the story's steps beside the trace's waterfall (inline SVG)."""
    ride = story.ride
    body = html.escape(text(story))
    refs = "".join(
        f'<li>[{key}] <a href="{html.escape(url)}">{html.escape(url)}</a></li>' for key, url in REFERENCES.items()
    )
    total = f"{story.trace.total_ms:.1f} ms" if story.trace else "no trace"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ride {html.escape(ride.ride_id)}: explained</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
main {{ display: grid; grid-template-columns: minmax(0, 1fr) 680px; gap: 1.5em; align-items: start; }}
pre {{ white-space: pre-wrap; font: 12px/1.35 ui-monospace, monospace; }}
svg .l {{ font: 11px ui-monospace, monospace; fill: #333; }}
</style></head><body>
<h1>Ride {html.escape(ride.ride_id)}</h1>
<p>{html.escape(ride.state)} ({html.escape(ride.outcome or "-")}), trace <code>{html.escape(ride.trace_id)}</code>,
{total}: <span id="summary">(the page's script did not run)</span>. Orange: the critical path; red outline: an
error; hover a bar for its span.</p>
<main><section><pre>{body}</pre></section>
<section><h2>Trace</h2>{_waterfall_svg(story.trace)}</section></main>
<h2>References</h2><ul>{refs}</ul>
<script>
const bars = document.querySelectorAll("rect.span");
const critical = document.querySelectorAll('rect.span[data-critical="1"]');
document.getElementById("summary").textContent =
  `${{bars.length}} spans drawn, ${{critical.length}} on the critical path`;
</script>
</body></html>
"""


# ---------------------------------------------------------------------------------------
# I/O: one function per source
# ---------------------------------------------------------------------------------------

KAFKA_READ_SECONDS = 60.0
DUMP_SECONDS = 120.0


class RideNotFound(Exception):
    pass


def _rows(dbname: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conninfo = f"host=127.0.0.1 port={INFRA.postgres} dbname={dbname} user=postgres connect_timeout=5"
    with psycopg.connect(conninfo) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def _ms(column: str) -> str:
    return f"(extract(epoch FROM {column}) * 1000)::bigint"


def read_ride(ride_id: str) -> Ride:
    rows = _rows(
        "trip",
        "SELECT rider_id, state, outcome, fare_cents, driver_id, fence, hold_id, trace_id, compensations,"
        f" {_ms('created_at')} FROM rides WHERE ride_id = %s",
        (ride_id,),
    )
    if not rows:
        raise RideNotFound(f"ride {ride_id} is not in trip's database")
    r = rows[0]
    return Ride(ride_id, str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], tuple(r[8]), r[9])


def read_saga_log(ride_id: str) -> tuple[LogEntry, ...]:
    rows = _rows(
        "trip",
        "SELECT seq, step, status, detail, hlc, message_id, message_hlc, sender_wall_ms,"
        f" {_ms('at')}, sweeper_epoch, epoch_in_force FROM saga_log WHERE ride_id = %s ORDER BY seq",
        (ride_id,),
    )
    return tuple(LogEntry(*row) for row in rows)


def read_drill(ride_id: str, roots: Iterable[Path]) -> DrillFacts | None:
    """The newest drill report under `roots` whose history names the ride."""
    found = sorted(
        (p for root in roots if root.is_dir() for p in root.rglob("history.jsonl")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for history in found:
        text = history.read_text(encoding="utf-8")
        verdict_file = history.parent / "verdict.json"
        if ride_id not in text or not verdict_file.exists():
            continue
        verdict = json.loads(verdict_file.read_text(encoding="utf-8"))
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        met = faults_met(verdict, events, ride_id)
        if met is not None:
            life, faults = met
            return DrillFacts(str(verdict.get("scenario", history.parent.name)), str(history.parent),
                              bool(verdict.get("valid")), life, faults)  # fmt: skip
    return None


def _sent(topics: list[str], envelopes: list[bytes]) -> tuple[Sent, ...]:
    found = []
    for topic, raw in zip(topics, envelopes, strict=True):
        env = saga_pb2.Envelope.FromString(raw)
        kind = env.WhichOneof("body") or "?"
        fields = getattr(env, kind).ListFields() if kind != "?" else []
        detail = " ".join(f"{f.name}={v}" for f, v in fields if f.type != f.TYPE_MESSAGE and not f.is_repeated)
        found.append(Sent(topic, kind, env.message_id, detail))
    return tuple(found)


def read_inbox(service: str, ride_id: str) -> tuple[Inboxed, ...]:
    table, order = ("processed_messages", "processed_at") if service == "trip" else ("handled_commands", "handled_at")
    rows = _rows(
        service,
        f"SELECT message_id, topics, envelopes FROM {table} WHERE message_id LIKE %s ORDER BY {order}",
        (f"{ride_id}:%",),
    )
    return tuple(Inboxed(service, m, _sent(topics, [bytes(e) for e in envs])) for m, topics, envs in rows)


def read_reservation(ride: Ride) -> Reservation | None:
    if not ride.driver_id:
        return None
    offered = None
    for (envelopes,) in _rows(
        "driver",
        "SELECT envelopes FROM handled_commands WHERE message_id LIKE %s ORDER BY handled_at",
        (f"{ride.ride_id}:reserve_driver:%",),
    ):
        for raw in envelopes:
            env = saga_pb2.Envelope.FromString(bytes(raw))
            if env.WhichOneof("body") == "driver_offered" and env.driver_offered.driver_id == ride.driver_id:
                offered = env.driver_offered.fence
    row = _rows("driver", "SELECT ride_id, fence, confirmed FROM drivers WHERE driver_id = %s", (ride.driver_id,))
    if not row:
        return Reservation(ride.driver_id, offered, 0, None, False)
    reserved, fence, confirmed = row[0]
    return Reservation(ride.driver_id, offered, fence, str(reserved) if reserved else None, confirmed)


def read_psp(ride_id: str) -> tuple[tuple[PspKey, ...], tuple[Movement, ...]]:
    keys = _rows(
        "psp",
        "SELECT operation, idempotency_key, completed_at IS NOT NULL FROM idempotency_keys"
        " WHERE idempotency_key LIKE %s ORDER BY claimed_at",
        (f"{ride_id}:%",),
    )
    moves = _rows(
        "psp",
        "SELECT kind, amount_cents, idempotency_key, charge_id FROM money_movements WHERE description = %s"
        " ORDER BY created_at",
        (charge_description(ride_id),),
    )
    return tuple(PspKey(*k) for k in keys), tuple(Movement(m[0], m[1], m[2], str(m[3])) for m in moves)


def read_money(ride_id: str) -> tuple[Hold | None, tuple[Posting, ...]]:
    held = _rows(
        "payment",
        "SELECT status, charge_id, authorized_cents, captured_cents FROM holds WHERE ride_id = %s",
        (ride_id,),
    )
    postings = _rows(
        "payment",
        "SELECT account, amount_cents, message_id FROM ledger_entries WHERE ride_id = %s ORDER BY entry_id",
        (ride_id,),
    )
    return (Hold(*held[0]) if held else None), tuple(Posting(*p) for p in postings)


@dataclass(frozen=True)
class KafkaRead:
    records: tuple[KafkaRecord, ...]
    short: tuple[str, ...]  # partitions not read to their high watermark in time


def read_kafka(ride_id: str, isolation: str) -> KafkaRead:
    """Every record keyed by the ride on the saga's topics, read from the beginning of each
    partition (assigned, no group, nothing committed) up to its high watermark."""
    consumer = Consumer(
        {
            "bootstrap.servers": f"127.0.0.1:{INFRA.kafka}",
            "group.id": f"ridectl-explain-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    key, found = ride_id.encode(), []
    left: dict[tuple[str, int], int] = {}
    try:
        topics = consumer.list_topics(timeout=10).topics
        high: dict[tuple[str, int], int] = {}
        for topic in Topic:
            for partition in topics[str(topic)].partitions if str(topic) in topics else ():
                low, end = consumer.get_watermark_offsets(TopicPartition(str(topic), partition), timeout=10)
                if end > low:
                    high[(str(topic), partition)] = end
        left = dict(high)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in high])
        deadline = time.monotonic() + KAFKA_READ_SECONDS
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                where = (msg.topic() or "", msg.partition() or 0)
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.pop(where, None)
                        continue
                    raise KafkaException(error)
                offset = msg.offset() or 0
                if offset >= high.get(where, 0):
                    continue  # written after the watermarks were read
                if offset >= high[where] - 1:
                    left.pop(where, None)
                if msg.key() == key:
                    found.append(_record(msg.topic() or "", where[1], offset, msg.value(), isolation))
    finally:
        consumer.close()
    return KafkaRead(tuple(found), tuple(f"{t}/{p}" for t, p in sorted(left)))


def _record(topic: str, partition: int, offset: int, value: bytes | None, isolation: str) -> KafkaRecord:
    committed = isolation == "read_committed"
    try:
        env = decode(value)
    except Poison as poison:
        return KafkaRecord(topic, partition, offset, f"undecodable ({poison})", "", "", "", committed)
    kind = env.WhichOneof("body") or ""
    epoch = env.step_timed_out.epoch if kind == "step_timed_out" else None
    return KafkaRecord(topic, partition, offset, kind, env.message_id, env.causation_id, env.hlc, committed, epoch)


def _hlc(stamp: str) -> tuple[int, int]:
    wall, _, logical = stamp.partition(".")
    return (int(wall), int(logical or 0)) if wall.isdigit() and (logical or "0").isdigit() else (0, 0)


def merge_reads(committed: Iterable[KafkaRecord], uncommitted: Iterable[KafkaRecord]) -> tuple[KafkaRecord, ...]:
    """Every record either read saw, marked committed if read_committed saw it."""
    seen = {(r.topic, r.partition, r.offset) for r in committed}
    merged = {(r.topic, r.partition, r.offset): r for r in uncommitted}
    for r in uncommitted:
        if (r.topic, r.partition, r.offset) in seen:
            merged[(r.topic, r.partition, r.offset)] = dataclasses.replace(r, committed=True)
    for r in committed:
        merged.setdefault((r.topic, r.partition, r.offset), r)
    return tuple(sorted(merged.values(), key=lambda r: (_hlc(r.hlc), r.topic, r.partition, r.offset)))


def find_dump_tool() -> tuple[str, str]:
    jars = paths.jars_dir("kafka-tools")  # deploy/local/jars/kafka-tools/pom.xml, fetched by `make bootstrap`
    entries: list[str] = []
    for jar in sorted(jars.glob("*.jar")):
        with zipfile.ZipFile(jar) as archive:
            entries += archive.namelist()
    found = dump_tool(entries)
    if found is None:
        raise StackError(f"neither {' nor '.join(c for c, _ in DUMP_TOOLS)} is in {jars}: run `make bootstrap`")
    return found


def dump(files: list[str], *options: str) -> str:
    """DumpLogSegments over some segment files, with the cached Kafka jars (read only)."""
    cls, decoder = find_dump_tool()
    command = [components.java(), "-cp", f"{paths.jars_dir('kafka-tools')}/*", cls, "--files", ",".join(files)]
    command += list(options) or ["--print-data-log", "--value-decoder-class", decoder]
    done = subprocess.run(command, capture_output=True, text=True, timeout=DUMP_SECONDS, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise StackError(f"DumpLogSegments exited {done.returncode}: {last}")
    return done.stdout


def kafka_data() -> Path:
    """The broker's log.dirs (deploy/local/files.py kafka_nodes), in the running stack's mode."""
    running = stack.load(paths.RUN) or stack.Stack()
    return files.kafka_nodes(paths.RUN, running.kafka_controllers)[-1].home / "data"


def read_batches(records: tuple[KafkaRecord, ...]) -> tuple[Batch, ...]:
    dumped: dict[tuple[str, int], list[DumpedBatch]] = {}
    for topic, partition in sorted({(r.topic, r.partition) for r in records}):
        folder = kafka_data() / f"{topic}-{partition}"
        offsets = [r.offset for r in records if (r.topic, r.partition) == (topic, partition)]
        files = [str(folder / n) for n in segments_for(offsets, (p.name for p in folder.glob("*.log")))]
        if files:
            # A marker follows its batch, perhaps in the next segment: dump from there on.
            later = [str(p) for p in sorted(folder.glob("*.log")) if str(p) > files[-1]]
            dumped[(topic, partition)] = parse_dump(dump([*files, *later[:1]]))
    names: dict[int, str] = {}
    if any(b.transactional for log in dumped.values() for b in log):
        state = [str(p) for p in sorted(kafka_data().glob("__transaction_state-*/*.log"))]
        names = parse_transaction_log(dump(state, "--transaction-log-decoder")) if state else {}
    return link_batches(records, dumped, names)


def read_trace(trace_id: str) -> Trace:
    spans = trace.fetch(trace_id)
    start = min(s.start_us for s in spans)
    total = max(s.end_us for s in spans) - start
    facts = tuple(
        SpanFact(
            s.span_id,
            s.parent_span_id,
            s.service,
            s.operation,
            (s.start_us - start) / 1000,
            s.duration_us / 1000,
            s.error,
            s.critical,
            tuple(sorted(s.attributes.items())),
        )
        for s in spans
    )
    return Trace(trace_id, total / 1000, facts)


READ_ERRORS = (
    psycopg.Error,
    KafkaException,
    OSError,
    ValueError,
    zipfile.BadZipFile,
    subprocess.SubprocessError,
    StackError,
    trace.TraceNotFound,
)


def _attempt(what: str, read: Callable[[], T], gaps: list[str]) -> T | None:
    """What `read` returns, or None with the reason added to `gaps`."""
    try:
        return read()
    except READ_ERRORS as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        gaps.append(f"{what}: {reason}")
        return None


def collect(ride_id: str, drill_roots: Iterable[Path] = ()) -> Story:
    """Reads every source; only the ride's own row is required."""
    ride = read_ride(ride_id)
    log = read_saga_log(ride_id)
    gaps: list[str] = []
    reads = []
    for isolation in ("read_committed", "read_uncommitted"):
        read = _attempt(f"Kafka ({isolation})", functools.partial(read_kafka, ride_id, isolation), gaps)
        read = read or KafkaRead((), ())
        if read.short:
            gaps.append(f"Kafka ({isolation}): not read to the high watermark of {', '.join(read.short)}")
        reads.append(read.records)
    records = merge_reads(*reads)
    batches = _attempt("Kafka batches (DumpLogSegments)", lambda: read_batches(records), gaps) or ()
    inboxes: tuple[Inboxed, ...] = ()
    for service in ("trip", "driver", "payment"):
        inboxes += _attempt(f"{service}'s inbox", functools.partial(read_inbox, service, ride_id), gaps) or ()
    reservation = _attempt("driver's reservation", lambda: read_reservation(ride), gaps)
    psp_keys, movements = _attempt("psp", lambda: read_psp(ride_id), gaps) or ((), ())
    hold, ledger = _attempt("payment's hold and ledger", lambda: read_money(ride_id), gaps) or (None, ())
    traced = _attempt("Jaeger", lambda: read_trace(ride.trace_id), gaps) if ride.trace_id else None
    if not ride.trace_id:
        gaps.append("Jaeger: the ride has no trace id")
    drill = _attempt("drill reports", lambda: read_drill(ride_id, drill_roots), gaps)
    return Story(
        ride, log, records, batches, inboxes, reservation, psp_keys, movements, hold, ledger, traced, tuple(gaps), drill
    )


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    ride_id = valid_ride_id(args.ride_id)
    roots = [Path(args.drill)] if args.drill else [DRILL_REPORTS, paths.RUN / "drills"]
    try:
        story = collect(ride_id, roots)
    except RideNotFound as error:
        rides.fail(args.json, "NOT_FOUND", str(error))
        return 1
    except psycopg.Error as error:
        rides.fail(args.json, "UNAVAILABLE", f"trip's database: {str(error).strip().splitlines()[0]}")
        return 1
    if args.html:
        Path(args.html).write_text(page(story), encoding="utf-8")
        print(f"ridectl: wrote the story of ride {ride_id} to {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(as_json(story)))
    elif not args.html:
        print(text(story))
    return 0


def add_commands(commands: Any) -> None:
    explain = commands.add_parser("explain", help="tell one ride's story from the system's own records")
    explain.add_argument("ride_id")
    explain.add_argument("--json", action="store_true", help="print the facts as JSON")
    explain.add_argument("--html", metavar="FILE", help="write one self-contained page: steps beside the trace")
    explain.add_argument(
        "--drill", metavar="DIR", help=f"where to look for the drill it lived through (default {DRILL_REPORTS})"
    )
    explain.set_defaults(handler=run)
