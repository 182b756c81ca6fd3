"""docs/uber.md shows one real ride: the commands of its ride section, run here on the
stack, print what the page shows. Ids, offsets, times and counts differ from run to run,
so both texts are compared with those replaced by placeholders: every word the page shows
must come out of the command, in the page's order (extra lines, such as a declined offer's,
may come between), and the completed ride's story has the same steps."""

from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path

from deploy.local import paths
from tests.support import ridectl

PAGE = paths.REPO / "docs" / "uber.md"
ELIDED = "[...]"
# Run-dependent: the spans on the critical path (tested against Jaeger in test_explain.py).
SPAN_ROW = re.compile(r"^\s+[ !]\s+\d+\.\d+\s+\d+\.\d+ ms\s")
RESCUE_KINDS = ("resent", "stale epoch applied", "fenced timeout", "aborted batch", "fenced zombie", "inbox replay")


def _blocks() -> list[tuple[list[str], str]]:
    """The ride section's console blocks: their commands and their output."""
    section = PAGE.read_text().split("<!-- ride:begin -->")[1].split("<!-- ride:end -->")[0]
    found = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        commands = [line[2:] for line in lines if line.startswith("$ ")]
        found.append((commands, "\n".join(line for line in lines if not line.startswith("$ "))))
    return found


def _normal(text: str) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    # Which replica of a participant handled the command (driver-participant-2) varies too.
    text = re.sub(r"\b([a-z]+-participant)-\d+\b", r"\1", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "<trace>", text)
    text = re.sub(r"(/tmp|/work|/root)\S*", "<path>", text)
    return re.sub(r"\d+(\.\d+)?", "0", text)


def _words(text: str) -> list[str]:
    return [w for line in text.splitlines() if not SPAN_ROW.match(line) for w in _normal(line).split()]


def _in_order(shown: list[str], printed: list[str]) -> int | None:
    """The index of the first shown word not found in order in the printed ones, or None."""
    it = iter(printed)
    for n, word in enumerate(shown):
        if not any(word == w for w in it):
            return n
    return None


def _check(shown: str, printed: str) -> None:
    words = _words(printed)
    for chunk in shown.split(ELIDED):
        expected = _words(chunk)
        missing = _in_order(expected, words)
        assert missing is None, f"the page shows {' '.join(expected[max(0, missing - 8) : missing + 8])!r}"


def _headings(text: str) -> list[str]:
    return [_normal(line) for line in text.splitlines() if line and not line[0].isspace() and ELIDED not in line]


def test_the_completed_ride_on_the_page_is_what_explain_prints_for_a_new_one() -> None:
    [commands, shown] = _blocks()[0]
    assert [shlex.split(c)[:2] for c in commands] == [["ridectl", "explain"]]
    demo = ridectl("demo")
    assert demo.returncode == 0, demo.stderr[-2000:]
    told = re.search(r"ridectl explain (\S+)$", demo.stdout.strip())
    assert told is not None, "make demo ends by printing the explain command"
    printed = ridectl("explain", told.group(1))
    assert printed.returncode == 0, printed.stderr
    _check(shown, printed.stdout)
    # Every step the page shows, in its order; a ride whose first offer was declined also
    # met the sweeper (its MATCH_BACKOFF ends by a timeout), a step the page's ride did not need.
    extra = [h for h in _headings(printed.stdout) if h not in _headings(shown)]
    assert _in_order(_headings(shown), _headings(printed.stdout)) is None
    assert all("the sweeper" in h for h in extra), (told.group(1), extra)


def test_the_drilled_ride_on_the_page_met_the_fault_the_page_shows(tmp_path: Path) -> None:
    [commands, shown] = _blocks()[1]
    drill, explain = (shlex.split(c) for c in commands)
    assert drill[:3] == ["ridectl", "drill", "run"] and explain[:2] == ["ridectl", "explain"]
    report = tmp_path / "drills"
    ran = ridectl(*[a if a != "/tmp/dr" else str(report) for a in drill[1:]], "--json")
    assert ran.returncode == 0, (ran.stdout[-2000:], ran.stderr[-2000:])
    [fault] = json.loads(ran.stdout)["faults"]
    assert explain[2:] == ["RIDE_ID", "--drill", "/tmp/dr"]
    printed = ridectl("explain", fault["detail"]["ride_id"], "--drill", str(report))
    assert printed.returncode == 0, printed.stderr

    # What saved the ride differs from run to run: the page's rescue and the printed one are
    # each of a kind explain knows, or the printed story says nothing was redone.
    def without_rescue(text: str) -> tuple[str, list[str]]:
        if "What the records show saved it:" not in text:
            return text, []
        head, rest = text.split("What the records show saved it:", 1)
        items = re.findall(r"^  - ([a-z ]+):", rest, flags=re.M)
        tail = rest[rest.index("\n\n") :] if "\n\n" in rest else ""
        return head + tail, items

    shown_rest, shown_kinds = without_rescue(shown)
    printed_rest, printed_kinds = without_rescue(printed.stdout)
    assert shown_kinds and set(shown_kinds) <= set(RESCUE_KINDS)
    assert set(printed_kinds) <= set(RESCUE_KINDS)
    assert printed_kinds or "Nothing of this ride was redone" in printed.stdout
    paragraphs = printed_rest.split("\n\n")
    _check(shown_rest, "\n\n".join(p for p in paragraphs if not p.startswith("Nothing of this ride was redone")))


def test_the_second_questions_retried_request_books_one_ride() -> None:
    [command] = [c for c in re.findall(r"`(ridectl ride request [^`]+)`", PAGE.read_text())]
    rider = json.loads(ridectl("rider", "create", "--name", "Retrying Phone", "--json").stdout)["rider_id"]
    key = str(uuid.uuid4())
    words = [{"RIDER": rider, "K": key}.get(w, w) for w in shlex.split(command)[1:]]
    first, again = (ridectl(*words, "--json") for _ in range(2))
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    ride_id = json.loads(first.stdout)["ride_id"]
    assert json.loads(again.stdout)["ride_id"] == ride_id
    shown = ridectl("ride", "show", ride_id)
    assert shown.returncode == 0 and shown.stdout.count("authorize_payment  started") == 1, shown.stdout
