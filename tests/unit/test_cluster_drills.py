"""The driver cluster's drills (drills/cluster.py): what they ask of the stack, and how
they read the replicas' views. No stack: the views are values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deploy.local import lifecycle
from drills import cluster
from drills.engine import DrillError
from services.driver.client import ReplicaView, Seen

A, B, C = "127.0.0.1:7003", "127.0.0.1:7103", "127.0.0.1:7203"


def _view(replica: str, **states: str) -> ReplicaView:
    members = {A: "alive", B: "alive", C: "alive"}
    members.update(
        {
            address: state
            for address, state in zip((A, B, C), (states.get("a"), states.get("b"), states.get("c")), strict=True)
            if state
        }
    )
    return ReplicaView(replica, tuple(Seen(m, s, 0, 0) for m, s in members.items()))


def test_a_cluster_drill_on_a_stack_without_three_driver_replicas_says_how_to_start_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lifecycle, "running", lambda run: SimpleNamespace(replica_counts=lambda: {}))
    drill = SimpleNamespace(name="pause-driver-replica")
    with pytest.raises(
        DrillError,
        match=r"^pause-driver-replica: needs a driver cluster of 3 \(make up DRIVERS=3\), this stack runs 1$",
    ):
        cluster.cluster(drill)  # type: ignore[arg-type]


def test_a_member_counts_as_declared_only_when_every_asked_view_says_so() -> None:
    dead_in_one = [_view(A, c="dead"), _view(B, c="suspect")]
    assert cluster._everyone_sees(C, {"suspect", "dead"})(dead_in_one)
    assert not cluster._everyone_sees(C, {"dead"})(dead_in_one)
    assert cluster._everyone_sees(C, {"dead"})([_view(A, c="dead"), _view(B, c="dead")])
    assert not cluster._everyone_sees(C, {"dead"})([_view(A, c="dead"), ReplicaView(B, error="UNAVAILABLE: x")])


def test_agreement_needs_every_view_with_the_same_members_alive() -> None:
    everyone = {A, B, C}
    assert cluster._all_alive(everyone)([_view(A), _view(B), _view(C)])
    assert not cluster._all_alive(everyone)([_view(A), _view(B), _view(C, a="suspect")])
    assert not cluster._all_alive(everyone)([_view(A), _view(B), ReplicaView(C, error="DEADLINE_EXCEEDED: x")])
