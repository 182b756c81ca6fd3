"""The stack as a value: what `ridectl up` asks for becomes one frozen Stack, kept with the
running stack, and a wrong mode is one clear error before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deploy.local import components, environment
from deploy.local import stack as stack_file
from deploy.local.errors import StackError
from deploy.local.stack import INSTANT, FleetPace, Stack

STACKS = st.builds(
    Stack,
    zookeeper_nodes=st.sampled_from([1, 3]),
    kafka_controllers=st.sampled_from([1, 3]),
    replicas=st.sampled_from([(), (("payment", 2),), (("payment", 3), ("psp", 2))]),
    clock_skew_ms=st.sampled_from([(), (("payment", -5000),), (("trip", 250),)]),
    fleet_size=st.integers(1, 1000),
    fleet_accept_rate=st.none() | st.floats(0, 1),
    fleet_pace=st.sampled_from([FleetPace(), INSTANT, FleetPace(think_seconds=(0.5, 1.5))]),
    trace_sample_ratio=st.none() | st.floats(0, 1),
    sweeper_self_fence=st.booleans(),
)


@given(STACKS)
def test_a_stack_survives_its_file(stack: Stack) -> None:
    assert Stack.from_json(stack.to_json()) == stack


def test_up_keeps_the_stack_it_started_in_the_run_directory(tmp_path: Path) -> None:
    assert stack_file.load(tmp_path) is None
    started = Stack(zookeeper_nodes=3, replicas=(("payment", 2),))
    stack_file.save(tmp_path, started)
    assert stack_file.load(tmp_path) == started


def test_a_damaged_stack_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / stack_file.STACK_FILE).write_text("{not json")
    with pytest.raises(StackError, match=r"stack.json does not describe a stack"):
        stack_file.load(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"zookeeper_nodes": 2}, "ZooKeeper nodes must be 1 or 3, got 2"),
        ({"kafka_controllers": 2}, "KAFKA_CONTROLLERS must be 1 or 3, got 2"),
        ({"replicas": (("trip", 2),)}, "'trip' cannot be replicated here"),
        ({"replicas": (("payment", 9),)}, "payment=9 must have a count in 1..5"),
        ({"clock_skew_ms": (("paymnet", 5),)}, "clock skew for 'paymnet': not a service"),
        ({"fleet_size": 0}, "the fleet size must be in 1..1000, got 0"),
        ({"fleet_accept_rate": 1.5}, "accept rate must be in 0..1"),
        ({"trace_sample_ratio": -0.1}, "trace sample ratio must be in 0..1"),
    ],
)
def test_a_wrong_mode_is_refused_when_the_value_is_made(changes: dict[str, object], message: str) -> None:
    with pytest.raises(StackError, match=message):
        Stack().replace(**changes)


def test_a_pace_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(StackError, match=r"think_seconds must satisfy 0 <= MIN <= MAX, got \(2.0, 1.0\)"):
        FleetPace(think_seconds=(2.0, 1.0))


def test_the_environment_asks_and_the_last_stack_fills_in(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ZK_NODES",
        "KAFKA_CONTROLLERS",
        "REPLICAS",
        "DRIVERS",
        "RIDESAGA_CLOCK_SKEW",
        "RIDESAGA_FLEET_THINK_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    previous = Stack(
        zookeeper_nodes=3, kafka_controllers=3, replicas=(("payment", 2),), clock_skew_ms=(("payment", 10),)
    )
    # ZooKeeper nodes, controllers and replicas stick from the last `up`; a skew lasts only while asked for.
    assert environment.requested_stack(previous) == Stack(
        zookeeper_nodes=3, kafka_controllers=3, replicas=(("payment", 2),)
    )
    monkeypatch.setenv("ZK_NODES", "1")
    monkeypatch.setenv("RIDESAGA_CLOCK_SKEW", "payment=-5000")
    monkeypatch.setenv("RIDESAGA_FLEET_THINK_SECONDS", "0,0")
    asked = environment.requested_stack(previous)
    assert asked.zookeeper_nodes == 1 and asked.replicas == (("payment", 2),)
    assert asked.clock_skew_ms == (("payment", -5000),) and asked.fleet_pace.think_seconds == (0.0, 0.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ZK_NODES", "two", "ZK_NODES must be 1 or 3, got 'two'"),
        ("KAFKA_CONTROLLERS", "three", "KAFKA_CONTROLLERS must be 1 or 3, got 'three'"),
        ("KAFKA_CONTROLLERS", "5", "KAFKA_CONTROLLERS must be 1 or 3, got 5"),
        ("REPLICAS", "payment", "REPLICAS entries must be SERVICE=INTEGER, got 'payment'"),
        ("RIDESAGA_CLOCK_SKEW", "payment=soon", "RIDESAGA_CLOCK_SKEW entries must be SERVICE=INTEGER"),
        ("RIDESAGA_FLEET_RIDE_SECONDS", "1", "RIDESAGA_FLEET_RIDE_SECONDS must be MIN,MAX seconds"),
        ("RIDESAGA_TRACE_SAMPLE_RATIO", "all", "RIDESAGA_TRACE_SAMPLE_RATIO must be a number"),
        ("DRIVERS", "three", "DRIVERS must be the number of driver replicas, 1..5, got 'three'"),
        ("DRIVERS", "6", r"driver=6 must have a count in 1..5"),
        ("QUORUM", "3,2", r"QUORUM must be N,R,W \(three integers\), got '3,2'"),
        ("QUORUM", "3,4,1", "QUORUM must be N,R,W with 1 <= R, W <= N, got 3,4,1"),
        ("QUORUM_SLOPPY", "no", "QUORUM_SLOPPY must be 0 or 1, got 'no'"),
    ],
)
def test_a_malformed_mode_variable_names_itself(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(StackError, match=message):
        environment.requested_stack(None)


def test_the_processes_get_their_settings_from_the_stack_value(tmp_path: Path) -> None:
    stack = Stack(clock_skew_ms=(("payment", -5000),), fleet_pace=INSTANT, fleet_size=7, trace_sample_ratio=0.0)
    found = {c.name: c.environment for c in components.all_components(tmp_path, stack)}
    assert found["payment"]["RIDESAGA_CLOCK_SKEW_MS"] == "-5000"
    assert "RIDESAGA_CLOCK_SKEW_MS" not in found["trip"]
    assert found["fleet"]["RIDESAGA_FLEET_SIZE"] == "7"
    assert found["fleet"]["RIDESAGA_FLEET_THINK_SECONDS"] == "0.0,0.0"
    assert all(found[name]["RIDESAGA_TRACE_SAMPLE_RATIO"] == "0.0" for name in ("trip", "fleet", "trip-sweeper-1"))
    replicated = {c.name for c in components.all_components(tmp_path, Stack(replicas=(("payment", 2),)))}
    assert {"payment-2", "payment-2-envoy"} <= replicated


def test_each_sweeper_connects_to_zookeeper_from_its_own_address_and_self_fences_unless_told(
    tmp_path: Path,
) -> None:
    found = {c.name: c.environment for c in components.all_components(tmp_path, Stack())}
    assert [found[name]["RIDESAGA_ZOOKEEPER_SOURCE"] for name in ("trip-sweeper-1", "trip-sweeper-2")] == [
        "127.0.2.1",
        "127.0.2.2",
    ]
    assert "RIDESAGA_SWEEPER_SELF_FENCE" not in found["trip-sweeper-1"], "on by default (config.py)"
    off = Stack(sweeper_self_fence=False)
    assert Stack.from_json(off.to_json()) == off, "kept in stack.json"
    found = {c.name: c.environment for c in components.all_components(tmp_path, off)}
    assert found["trip-sweeper-1"]["RIDESAGA_SWEEPER_SELF_FENCE"] == "0"
    assert found["trip-sweeper-2"]["RIDESAGA_SWEEPER_SELF_FENCE"] == "0"


def test_drivers_sizes_the_driver_cluster_beside_the_other_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICAS", raising=False)
    monkeypatch.setenv("DRIVERS", "3")
    previous = Stack(replicas=(("payment", 2), ("driver", 2)))
    assert environment.requested_stack(previous).replicas == (("payment", 2), ("driver", 3))
    monkeypatch.setenv("DRIVERS", "1")
    assert environment.requested_stack(previous).replicas == (("payment", 2),)


def test_a_new_run_starts_three_driver_replicas_and_replicas_elsewhere_keep_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ZK_NODES", "REPLICAS", "DRIVERS"):
        monkeypatch.delenv(name, raising=False)
    assert environment.requested_stack(None).replica_counts() == {"driver": 3}
    monkeypatch.setenv("REPLICAS", "payment=2")
    assert environment.requested_stack(None).replica_counts() == {"payment": 2, "driver": 3}
    monkeypatch.setenv("REPLICAS", "payment=2,driver=2")
    assert environment.requested_stack(None).replica_counts() == {"payment": 2, "driver": 2}
    monkeypatch.setenv("DRIVERS", "1")
    assert environment.requested_stack(None).replica_counts() == {"payment": 2}


def test_each_driver_replica_is_told_its_address_and_every_seed(tmp_path: Path) -> None:
    found = {c.name: c.environment for c in components.all_components(tmp_path, Stack(replicas=(("driver", 3),)))}
    seeds = "127.0.0.1:7003,127.0.0.1:7103,127.0.0.1:7203"
    for name, member in (("driver", "127.0.0.1:7003"), ("driver-2", "127.0.0.1:7103"), ("driver-3", "127.0.0.1:7203")):
        assert found[name]["RIDESAGA_MEMBER"] == member
        assert found[name]["RIDESAGA_SEEDS"] == seeds
    assert "RIDESAGA_MEMBER" not in found["payment"]


def test_the_quorum_setting_reaches_every_driver_replica(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUORUM", "3,1,1")
    monkeypatch.setenv("QUORUM_SLOPPY", "0")
    stack = environment.requested_stack(None)
    assert (stack.quorum, stack.quorum_sloppy) == ((3, 1, 1), False)
    assert Stack.from_json(stack.to_json()) == stack, "kept in stack.json"
    found = {c.name: c.environment for c in components.all_components(tmp_path, stack)}
    for name in ("driver", "driver-2", "driver-3"):
        assert (found[name]["RIDESAGA_QUORUM"], found[name]["RIDESAGA_QUORUM_SLOPPY"]) == ("3,1,1", "0")
