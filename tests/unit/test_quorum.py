"""The Dynamo rules of services/blocks/quorum.py: vector-clock ordering, siblings and their
resolution (property tests), the preference list strict and sloppy, quorum settings, and
what a read learns from its answers."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocks.quorum import (
    Order,
    Placement,
    Quorum,
    Version,
    advanced,
    clock,
    compare,
    merged,
    preference_list,
    read_outcome,
    resolve,
    siblings,
    stored,
)
from services.blocks.ring import Ring

REPLICAS = ("a", "b", "c")
clocks = st.dictionaries(st.sampled_from(REPLICAS), st.integers(0, 4)).map(clock)
versions = st.builds(Version, st.sampled_from(["x", "y", "z"]), clocks, st.tuples(st.integers(0, 5), st.integers(0, 2)))


@given(clocks, clocks)
def test_compare_is_antisymmetric(a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...]) -> None:
    flipped = {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE}
    order = compare(a, b)
    assert compare(b, a) == flipped.get(order, order)
    assert (order is Order.EQUAL) == (a == b)


@given(clocks, clocks, clocks)
def test_happened_before_is_transitive(
    a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...], c: tuple[tuple[str, int], ...]
) -> None:
    if compare(a, b) is Order.BEFORE and compare(b, c) is Order.BEFORE:
        assert compare(a, c) is Order.BEFORE


@given(clocks, st.sampled_from(REPLICAS))
def test_a_write_over_what_was_read_supersedes_it(base: tuple[tuple[str, int], ...], coordinator: str) -> None:
    assert compare(base, advanced(base, coordinator)) is Order.BEFORE


@given(st.lists(clocks, min_size=1, max_size=5))
def test_the_merge_descends_from_every_clock_and_is_the_least_such(cs: list[tuple[tuple[str, int], ...]]) -> None:
    top = merged(cs)
    assert all(compare(c, top) in (Order.BEFORE, Order.EQUAL) for c in cs)
    assert all(any(dict(c).get(r, 0) == n for c in cs) for r, n in top)


def test_two_writes_from_one_read_by_different_replicas_are_siblings() -> None:
    base = clock({"a": 1})
    left, right = advanced(base, "a"), advanced(base, "b")
    assert compare(left, right) is Order.CONCURRENT
    kept = siblings([Version("x", base, (1, 0)), Version("y", left, (2, 0)), Version("z", right, (3, 0))])
    assert {v.value for v in kept} == {"y", "z"}, "the common ancestor is superseded, the two branches both kept"


@given(st.lists(versions, max_size=6))
def test_siblings_are_pairwise_concurrent_and_every_version_is_covered(vs: list[Version]) -> None:
    kept = siblings(vs)
    for one, other in itertools.combinations(kept, 2):
        assert compare(one.clock, other.clock) is Order.CONCURRENT
    for v in vs:  # nothing acknowledged is dropped unless a kept version supersedes it
        assert any(compare(v.clock, k.clock) in (Order.BEFORE, Order.EQUAL) for k in kept)


@given(st.lists(versions, max_size=6))
def test_siblings_do_not_depend_on_arrival_order_and_applying_twice_changes_nothing(vs: list[Version]) -> None:
    assert siblings(vs) == siblings(list(reversed(vs)))
    assert stored(siblings(vs), vs) == siblings(vs)


@given(st.lists(versions, min_size=1, max_size=6))
def test_the_resolved_version_is_the_newest_and_supersedes_every_sibling(vs: list[Version]) -> None:
    kept = siblings(vs)
    winner = resolve(kept)
    assert winner.stamp == max(v.stamp for v in kept)
    assert all(compare(v.clock, winner.clock) in (Order.BEFORE, Order.EQUAL) for v in kept)
    assert siblings([*kept, winner]) == (winner,), "written back, it ends the siblings"
    assert resolve(list(reversed(kept))) == winner, "every replica picks the same"


def test_nothing_to_resolve_is_refused() -> None:
    with pytest.raises(ValueError, match="no versions"):
        resolve([])


def test_a_negative_counter_is_refused_naming_the_replica() -> None:
    with pytest.raises(ValueError, match=r"counter for 'a' must be >= 0, got -1"):
        clock({"a": -1})


# -- the preference list --------------------------------------------------------------------

RING = Ring.of(["m1", "m2", "m3", "m4", "m5"])


def test_with_every_member_up_strict_and_sloppy_agree_on_the_first_n() -> None:
    first = RING.owners("driver-7", 3)
    assert preference_list(RING, "driver-7", 3) == tuple(Placement(m) for m in first)
    assert preference_list(RING, "driver-7", 3, sloppy=True) == tuple(Placement(m) for m in first)


def test_a_strict_list_leaves_a_down_member_out_and_a_sloppy_one_hints_the_next_healthy() -> None:
    order = RING.owners("driver-7", 5)
    down = order[1]
    strict = preference_list(RING, "driver-7", 3, down={down})
    assert [p.member for p in strict] == [order[0], order[2]]
    assert all(p.hint_for is None for p in strict)
    sloppy = preference_list(RING, "driver-7", 3, down={down}, sloppy=True)
    assert sloppy == (Placement(order[0]), Placement(order[3], hint_for=down), Placement(order[2]))


def test_two_down_members_take_the_next_two_healthy_ones_in_ring_order() -> None:
    order = RING.owners("driver-7", 5)
    down = {order[0], order[3]}  # a stand-in that is itself down is skipped
    sloppy = preference_list(RING, "driver-7", 3, down=down, sloppy=True)
    assert sloppy == (Placement(order[4], hint_for=order[0]), Placement(order[1]), Placement(order[2]))


def test_with_no_healthy_member_beyond_the_first_n_a_sloppy_list_is_short() -> None:
    ring = Ring.of(["m1", "m2", "m3"])
    order = ring.owners("driver-7", 3)
    assert preference_list(ring, "driver-7", 3, down={order[2]}, sloppy=True) == (
        Placement(order[0]),
        Placement(order[1]),
    )


def test_a_down_member_does_not_move_the_keys_home() -> None:
    order = RING.owners("driver-7", 5)
    assert preference_list(RING, "driver-7", 3, down={order[4]}) == tuple(Placement(m) for m in order[:3])


# -- quorum settings and reads --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "r", "w", "overlapping"), [(3, 2, 2, True), (3, 1, 1, False), (3, 3, 1, True)])
def test_r_plus_w_over_n_is_an_overlapping_quorum(n: int, r: int, w: int, overlapping: bool) -> None:
    assert Quorum(n, r, w).overlapping is overlapping


@pytest.mark.parametrize(
    ("n", "r", "w", "message"),
    [(0, 1, 1, "N must be at least 1, got 0"), (3, 4, 1, r"R must be in 1..N=3, got 4"), (3, 2, 0, "W must be")],
)
def test_a_quorum_outside_its_bounds_is_refused_naming_the_number(n: int, r: int, w: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Quorum(n, r, w)


def test_a_read_merges_the_answers_and_names_the_replicas_behind() -> None:
    old = Version("old", clock({"a": 1}), (1, 0))
    new = Version("new", clock({"a": 2}), (2, 0))
    other = Version("other", clock({"a": 1, "b": 1}), (3, 0))  # concurrent with `new`
    outcome = read_outcome({"a": [new], "b": [old], "c": [new, other]})
    assert outcome.versions == siblings([new, other])
    assert outcome.behind == ("a", "b"), "a lacks the sibling `other`, b holds only the superseded one"
    assert read_outcome({"a": [new], "c": [new]}).behind == ()
