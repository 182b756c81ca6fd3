"""The quorum experiment on the real three-replica cluster (drills/quorum.py): with one
replica stopped, and with one cut off by a real packet-level partition, an overlapping
quorum (N=3, R=2, W=2) returns no stale read over at least 1,000 reads; under the cut the
non-overlapping (3, 1, 1) returns stale reads, and every hint is home after the heal."""

from __future__ import annotations

from typing import Any

import pytest

from drills import quorum


def _row(result: dict[str, Any], r: int, w: int) -> dict[str, Any]:
    row: dict[str, Any] = next(x for x in result["rows"] if (x["r"], x["w"]) == (r, w))
    return row


@pytest.mark.parametrize("fault", quorum.FAULTS)
def test_an_overlapping_quorum_reads_no_stale_value_through_a_fault(fault: str) -> None:
    result = quorum.run(fault, during=30.0)  # long enough for 1,000 reads at (3,2,2) on a busy machine
    strict_overlap = _row(result, 2, 2)
    assert strict_overlap["reads"] >= 1000, strict_overlap
    assert strict_overlap["stale_reads"] == 0, strict_overlap
    assert _row(result, 3, 1)["stale_reads"] == 0
    assert result["hints_held_at_most"] > 0, "the writes meant for the down replica left hints"
    assert result["hints_left"] == 0 and result["hints_home_after_heal_seconds"] is not None
    assert result["caught_up_after_heal_seconds"] is not None, "every replica caught up with every write"
    if fault == "partition":
        # The cut replica answers R=1 reads from its own copy, which misses every write the
        # other side acknowledged meanwhile.
        assert _row(result, 1, 1)["stale_reads"] > 0, _row(result, 1, 1)
