"""`ridectl mesh fault SERVICE ...`: switch the fault-injection filter of a service's
sidecar at runtime, through Envoy's admin API and runtime layer (no restart)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
import urllib.request

from services.runtime.topology import service

ABORT_PERCENT = "fault.http.abort.abort_percent"
DELAY_PERCENT = "fault.http.delay.fixed_delay_percent"
DELAY_MS = "fault.http.delay.fixed_duration_ms"


def set_faults(name: str, abort_percent: int = 0, delay_percent: int = 0, delay_ms: int = 1000) -> dict[str, int]:
    """Calls into `name`'s sidecar fail with UNAVAILABLE at abort_percent and wait
    delay_ms at delay_percent. All zero turns faults off."""
    for value, label in ((abort_percent, "abort percent"), (delay_percent, "delay percent")):
        if not 0 <= value <= 100:
            raise ValueError(f"{label} must be in 0..100, got {value}")
    if delay_ms < 0:
        raise ValueError(f"delay ms must be >= 0, got {delay_ms}")
    values = {ABORT_PERCENT: abort_percent, DELAY_PERCENT: delay_percent, DELAY_MS: delay_ms}
    query = urllib.parse.urlencode(values)
    url = f"http://127.0.0.1:{service(name).admin_port}/runtime_modify?{query}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as response:
        if response.status != 200:
            raise RuntimeError(f"{name}-envoy refused the runtime change: HTTP {response.status}")
    return values


def faults(args: argparse.Namespace) -> int:
    values = set_faults(args.service, args.abort_percent, args.delay_percent, args.delay_ms)
    if args.json:
        print(json.dumps({"sidecar": f"{args.service}-envoy", **values}))
    else:
        print(f"{args.service}-envoy: abort {args.abort_percent} %, delay {args.delay_ms} ms at {args.delay_percent} %")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="whose sidecar: rider, trip, driver, payment or psp")
    parser.add_argument("--abort-percent", type=int, default=0, help="calls failing with UNAVAILABLE (0-100)")
    parser.add_argument("--delay-percent", type=int, default=0, help="calls delayed (0-100)")
    parser.add_argument("--delay-ms", type=int, default=1000, help="the delay (default 1000)")
    parser.add_argument("--json", action="store_true")
