"""Who holds a TCP port, for the one-line 'port already in use' error."""

from __future__ import annotations

import re
import subprocess


def owner_of(port: int) -> str | None:
    """'pid 1234 (postgres)' if something listens on the port, 'an unknown process' if we
    cannot tell who, None if the port is free."""
    try:
        result = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], check=False, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = result.stdout.strip()
    if not line:
        return None
    match = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
    return f"pid {match.group(2)} ({match.group(1)})" if match else "an unknown process"
