"""Splits between the KRaft controllers' network namespaces (drills/netsplit.py) on the
live stack of `make up KAFKA_CONTROLLERS=3`: a cut drops exactly the blocked senders'
packets while it lasts, one way or both, and nothing of it is left afterwards, however
the block around it ends."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from deploy.local import netns
from drills import netsplit, partition
from drills.netsplit import HOST

UDP_PORT = 19199  # a free port inside the namespace of node 1
ECHO = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{netns.address(1)}", {UDP_PORT}))
print("ready", flush=True)
while True:
    data, sender = s.recvfrom(100)
    print(data.decode(), flush=True)
    s.sendto(b"echo " + data, sender)
"""


def _reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def echo() -> Iterator[subprocess.Popen[str]]:
    """A UDP echo server inside node 1's namespace, printing what it receives."""
    server = subprocess.Popen(netns.run_inside(1, [sys.executable, "-c", ECHO]), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    yield server
    server.kill()
    server.wait()


def _ask(message: str) -> str | None:
    """Sends one datagram to node 1's echo; its answer, or None if none comes in a second."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(message.encode(), (netns.address(1), UDP_PORT))
        try:
            return s.recvfrom(100)[0].decode()
        except TimeoutError:
            return None


def _received(server: subprocess.Popen[str]) -> list[str]:
    server.kill()
    out, _ = server.communicate()
    return out.split()


def test_a_two_way_cut_stops_tcp_to_the_cut_node_only_while_it_lasts() -> None:
    one, two = ("10.77.0.1", 19093), ("10.77.0.2", 19094)
    assert _reaches(*one) and _reaches(*two)
    netsplit.apply(netsplit.two_way([HOST], [1]))
    try:
        assert netsplit.active() == [HOST, 1]
        assert not _reaches(*one) and _reaches(*two)
    finally:
        assert netsplit.clear()
    assert netsplit.active() == [] and _reaches(*one)


def test_one_way_the_blocked_senders_datagrams_vanish_and_the_others_arrive(echo: subprocess.Popen[str]) -> None:
    assert _ask("before") == "echo before"
    netsplit.apply(netsplit.one_way([HOST], [1]))  # the host's packets do not reach node 1
    try:
        assert _ask("lost") is None
    finally:
        netsplit.clear()
    netsplit.apply(netsplit.one_way([1], [HOST]))  # node 1's do not reach the host
    try:
        assert _ask("heard") is None  # it arrives; the echo is what is lost
    finally:
        netsplit.clear()
    assert _ask("after") == "echo after"
    assert _received(echo) == ["before", "heard", "after"]


def test_the_guard_around_a_drill_removes_a_split_however_the_drill_ends() -> None:
    with pytest.raises(RuntimeError), partition.guarded():
        netsplit.apply(netsplit.isolated(2, [HOST, 1, 2, 3]))
        raise RuntimeError("the drill failed mid-cut")
    assert netsplit.active() == []
    netsplit.apply(netsplit.two_way([1], [3]))  # a split left by a drill that was SIGKILLed
    with partition.guarded():
        assert netsplit.active() == []  # the next drill's guard removed it first
