"""Saga messages on Kafka: the envelope, its record headers and its keys.

Every record is keyed by ride id (one ride's messages stay ordered on one partition),
carries its HLC time in the envelope and the W3C trace context in its headers."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from ridesaga.saga.v1 import saga_pb2
from services.blocks.clocks import HybridLogicalClock, Timestamp

Headers = list[tuple[str, str | bytes | None]]
tracer = trace.get_tracer(__name__)
# How a PaymentDeclined reason starts when the processor refused the authorization for
# good (not a card decline): "payment_rejected: <gRPC code>: <the psp's message>".
PAYMENT_REJECTED = "payment_rejected"


class Poison(Exception):
    """A record that can never be processed: it goes to the dead-letter topic."""


def observe(clock: HybridLogicalClock, env: saga_pb2.Envelope) -> None:
    """Every consumer's first step: the local HLC moves past the message's stamp, so what it
    sends next is stamped after it; an unreadable or far-future stamp makes it poison."""
    try:
        clock.observe(Timestamp.parse(env.hlc))
    except ValueError as error:
        raise Poison(str(error)) from None


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


def envelope(
    clock: HybridLogicalClock, message_id: str, ride_id: str, causation_id: str, **body: object
) -> saga_pb2.Envelope:
    """Builds an envelope with exactly one body field, e.g. authorize_payment=AuthorizePayment(...)."""
    if len(body) != 1:
        raise ValueError("an envelope carries exactly one body")
    ((kind, message),) = body.items()
    built = saga_pb2.Envelope(
        message_id=message_id,
        ride_id=ride_id,
        type=kind,
        hlc=str(clock.now()),
        causation_id=causation_id,
        sent_wall_ms=clock.wall_ms(),
    )
    getattr(built, kind).CopyFrom(message)
    return built


def outgoing(topic: str, env: saga_pb2.Envelope) -> Outgoing:
    """A record to send, under a PRODUCER span whose context travels in its headers: the
    consumer's span becomes its child, so one ride stays one trace across Kafka."""
    with tracer.start_as_current_span(f"{topic} send {env.type}", kind=SpanKind.PRODUCER) as span:
        span.set_attribute("messaging.system", "kafka")
        span.set_attribute("messaging.destination.name", topic)
        span.set_attribute("messaging.message.id", env.message_id)
        span.set_attribute("saga.message.type", env.type)
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    headers: Headers = [(k, v.encode()) for k, v in carrier.items()]
    return Outgoing(topic, env.ride_id.encode(), env.SerializeToString(), headers)


def decode(value: bytes | None) -> saga_pb2.Envelope:
    if not value:
        raise Poison("empty record")
    try:
        env = saga_pb2.Envelope.FromString(value)
    except DecodeError as error:
        raise Poison(f"not a saga envelope: {error}") from None
    kind = env.WhichOneof("body")
    if kind is None:
        raise Poison(f"envelope {env.message_id or '?'} has no body (unknown message type {env.type!r}?)")
    if not env.message_id or not env.ride_id:
        raise Poison(f"envelope of type {kind} lacks message_id or ride_id")
    return env


def header_carrier(headers: Headers | dict[str, str | bytes | None] | None) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else v for k, v in pairs if v is not None}
