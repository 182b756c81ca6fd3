"""The Locust process's settings, the one module of that process that reads the
environment: where each service's public address is (its sidecar; overridden in compose
and Kubernetes, where Locust runs in its own container) and how many simulated drivers
Locust adds to the fleet."""

from __future__ import annotations

import os

from services.runtime.topology import service


def target(name: str) -> str:
    """RIDESAGA_<NAME>_TARGET, else the service's loopback ingress."""
    return os.environ.get(f"RIDESAGA_{name.upper()}_TARGET", f"127.0.0.1:{service(name).ingress_port}")


def load_drivers() -> int:
    raw = os.environ.get("RIDESAGA_LOAD_DRIVERS", "5")
    if not raw.isdigit():
        raise SystemExit(f"locust: RIDESAGA_LOAD_DRIVERS must be a whole number, got {raw!r}")
    return int(raw)
