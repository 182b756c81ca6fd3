"""The sweeper election's self-fencing rule and its ZooKeeper client's own source address
(services/blocks/election.py)."""

from __future__ import annotations

import socket
import threading

import pytest
from kazoo.protocol.states import KazooState

from services.blocks.election import LeaderAct, Leadership, SourceBoundHandler, leader_act
from services.runtime import config
from services.runtime.topology import SWEEPERS, member_source, replica, service, sweeper_source


@pytest.mark.parametrize(
    ("connection", "act"),
    [
        (KazooState.CONNECTED, LeaderAct.SWEEP),
        (KazooState.SUSPENDED, LeaderAct.HOLD),
        (KazooState.LOST, LeaderAct.RESIGN),
    ],
)
def test_a_self_fencing_leader_acts_only_while_connected_and_resigns_once_lost(connection: str, act: LeaderAct) -> None:
    assert leader_act(connection, self_fence=True) is act


@pytest.mark.parametrize("connection", [KazooState.CONNECTED, KazooState.SUSPENDED, KazooState.LOST])
def test_without_self_fencing_the_leader_acts_whatever_its_session_says(connection: str) -> None:
    assert leader_act(connection, self_fence=False) is LeaderAct.SWEEP


def test_the_handler_connects_from_its_source_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        seen: list[str] = []

        def accept() -> None:
            peer, address = server.accept()
            seen.append(address[0])
            peer.close()

        accepting = threading.Thread(target=accept)
        accepting.start()
        handler = SourceBoundHandler("127.0.2.9")
        conn = handler.create_connection(server.getsockname(), timeout=5)
        conn.close()
        accepting.join(timeout=5)
    assert seen == ["127.0.2.9"]
    assert conn.family == socket.AF_INET


def test_each_sweeper_has_a_source_address_no_driver_replica_uses() -> None:
    sources = [sweeper_source(name) for name in SWEEPERS]
    assert sources == ["127.0.2.1", "127.0.2.2"]
    assert not set(sources) & {member_source(replica(service("driver"), n)) for n in range(1, 6)}


def test_the_source_address_and_the_self_fence_switch_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RIDESAGA_ZOOKEEPER_SOURCE", raising=False)
    monkeypatch.delenv("RIDESAGA_SWEEPER_SELF_FENCE", raising=False)
    assert config.zookeeper_source() is None and config.sweeper_self_fence() is True
    monkeypatch.setenv("RIDESAGA_ZOOKEEPER_SOURCE", "127.0.2.1")
    monkeypatch.setenv("RIDESAGA_SWEEPER_SELF_FENCE", "0")
    assert config.zookeeper_source() == "127.0.2.1" and config.sweeper_self_fence() is False
    monkeypatch.setenv("RIDESAGA_ZOOKEEPER_SOURCE", "sweeper-1")
    with pytest.raises(ValueError, match=r"RIDESAGA_ZOOKEEPER_SOURCE must be an IPv4 address, got 'sweeper-1'"):
        config.zookeeper_source()
    monkeypatch.setenv("RIDESAGA_SWEEPER_SELF_FENCE", "off")
    with pytest.raises(ValueError, match=r"RIDESAGA_SWEEPER_SELF_FENCE must be 0 or 1, got 'off'"):
        config.sweeper_self_fence()


class _Client:
    def __init__(self, state: str, live: bool, session: object) -> None:
        self.state, self.connected, self.client_id = state, live, session if live else None


class _Lock:
    is_acquired = True


def _leadership(client: _Client) -> Leadership:
    found = Leadership.__new__(Leadership)
    found.client, found._lock, found._session = client, _Lock(), (7, b"secret")
    return found


@pytest.mark.parametrize(
    ("client", "seen"),
    [
        (_Client(KazooState.CONNECTED, True, (7, b"secret")), KazooState.CONNECTED),
        (_Client(KazooState.SUSPENDED, False, None), KazooState.SUSPENDED),
        (_Client(KazooState.CONNECTED, False, None), KazooState.SUSPENDED),  # kazoo between the two
        (_Client(KazooState.LOST, False, None), KazooState.LOST),
        (_Client(KazooState.CONNECTED, True, (8, b"other")), KazooState.LOST),  # a new session holds no lock
    ],
)
def test_the_connection_is_that_of_the_session_the_lock_was_acquired_in(client: _Client, seen: str) -> None:
    assert _leadership(client).connection() == seen
