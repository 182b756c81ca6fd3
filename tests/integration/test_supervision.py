"""A component killed with SIGKILL is brought back by the supervisor, and status
returns to all-up: one service, one sidecar, one piece of infrastructure."""

import os
import signal

import pytest

from tests.support import ridectl, status, wait_for

RECOVERY_SECONDS = 60.0


@pytest.mark.parametrize("name", ["trip", "payment-envoy", "redis"])
def test_a_killed_component_is_restarted(name: str) -> None:
    before = status()[name]
    assert before["state"] == "up"
    os.kill(before["pid"], signal.SIGKILL)

    def replaced() -> bool:
        now = status()[name]
        return bool(now["state"] == "up" and now["pid"] != before["pid"])

    wait_for(replaced, RECOVERY_SECONDS, f"{name} to come back under a new pid")
    wait_for(lambda: ridectl("status").returncode == 0, RECOVERY_SECONDS, "every component to be up")
