"""Raft's safety properties (Ongaro & Ousterhout 2014, Figure 3), checked on the history of a
simulated run (services/exhibits/raft_sim.py). Each checker returns where the history breaks
its property, so an empty list means it held; commit_delay measures the scenarios' liveness."""

from __future__ import annotations

from services.blocks.raft import Entry, term_at
from services.exhibits.raft_sim import Commit, History


def check(history: History) -> dict[str, list[str]]:
    """Figure 3's safety properties and where the history breaks each; all lists empty: all held."""
    return {
        "election safety": election_safety(history),
        "log matching": log_matching(history),
        "leader completeness": leader_completeness(history),
        "state machine safety": state_machine_safety(history),
    }


def election_safety(history: History) -> list[str]:
    """At most one leader per term."""
    leaders: dict[int, list[int]] = {}
    for e in history.elections:
        leaders.setdefault(e.term, []).append(e.node)
    return [
        f"term {term} has leaders {', '.join(f'n{n}' for n in found)}"
        for term, found in leaders.items()
        if len(found) > 1
    ]


def log_matching(history: History) -> list[str]:
    """Two logs holding an entry of the same index and term hold the same command there and the
    same term just before it; by induction on the index, they are identical up to it."""
    seen: dict[tuple[int, int], tuple[int, str, int]] = {}
    found: dict[tuple[int, int], str] = {}
    for node, log in history.logs:
        for index, entry in enumerate(log, 1):
            here = (node, entry.command, term_at(log, index - 1))
            first = seen.setdefault((index, entry.term), here)
            if first[1:] != here[1:] and (index, entry.term) not in found:
                found[(index, entry.term)] = (
                    f"index {index} term {entry.term}: n{first[0]} has {first[1]} after term {first[2]},"
                    f" n{node} has {entry.command} after term {here[2]}"
                )
    return list(found.values())


def leader_completeness(history: History) -> list[str]:
    """An entry committed in a term is in the log of every leader of a later term."""
    committed: dict[tuple[int, Entry], Commit] = {}
    for c in history.commits:
        committed.setdefault((c.index, c.entry), c)
    return [
        f"n{e.node}, leader of term {e.term} at t={e.tick}, lacks index {c.index} ({c.entry.command}),"
        f" committed in term {c.term} by n{c.node} at t={c.tick}"
        for e in history.elections
        for c in committed.values()
        if c.term < e.term and (len(e.log) < c.index or e.log[c.index - 1] != c.entry)
    ]


def state_machine_safety(history: History) -> list[str]:
    """No two nodes apply different commands at the same index (nor one node after a restart)."""
    applied: dict[int, Commit] = {}
    found = []
    for c in history.commits:
        first = applied.setdefault(c.index, c)
        if first.entry != c.entry:
            found.append(
                f"index {c.index}: n{first.node} applied {first.entry.command} at t={first.tick},"
                f" n{c.node} applied {c.entry.command} at t={c.tick}"
            )
    return found


def commit_delay(history: History, command: str) -> int | None:
    """Ticks from the client submitting `command` to its first commit, None if it never committed."""
    committed = next((c.tick for c in history.commits if c.entry.command == command), None)
    return None if committed is None else committed - history.submitted[command]
