"""A sidecar's fault-injection filter switched at runtime, through Envoy's admin API and
runtime layer (no restart): the drills' and `ridectl mesh fault`'s way to make calls into
a service fail or slow down."""

from __future__ import annotations

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
