"""Leader election on ZooKeeper, with an epoch for fencing.

Candidates queue as ephemeral sequential znodes (kazoo's Lock recipe); the lowest is the
leader, and its sequence number is its epoch: every later leader has a larger one. A
leader's session can expire while it is paused (GC, SIGSTOP, a network partition), and a
paused process does not know it; so leadership is a lease the leader only *believes* it
holds. Safety comes from the epoch: the leader's writes carry it, and the storage refuses
any epoch older than the newest it has seen. ZooKeeper (ZAB) grants leadership only with
a majority of its ensemble, so the minority side of a partition cannot elect anyone.

Self-fencing narrows the window the epoch has to cover: a leader that cannot prove it
still leads (its connection SUSPENDED, its session LOST) stops acting at once, and
resumes only if the same session comes back (`leader_act`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from enum import StrEnum
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException
from kazoo.handlers import utils
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.states import KazooState

log = logging.getLogger(__name__)


class LeaderAct(StrEnum):
    SWEEP = "sweep"  # act as the leader (the write is still fenced)
    HOLD = "hold"  # do nothing this round; the same session may come back
    RESIGN = "resign"  # the session is gone, and the lock with it


def leader_act(connection: str, self_fence: bool) -> LeaderAct:
    """What a leader does with its ZooKeeper connection in `connection` (a KazooState).
    Self-fencing: only a CONNECTED leader acts; a SUSPENDED one holds (its session may
    still be alive, or already expired and its lock given to another); a LOST one resigns.
    Without it the leader acts whatever its session says, and only the epoch stops it."""
    if not self_fence:
        return LeaderAct.SWEEP
    if connection == KazooState.CONNECTED:
        return LeaderAct.SWEEP
    if connection == KazooState.SUSPENDED:
        return LeaderAct.HOLD
    return LeaderAct.RESIGN


class _SocketsFrom:
    """The socket module as kazoo uses it, except that every connection leaves from `source`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def create_connection(self, address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        return socket.create_connection(address, timeout, source_address=(self.source, 0))

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


class SourceBoundHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, connecting to ZooKeeper from the loopback address `source`:
    a partition can then cut this client off from every ZooKeeper port and nobody else
    (drills/partition.py, side_sources)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self._sockets = _SocketsFrom(source)

    def create_connection(self, *args: Any, **kwargs: Any) -> socket.socket:
        return utils.create_tcp_connection(self._sockets, *args, **kwargs)  # type: ignore[no-any-return]


class Leadership:
    def __init__(
        self, hosts: str, path: str, identity: str, session_timeout_seconds: float, source: str | None = None
    ) -> None:
        handler = SourceBoundHandler(source) if source else SequentialThreadingHandler()
        self.client = KazooClient(hosts=hosts, timeout=session_timeout_seconds, handler=handler)
        self.path = path
        self.identity = identity
        self._lock = self.client.Lock(path, identity)
        self._session: object = None  # the session the lock was acquired in

    async def start(self) -> None:
        await asyncio.to_thread(self.client.start, 30)

    async def campaign(self, stopping: asyncio.Event) -> int | None:
        """Blocks until this candidate leads; returns its epoch, or None if stopping first."""
        self._lock = self.client.Lock(self.path, self.identity)
        acquire = asyncio.ensure_future(asyncio.to_thread(self._lock.acquire, True, None))
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        if acquire not in done:
            self._lock.cancel()
            with contextlib.suppress(Exception):
                await acquire
            return None
        stop.cancel()
        await acquire
        self._session = self.client.client_id
        # The node is "<uuid>__lock__<10-digit sequence>": the sequence is the epoch.
        return int((self._lock.node or "").rsplit("__lock__", 1)[-1])

    def connection(self) -> str:
        """The KazooState of the session the lock was acquired in: LOST once that session
        has ended, even if kazoo has already opened a new one (which holds no lock). What
        this process believes; it can be wrong after a pause (hence the epoch)."""
        if not self._lock.is_acquired:
            return str(KazooState.LOST)
        if not self.client.connected:  # kazoo names no session while disconnected
            return str(KazooState.LOST if self.client.state == KazooState.LOST else KazooState.SUSPENDED)
        return str(KazooState.CONNECTED if self.client.client_id == self._session else KazooState.LOST)

    async def resign(self) -> None:
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self._lock.release)

    def leader(self) -> str | None:
        contenders = self._lock.contenders()
        return str(contenders[0]) if contenders else None

    async def stop(self) -> None:
        await self.resign()
        with contextlib.suppress(KazooException, OSError):
            await asyncio.to_thread(self.client.stop)
        await asyncio.to_thread(self.client.close)
