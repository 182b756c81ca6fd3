"""SWIM membership (services/blocks/swim.py): the rules that order rumours, and the
protocol on the seeded simulated network of bench/gossip.py (real message loss, latency
and cuts between members, no I/O)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.gossip import Network, formed_group
from services.blocks.swim import (
    GONE,
    Ack,
    Config,
    Node,
    Ping,
    Rumour,
    State,
    Sync,
    agreed,
    overrides,
)

CONFIG = Config()
PERIOD = CONFIG.period_ms
rumours = st.builds(Rumour, st.just("m1"), st.sampled_from(list(State)), st.integers(0, 5))


@pytest.mark.parametrize(
    ("new", "old", "wins"),
    [
        ((State.ALIVE, 2), (State.ALIVE, 1), True),
        ((State.ALIVE, 1), (State.ALIVE, 1), False),
        ((State.ALIVE, 1), (State.SUSPECT, 1), False),  # a suspicion is refuted only by a higher number
        ((State.ALIVE, 2), (State.SUSPECT, 1), True),
        ((State.SUSPECT, 1), (State.ALIVE, 1), True),
        ((State.SUSPECT, 1), (State.SUSPECT, 1), False),
        ((State.SUSPECT, 0), (State.ALIVE, 1), False),
        ((State.DEAD, 1), (State.SUSPECT, 1), True),
        ((State.DEAD, 0), (State.ALIVE, 1), False),
        ((State.LEFT, 3), (State.ALIVE, 3), True),
        ((State.ALIVE, 3), (State.DEAD, 3), False),  # an old alive rumour does not revive
        ((State.ALIVE, 4), (State.DEAD, 3), True),  # the member itself came back, with a higher number
        ((State.SUSPECT, 9), (State.DEAD, 3), False),
    ],
)
def test_the_rules_order_rumours_by_incarnation_then_state(
    new: tuple[State, int], old: tuple[State, int], wins: bool
) -> None:
    assert overrides(Rumour("m1", *new), Rumour("m1", *old)) is wins


@given(rumours, rumours)
def test_two_rumours_never_both_override_each_other(a: Rumour, b: Rumour) -> None:
    assert not (overrides(a, b) and overrides(b, a))


@given(st.data())
def test_a_dead_member_is_never_revived_by_an_old_rumour(data: st.DataObject) -> None:
    died_at = data.draw(st.integers(0, 5))
    old = st.builds(Rumour, st.just("m1"), st.sampled_from(list(State)), st.integers(0, died_at))
    node = Node("m0", CONFIG, random.Random(1))
    node.receive(Ping("m1", 1, (Rumour("m1", State.DEAD, died_at),)), 0.0)
    for n, rumour in enumerate(data.draw(st.lists(old, max_size=20)), start=1):
        node.receive(Sync("m2", (rumour,)), float(n))
    assert node.members["m1"].state in GONE
    node.receive(Sync("m2", (Rumour("m1", State.ALIVE, died_at + 1),)), 99.0)
    assert node.members["m1"].state == State.ALIVE, "the member itself, back with a higher number"


def test_a_suspected_member_refutes_with_a_higher_incarnation_and_gossips_it() -> None:
    node = Node("m1", CONFIG, random.Random(1), incarnation=2)
    [ack] = node.receive(Ping("m0", 7, (Rumour("m1", State.SUSPECT, 2),)), 0.0)
    assert node.incarnation == 3
    assert isinstance(ack.message, Ack) and Rumour("m1", State.ALIVE, 3) in ack.message.rumours
    node.receive(Ping("m0", 8, (Rumour("m1", State.SUSPECT, 1),)), 1.0)
    assert node.incarnation == 3, "an older suspicion needs no refutation"


def test_each_rumour_is_piggybacked_a_bounded_number_of_times() -> None:
    node = Node.in_group("m0", [f"m{i}" for i in range(8)], CONFIG, random.Random(1))
    node.receive(Sync("m1", (Rumour("m5", State.SUSPECT, 0),)), 0.0)
    carried = 0
    for seq in range(100):
        [ack] = node.receive(Ping("m1", seq, ()), float(seq))
        assert isinstance(ack.message, Ack)
        carried += Rumour("m5", State.SUSPECT, 0) in ack.message.rumours
    assert carried == CONFIG.retransmits(8) == 16


def test_a_ping_to_a_suspect_carries_its_suspicion_first() -> None:
    node = Node.in_group("m0", [f"m{i}" for i in range(20)], Config(max_piggyback=1), random.Random(1))
    for i in range(2, 20):
        node.receive(Sync("m1", (Rumour(f"m{i}", State.SUSPECT, 0),)), 0.0)
    [ack] = node.receive(Ping("m7", 1, ()), 1.0)
    assert isinstance(ack.message, Ack) and ack.message.rumours == (Rumour("m7", State.SUSPECT, 0),)


def _network(size: int, seed: int = 1, loss: float = 0.0) -> Network:
    net = formed_group(size, CONFIG, random.Random(seed))
    net.loss = loss
    return net


def _state(net: Network, of: str) -> set[State | None]:
    """What the live members think of `of` (None: never heard of it)."""
    return {
        n.members[of].state if of in n.members else None
        for name, n in net.nodes.items()
        if name != of and name not in net.crashed
    }


def test_a_crashed_member_is_declared_dead_by_all_and_no_live_one_is() -> None:
    net = _network(12)
    net.run_until(lambda: False, 3 * PERIOD)
    net.crashed.add("m0005")
    bound = CONFIG.suspicion_ms(12) + 20 * PERIOD
    assert net.run_until(lambda: _state(net, "m0005") == {State.DEAD}, bound)
    changes = [c for n in net.nodes.values() for c in n.changes if c.after in GONE]
    assert {c.member for c in changes} == {"m0005"}
    assert agreed(n for name, n in net.nodes.items() if name != "m0005")


def test_a_member_cut_off_directly_is_still_trusted_through_indirect_probes() -> None:
    net = _network(8)
    net.blocked.add(frozenset(("m0000", "m0001")))  # one bad link, the rest fine
    net.run_until(lambda: False, 40 * PERIOD)
    for a, b in (("m0000", "m0001"), ("m0001", "m0000")):
        seen = [c for c in net.nodes[a].changes if c.member == b]
        assert all(c.after != State.DEAD for c in seen), seen


def test_a_paused_member_is_suspected_then_refutes_when_it_resumes() -> None:
    net = _network(10)
    net.run_until(lambda: False, 3 * PERIOD)
    net.crashed.add("m0003")  # SIGSTOP: it neither sends nor receives
    assert net.run_until(lambda: State.SUSPECT in _state(net, "m0003"), 10 * PERIOD)
    net.crashed.discard("m0003")  # SIGCONT before the suspicion timeout
    assert net.run_until(lambda: _state(net, "m0003") == {State.ALIVE}, CONFIG.suspicion_ms(10))
    refuted = net.nodes["m0003"].incarnation
    assert refuted >= 1, "it refuted with a higher incarnation"

    def everyone_has_the_refutation() -> bool:
        return {n.members["m0003"].rumour.incarnation for k, n in net.nodes.items() if k != "m0003"} == {refuted}

    assert net.run_until(everyone_has_the_refutation, 10 * PERIOD)


def test_a_healed_partition_merges_both_sides_back_alive() -> None:
    net = _network(9)
    net.run_until(lambda: False, 3 * PERIOD)
    side = ["m0000", "m0001", "m0002"]
    net.partition(side)
    rest = [m for m in net.nodes if m not in side]

    def split() -> bool:
        return all(net.nodes[a].members[b].state == State.DEAD for a in side for b in rest) and all(
            net.nodes[b].members[a].state == State.DEAD for a in side for b in rest
        )

    assert net.run_until(split, CONFIG.suspicion_ms(9) + 30 * PERIOD), "each side declares the other dead"
    net.heal()
    merged = net.run_until(
        lambda: all(r.state == State.ALIVE for n in net.nodes.values() for r in n.view().values()),
        60 * CONFIG.sync_periods * PERIOD,
    )
    assert merged, {k: [c for c in n.changes][-3:] for k, n in net.nodes.items()}
    assert agreed(net.nodes.values())


def test_a_joining_member_is_learned_by_everyone_and_a_leaving_one_is_never_declared_dead() -> None:
    net = _network(10)
    net.run_until(lambda: False, 2 * PERIOD)
    newcomer = Node("n-new", CONFIG, random.Random(7))
    net.nodes["n-new"] = newcomer
    net.post("n-new", newcomer.join(["m0000"], net.now_ms))
    assert net.run_until(lambda: _state(net, "n-new") == {State.ALIVE}, 20 * PERIOD)
    assert set(newcomer.alive()) == {n for n in net.nodes if n != "n-new"}
    net.post("m0004", net.nodes["m0004"].leave(net.now_ms))
    assert net.run_until(lambda: _state(net, "m0004") == {State.LEFT}, 20 * PERIOD)
    # A member probing it before the news arrives may suspect it; none declares it dead.
    assert all(c.after != State.DEAD for n in net.nodes.values() for c in n.changes if c.member == "m0004")


def test_the_simulation_is_replayed_exactly_by_its_seed() -> None:
    from bench.gossip import crash_one

    assert crash_one(20, 0.05, 3, CONFIG) == crash_one(20, 0.05, 3, CONFIG)
    assert crash_one(20, 0.05, 3, CONFIG) != crash_one(20, 0.05, 4, CONFIG)


def test_bad_settings_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="ack_timeout_ms"):
        Config(period_ms=100, ack_timeout_ms=100)
    with pytest.raises(ValueError, match="max_piggyback"):
        Config(max_piggyback=0)
