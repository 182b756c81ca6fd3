"""The course catalogue (ridectl/labs.py) keeps its promises: docs/course.md carries the
table it renders and a section per item, in course order; 13 topics, 4 problems and 4
questions; every cited path exists; every runnable lab is a real ridectl command; and
`ridectl lab` refuses an item without a lab, or an unknown id, with one line and exit 2."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from drills import scenarios
from ridectl import cli, labs
from ridectl.labs import CATALOGUE, COURSE_DOC, Lab, docs_table, with_table

REPO = COURSE_DOC.parents[1]
RUNNABLE = [row for row in CATALOGUE if row.state == "runnable"]


def _ridectl(*argv: str) -> int:
    args = cli.parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def test_the_docs_table_is_the_one_the_catalogue_renders() -> None:
    doc = COURSE_DOC.read_text()
    assert with_table(doc) == doc, "run `.venv/bin/python -m ridectl.labs --write-docs`"
    assert docs_table() in doc


def test_a_changed_catalogue_changes_the_table() -> None:
    doc = COURSE_DOC.read_text()
    stale = doc.replace(CATALOGUE[0].pitfall, "an older pitfall")
    assert stale != doc and with_table(stale) == doc


def test_the_course_has_its_21_items_in_three_kinds() -> None:
    assert len(CATALOGUE) == 21
    assert Counter(row.kind for row in CATALOGUE) == {"topic": 13, "problem": 4, "question": 4}
    kinds = [row.kind for row in CATALOGUE]
    assert kinds == sorted(kinds, key=["topic", "problem", "question"].index), "course order: topics first"
    assert len({row.id for row in CATALOGUE}) == 21
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", row.id) for row in CATALOGUE)


def test_every_item_has_its_section_in_course_order() -> None:
    sections = re.findall(r"^### (\d+)\. .*\(`([a-z-]+)`\)$", COURSE_DOC.read_text(), re.MULTILINE)
    assert sections == [(str(n), row.id) for n, row in enumerate(CATALOGUE, 1)]


@pytest.mark.parametrize("row", CATALOGUE, ids=lambda r: r.id)
def test_every_row_is_complete_and_cites_code_that_exists(row: Lab) -> None:
    assert row.title and row.see and row.pitfall and row.why and row.code
    missing = [path for path in row.code if not (REPO / path).exists()]
    assert missing == []
    assert row.state in ("runnable", "explained only", "not yet")
    assert bool(row.command) == (row.state == "runnable"), "a command exactly when the lab runs"


@pytest.mark.parametrize("row", RUNNABLE, ids=lambda r: r.id)
def test_every_runnable_lab_is_a_ridectl_command(row: Lab) -> None:
    program, *argv = shlex.split(row.command)
    assert program == "ridectl"
    try:
        args = cli.parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{row.command!r} is not a ridectl command")
    assert callable(args.handler)
    if args.command == "drill":
        found = scenarios.all_scenarios().get(args.scenario) or scenarios.at_step(args.scenario)
        assert found is not None, f"no drill {args.scenario!r}"


def test_a_lab_that_does_not_run_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every item of the course runs today; an item that does not is refused like this one.
    row = dataclasses.replace(CATALOGUE[0], command="", state="not yet", why="its drill is being rebuilt")
    monkeypatch.setitem(labs.BY_ID, row.id, row)
    assert _ridectl("lab", "run", row.id) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"ridectl: error: lab {row.id} is {row.state}: {row.why}\n"


def test_an_unknown_lab_is_refused_naming_it_and_the_valid_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ridectl("lab", "run", "raft-everything") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ridectl: error: unknown lab 'raft-everything'")
    assert all(row.id in err for row in CATALOGUE)


def test_a_runnable_lab_runs_its_command_and_returns_its_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    def fake_run(argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert _ridectl("lab", "run", "distributed-locks") == 3
    assert ran == [[sys.executable, "-m", "ridectl.cli", "drill", "run", "lock-pause"]]


def test_the_list_as_json_has_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ridectl("lab", "list", "--json") == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    assert rows == [row.as_json() for row in CATALOGUE]
    assert [Lab(**{**r, "code": tuple(r["code"])}) for r in rows] == list(CATALOGUE)


def test_the_list_fits_100_columns_and_names_every_lab(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ridectl("lab", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    for row in CATALOGUE:
        assert any(line.split()[:1] == [row.id] and (row.command or "-") in line for line in lines), row.id


def test_the_election_lab_prints_the_message_counts_and_the_split(capsys: pytest.CaptureFixture[str]) -> None:
    assert _ridectl("lab", "election") == 0
    lines = capsys.readouterr().out.splitlines()
    counts = {line.rsplit(None, 3)[0]: line.split()[-3:] for line in lines[1:-1]}
    assert counts == {
        "bully, nobody crashed, id 1 starts (worst)": ["24", "99", "2499"],
        "bully, coordinator n crashed, id 1 notices": ["19", "89", "2449"],
        "bully, coordinator n crashed, id n-1 notices": ["4", "9", "49"],
        "ring, coordinator n crashed, any id notices": ["10", "20", "100"],
    }
    assert "elects 3 on one side and 5 on the other" in lines[-1]
