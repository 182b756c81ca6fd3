"""Tracing and structured logs for every process.

Traces go to Jaeger over OTLP with parent-based ratio sampling; every log line is one
JSON object carrying the current trace id, span id and ride id, so a log line can always
be joined to its trace."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

SERVICE_VERSION = "0.1.0"

ride_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("ride_id", default="")


@contextmanager
def ride_scope(ride_id: str) -> Iterator[None]:
    """Tags the current span and every log line inside the block with the ride id."""
    token = ride_id_var.set(ride_id)
    trace.get_current_span().set_attribute("ride.id", ride_id)
    try:
        yield
    finally:
        ride_id_var.reset(token)


SYNTHETIC = "synthetic_request"


class RideIdProcessor(SpanProcessor):
    """Puts `ride.id` on every span started while a ride is in scope, so one query by
    ride id finds every span of the ride, whichever service made it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ride_id = ride_id_var.get()
        if ride_id:
            span.set_attribute("ride.id", ride_id)
        # Load generators mark their requests with W3C baggage; the mark follows the
        # trace through every hop (Kafka headers included) and lands on every span, so
        # synthetic traffic can be filtered out (or in) in Jaeger.
        if baggage.get_baggage(SYNTHETIC, parent_context) == "true":
            span.set_attribute(SYNTHETIC, True)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "trace_id": f"{ctx.trace_id:032x}" if ctx.is_valid else "",
            "span_id": f"{ctx.span_id:016x}" if ctx.is_valid else "",
            "ride_id": ride_id_var.get(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            line.update(extra)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(service: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup_tracing(service: str, endpoint: str, environment: str, sample_ratio: float) -> TracerProvider:
    resource = Resource.create(
        {
            "service.name": service,
            "service.version": SERVICE_VERSION,
            "deployment.environment.name": environment,
        }
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    provider.add_span_processor(RideIdProcessor())
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider
