import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from services.runtime.telemetry import JsonFormatter, ride_scope


def test_every_log_line_carries_trace_span_and_ride_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    with tracer.start_as_current_span("op") as span, ride_scope("ride-1"):
        line = json.loads(JsonFormatter("rider").format(record))
    ctx = span.get_span_context()
    assert line["msg"] == "hello world"
    assert line["service"] == "rider"
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert line["ride_id"] == "ride-1"


def test_outside_a_span_the_ids_are_empty() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "idle", (), None)
    line = json.loads(JsonFormatter("trip").format(record))
    assert line["trace_id"] == "" and line["ride_id"] == ""
