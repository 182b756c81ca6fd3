"""A request through the rider sidecar reaches psp through the other sidecars, and the
whole call path comes back from Jaeger's query API as one trace."""

import json
import urllib.error
import urllib.request
from typing import Any

from ridectl.probe import mesh_probe
from services.runtime.topology import INFRA, SERVICES
from tests.support import wait_for

EXPECTED_EDGES = {("rider", "trip"), ("trip", "driver"), ("trip", "payment"), ("payment", "psp")}


def _spans(trace_id: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{INFRA.jaeger_query}/api/v3/traces/{trace_id}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
    except urllib.error.HTTPError:
        return []
    spans = []
    for resource in body["result"]["resourceSpans"]:
        attrs = {a["key"]: a["value"].get("stringValue") for a in resource["resource"]["attributes"]}
        for scope in resource["scopeSpans"]:
            spans += [{**span, "service": attrs["service.name"]} for span in scope["spans"]]
    return spans


def test_probe_crosses_every_sidecar_and_is_one_trace() -> None:
    result = mesh_probe()
    assert result["complete"], result["reached"]
    wanted = {name for s in SERVICES for name in (s.name, s.sidecar)}

    def edges_of(spans: list[dict[str, Any]]) -> set[tuple[str, str]]:
        by_id = {s["spanId"]: s for s in spans}
        app_services = {s.name for s in SERVICES}
        edges = set()
        for span in spans:
            parent = by_id.get(span.get("parentSpanId", ""))
            # Walk up through sidecar spans to the calling application service.
            while parent is not None and parent["service"] not in app_services:
                parent = by_id.get(parent.get("parentSpanId", ""))
            if parent is not None and span["service"] in app_services and parent["service"] != span["service"]:
                edges.add((parent["service"], span["service"]))
        return edges

    def whole_trace() -> set[tuple[str, str]] | None:
        # Spans arrive in batches (Envoy flushes every few seconds): wait for all of them.
        spans = _spans(result["trace_id"])
        if not wanted <= {s["service"] for s in spans}:
            return None
        edges = edges_of(spans)
        return edges if edges >= EXPECTED_EDGES else None

    edges = wait_for(whole_trace, 30, f"spans of {sorted(wanted)} in trace {result['trace_id']}", interval=1.0)
    assert edges == EXPECTED_EDGES
