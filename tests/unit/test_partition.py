"""The partition's nft script and its cut's validation (drills/partition.py), without nft;
tests/integration/test_partition.py applies it and sends packets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from drills.partition import TABLE, Cut, PartitionError, active, isolate, ruleset

CUT = Cut(side=(24102, 24101), others=(24111,))


def _rules(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().endswith(" drop")]


def test_the_ruleset_is_a_table_of_its_own_hooked_on_input() -> None:
    script = ruleset(CUT)
    assert script.startswith(f"table inet {TABLE} {{\n")
    assert "type filter hook input priority filter; policy accept;" in script
    assert ruleset(CUT, table="other_cut").startswith("table inet other_cut {\n")


def test_the_ruleset_drops_both_protocols_both_ways_on_loopback_only() -> None:
    assert sorted(_rules(ruleset(CUT))) == sorted(
        [
            'iif "lo" tcp sport { 24101, 24102 } tcp dport { 24111 } drop',
            'iif "lo" tcp sport { 24111 } tcp dport { 24101, 24102 } drop',
            'iif "lo" udp sport { 24101, 24102 } udp dport { 24111 } drop',
            'iif "lo" udp sport { 24111 } udp dport { 24101, 24102 } drop',
        ]
    )
    assert all(line.startswith('iif "lo" ') for line in _rules(ruleset(Cut((1, 1, 65535), (2,)))))


def test_a_sides_own_source_addresses_cut_its_tcp_to_the_other_sides_ports_both_ways() -> None:
    rules = _rules(
        ruleset(Cut((24101,), (24111, 24121), side_sources=("127.0.1.1",), others_sources=("127.0.1.3", "127.0.1.2")))
    )
    assert [r for r in rules if "saddr" in r or "daddr" in r] == [
        'iif "lo" ip saddr { 127.0.1.1 } tcp dport { 24111, 24121 } drop',
        'iif "lo" ip daddr { 127.0.1.1 } tcp sport { 24111, 24121 } drop',
        'iif "lo" ip saddr { 127.0.1.2, 127.0.1.3 } tcp dport { 24101 } drop',
        'iif "lo" ip daddr { 127.0.1.2, 127.0.1.3 } tcp sport { 24101 } drop',
    ]


def test_a_side_of_source_addresses_alone_cuts_only_their_tcp_to_the_other_sides_ports() -> None:
    rules = _rules(ruleset(Cut((), (12181, 12182), side_sources=("127.0.2.1",))))
    assert rules == [
        'iif "lo" ip saddr { 127.0.2.1 } tcp dport { 12181, 12182 } drop',
        'iif "lo" ip daddr { 127.0.2.1 } tcp sport { 12181, 12182 } drop',
    ]

    with pytest.raises(
        ValueError, match=r"^cut: side's source addresses have no ports on the other side to be cut from$"
    ):
        Cut((), (), side_sources=("127.0.2.1",), others_sources=("127.0.2.2",))


@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        (
            {"side_sources": ("127.0.0.1",)},
            r"^cut: side_sources must be loopback addresses other than 127\.0\.0\.1, got '127\.0\.0\.1'$",
        ),
        ({"others_sources": ("10.0.0.1",)}, r"^cut: others_sources must be .* got '10\.0\.0\.1'$"),
        ({"side_sources": ("127.0.1.x",)}, r"^cut: side_sources must be .* got '127\.0\.1\.x'$"),
        (
            {"side_sources": ("127.0.1.2",), "others_sources": ("127.0.1.2",)},
            r"^cut: source addresses on both sides: \['127\.0\.1\.2'\]$",
        ),
    ],
)
def test_a_bad_source_address_names_its_problem(sources: dict[str, tuple[str, ...]], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Cut((1,), (2,), sources.get("side_sources", ()), sources.get("others_sources", ()))


@pytest.mark.parametrize(
    ("side", "others", "problem"),
    [
        ((), (2,), r"^cut: side has no ports and no source addresses$"),
        ((1,), (), r"^cut: others has no ports and no source addresses$"),
        ((0, 5), (6,), r"^cut: side has ports outside 1\.\.65535: \[0\]$"),
        ((5,), (6, 65536), r"^cut: others has ports outside 1\.\.65535: \[65536\]$"),
        ((5, 7, 8), (8, 9, 7), r"^cut: ports on both sides: \[7, 8\]$"),
    ],
)
def test_a_bad_cut_names_its_problem(side: tuple[int, ...], others: tuple[int, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Cut(side, others)


def test_a_failing_nft_is_one_line_with_its_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    nft = tmp_path / "nft"
    nft.write_text(
        "#!/bin/sh\n"
        "echo 'Error: cache initialization failed: Operation not permitted' >&2\n"
        "echo 'list tables' >&2\n"
        "echo '^^^^' >&2\n"
        "exit 1\n"
    )
    nft.chmod(nft.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(PartitionError) as raised:
        active()
    assert str(raised.value) == "`nft list tables` failed: Error: cache initialization failed: Operation not permitted"


def test_no_nft_says_what_installs_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PartitionError, match=r"^nft not found: deploy/local/bootstrap\.py installs nftables$"):
        active()


def test_an_isolation_drops_everything_to_and_from_its_ports_and_nothing_else() -> None:
    script = ruleset(isolate((7005,)))
    rules = [line.strip() for line in script.splitlines() if line.strip().endswith("drop")]
    assert rules == [
        'iif "lo" tcp sport { 7005 } drop',
        'iif "lo" tcp dport { 7005 } drop',
        'iif "lo" udp sport { 7005 } drop',
        'iif "lo" udp dport { 7005 } drop',
    ]
    with pytest.raises(ValueError, match="an isolation has ports on its side and nothing else"):
        Cut((7005,), (7004,), isolated=True)
    with pytest.raises(ValueError, match="an isolation has ports on its side and nothing else"):
        Cut((), (), isolated=True)
