"""`ridectl raft sim` (ridectl/raft.py): each scenario's summary tells its story, the broken
rules are reported as violations with exit 1, and a bad --nodes is one line and exit 2."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ridectl import cli

SAFE: dict[str, list[str]] = {
    "election safety": [],
    "log matching": [],
    "leader completeness": [],
    "state machine safety": [],
}


def _sim(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict[str, Any]]:
    args = cli.parser().parse_args(["raft", "sim", "--seed", "1", *flags, "--json"])
    code: int = args.handler(args)
    return code, json.loads(capsys.readouterr().out)


def test_crash_leader_a_later_term_leads_and_only_the_uncommitted_entry_is_lost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, found = _sim(capsys, "--scenario", "crash-leader")
    assert code == 0 and found["safe"] and found["violations"] == SAFE
    before, after = found["leaders"][0], found["leaders"][-1]
    assert after["term"] > before["term"] and after["node"] != before["node"]
    assert f"t={after['tick']} n{after['node']} leader of term {after['term']}" in found["events"]
    assert found["lost"] == ["a4"]
    assert len(set(found["commit_index"].values())) == 1 and found["down"] == []
    assert found["liveness"]["held"]


def test_partition_the_old_leaders_uncommitted_entries_do_not_survive(capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _sim(capsys, "--scenario", "partition")
    assert code == 0 and found["safe"]
    assert found["lost"] == ["minority-1", "minority-2"]
    kept = {command for log in found["logs"].values() for _, command in log}
    assert kept.isdisjoint(found["lost"]) and "majority-1" in kept
    old = found["leaders"][0]["node"]
    assert any(f" n{old} steps down from leader" in event for event in found["events"])
    assert found["liveness"]["held"]


def test_random_with_the_correct_rules_holds_and_with_broken_votes_is_caught(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, found = _sim(capsys, "--scenario", "random", "--ticks", "300")
    assert code == 0 and found["violations"] == SAFE
    code, found = _sim(capsys, "--scenario", "random", "--rules", "broken-vote")
    assert code == 1 and not found["safe"]
    assert found["violations"]["leader completeness"] and found["violations"]["state machine safety"]


def test_figure_8_is_caught_on_its_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code, found = _sim(capsys, "--scenario", "random", "--rules", "broken-commit", "--seed", "1318")
    assert code == 1 and found["violations"]["leader completeness"]


def test_the_text_summary_ends_with_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.parser().parse_args(["raft", "sim", "--scenario", "random", "--rules", "broken-vote"])
    assert args.handler(args) == 1
    out = capsys.readouterr().out
    assert out.startswith("t=")
    assert "\nleaders: term 1 n" in out and "\ncommit index: n1 " in out
    assert "\nsafety: VIOLATED\n" in out and "\n  leader completeness: n" in out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--nodes", "12"], "--nodes must be an integer in 3..9, got '12'"),
        (["--nodes", "2"], "--nodes must be an integer in 3..9, got '2'"),
        (["--nodes", "five"], "--nodes must be an integer in 3..9, got 'five'"),
        (["--scenario", "split-brain"], "--scenario must be one of crash-leader, partition, random"),
        (["--rules", "lenient"], "--rules must be one of correct, broken-vote, broken-commit"),
        (["--ticks", "50"], "--ticks is for --scenario random only"),
    ],
)
def test_a_bad_value_is_one_line_naming_it_and_exit_2(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["raft", "sim", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "INVALID_ARGUMENT" in captured.err and says in captured.err
