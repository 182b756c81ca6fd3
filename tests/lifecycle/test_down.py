"""After `ridectl down` no process of the stack is left and no port is held."""

import os

from ridectl.stack.ports import owner_of
from tests.support import ridectl, status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_down_leaves_no_process_and_no_port() -> None:
    before = status()
    pids = [c["pid"] for c in before.values() if c["pid"]]
    ports = [c["port"] for c in before.values() if c["port"]]
    assert len(pids) == len(before), "the stack must be fully up before this test"

    result = ridectl("down")
    assert result.returncode == 0, result.stderr

    assert [p for p in pids if _alive(p)] == []
    assert {p: owner_of(p) for p in ports if owner_of(p)} == {}
    after = ridectl("status", "--json")
    assert after.returncode == 1
    assert all(c["state"] == "down" and c["pid"] is None for c in status().values())
