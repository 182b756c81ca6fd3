"""Runs one gRPC service: a grpc.aio server with health checking, reflection and
tracing, plus the service's background tasks (consume loops, sweepers). It drains
in-flight calls on SIGTERM, and exits non-zero if a background task dies, so the
supervisor restarts the whole process instead of leaving half a service running."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from services.runtime.config import Settings
from services.runtime.telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
GRACE_SECONDS = 5.0


class Lifecycle:
    """What a service registers besides its servicers: background tasks, which stop when
    `stopping` is set, and closers for its resources, run in reverse order at shutdown."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.failed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self._stop_hooks: list[Callable[[], Awaitable[None]]] = []

    def spawn(self, name: str, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.create_task(run(self.stopping), name=name)
        task.add_done_callback(self._watch)
        self._tasks.append(task)

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        error = task.exception()
        log.error("background task %s stopped; shutting down", task.get_name(), exc_info=error)
        self.failed = True
        self.stopping.set()

    def on_close(self, closer: Callable[[], Awaitable[None] | None]) -> None:
        self._closers.append(closer)

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """`hook` runs as soon as the stop begins, before the server drains: what others
        should hear at once (a cluster member's goodbye), not after the grace period."""
        self._stop_hooks.append(hook)

    async def begin_stop(self) -> None:
        for hook in self._stop_hooks:
            await hook()

    async def close(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for closer in reversed(self._closers):
            result = closer()
            if result is not None:
                await result


Register = Callable[[grpc.aio.Server, Lifecycle], Awaitable[None]]


async def serve(settings: Settings, grpc_service: str, register: Register) -> None:
    setup_logging(settings.service_name)
    provider = setup_tracing(
        settings.service_name, settings.otlp_endpoint, settings.environment, settings.trace_sample_ratio
    )
    server = grpc.aio.server(interceptors=[aio_server_interceptor()])  # type: ignore[no-untyped-call]
    lifecycle = Lifecycle()
    await register(server, lifecycle)
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

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lifecycle.stopping.set)
    await lifecycle.stopping.wait()
    await lifecycle.begin_stop()
    log.info("draining")
    await health_servicer.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
    await lifecycle.close()
    provider.shutdown()
    if lifecycle.failed:
        sys.exit(1)
