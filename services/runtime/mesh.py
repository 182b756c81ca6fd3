"""Outbound calls through the caller's own Envoy sidecar.

A service never dials another service: it sends every call to its sidecar's egress
listener, and Envoy routes it by gRPC service name to the callee's sidecar."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors


def sidecar_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, interceptors=aio_client_interceptors())  # type: ignore[no-untyped-call]
