"""A network partition between processes on one machine: every party listens on 127.0.0.1,
so a partition is a cut between two sets of loopback ports, made with an nftables table of
its own. Property: for the cut's duration every TCP and UDP packet between a port of one
side and a port of the other is dropped, in both directions, and nothing else is touched;
afterwards the table is removed, also on an exception, Ctrl-C or SIGTERM.

Packets are matched by both their ports: a connection from an ephemeral port (an ordinary
client's) is cut only if that port is listed, so a drill names the ports both ends use. A
side whose clients connect from loopback addresses of their own (the driver replicas'
sidecars: services/runtime/topology.py, member_source) names those too, and then every TCP
connection from them to a port of the other side is cut, whatever its ephemeral port; a
side can be those addresses alone (a sweeper's ZooKeeper client, topology.sweeper_source).

A drill's nemesis runs in a thread of its own: `cutting` works in any thread; `guarded`, in
the main thread around the whole drill, turns SIGTERM into an exception and removes the
table however the drill ends (and the splits between network namespaces of
drills/netsplit.py with it). A drill SIGKILLed mid-cut cannot clean up: the next drill's
`guarded` (and `ridectl drill suite`) removes the table it left."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

TABLE = "ridesaga_partition"
NFT_TIMEOUT_SECONDS = 10.0
PROTOCOLS = ("tcp", "udp")


class PartitionError(Exception):
    """nft failed, or a partition cannot be made here; one line, with nft's own errors."""


class Terminated(BaseException):
    """SIGTERM arrived inside `partitioned`. A BaseException, like KeyboardInterrupt, so
    that an `except Exception` in the drill does not swallow it."""


@dataclass(frozen=True)
class Cut:
    """Drops every TCP and UDP packet on loopback between ports in `side` and ports in `others` (both directions).

    A side may be only source addresses (a client that listens nowhere, a sweeper cut off
    from ZooKeeper): then only its TCP to the other side's ports is cut. `isolate` cuts
    the side's ports from everyone (whatever their ports), for a party whose clients
    cannot be told apart on loopback: `isolate((psp's ingress,))` cuts payment, its only
    caller, off from the card processor."""

    side: tuple[int, ...]
    others: tuple[int, ...]
    # Loopback addresses (not 127.0.0.1) each side's clients connect from.
    side_sources: tuple[str, ...] = ()
    others_sources: tuple[str, ...] = ()
    isolated: bool = False  # `others` is everyone: made by isolate()

    def __post_init__(self) -> None:
        if self.isolated:
            if not self.side or self.others or self.side_sources or self.others_sources:
                raise ValueError("cut: an isolation has ports on its side and nothing else")
            return
        for name, ports, sources in (
            ("side", self.side, self.side_sources),
            ("others", self.others, self.others_sources),
        ):
            if not ports and not sources:
                raise ValueError(f"cut: {name} has no ports and no source addresses")
            outside = [port for port in ports if not 1 <= port <= 65535]
            if outside:
                raise ValueError(f"cut: {name} has ports outside 1..65535: {outside}")
        both = sorted(set(self.side) & set(self.others))
        if both:
            raise ValueError(f"cut: ports on both sides: {both}")
        for name, hosts in (("side_sources", self.side_sources), ("others_sources", self.others_sources)):
            for host in hosts:
                if not _own_loopback(host):
                    raise ValueError(f"cut: {name} must be loopback addresses other than 127.0.0.1, got {host!r}")
        shared = sorted(set(self.side_sources) & set(self.others_sources))
        if shared:
            raise ValueError(f"cut: source addresses on both sides: {shared}")
        for name, sources, ports in (
            ("side", self.side_sources, self.others),
            ("others", self.others_sources, self.side),
        ):
            if sources and not ports:
                raise ValueError(f"cut: {name}'s source addresses have no ports on the other side to be cut from")


def isolate(ports: tuple[int, ...]) -> Cut:
    """Every TCP and UDP packet on loopback to or from these ports dropped."""
    return Cut(ports, (), isolated=True)


def _own_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback and host != "127.0.0.1"


def _hosts(hosts: tuple[str, ...]) -> str:
    return "{ " + ", ".join(sorted(set(hosts))) + " }"


def _set(ports: tuple[int, ...]) -> str:
    return "{ " + ", ".join(str(port) for port in sorted(set(ports))) + " }"


def ruleset(cut: Cut, table: str = TABLE) -> str:
    """The nft script that makes the cut: one table, one chain, a rule per protocol and direction."""
    side, others = _set(cut.side), _set(cut.others)
    if cut.isolated:
        rules = [f'        iif "lo" {proto} {end} {side} drop' for proto in PROTOCOLS for end in ("sport", "dport")]
        return _table(table, rules)
    rules = [
        f'        iif "lo" {proto} sport {source} {proto} dport {destination} drop'
        for proto in PROTOCOLS
        for source, destination in ((side, others), (others, side))
        if cut.side and cut.others
    ]
    for hosts, ports in ((cut.side_sources, others), (cut.others_sources, side)):
        if hosts:
            rules.append(f'        iif "lo" ip saddr {_hosts(hosts)} tcp dport {ports} drop')
            rules.append(f'        iif "lo" ip daddr {_hosts(hosts)} tcp sport {ports} drop')
    return _table(table, rules)


def _table(table: str, rules: list[str]) -> str:
    # Every loopback packet passes both the output hook (oif lo) and the input hook (iif lo),
    # so one chain on input sees both directions. Input, not output: a drop on output makes
    # the kernel return EPERM to the sender's send() at once, which no lost packet does; a
    # drop on input is silent, the sender's send succeeds and the packet is never delivered.
    return "\n".join(
        [
            f"table inet {table} {{",
            "    chain cut {",
            "        type filter hook input priority filter; policy accept;",
            *rules,
            "    }",
            "}",
            "",
        ]
    )


def _nft(*args: str, script: str | None = None) -> str:
    try:
        done = subprocess.run(
            ["nft", *args], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise PartitionError("nft not found: deploy/local/bootstrap.py installs nftables") from None
    except subprocess.TimeoutExpired:
        raise PartitionError(f"`nft {' '.join(args)}` took more than {NFT_TIMEOUT_SECONDS:.0f}s") from None
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if "Error" in line] or [done.stderr.strip()]
        raise PartitionError(f"`nft {' '.join(args)}` failed: {'; '.join(errors)}")
    return done.stdout


def active(table: str = TABLE) -> bool:
    """Whether our table exists (a partition is in force, or one was left by a killed drill)."""
    return f"table inet {table}" in _nft("list", "tables").splitlines()


def clear(table: str = TABLE) -> bool:
    """Deletes our table if present; True if it removed one."""
    if not active(table):
        return False
    _nft("delete", "table", "inet", table)
    return True


class _SigtermRaises:
    """SIGTERM's handler while a cut is in force: the first raises Terminated in the main
    thread; once the cut is being removed, one is only remembered, for the previous handler."""

    def __init__(self) -> None:
        self.armed = True
        self.deferred = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            raise Terminated("SIGTERM during a network partition")
        self.deferred = True


def apply(cut: Cut, table: str = TABLE) -> None:
    """Makes the cut; refuses if a table of ours is in force already."""
    if active(table):
        raise PartitionError(f"table inet {table} exists already: another partition is in force, or clear() it")
    _nft("-f", "-", script=ruleset(cut, table))


@contextlib.contextmanager
def cutting(cut: Cut, table: str = TABLE) -> Iterator[None]:
    """Applies the cut, yields, and always removes the table afterwards (in any thread;
    SIGTERM is `guarded`'s)."""
    apply(cut, table)
    try:
        yield
    finally:
        clear(table)


@contextlib.contextmanager
def guarded(table: str = TABLE) -> Iterator[None]:
    """Around a whole drill, in the main thread: removes a table left by an earlier drill
    that was killed, turns SIGTERM into Terminated, and removes the table on the way out,
    however the block ends."""
    if threading.current_thread() is not threading.main_thread():
        raise PartitionError("guarded must run in the main thread: only there can SIGTERM become an exception")
    from drills import netsplit  # the splits between namespaces, cleared the same way; it imports this module

    previous = signal.getsignal(signal.SIGTERM)
    handler = _SigtermRaises()
    try:
        signal.signal(signal.SIGTERM, handler)
        clear(table)
        netsplit.clear()
        yield
    finally:
        handler.armed = False
        try:
            clear(table)
            netsplit.clear()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            if handler.deferred:
                signal.raise_signal(signal.SIGTERM)


@contextlib.contextmanager
def partitioned(cut: Cut, table: str = TABLE) -> Iterator[None]:
    """Applies the cut, yields, and always removes the table afterwards; main thread only."""
    if active(table):
        raise PartitionError(f"table inet {table} exists already: another partition is in force, or clear() it")
    with guarded(table), cutting(cut, table):
        yield
