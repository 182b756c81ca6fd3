"""SWIM over UDP: one driver replica's member of the group, the rules of
services/blocks/swim.py unchanged behind a thin I/O layer (a datagram socket, a JSON codec
and one timer). A member's view converges to the live set within the bounds of docs/gossip.md."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from services.blocks import swim

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

TICK_S = 0.05
# A datagram must fit in one UDP packet (65 507 bytes on IPv4). With max_piggyback 8 a ping
# carries at most 8 rumours, and a Sync of a whole view of a few dozen members is a few
# kilobytes: the limit is never reached by the protocol, only by a bug.
MAX_DATAGRAM = 60_000


class BadDatagram(ValueError):
    """A datagram that is not a SWIM message; the message says what was wrong."""


@dataclass(frozen=True)
class MemberView:
    member: str
    state: str
    incarnation: int
    changed_at: float


# -- the codec --------------------------------------------------------------------------

_TYPES = {swim.Ping: "ping", swim.Ack: "ack", swim.PingReq: "ping-req", swim.Join: "join", swim.Sync: "sync"}


def encode(message: swim.Message) -> bytes:
    body: dict[str, Any] = {"type": _TYPES[type(message)], "sender": message.sender}
    match message:
        case swim.Ping() | swim.Ack() | swim.PingReq():
            body["seq"] = message.seq
            if isinstance(message, swim.PingReq):
                body["target"] = message.target
            body["rumours"] = [[r.member, r.state.value, r.incarnation] for r in message.rumours]
        case swim.Join():
            body["incarnation"] = message.incarnation
        case swim.Sync():
            body["members"] = [[r.member, r.state.value, r.incarnation] for r in message.members]
            body["answer"] = message.answer
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"a {body['type']} of {len(data)} bytes does not fit in one datagram ({MAX_DATAGRAM})")
    return data


def decode(data: bytes) -> swim.Message:
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BadDatagram(f"not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadDatagram(f"not a JSON object but {type(body).__name__}")
    kind = body.get("type")
    if kind not in _TYPES.values():
        raise BadDatagram(f"unknown message type {kind!r}")
    sender = _address(body, "sender")
    match kind:
        case "ping":
            return swim.Ping(sender, _count(body, "seq"), _rumours(body, "rumours"))
        case "ack":
            return swim.Ack(sender, _count(body, "seq"), _rumours(body, "rumours"))
        case "ping-req":
            return swim.PingReq(sender, _count(body, "seq"), _address(body, "target"), _rumours(body, "rumours"))
        case "join":
            return swim.Join(sender, _count(body, "incarnation"))
        case _:  # sync
            answer = _field(body, "answer")
            if not isinstance(answer, bool):
                raise BadDatagram(f"field 'answer' must be a boolean, got {answer!r}")
            return swim.Sync(sender, _rumours(body, "members"), answer)


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise BadDatagram(f"missing field {name!r}")
    return body[name]


def _count(body: dict[str, Any], name: str) -> int:
    return _natural(_field(body, name), f"field {name!r}")


def _natural(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadDatagram(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _address(body: dict[str, Any], name: str) -> str:
    return _checked_address(_field(body, name), f"field {name!r}")


def _checked_address(value: Any, what: str) -> str:
    """Members are named by their address: a name that is not host:port would be probed for ever."""
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536):
        raise BadDatagram(f"{what} must be a 'host:port' address, got {value!r}")
    return str(value)


def _rumours(body: dict[str, Any], name: str) -> tuple[swim.Rumour, ...]:
    items = _field(body, name)
    if not isinstance(items, list):
        raise BadDatagram(f"field {name!r} must be a list, got {items!r}")
    rumours = []
    for i, item in enumerate(items):
        where = f"{name}[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            raise BadDatagram(f"{where} must be [member, state, incarnation], got {item!r}")
        member, state, incarnation = item
        if not isinstance(state, str) or state not in set(swim.State):
            raise BadDatagram(f"bad state {state!r} in {where}")
        rumours.append(
            swim.Rumour(
                _checked_address(member, f"{where} member"),
                swim.State(state),
                _natural(incarnation, f"{where} incarnation"),
            )
        )
    return tuple(rumours)


# -- the runtime ------------------------------------------------------------------------


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._received = received

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error ignored", extra={"fields": {"error": repr(exc)}})


class Membership:
    """One member over UDP: timer ticks and datagrams go into swim.Node, its sends go out."""

    def __init__(
        self,
        me: str,
        seeds: Sequence[str],
        config: swim.Config | None = None,
        rng: random.Random | None = None,
        on_change: Callable[[swim.Change], None] | None = None,
    ) -> None:
        self._node = swim.Node(me, config or swim.Config(), rng or random.Random())
        self._seeds = [seed for seed in dict.fromkeys(seeds) if seed != me]
        self._on_change = on_change
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._bumped = asyncio.Event()
        self._started_at = time.time()
        self._wall_minus_monotonic = time.time() - time.monotonic()
        self._changed_at: dict[str, float] = {}
        self._next_join_ms = 0.0
        self._version = 0
        self._alive = self.alive()

    @property
    def me(self) -> str:
        return self._node.name

    @property
    def version(self) -> int:
        return self._version

    def view(self) -> list[MemberView]:
        node = self._node
        own = swim.State.LEFT if node.left else swim.State.ALIVE
        views = [MemberView(self.me, own.value, node.incarnation, self._started_at)]
        for name, member in node.members.items():
            rumour = member.rumour
            changed_at = self._changed_at.get(name, self._started_at)
            views.append(MemberView(name, rumour.state.value, rumour.incarnation, changed_at))
        return sorted(views, key=lambda v: v.member)

    def alive(self) -> list[str]:
        return [v.member for v in self.view() if v.state not in swim.GONE]

    def known(self) -> list[str]:
        """Every member this one has heard of, whatever its state, itself included."""
        return [v.member for v in self.view()]

    async def changed(self, since: int) -> int:
        while self._version <= since:
            await self._bumped.wait()
        return self._version

    async def start(self) -> None:
        host, _, port = self.me.rpartition(":")
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._received), local_addr=(host, int(port))
        )
        self._started_at = time.time()
        await self._join(_now_ms())
        self._timer = asyncio.create_task(self._run(), name=f"swim {self.me}")

    async def leave(self) -> None:
        if self._transport is not None and not self._node.left:
            self._send_all(self._node.leave(_now_ms()))
            self._observe()
        await self.close()

    async def close(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            await self._timer
            self._timer = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- the I/O around the rules ----------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                now = _now_ms()
                if not self._node.members and now >= self._next_join_ms:
                    await self._join(now)  # no one known yet: the seeds may start after us
                self._send_all(self._node.tick(now))
                self._observe()
            except Exception:
                log.exception("swim round failed", extra={"fields": {"view_of": self.me}})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TICK_S)

    async def _join(self, now_ms: float) -> None:
        self._next_join_ms = now_ms + self._node.config.period_ms
        seeds = [seed for seed in await resolved_seeds(self._seeds) if seed != self.me]
        self._send_all(self._node.join(seeds, now_ms))

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = decode(data)
        except BadDatagram as error:
            log.warning("bad datagram dropped", extra={"fields": {"from": f"{addr[0]}:{addr[1]}", "error": str(error)}})
            return
        try:
            self._send_all(self._node.receive(message, _now_ms()))
            self._observe()
        except Exception:
            log.exception("swim message failed", extra={"fields": {"from": f"{addr[0]}:{addr[1]}", "view_of": self.me}})

    def _send_all(self, sends: list[swim.Send]) -> None:
        for send in sends:
            data = encode(send.message)  # too large to send is a bug, not the network: the caller logs it
            host, _, port = send.to.rpartition(":")
            try:
                # Members are named by IP address (loopback, pod IP): sendto resolves nothing.
                if self._transport is not None:
                    self._transport.sendto(data, (host, int(port)))
            except (OSError, ValueError) as error:
                log.debug("udp send failed", extra={"fields": {"to": send.to, "error": repr(error)}})

    def _observe(self) -> None:
        """Reports the Node's new changes and bumps the version when the live set moved."""
        # Node only appends to `changes`; taking them keeps a long-lived replica's memory flat.
        changes = list(self._node.changes)
        self._node.changes.clear()
        for change in changes:
            self._changed_at[change.member] = self._wall_minus_monotonic + change.at_ms / 1000
            self._report(change)
        alive = self.alive()
        if alive != self._alive:
            self._alive = alive
            self._version += 1
            self._bumped.set()
            self._bumped = asyncio.Event()

    def _report(self, change: swim.Change) -> None:
        before = change.before.value if change.before else None
        fields = {
            "member": change.member,
            "before": before,
            "after": change.after.value,
            "incarnation": change.incarnation,
            "view_of": self.me,
        }
        with tracer.start_as_current_span("swim change") as span:
            span.add_event("member state changed", {**fields, "before": before or "unknown"})
            log.info("member state changed", extra={"fields": fields})
        if self._on_change is not None:
            try:
                self._on_change(change)
            except Exception:
                log.exception("on_change failed", extra={"fields": fields})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def resolved_seeds(seeds: Sequence[str]) -> list[str]:
    """The seeds as member addresses. A seed named by host name (compose, Kubernetes: every
    replica behind one DNS name) stands for each IPv4 address it resolves to now; a name
    that resolves to nothing yet is skipped, and asked again at the next join."""
    loop = asyncio.get_running_loop()
    found: list[str] = []
    for seed in seeds:
        host, _, port = seed.rpartition(":")
        if _is_ip(host):
            found.append(seed)
            continue
        try:
            infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET, type=socket.SOCK_DGRAM)
        except OSError as error:
            log.debug("seed not resolved", extra={"fields": {"seed": seed, "error": repr(error)}})
            continue
        found += [f"{info[4][0]}:{port}" for info in infos]
    return list(dict.fromkeys(found))


async def resolved_member(address: str) -> str:
    """A replica's own address with its host name resolved to an IPv4 address: members are
    named by IP, so sending to one never asks DNS (compose names a container; Kubernetes
    passes the pod's IP, which passes through)."""
    host, _, port = address.rpartition(":")
    if _is_ip(host):
        return address
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), family=socket.AF_INET)
    except OSError as error:
        raise ValueError(f"RIDESAGA_MEMBER {address!r}: the host does not resolve ({error})") from None
    return f"{infos[0][4][0]}:{port}"


def _now_ms() -> float:
    return time.monotonic() * 1000
