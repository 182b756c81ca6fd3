"""Runs one gRPC service: a grpc.aio server with health checking, reflection and
tracing, that drains in-flight calls on SIGTERM and exits when asked, never by polling."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.shared.config import Settings
from services.shared.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

Register = Callable[[grpc.aio.Server], Awaitable[Callable[[], Awaitable[None]]]]
"""Adds a service's servicers to the server; returns the coroutine that closes its
resources (pools, clients) after the server has stopped."""

GRACE_SECONDS = 5.0


async def serve(settings: Settings, grpc_service: str, register: Register) -> None:
    setup_logging(settings.service_name)
    provider = setup_tracing(
        settings.service_name, settings.otlp_endpoint, settings.environment, settings.trace_sample_ratio
    )
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])  # type: ignore[no-untyped-call]
    close = await register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (grpc_service, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.app_port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"{settings.service_name}: cannot listen on {address} (port in use?)")
    await server.start()
    for name in ("", grpc_service):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening", extra={"fields": {"address": address}})

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("draining")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
    await close()
    provider.shutdown()
