"""After `ridectl down` no process of the stack is left, no port is held and no network
namespace of its own remains (deploy/local/netns.py); and `ridectl up` refuses, in one line naming the port and its owner, to start over a busy port."""

import os
import socket

from deploy.local import netns
from deploy.local.ports import owner_of
from services.runtime.topology import INFRA
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
    assert netns.ours() == []
    after = ridectl("status", "--json")
    assert after.returncode == 1
    assert all(c["state"] == "down" and c["pid"] is None for c in status().values())


def test_up_over_a_busy_port_names_the_port_and_its_owner_and_starts_nothing() -> None:
    assert ridectl("down").returncode == 0
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", INFRA.redis))
        squatter.listen()
        result = ridectl("up")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {INFRA.redis} (redis) is already in use by" in lines[0] and f"pid {os.getpid()}" in lines[0]
    assert all(c["state"] == "down" for c in status().values()), "nothing was started"
