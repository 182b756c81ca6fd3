"""Raft's rules (services/blocks/raft.py) one at a time, on small logs written out by hand."""

from __future__ import annotations

from services.blocks import raft
from services.blocks.raft import Entry, Log


def log(*terms: int) -> Log:
    """A log whose entries have these terms; entry i holds command "x<i>"."""
    return tuple(Entry(term, f"x{i}") for i, term in enumerate(terms, 1))


def test_majorities_of_one_cluster_overlap() -> None:
    assert [raft.majority(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 2, 3, 3, 5]


def test_a_higher_term_makes_any_node_a_follower_that_has_not_voted_in_it() -> None:
    assert raft.observe_term(3, 2, "leader", 5) == (5, None, "follower")
    assert raft.observe_term(3, 2, "candidate", 4, from_leader=True) == (4, None, "follower")
    assert raft.observe_term(3, 2, "leader", 3) == (3, 2, "leader")
    assert raft.observe_term(3, 2, "leader", 1) == (3, 2, "leader")


def test_a_candidate_follows_the_leader_of_its_own_term() -> None:
    assert raft.observe_term(4, 4, "candidate", 4, from_leader=True) == (4, 4, "follower")
    assert raft.observe_term(4, 4, "candidate", 4) == (4, 4, "candidate")  # a rival candidate's request


def test_a_candidate_starts_a_new_term_and_votes_for_itself() -> None:
    assert raft.become_candidate(3, 2) == (4, 2, "candidate")


def test_one_vote_per_term_and_the_same_answer_to_a_repeated_request() -> None:
    assert raft.grant_vote(4, None, log(1, 2), 3, 4, 2, 2)
    assert raft.grant_vote(4, 3, log(1, 2), 3, 4, 2, 2)  # the request came twice
    assert not raft.grant_vote(4, 3, log(1, 2), 5, 4, 2, 2)  # already voted for n3 in term 4


def test_no_vote_for_a_stale_term() -> None:
    assert not raft.grant_vote(4, None, log(1, 2), 3, 3, 2, 2)


def test_the_last_term_decides_before_the_length() -> None:
    voter = log(1, 1, 3)
    assert not raft.grant_vote(5, None, voter, 2, 5, 9, 2)  # longer, but its last entry is older
    assert raft.grant_vote(5, None, voter, 2, 5, 1, 4)  # shorter, but its last entry is newer
    assert raft.grant_vote(5, None, voter, 2, 5, 3, 3)  # as up to date
    assert not raft.grant_vote(5, None, voter, 2, 5, 2, 3)  # same last term, shorter


def test_append_refuses_a_stale_leader_and_a_gap_or_a_mismatch_before_the_entries() -> None:
    follower = log(1, 1, 2)
    assert raft.append_entries(3, follower, 0, 2, 3, 2, log(2), 0) == (False, follower, 0, 3, 0)
    assert raft.append_entries(3, follower, 0, 3, 4, 3, (), 0).success is False  # nothing at index 4
    assert raft.append_entries(3, follower, 0, 3, 3, 3, (), 0).success is False  # index 3 is of term 2


def test_append_replaces_the_conflicting_suffix() -> None:
    result = raft.append_entries(3, log(1, 1, 2, 2), 1, 3, 2, 1, (Entry(3, "y3"),), 2)
    assert result == (True, (*log(1, 1), Entry(3, "y3")), 2, 3, 2)


def test_a_late_copy_of_an_old_message_truncates_nothing() -> None:
    follower = log(1, 1, 1)
    result = raft.append_entries(1, follower, 0, 1, 0, 0, log(1), 0)
    assert result.log == follower and result.last_index == 1 and result.dropped == 0


def test_the_follower_commits_up_to_what_the_message_covered_and_never_back() -> None:
    assert raft.append_entries(1, (), 0, 1, 0, 0, log(1, 1), 5).commit_index == 2
    assert raft.append_entries(1, (), 0, 1, 0, 0, log(1, 1), 1).commit_index == 1
    assert raft.append_entries(1, log(1, 1, 1), 3, 1, 0, 0, log(1), 5).commit_index == 3


def test_the_leader_tracks_each_follower_from_its_replies() -> None:
    assert raft.after_reply(4, 0, True, 5) == (6, 5)
    assert raft.after_reply(6, 5, True, 3) == (6, 5)  # a late reply: match_index never goes back
    assert raft.after_reply(6, 0, False, 9) == (5, 0)  # back off by one
    assert raft.after_reply(9, 0, False, 2) == (3, 0)  # or straight past the end of a shorter log
    assert raft.after_reply(1, 0, False, 0) == (1, 0)


def test_the_replicated_index_is_what_a_majority_stores_the_leader_included() -> None:
    assert raft.replicated_index(5, [5, 3, 2, 1], 5) == 3
    assert raft.replicated_index(5, [0, 0], 3) == 0


def test_figure_8_an_older_terms_entry_on_a_majority_is_not_committed_by_counting() -> None:
    leader = log(1, 2, 4)  # the leader of term 4 holds an entry of term 2 at index 2
    assert raft.leader_commit_index(leader, 4, 1, [2, 2, 1, 1], 5) == 1
    assert raft.leader_commit_index(leader, 4, 1, [3, 3, 1, 1], 5) == 3  # with its own term's entry after it
    assert raft.leader_commit_index(leader, 4, 3, [0, 0, 0, 0], 5) == 3  # and never goes back
