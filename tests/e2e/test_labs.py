"""Every runnable lab of the course (ridectl/labs.py) exits 0 through `ridectl lab run ID`
against the running stack; the drills, each longer than a minute, are run by their own
tests instead, named below."""

from __future__ import annotations

import pytest

from ridectl.labs import BY_ID, CATALOGUE
from tests.support import ridectl

QUICK = (
    "leader-election",
    "distributed-tracing",
    "service-mesh",
    "failure-detection",
    "gossip-protocol",
    "gossip-membership",
    "distributed-consensus",
)
# Drills, each run elsewhere with its verdict checked.
TESTED_ELSEWHERE = {
    "time-and-clocks": "tests/e2e/test_drills.py (clock-skew)",
    "idempotency": "tests/e2e/test_drills.py (kill-payment-at-CAPTURING)",
    "exactly-once": "make drill (restart-kafka, in the drill suite)",
    "distributed-locks": "tests/e2e/test_drills.py (lock-pause)",
    "resilience-patterns": "make drill (psp-outage); tests/e2e/test_resilience.py",
    "fencing-lock": "tests/e2e/test_drills.py (lock-pause)",
    "half-open-breaker": "make drill (psp-outage); tests/e2e/test_resilience.py",
    "zookeeper-election": "tests/e2e/test_drills.py (leader-pause)",
    "prevent-split-brain": "make drill (split-brain-sweeper, in the drill suite)",
    "lock-vs-optimistic": "tests/e2e/test_drills.py (lock-pause)",
    "split-brain": "make drill (partition-driver-replica, in the drill suite, DRIVERS=3)",
    "quorum-systems": "tests/quorum/test_quorum_drill.py (ridectl quorum drill's run, both faults)",
    "raft-leader-failure": "make drill (kill-kraft-leader, in the drill suite, KAFKA_CONTROLLERS=3)",
    # Its lesson is a violation, so the command exits 1; its output is checked there.
    "paxos-vs-raft": "tests/unit/test_raft_cli.py (broken-vote caught)",
}


def test_every_runnable_lab_is_run_here_or_named_as_tested_elsewhere() -> None:
    runnable = {row.id for row in CATALOGUE if row.state == "runnable"}
    assert set(QUICK).isdisjoint(TESTED_ELSEWHERE)
    assert set(QUICK) | set(TESTED_ELSEWHERE) == runnable


@pytest.mark.parametrize("lab_id", QUICK)
def test_a_quick_lab_runs_and_exits_0(lab_id: str) -> None:
    result = ridectl("lab", "run", lab_id)
    assert result.returncode == 0, (BY_ID[lab_id].command, result.stdout[-3000:], result.stderr[-3000:])
    assert result.stdout.strip(), "a lab prints what it shows"
