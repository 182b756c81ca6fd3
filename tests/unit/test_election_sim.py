from collections.abc import Callable, Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.exhibits.election_sim import ElectionResult, bully, ring

Election = Callable[[Iterable[int], Iterable[int], int], ElectionResult]


@st.composite
def groups(draw: st.DrawFn) -> tuple[list[int], set[int], int]:
    """Distinct ids in any order, any crash set that leaves someone alive, a live initiator."""
    ids = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=25, unique=True))
    crashed = draw(st.sets(st.sampled_from(ids), max_size=len(ids) - 1))
    initiator = draw(st.sampled_from([p for p in ids if p not in crashed]))
    return ids, crashed, initiator


@pytest.mark.parametrize("elect", [bully, ring])
@given(group=groups())
def test_every_live_process_ends_up_following_the_highest_live_id(
    elect: Election, group: tuple[list[int], set[int], int]
) -> None:
    ids, crashed, initiator = group
    live = [p for p in ids if p not in crashed]
    result = elect(ids, crashed, initiator)
    assert result.leader == max(live)
    assert result.coordinator_of == {p: max(live) for p in live}
    assert result == elect(ids, crashed, initiator)  # deterministic


@given(group=groups())
def test_bully_costs_at_most_n_squared_minus_one_and_n_minus_one_from_the_top(
    group: tuple[list[int], set[int], int],
) -> None:
    ids, crashed, initiator = group
    n = len(ids)
    result = bully(ids, crashed, initiator)
    assert result.total <= n * n - 1
    if initiator == max(p for p in ids if p not in crashed):
        assert result.total == n - 1


@given(group=groups())
def test_ring_costs_two_messages_per_member_whoever_starts_and_whoever_crashed(
    group: tuple[list[int], set[int], int],
) -> None:
    ids, crashed, initiator = group
    assert ring(ids, crashed, initiator).messages == {"ELECTION": len(ids), "COORDINATOR": len(ids)}


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 50])
def test_bully_worst_case_is_the_lowest_id_starting_with_nobody_crashed(n: int) -> None:
    result = bully(range(n), set(), 0)
    pairs = n * (n - 1) // 2  # every process asks every higher one, and each one answers
    assert result.messages == {"ELECTION": pairs, "OK": pairs, "COORDINATOR": n - 1}
    assert result.total == n * n - 1


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_bully_best_case_is_the_highest_live_id_announcing_itself(n: int) -> None:
    # nobody above: no ELECTION at all
    assert bully(range(1, n + 1), set(), n).messages == {"ELECTION": 0, "OK": 0, "COORDINATOR": n - 1}
    # the old coordinator n + 1 is down: one unanswered ELECTION to it, then the announcements
    assert bully(range(1, n + 2), {n + 1}, n).messages == {"ELECTION": 1, "OK": 0, "COORDINATOR": n - 1}


@pytest.mark.parametrize("n", [1, 2, 5, 10, 50])
def test_ring_with_n_live_processes_costs_2n_from_any_initiator(n: int) -> None:
    for initiator in range(n):
        assert ring(range(n), set(), initiator).messages == {"ELECTION": n, "COORDINATOR": n}


def test_bully_when_the_coordinator_is_down_the_next_highest_wins() -> None:
    result = bully([1, 2, 3], {3}, 1)
    assert result.leader == 2
    assert result.events == (
        "1 -> 2 ELECTION",
        "1 -> 3 ELECTION (lost: 3 is down)",
        "2 -> 1 OK",
        "2 -> 3 ELECTION (lost: 3 is down)",
        "timeout: 2 heard no OK and becomes coordinator",
        "2 -> 1 COORDINATOR",
    )
    assert bully(range(1, 6), {4, 5}, 2).leader == 3


@pytest.mark.parametrize("n", [2, 3, 5, 10, 50])
def test_bully_from_the_bottom_after_the_coordinator_crashed_costs_n_squared_minus_n_minus_one(n: int) -> None:
    result = bully(range(1, n + 1), {n}, 1)
    # 1..n-1 each ask every higher id, n included; only the live ones answer; n-1 tells the rest
    assert result.messages == {"ELECTION": n * (n - 1) // 2, "OK": (n - 1) * (n - 2) // 2, "COORDINATOR": n - 2}
    assert result.total == n * n - n - 1


def test_ring_when_the_coordinator_is_down_the_message_skips_it() -> None:
    result = ring([1, 2, 3], {3}, 1)
    assert result.leader == 2
    assert result.events == (
        "1 -> 2 ELECTION [1]",
        "2 -> 3 ELECTION [1, 2] (lost: 3 is down)",
        "2 -> 1 ELECTION [1, 2]",
        "1 -> 2 COORDINATOR [2]",
        "2 -> 3 COORDINATOR [2] (lost: 3 is down)",
        "2 -> 1 COORDINATOR [2]",
    )
    assert ring(range(1, 6), {4, 5}, 2).leader == 3


@pytest.mark.parametrize("elect", [bully, ring])
@pytest.mark.parametrize(
    ("ids", "crashed", "initiator", "error"),
    [
        ([1, 2, 2, 3], set(), 1, r"duplicate process ids: \[2\]"),
        ([1, 2, 3], {4}, 1, r"crashed ids that are not processes: \[4\]"),
        ([1, 2, 3], set(), 9, r"initiator 9 is not one of the processes \[1, 2, 3\]"),
        ([], set(), 1, r"initiator 1 is not one of the processes \[\]"),
        ([1, 2, 3], {1, 2, 3}, 1, "every process is crashed"),
        ([1, 2, 3], {3, 1}, 1, "initiator 1 is crashed"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(
    elect: Election, ids: list[int], crashed: set[int], initiator: int, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        elect(ids, crashed, initiator)
