"""A cut really drops loopback packets between its two sides, and only those, and its table
is gone afterwards: on leaving, on an exception and on SIGTERM (drills/partition.py). No
stack: sockets on 127.0.0.1, ports 24101-24199. Needs root and nft."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from drills.partition import Cut, Terminated, active, apply, clear, guarded, partitioned

HOST = "127.0.0.1"
SIDE_UDP, SIDE_TCP = 24101, 24102
OTHER_UDP, OTHER_PEER, OTHER_LISTENER = 24111, 24112, 24113  # the peer sends UDP and connects
CUT = Cut(side=(SIDE_UDP, SIDE_TCP), others=(OTHER_UDP, OTHER_PEER, OTHER_LISTENER))
LOST_SECONDS = 0.5  # what is measured: a dropped packet has not arrived by then
ARRIVES_SECONDS = 5.0  # a bound on a packet that is not dropped, never reached when it works


@pytest.fixture(autouse=True)
def no_table_left() -> Iterator[None]:
    clear()
    yield
    clear()


def _udp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, port))
    return sock


def _datagram_arrives(source: socket.socket, target: socket.socket, payload: bytes) -> bool:
    source.sendto(payload, target.getsockname())
    target.settimeout(LOST_SECONDS)
    try:
        received, sender = target.recvfrom(64)
    except TimeoutError:
        return False
    assert (received, sender) == (payload, source.getsockname())
    return True


def _connects(source_port: int, listener: socket.socket, source_host: str = HOST) -> bool:
    """A TCP connect from `source_port` (0: an ephemeral one) on `source_host`, closed with
    a reset so the port is free again at once."""
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.bind((source_host, source_port))
        bound = client.getsockname()
        client.settimeout(LOST_SECONDS)
        try:
            client.connect(listener.getsockname())
        except TimeoutError:
            return False
        listener.settimeout(ARRIVES_SECONDS)
        accepted, peer = listener.accept()
        accepted.close()
        assert peer == bound
        return True


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, OTHER_LISTENER))
        sock.listen()
        yield sock


def test_the_cut_drops_both_ways_between_the_sides_only_while_it_lasts(listener: socket.socket) -> None:
    with _udp(SIDE_UDP) as side, _udp(OTHER_UDP) as other, _udp(OTHER_PEER) as peer:
        assert _datagram_arrives(side, other, b"before")
        assert _connects(SIDE_TCP, listener)

        with partitioned(CUT):
            assert active()
            assert not _datagram_arrives(side, other, b"during, side to others")
            assert not _datagram_arrives(other, side, b"during, others to side")
            assert not _connects(SIDE_TCP, listener)
            assert _datagram_arrives(other, peer, b"during, within others")
            assert _connects(OTHER_PEER, listener)

        assert not active()
        assert _datagram_arrives(side, other, b"after")
        assert _datagram_arrives(other, side, b"after, back")
        assert _connects(SIDE_TCP, listener)


def test_an_exception_inside_still_removes_the_table() -> None:
    with pytest.raises(RuntimeError, match=r"^the drill failed$"), partitioned(CUT):
        assert active()
        raise RuntimeError("the drill failed")
    assert not active()


def test_sigterm_inside_raises_removes_the_table_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), partitioned(CUT):
        assert active()
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM did not interrupt the block")
    assert not active()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sides_own_source_address_cuts_its_connections_from_any_port_and_no_one_elses(
    listener: socket.socket,
) -> None:
    replica = "127.0.1.7"  # a side's clients connect from their own loopback address
    cut = Cut(side=(SIDE_UDP,), others=(OTHER_LISTENER,), side_sources=(replica,))
    assert _connects(0, listener, replica)
    with partitioned(cut):
        assert not _connects(0, listener, replica)
        assert _connects(0, listener)  # 127.0.0.1's ephemeral ports are not the side's
    assert _connects(0, listener, replica)


def test_a_cut_made_in_another_thread_is_removed_by_the_guard_around_it() -> None:
    """The drills' case: the nemesis thread cuts, the main thread's guard cleans up."""
    with pytest.raises(RuntimeError, match=r"^the drill failed$"), guarded():
        worker = threading.Thread(target=apply, args=(CUT,))  # a nemesis killed before its cleanup
        worker.start()
        worker.join()
        assert active()
        raise RuntimeError("the drill failed")
    assert not active()
