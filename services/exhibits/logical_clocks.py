"""Lamport and vector clocks, the contrast to the HLC of services/blocks/clocks.py; no
service stamps its messages with them (the clocks lab and docs/clocks.md use them), but the
vector clocks' order is the one that versions the driver cluster's replicated positions
(services/blocks/quorum.py).

- Lamport (1978): if event a happened before b, then L(a) < L(b). The converse does not
  hold: a smaller number says nothing about causality.
- Vector clocks: a happened before b exactly when V(a) < V(b) (every entry <=, one <);
  incomparable vectors are concurrent events. The price is one entry per process."""

from __future__ import annotations

from services.blocks.quorum import Order, clock, compare


class LamportClock:
    def __init__(self) -> None:
        self.time = 0

    def tick(self) -> int:
        """A local or send event."""
        self.time += 1
        return self.time

    def observe(self, remote: int) -> int:
        """The receipt of a message stamped `remote`."""
        self.time = max(self.time, remote) + 1
        return self.time


Vector = dict[str, int]


class VectorClock:
    def __init__(self, process: str) -> None:
        self.process = process
        self.vector: Vector = {process: 0}

    def tick(self) -> Vector:
        self.vector[self.process] += 1
        return dict(self.vector)

    def observe(self, remote: Vector) -> Vector:
        for process, count in remote.items():
            self.vector[process] = max(self.vector.get(process, 0), count)
        return self.tick()


def happened_before(a: Vector, b: Vector) -> bool:
    """The order of services/blocks/quorum.py, the one the driver cluster's replicated
    positions version their writes by: every entry <=, one <."""
    return compare(clock(a), clock(b)) is Order.BEFORE


def concurrent(a: Vector, b: Vector) -> bool:
    return compare(clock(a), clock(b)) is Order.CONCURRENT
