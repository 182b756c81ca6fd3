"""`ridectl probe`: one traced call into rider's sidecar that follows the mesh to psp."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from ridesaga.common.v1 import common_pb2
from ridesaga.rider.v1 import rider_pb2_grpc
from services.runtime import mesh
from services.runtime.probe import reached
from services.runtime.telemetry import setup_tracing
from services.runtime.topology import INFRA, SERVICES, service

PROBE_TIMEOUT_SECONDS = 10.0


async def _call() -> tuple[str, common_pb2.ProbeReply]:
    tracer = trace.get_tracer("ridectl")
    async with mesh.sidecar_channel(f"127.0.0.1:{service('rider').ingress_port}") as channel:
        with tracer.start_as_current_span("ridectl probe") as span:
            reply = await rider_pb2_grpc.RiderServiceStub(channel).Probe(
                common_pb2.ProbeRequest(), timeout=PROBE_TIMEOUT_SECONDS
            )
            return f"{span.get_span_context().trace_id:032x}", reply


@functools.cache
def _tracing() -> TracerProvider:
    """Once per process: a tracer provider can be made global only once."""
    return setup_tracing("ridectl", f"http://127.0.0.1:{INFRA.jaeger_otlp_grpc}", "local", 1.0)


def mesh_probe() -> dict[str, Any]:
    provider = _tracing()
    try:
        trace_id, reply = asyncio.run(_call())
    finally:
        provider.force_flush()
    found = reached(reply)
    return {
        "trace_id": trace_id,
        "reached": found,
        "complete": set(found) == {s.name for s in SERVICES} and all(found.values()),
    }
