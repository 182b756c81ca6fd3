"""`ridectl trace RIDE_ID`: one ride's trace from Jaeger's query API, readable without
the Jaeger UI: a waterfall in the terminal, JSON for scripts, or a self-contained page.

The critical path is the chain of spans that decided when the ride ended: from the root,
always into the child whose subtree finished last."""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from services.runtime.topology import INFRA

JAEGER = f"http://127.0.0.1:{INFRA.jaeger_query}"
KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
ERROR = 2  # OTLP status code
MAX_INDENT = 12


class TraceNotFound(Exception):
    pass


@dataclass
class Span:
    span_id: str
    parent_span_id: str
    service: str
    operation: str
    start_us: int
    duration_us: int
    error: bool
    kind: str
    critical: bool = False
    attributes: dict[str, str] = field(default_factory=dict)  # the span's own, as text

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us


def _text(value: dict[str, Any]) -> str:
    """An OTLP JSON attribute value as text (a string, a number or a boolean)."""
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in value:
            return str(value[kind])
    return ""


def parse(body: dict[str, Any]) -> list[Span]:
    """Spans from Jaeger's /api/v3 answer (OTLP JSON)."""
    spans = []
    for resource in body.get("result", {}).get("resourceSpans", []):
        attrs = {a["key"]: a["value"].get("stringValue", "") for a in resource["resource"].get("attributes", [])}
        for scope in resource.get("scopeSpans", []):
            for raw in scope.get("spans", []):
                start, end = int(raw["startTimeUnixNano"]), int(raw["endTimeUnixNano"])
                spans.append(
                    Span(
                        span_id=raw["spanId"],
                        parent_span_id=raw.get("parentSpanId", ""),
                        service=attrs.get("service.name", "?"),
                        operation=raw["name"],
                        start_us=start // 1000,
                        duration_us=max(0, end - start) // 1000,
                        error=raw.get("status", {}).get("code") == ERROR,
                        kind=KINDS.get(raw.get("kind", 1), "internal"),
                        attributes={a["key"]: _text(a.get("value", {})) for a in raw.get("attributes", [])},
                    )
                )
    spans.sort(key=lambda s: (s.start_us, s.span_id))
    mark_critical_path(spans)
    return spans


def _children(spans: list[Span]) -> dict[str, list[Span]]:
    ids = {s.span_id for s in spans}
    tree: dict[str, list[Span]] = {}
    for span in spans:
        parent = span.parent_span_id if span.parent_span_id in ids else ""
        tree.setdefault(parent, []).append(span)
    return tree


def mark_critical_path(spans: list[Span]) -> None:
    tree = _children(spans)
    finish: dict[str, int] = {}

    def subtree_end(span: Span) -> int:
        if span.span_id not in finish:
            finish[span.span_id] = max([span.end_us, *(subtree_end(c) for c in tree.get(span.span_id, []))])
        return finish[span.span_id]

    roots = tree.get("", [])
    if not roots:
        return
    node: Span | None = max(roots, key=subtree_end)
    while node is not None:
        node.critical = True
        kids = tree.get(node.span_id, [])
        node = max(kids, key=subtree_end) if kids else None


def fetch(trace_id: str) -> list[Span]:
    try:
        with urllib.request.urlopen(f"{JAEGER}/api/v3/traces/{trace_id}", timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise TraceNotFound(f"trace {trace_id} is not (or not yet) in Jaeger") from None
        raise
    spans = parse(body)
    if not spans:
        raise TraceNotFound(f"trace {trace_id} has no spans in Jaeger")
    return spans


def ui_link(trace_id: str) -> str | None:
    """The Jaeger UI's page for the trace, if this Jaeger serves the real UI."""
    try:
        with urllib.request.urlopen(f"{JAEGER}/", timeout=5) as response:
            page = response.read(4096).decode(errors="replace")
    except OSError:
        return None
    return None if "placeholder for the Jaeger UI" in page else f"{JAEGER}/trace/{trace_id}"


def _depths(spans: list[Span]) -> dict[str, int]:
    tree = _children(spans)
    depth: dict[str, int] = {}
    stack = [(root, 0) for root in tree.get("", [])]
    while stack:
        span, d = stack.pop()
        depth[span.span_id] = d
        stack.extend((child, d + 1) for child in tree.get(span.span_id, []))
    return depth


def waterfall(trace_id: str, spans: list[Span], width: int = 40) -> str:
    start = min(s.start_us for s in spans)
    total = max(max(s.end_us for s in spans) - start, 1)
    depth = _depths(spans)
    lines = [
        f"trace {trace_id}: {len(spans)} spans, {total / 1000:.1f} ms;"
        " * critical path, ! error; offset and duration in ms"
    ]
    for s in spans:
        left = (s.start_us - start) * width // total
        bar = " " * left + "█" * max(1, s.duration_us * width // total)
        mark = ("*" if s.critical else " ") + ("!" if s.error else " ")
        name = " " * min(depth.get(s.span_id, 0), MAX_INDENT) + s.operation
        lines.append(
            f"{mark} {(s.start_us - start) / 1000:9.1f} {s.duration_us / 1000:8.1f}  {s.service:<14} {name[:60]:<60} |{bar:<{width}}|"
        )
    return "\n".join(lines)


def as_json(trace_id: str, spans: list[Span]) -> dict[str, Any]:
    return {"trace_id": trace_id, "spans": [asdict(s) for s in spans]}


def page(trace_id: str, ride_id: str, spans: list[Span]) -> str:
    """A self-contained timeline page: no external script, style or font."""
    start = min(s.start_us for s in spans)
    total = max(max(s.end_us for s in spans) - start, 1)
    depth = _depths(spans)
    rows = []
    for s in spans:
        left = 100 * (s.start_us - start) / total
        bar_width = max(0.3, 100 * s.duration_us / total)
        classes = "span" + (" critical" if s.critical else "") + (" error" if s.error else "")
        rows.append(
            f'<div class="{classes}" data-span-id="{s.span_id}" data-parent="{s.parent_span_id}">'
            f'<div class="label" style="padding-left:{depth.get(s.span_id, 0) * 12}px">'
            f"<b>{html.escape(s.service)}</b> {html.escape(s.operation)}</div>"
            f'<div class="lane"><div class="bar" style="left:{left:.3f}%;width:{bar_width:.3f}%"'
            f' title="{(s.start_us - start) / 1000:.1f} ms + {s.duration_us / 1000:.1f} ms ({s.kind})"></div></div>'
            f'<div class="ms">{s.duration_us / 1000:.1f} ms</div></div>'
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ride {html.escape(ride_id)}: trace {trace_id}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
.span {{ display: grid; grid-template-columns: 38em 1fr 6em; align-items: center; border-bottom: 1px solid #eee; }}
.label {{ white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }}
.lane {{ position: relative; height: 14px; background: #fafafa; }}
.bar {{ position: absolute; top: 2px; height: 10px; background: #7aa6d8; border-radius: 2px; }}
.critical .bar {{ background: #e0902a; }}
.error .label {{ color: #c0392b; }} .error .bar {{ outline: 2px solid #c0392b; }}
.ms {{ text-align: right; color: #666; }}
</style></head><body>
<h1>Ride {html.escape(ride_id)}</h1>
<p>Trace <code>{trace_id}</code>, {total / 1000:.1f} ms. Orange: critical path. Red: error.
<span id="summary"></span></p>
<div id="spans">
{chr(10).join(rows)}
</div>
<script>
const spans = document.querySelectorAll("#spans .span");
const errors = document.querySelectorAll("#spans .span.error").length;
const services = new Set(Array.from(spans, s => s.querySelector("b").textContent));
document.getElementById("summary").textContent =
  spans.length + " spans from " + services.size + " services, " + errors + " with errors.";
</script>
</body></html>
"""
