"""docs/uber.md, read offline: every claim about Uber and the systems it built cites a
source of the page's references, every reference is cited, every test it names exists,
and every command it gives parses as `ridectl` would parse it. (Its ride section's commands
and its second question's retried request run on the stack in tests/e2e/test_uber_page.py;
the drills its questions name run in the drill tier, `make drill` (kill-payment-at-AUTHORIZING
as part of kill-payment), and tests/e2e/test_drills.py checks their evidence.)"""

from __future__ import annotations

import ast
import re
import shlex
import uuid
from pathlib import Path

import pytest

from drills.scenarios import all_scenarios, at_step
from ridectl.cli import parser

REPO = Path(__file__).resolve().parents[2]
PAGE = (REPO / "docs" / "uber.md").read_text()
BODY, REFERENCES = PAGE.split("\n## References\n")
CITATION = re.compile(r"\[(R\d+b?)\]")
# What makes a sentence a claim about Uber's systems rather than about this one.
UBER = re.compile(r"\bUber\b|Cadence|Gulfstream|Ringpop|Spanner|TrueTime|Temporal|Jaeger")


def _paragraphs() -> list[str]:
    """The page's paragraphs, list items and table rows, outside the pasted ride."""
    text = re.sub(r"<!-- ride:begin -->.*?<!-- ride:end -->", "", BODY, flags=re.S)
    parts = re.split(r"\n\s*\n|\n(?=- |\d+\. |\|)", text)
    return [p.strip() for p in parts if p.strip() and not p.lstrip().startswith("#")]


def test_every_claim_about_uber_cites_a_source() -> None:
    intro = _paragraphs()[0]  # the page's promise, naming what follows
    header = "| concern | this system | Cadence / Temporal |"
    uncited = [p[:120] for p in _paragraphs() if UBER.search(p) and not CITATION.search(p) and p not in (intro, header)]
    assert uncited == []


def test_every_reference_is_cited_and_every_citation_listed() -> None:
    listed = re.findall(r"^- \[(R\d+b?)\] ", REFERENCES, flags=re.M)
    assert len(listed) == len(set(listed)), "a reference listed twice"
    cited = set(CITATION.findall(BODY))
    assert cited == set(listed), (sorted(cited - set(listed)), sorted(set(listed) - cited))
    for entry in re.split(r"\n(?=- \[R)", REFERENCES.strip()):
        assert re.search(r"https?://\S+", entry), entry[:80]


def _named_tests() -> list[tuple[str, str]]:
    return re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", PAGE)


def test_the_page_names_tests_that_exist() -> None:
    named = _named_tests()
    assert len(named) >= 10
    for path, name in named:
        tree = ast.parse((REPO / path).read_text())
        functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        assert name in functions, f"{path} has no {name}"


def _commands() -> list[str]:
    """Every `ridectl ...` the page tells the reader to run (not one it says is missing)."""
    found = re.findall(r"(?<!no )`(ridectl [a-z]+ [^`]+)`", PAGE)  # `ridectl drill` names the tool
    found += re.findall(r"^\$ (ridectl .+)$", PAGE, flags=re.M)
    return sorted(set(found))


PLACEHOLDER = re.compile(r"^(RIDE_ID|RIDER|K|FILE)$")


@pytest.mark.parametrize("command", _commands())
def test_every_command_on_the_page_parses(command: str) -> None:
    words = [str(uuid.uuid4()) if PLACEHOLDER.match(w) else w for w in shlex.split(command)[1:]]
    args = parser().parse_args(words)
    if words[:2] == ["drill", "run"]:
        assert words[2] in all_scenarios() or at_step(words[2]), f"no drill named {words[2]}"
    assert args.handler is not None


def test_the_commands_cover_the_story_the_drills_and_the_trace() -> None:
    verbs = {tuple(shlex.split(c)[1:3]) for c in _commands()}
    assert {("explain", "RIDE_ID"), ("trace", "RIDE_ID"), ("drill", "run")} <= verbs
