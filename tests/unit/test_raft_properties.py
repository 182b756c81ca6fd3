"""Raft's safety properties (services/exhibits/raft_checks.py) hold on thousands of simulated
runs: schedules of crashes, restarts, partitions, heals and commands drawn by Hypothesis, and
the named scenarios on many seeds and cluster sizes, which also recover after the fault. And
the checkers are not blind: each deliberately broken rule is caught on a seed found by search."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.exhibits.raft_checks import check, commit_delay
from services.exhibits.raft_sim import (
    BROKEN_COMMIT,
    BROKEN_VOTE,
    CORRECT,
    FAULTS,
    LIVENESS_BOUND,
    PROBE,
    Rules,
    Simulation,
    Step,
    crash_leader,
    partition,
    random_run,
    random_schedule,
)

TICKS = 200
SEEDS = st.integers(0, 2**32 - 1)
# Derandomized: the same examples on every run, so a failure is never a fluke of the draw.
MANY = settings(max_examples=1000, derandomize=True, deadline=None, database=None)
SOME = settings(max_examples=200, derandomize=True, deadline=None, database=None)
# The first seeds of random_run (five nodes, 300 ticks) on which the checkers catch each
# broken rule. Votes without the log check are caught on most seeds; Figure 8 needs a rare
# sequence of leaders, and 1318 is the first seed that shows it (too far to search each run).
BROKEN_VOTE_SEED = 0
BROKEN_COMMIT_SEED = 1318


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, int, list[Step]]:
    """A cluster size, a seed, 3 to 30 commands and 1 to 15 faults, at any ticks."""
    nodes = draw(st.integers(3, 7))
    tick = st.integers(1, TICKS)
    some_nodes = st.lists(st.integers(1, nodes), max_size=nodes // 2, unique=True).map(lambda ns: tuple(sorted(ns)))
    faults = st.lists(st.builds(Step, tick, st.sampled_from(FAULTS), some_nodes), min_size=1, max_size=15)
    commands = st.lists(tick.map(lambda t: Step(t, "submit")), min_size=3, max_size=30)
    return nodes, draw(SEEDS), draw(faults) + draw(commands)


def _violations(sim: Simulation) -> dict[str, list[str]]:
    return {name: found for name, found in check(sim.history).items() if found}


@MANY
@given(schedules())
def test_every_safety_property_holds_on_any_schedule(drawn: tuple[int, int, list[Step]]) -> None:
    nodes, seed, schedule = drawn
    sim = Simulation(nodes, seed)
    sim.follow(schedule, TICKS)
    assert _violations(sim) == {}


@MANY
@given(st.integers(3, 7), SEEDS)
def test_every_safety_property_holds_on_random_runs(nodes: int, seed: int) -> None:
    assert _violations(random_run(nodes, seed, ticks=TICKS)) == {}


def _recovered(sim: Simulation) -> None:
    """Safe, a leader at the end, and the command sent after the heal committed in time."""
    assert _violations(sim) == {}
    assert sim.leader() is not None
    delay = commit_delay(sim.history, PROBE)
    assert delay is not None and delay <= LIVENESS_BOUND


def _holding(sim: Simulation, command: str) -> list[int]:
    """The nodes whose log holds `command` at the end."""
    return [node.id for node in sim.nodes.values() if command in (entry.command for entry in node.log)]


@SOME
@given(st.integers(3, 9), SEEDS)
def test_after_the_leader_crashes_a_later_term_leads_and_keeps_every_committed_entry(nodes: int, seed: int) -> None:
    sim = crash_leader(nodes, seed)
    _recovered(sim)
    first, last = sim.history.elections[0], sim.history.elections[-1]
    assert last.term > first.term and last.node != first.node
    for command in ("a1", "a2", "a3", "b1"):
        assert _holding(sim, command) == list(sim.nodes)
    assert _holding(sim, "a4") == []  # never committed, and overwritten at the restart


@SOME
@given(st.integers(3, 9), SEEDS)
def test_a_leader_cut_off_in_a_minority_commits_nothing_and_steps_down_after_the_heal(nodes: int, seed: int) -> None:
    sim = partition(nodes, seed)
    _recovered(sim)
    old = sim.history.elections[0]
    assert sim.nodes[old.node].role == "follower" and sim.nodes[old.node].term > old.term
    for command in ("a1", "a2", "majority-1"):
        assert _holding(sim, command) == list(sim.nodes)
    for command in ("minority-1", "minority-2"):
        assert _holding(sim, command) == []
        assert all(commit.entry.command != command for commit in sim.history.commits)


def test_votes_without_the_log_check_lose_committed_entries() -> None:
    first = next(seed for seed in range(50) if _violations(random_run(seed=seed, rules=BROKEN_VOTE)))
    assert first == BROKEN_VOTE_SEED
    broken = _violations(random_run(seed=BROKEN_VOTE_SEED, rules=BROKEN_VOTE))
    assert {"leader completeness", "state machine safety"} <= set(broken)
    assert _violations(random_run(seed=BROKEN_VOTE_SEED, rules=CORRECT)) == {}


def test_the_smallest_schedule_that_breaks_votes_without_the_log_check() -> None:
    """What Hypothesis shrank a failing schedule to (hypothesis.find over schedules()): n1 is
    cut off while c1 commits on n2 and n3; after the heal n1 wins term 2 with an empty log."""
    schedule = [Step(1, "partition", (1,)), Step(1, "submit"), Step(31, "heal")]
    runs = {rules.name: Simulation(3, 0, rules) for rules in (BROKEN_VOTE, CORRECT)}
    for sim in runs.values():
        sim.follow(schedule, TICKS)
    assert _violations(runs["broken-vote"]) == {
        "leader completeness": ["n1, leader of term 2 at t=39, lacks index 1 (c1), committed in term 1 by n3 at t=20"]
    }
    assert "t=36 n3 refuses vote to n1 (term 2)" in runs["correct"].history.events
    assert _violations(runs["correct"]) == {}


def test_committing_an_older_terms_entry_by_counting_replicas_is_figure_8() -> None:
    broken = _violations(random_run(seed=BROKEN_COMMIT_SEED, rules=BROKEN_COMMIT))
    assert broken["leader completeness"][0].startswith("n3, leader of term 13 at t=247, lacks index 30 (c30)")
    assert "state machine safety" in broken
    assert _violations(random_run(seed=BROKEN_COMMIT_SEED, rules=CORRECT)) == {}


def test_the_rules_do_not_change_the_random_schedule() -> None:
    def schedule(rules: Rules) -> list[Step]:
        return random_schedule(Simulation(5, BROKEN_COMMIT_SEED, rules).rng, 5, 300)

    assert schedule(CORRECT) == schedule(BROKEN_VOTE) == schedule(BROKEN_COMMIT)
