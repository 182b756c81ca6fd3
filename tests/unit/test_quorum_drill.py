"""How the quorum experiment (drills/quorum.py) judges a history: a read is stale when it
returns less than the newest write acknowledged before it began; a write in flight while
the read runs does not count against it; refusals are counted apart."""

from __future__ import annotations

from drills.quorum import Op, judge

C = (1, 1)


def write(key: str, start: float, end: float, seq: int, ok: bool = True) -> Op:
    return Op(C, "write", key, start, end, ok, seq)


def read(key: str, start: float, end: float, seq: int, ok: bool = True) -> Op:
    return Op(C, "read", key, start, end, ok, seq)


def test_a_read_below_the_last_acknowledged_write_is_stale_and_one_racing_a_write_is_not() -> None:
    history = [
        write("k", 0.0, 0.1, 1),
        write("k", 1.0, 1.1, 2),
        read("k", 1.2, 1.3, 1),  # 2 was acknowledged at 1.1: stale
        write("k", 2.0, 2.5, 3),
        read("k", 2.1, 2.2, 2),  # 3 was not acknowledged when the read began: fine
        read("k", 3.0, 3.1, 3),
        read("k", 3.2, 3.3, -1),  # not found after writes were acknowledged: stale
        read("other", 0.5, 0.6, -1),  # nothing written yet: fine
    ]
    row = judge(history, C)
    assert (row["reads"], row["stale_reads"]) == (5, 2)
    assert row["overlapping"] is False and (row["n"], row["r"], row["w"]) == (3, 1, 1)


def test_refused_operations_are_counted_apart_and_never_judged() -> None:
    history = [write("k", 0.0, 0.1, 1), write("k", 1.0, 2.0, 2, ok=False), read("k", 3.0, 3.1, 0, ok=False)]
    row = judge(history, C)
    assert (row["writes"], row["writes_refused"], row["reads"], row["reads_refused"]) == (1, 1, 0, 1)
    assert judge(history, (2, 2))["reads"] == 0, "each (R, W) is judged on its own keys"
