"""One ride, one trace: read back from the real Jaeger through `ridectl trace`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from deploy.local import paths
from ridesaga.rider.v1 import rider_pb2, rider_pb2_grpc
from services.runtime.topology import SERVICES
from tests.support import book_ride, chromium, ride_story, ridectl, sidecar_channel, wait_for

APPS = {s.name for s in SERVICES} | {"fleet"}
SIDECARS = {s.sidecar for s in SERVICES}
HOPS = [
    "ride_requested",
    "authorize_payment",
    "payment_authorized",
    "reserve_driver",
    "driver_offered",
    "driver_accepted",
    "trip_completed",
    "capture_payment",
    "payment_captured",
]
EDGES = {
    ("rider", "trip"),
    ("trip", "payment"),
    ("payment", "psp"),
    ("payment", "trip"),
    ("trip", "driver"),
    ("driver", "trip"),
    ("driver", "fleet"),
    ("fleet", "driver"),
}


def _ride(cancel: bool) -> str:
    with sidecar_channel("rider") as channel:
        stub = rider_pb2_grpc.RiderServiceStub(channel)
        ride = book_ride(stub, "Traced")
        if cancel:
            stub.CancelRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=10)
        wait_for(
            lambda: stub.GetRide(rider_pb2.RideRef(ride_id=ride.ride_id), timeout=10).terminal,
            90,
            "the ride to end",
            explain=lambda: ride_story(ride.ride_id),
        )
    return str(ride.ride_id)


def _trace(ride_id: str, complete: Any) -> dict[str, Any]:
    """Polls `ridectl trace --json` until `complete(trace)` holds (spans arrive in batches)."""

    def ready() -> dict[str, Any] | None:
        result = ridectl("trace", ride_id, "--json")
        if result.returncode != 0:
            return None
        found: dict[str, Any] = json.loads(result.stdout)
        return found if complete(found) else None

    return wait_for(ready, 45, f"the trace of ride {ride_id}", interval=1.0)


def _services(found: dict[str, Any]) -> set[str]:
    return {s["service"] for s in found["spans"]}


def _edges(spans: list[dict[str, Any]]) -> set[tuple[str, str]]:
    by_id = {s["span_id"]: s for s in spans}
    edges = set()
    for span in spans:
        if span["service"] not in APPS:
            continue
        # The nearest ancestor made by an application, looking through the sidecars.
        parent = by_id.get(span["parent_span_id"])
        while parent is not None and parent["service"] not in APPS:
            parent = by_id.get(parent["parent_span_id"])
        if parent is not None and parent["service"] != span["service"]:
            edges.add((parent["service"], span["service"]))
    return edges


def _every_hop(found: dict[str, Any]) -> bool:
    names = {(s["operation"], s["kind"]) for s in found["spans"]}
    return all(
        any(op.endswith(f"send {hop}") and kind == "producer" for op, kind in names)
        and any(op.endswith(f"process {hop}") and kind == "consumer" for op, kind in names)
        for hop in HOPS
    )


def _complete(found: dict[str, Any]) -> bool:
    """Every process's spans are in: they arrive in batches from a dozen exporters."""
    return _services(found) >= (APPS | SIDECARS) and _edges(found["spans"]) >= EDGES and _every_hop(found)


def test_a_completed_ride_is_one_trace_through_every_service_sidecar_and_kafka_hop() -> None:
    ride_id = _ride(cancel=False)
    found = _trace(ride_id, _complete)
    spans = found["spans"]
    operations = {(s["service"], s["operation"], s["kind"]) for s in spans}
    for hop in HOPS:
        assert any(op.endswith(f"send {hop}") and kind == "producer" for _, op, kind in operations), hop
        assert any(op.endswith(f"process {hop}") and kind == "consumer" for _, op, kind in operations), hop
    for service in ("rider", "trip", "driver", "payment", "psp"):
        assert any(s == service and op in ("SELECT", "INSERT", "UPDATE") for s, op, _ in operations), service
    assert any(s == "driver" and op == "GEOSEARCH" for s, op, _ in operations)
    for sidecar in SIDECARS:
        assert any(s == sidecar and op == "ingress" for s, op, _ in operations), sidecar
    assert _edges(spans) >= EDGES, EDGES - _edges(spans)
    assert sum(s["critical"] for s in spans) >= len(HOPS)
    failed = [(s["service"], s["operation"]) for s in spans if s["error"]]
    assert failed == [], "no span of a ride that went right marks an error"


def test_a_cancelled_ride_shows_its_compensation_with_errors_marked() -> None:
    ride_id = _ride(cancel=True)
    found = _trace(
        ride_id,
        lambda t: all(
            f"process {hop}" in json.dumps(t) for hop in ("cancel_requested", "void_payment", "payment_voided")
        ),
    )
    spans = found["spans"]
    names = [s["operation"] for s in spans]
    # The cancel joins the ride's trace whenever it lands, even while a match is in flight.
    assert "cancel requested" in names
    assert any(n.endswith("send void_payment") for n in names)
    failed = [s for s in spans if s["error"]]
    assert failed, "the transition into compensation is marked as an error"
    assert all(s["service"] == "trip" for s in failed)


def test_the_html_page_loads_in_chromium_and_shows_every_span(tmp_path: Path) -> None:
    ride_id = _ride(cancel=False)
    _trace(ride_id, _complete)
    page = tmp_path / "trace.html"
    written = ridectl("trace", ride_id, "--html", str(page))
    assert written.returncode == 0, written.stderr
    wrote = re.search(r"wrote (\d+) spans", written.stderr)
    assert wrote is not None, written.stderr
    dom, shot_log = chromium(page, "trace.png", "1400,2400", tmp_path / "profile")
    report = paths.REPO / "reports"
    console_errors = [
        line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)
    ]
    assert console_errors == []
    rendered = len(re.findall(r'<div class="span[ "]', dom.stdout))
    assert rendered == int(wrote.group(1)) > 50
    summary = re.search(r'<span id="summary">(\d+) spans from (\d+) services', dom.stdout)
    assert summary is not None, "the page's script ran"
    assert int(summary.group(1)) == rendered
    assert (report / "trace.png").stat().st_size > 10_000, shot_log[-500:]
