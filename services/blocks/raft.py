"""Raft's rules (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm",
2014) as pure functions over one node's state, with no I/O, clocks or randomness. Together they
keep the paper's safety properties (Figure 3): election safety, log matching, leader
completeness and state machine safety; each function says which one it carries.

Indexes start at 1, as in the paper; index 0 is the empty prefix that every log shares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NamedTuple

Role = Literal["follower", "candidate", "leader"]


class Entry(NamedTuple):
    """A command, and the term of the leader that first put it in a log."""

    term: int
    command: str


Log = tuple[Entry, ...]


class Appended(NamedTuple):
    """A follower's answer to AppendEntries, and its state afterwards."""

    success: bool
    log: Log
    commit_index: int
    last_index: int  # on success the last index the message covered; on failure the log's length
    dropped: int  # conflicting entries removed from the end of the log


def term_at(log: Log, index: int) -> int:
    """The term of the entry at `index`, and 0 at index 0."""
    return log[index - 1].term if index > 0 else 0


def majority(cluster_size: int) -> int:
    """Any two majorities of one cluster share a node: every safety argument below uses it."""
    return cluster_size // 2 + 1


def observe_term(
    current_term: int, voted_for: int | None, role: Role, seen_term: int, from_leader: bool = False
) -> tuple[int, int | None, Role]:
    """§5.1: a message of a higher term makes a node adopt the term, with no vote cast in it yet,
    as a follower; an AppendEntries of its own term tells a candidate that the term has its
    leader (§5.2). Terms only grow, so a deposed leader stops as soon as it hears of a newer one."""
    if seen_term > current_term:
        return seen_term, None, "follower"
    if from_leader and seen_term == current_term:
        return current_term, voted_for, "follower"
    return current_term, voted_for, role


def become_candidate(current_term: int, me: int) -> tuple[int, int, Role]:
    """§5.2: a candidate starts a term no one has voted in yet and spends its own vote on itself."""
    return current_term + 1, me, "candidate"


def log_up_to_date(log: Log, last_log_index: int, last_log_term: int) -> bool:
    """§5.4.1, the election restriction: a candidate's log is at least as up to date as the
    voter's, comparing last terms first, then lengths. Every committed entry is on a majority,
    and a winner needs a majority of votes, so a winner holds every committed entry: leader
    completeness."""
    return (last_log_term, last_log_index) >= (term_at(log, len(log)), len(log))


def grant_vote(
    current_term: int,
    voted_for: int | None,
    log: Log,
    candidate: int,
    term: int,
    last_log_index: int,
    last_log_term: int,
) -> bool:
    """§5.2, on a RequestVote once observe_term has run: a vote only in the voter's current term,
    at most one per term, and only for an up-to-date candidate. One vote per node per term and a
    majority to win: election safety, at most one leader per term."""
    return (
        term == current_term and voted_for in (None, candidate) and log_up_to_date(log, last_log_index, last_log_term)
    )


def append_entries(
    current_term: int,
    log: Log,
    commit_index: int,
    term: int,
    prev_log_index: int,
    prev_log_term: int,
    entries: Log,
    leader_commit: int,
) -> Appended:
    """§5.3, the follower's side, once observe_term has run. It refuses a stale leader, and a
    message whose previous entry (prev_log_index, prev_log_term) this log lacks: that consistency
    check gives log matching by induction on the index. It then removes the first conflicting
    entry and all after it (never an entry that matches: messages arrive late and out of order),
    appends what is new and commits up to min(leader_commit, the last index the message covered);
    the commit index never goes back."""
    if term < current_term or prev_log_index > len(log) or term_at(log, prev_log_index) != prev_log_term:
        return Appended(False, log, commit_index, len(log), 0)
    kept = list(log)
    dropped = 0
    for index, entry in enumerate(entries, prev_log_index + 1):
        if index <= len(kept) and kept[index - 1].term != entry.term:
            dropped = len(kept) - index + 1
            del kept[index - 1 :]
        if index > len(kept):
            kept.append(entry)
    last_new = prev_log_index + len(entries)
    return Appended(True, tuple(kept), max(commit_index, min(leader_commit, last_new)), last_new, dropped)


def after_reply(next_index: int, match_index: int, success: bool, last_index: int) -> tuple[int, int]:
    """§5.3, the leader's (next_index, match_index) for one follower after its reply. On success
    the follower holds the leader's log up to last_index; match_index only grows, so a late reply
    never moves it back. On failure the leader backs off by one, or straight past the end of a
    shorter log (the optimisation §5.3 ends with), until the consistency check passes."""
    if success:
        match = max(match_index, last_index)
        return match + 1, match
    return max(1, min(next_index - 1, last_index + 1)), match_index


def replicated_index(last_index: int, follower_matches: Iterable[int], cluster_size: int) -> int:
    """The highest index that a majority of the cluster stores, the leader's own log included."""
    stored = sorted((last_index, *follower_matches), reverse=True)
    return stored[majority(cluster_size) - 1]


def leader_commit_index(
    log: Log, current_term: int, commit_index: int, follower_matches: Iterable[int], cluster_size: int
) -> int:
    """§5.3 and §5.4.2: the highest N stored on a majority whose entry is of the leader's current
    term. An entry of an earlier term on a majority can still be overwritten by a later leader
    that never had it (Figure 8), so it commits only with an entry of the current term after it.
    Terms never decrease along a log: if the entry at N is older, so is every one before it."""
    n = replicated_index(len(log), follower_matches, cluster_size)
    return n if n > commit_index and term_at(log, n) == current_term else commit_index
