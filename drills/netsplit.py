"""A network partition between processes that run in network namespaces of the stack's
own (deploy/local/netns.py: the KRaft controllers of KAFKA_CONTROLLERS=3), told apart by
address. Property: while a split is in force, every packet from a blocked sender to its
receiver is dropped silently on the receiver's input, whatever its ports, and nothing
else is touched; afterwards every table is removed, also on an exception, Ctrl-C or
SIGTERM (drills/partition.py `guarded` clears these tables too).

A split is a set of (sender, receiver) pairs, so it can be one-way (A's packets do not
reach B, B's reach A), two-way, a majority/minority split or a bridge (a node that hears
both sides of a split that cannot hear each other). A party is a controller's node number
or HOST, the host's namespace, where the broker, the tools and the drills are. Over TCP a
one-way cut still stops every connection between the two (a handshake needs both ways);
what differs is who learns it and when: the blocked side's packets vanish, the other's
arrive and are answered into the void."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product

from deploy.local import netns
from drills.partition import NFT_TIMEOUT_SECONDS, PartitionError

TABLE = "ridesaga_netsplit"
HOST = 0  # the host's namespace, at netns.HOST_ADDRESS


def _address(party: int) -> str:
    return netns.HOST_ADDRESS if party == HOST else netns.address(party)


@dataclass(frozen=True)
class Split:
    blocked: frozenset[tuple[int, int]]  # (sender, receiver): the sender's packets do not reach the receiver

    def __post_init__(self) -> None:
        for sender, receiver in self.blocked:
            if sender == receiver:
                raise ValueError(f"split: party {sender} cannot be cut from itself")
            if min(sender, receiver) < 0:
                raise ValueError(f"split: parties are node numbers or HOST (0), got {sender}, {receiver}")

    def receivers(self) -> list[int]:
        return sorted({receiver for _, receiver in self.blocked})

    def senders_to(self, receiver: int) -> list[int]:
        return sorted(sender for sender, r in self.blocked if r == receiver)


def one_way(senders: Iterable[int], receivers: Iterable[int]) -> Split:
    """The senders' packets do not reach the receivers; the other way still works."""
    return Split(frozenset((s, r) for s, r in product(senders, receivers)))


def two_way(side: Iterable[int], others: Iterable[int]) -> Split:
    side, others = tuple(side), tuple(others)
    return Split(one_way(side, others).blocked | one_way(others, side).blocked)


def isolated(party: int, everyone: Iterable[int]) -> Split:
    """The party alone on its side (a minority of one) against every other party."""
    return two_way((party,), [p for p in everyone if p != party])


def ruleset(split: Split, receiver: int) -> str:
    """The nft script for one receiver's namespace: drop, on input, what its blocked senders send."""
    addresses = ", ".join(_address(s) for s in split.senders_to(receiver))
    return "\n".join(
        [
            f"table inet {TABLE} {{",
            "    chain cut {",
            "        type filter hook input priority filter; policy accept;",
            f"        ip saddr {{ {addresses} }} drop",
            "    }",
            "}",
            "",
        ]
    )


def _nft(party: int, *args: str, script: str | None = None, check: bool = True) -> str:
    command = ["nft", *args] if party == HOST else netns.run_inside(party, ["nft", *args])
    try:
        done = subprocess.run(
            command, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT_SECONDS, check=False
        )
    except FileNotFoundError:
        raise PartitionError("nft or ip not found: deploy/local/bootstrap.py installs nftables and iproute2") from None
    except subprocess.TimeoutExpired:
        raise PartitionError(f"`{' '.join(command)}` took more than {NFT_TIMEOUT_SECONDS:.0f}s") from None
    if check and done.returncode != 0:
        raise PartitionError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return done.stdout


def _parties() -> list[int]:
    return [HOST, *(int(name.removeprefix(netns.PREFIX)) for name in netns.ours())]


def apply(split: Split) -> None:
    parties = set(_parties())
    missing = sorted({p for pair in split.blocked for p in pair} - parties)
    if missing:
        raise PartitionError(f"split: no network namespace for node(s) {missing}; run `make up KAFKA_CONTROLLERS=3`")
    if active():
        raise PartitionError(f"table inet {TABLE} exists already: another split is in force, or clear() it")
    try:
        for receiver in split.receivers():
            _nft(receiver, "-f", "-", script=ruleset(split, receiver))
    except PartitionError:
        clear()
        raise


def active() -> list[int]:
    """The parties where a table of ours is in force (or was left by a killed drill)."""
    return [p for p in _parties() if f"table inet {TABLE}" in _nft(p, "list", "tables", check=False).splitlines()]


def clear() -> bool:
    """Removes our table from every namespace; True if it removed any."""
    found = active()
    for party in found:
        _nft(party, "delete", "table", "inet", TABLE)
    return bool(found)
