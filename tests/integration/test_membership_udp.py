"""SWIM over real UDP on 127.0.0.1 (services/driver/membership.py), without the stack: three
members agree on who is alive, a crashed one is suspected then declared dead, a leaving one
is seen as left, a member restarted after its death refutes it and comes back; a member
started before its seed joins when the seed comes up, and garbage datagrams are dropped."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest

from services.blocks import swim
from services.driver.membership import Membership, MemberView, resolved_member

# Fast enough that a test takes a few seconds; ports 24001-24099 are this file's alone.
CONFIG = swim.Config(period_ms=100, ack_timeout_ms=30)
SLACK = 3.0  # a loaded machine runs the 50 ms timer late; a deadline is the protocol's bound times this


def addresses(first: int) -> list[str]:
    return [f"127.0.0.1:{port}" for port in range(first, first + 3)]


def seconds(periods: float, suspicion: bool = False, members: int = 3) -> float:
    """A deadline from the Config: so many protocol periods, plus the suspicion timeout."""
    ms = periods * CONFIG.period_ms + (CONFIG.suspicion_ms(members) if suspicion else 0.0)
    return SLACK * ms / 1000


# Every member is probed within 2N - 1 periods of a crash (round-robin over a shuffled
# list); its prober suspects it at the end of that period; the news needs a period or two
# to reach the others, and then the suspicion timeout runs out.
DETECTED = 2 * 3 - 1 + 1 + 2
# Joining: a Join, the seed's Sync, then the joiner's first ping carries it to the rest.
FORMED = 2 * 3 + 2


class Recorder:
    """The changes each member reported through on_change, by member."""

    def __init__(self) -> None:
        self.changes: dict[str, list[swim.Change]] = {}

    def of(self, me: str) -> Callable[[swim.Change], None]:
        return self.changes.setdefault(me, []).append

    def states(self, observer: str, member: str) -> list[swim.State]:
        return [c.after for c in self.changes.get(observer, []) if c.member == member]


@asynccontextmanager
async def group(names: Sequence[str], recorder: Recorder) -> AsyncIterator[dict[str, Membership]]:
    members = {name: Membership(name, names, CONFIG, on_change=recorder.of(name)) for name in names}
    try:
        for member in members.values():
            await member.start()
        yield members
    finally:
        for member in members.values():
            await member.close()


def row(member: Membership, name: str) -> MemberView | None:
    return next((v for v in member.view() if v.member == name), None)


def views(members: Sequence[Membership]) -> str:
    return "\n".join(f"{m.me}: {[(v.member, v.state, v.incarnation) for v in m.view()]}" for m in members)


async def eventually(condition: Callable[[], bool], timeout: float, what: str, members: Sequence[Membership]) -> None:
    """Polls the views each tenth of a period until `condition` holds; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}\n{views(members)}")
        await asyncio.sleep(CONFIG.period_ms / 10_000)


async def all_alive(members: Sequence[Membership], names: Sequence[str], timeout: float) -> None:
    """Waits, by `changed()`, until every member's alive() is exactly `names`."""
    deadline = time.monotonic() + timeout
    for member in members:
        version = member.version
        while member.alive() != sorted(names):
            left = deadline - time.monotonic()
            try:
                version = await asyncio.wait_for(member.changed(version), max(left, 0.0))
            except TimeoutError:
                raise AssertionError(f"no agreed view of {names} within {timeout:.1f}s\n{views(members)}") from None


def test_three_members_seeded_with_each_other_agree_on_one_view() -> None:
    names = addresses(24001)

    async def scenario() -> None:
        async with group(names, Recorder()) as members:
            await all_alive(list(members.values()), names, seconds(FORMED))
            assert all(v.state == "alive" for m in members.values() for v in m.view())
            assert all(m.version >= 1 for m in members.values())

    asyncio.run(scenario())


def test_a_crashed_member_is_suspected_then_declared_dead_by_the_others() -> None:
    names = addresses(24011)
    crashed = names[2]
    recorder = Recorder()

    async def scenario() -> None:
        async with group(names, recorder) as members:
            everyone = list(members.values())
            await all_alive(everyone, names, seconds(FORMED))
            await members[crashed].close()  # no leave: a crash
            survivors = [members[n] for n in names[:2]]

            def declared_dead() -> bool:
                return all(getattr(row(m, crashed), "state", None) == "dead" for m in survivors)

            await eventually(declared_dead, seconds(DETECTED, suspicion=True), f"{crashed} dead in both", survivors)
            await all_alive(survivors, names[:2], seconds(2))
            for survivor in survivors:
                seen = recorder.states(survivor.me, crashed)
                assert swim.State.SUSPECT in seen, f"{survivor.me} declared {crashed} dead without suspecting it"
                assert seen.index(swim.State.SUSPECT) < seen.index(swim.State.DEAD)
                assert seen[-1] == swim.State.DEAD

    asyncio.run(scenario())


def test_a_member_that_leaves_is_seen_as_left_and_never_as_dead() -> None:
    names = addresses(24021)
    leaving = names[2]
    recorder = Recorder()

    async def scenario() -> None:
        async with group(names, recorder) as members:
            await all_alive(list(members.values()), names, seconds(FORMED))
            await members[leaving].leave()
            assert getattr(row(members[leaving], leaving), "state", None) == "left"
            assert leaving not in members[leaving].alive()
            stayers = [members[n] for n in names[:2]]
            await all_alive(stayers, names[:2], seconds(FORMED))
            for stayer in stayers:
                assert getattr(row(stayer, leaving), "state", None) == "left"
                seen = recorder.states(stayer.me, leaving)
                assert seen[-1] == swim.State.LEFT and swim.State.DEAD not in seen, seen

    asyncio.run(scenario())


def test_a_member_restarted_after_its_death_refutes_it_and_is_alive_again_everywhere() -> None:
    names = addresses(24031)
    restarted = names[2]
    recorder = Recorder()

    async def scenario() -> None:
        async with group(names, recorder) as members:
            await all_alive(list(members.values()), names, seconds(FORMED))
            await members[restarted].close()
            survivors = [members[n] for n in names[:2]]

            def dead_everywhere() -> bool:
                return all(getattr(row(m, restarted), "state", None) == "dead" for m in survivors)

            await eventually(dead_everywhere, seconds(DETECTED, suspicion=True), f"{restarted} dead", survivors)
            died_at = max(r.incarnation for m in survivors if (r := row(m, restarted)) is not None)

            again = Membership(restarted, names, CONFIG, on_change=recorder.of(restarted))
            assert [(v.member, v.incarnation) for v in again.view()] == [(restarted, 0)]
            members[restarted] = again
            await again.start()
            everyone = [*survivors, again]
            await all_alive(everyone, names, seconds(FORMED))

            def refuted_everywhere() -> bool:
                rows = [row(m, restarted) for m in everyone]
                return all(r is not None and r.state == "alive" and r.incarnation > died_at for r in rows)

            await eventually(refuted_everywhere, seconds(FORMED), f"{restarted} alive above {died_at}", everyone)
            for survivor in survivors:
                seen = recorder.states(survivor.me, restarted)
                assert swim.State.ALIVE in seen[seen.index(swim.State.DEAD) :], seen

    asyncio.run(scenario())


def test_a_member_started_before_its_seed_joins_once_the_seed_is_up() -> None:
    early, seed = addresses(24041)[:2]

    async def scenario() -> None:
        first = Membership(early, [seed], CONFIG)
        second = Membership(seed, [], CONFIG)  # knows nobody: only the re-sent Join brings them together
        try:
            await first.start()
            await second.start()
            await all_alive([first, second], [early, seed], seconds(FORMED))
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_a_member_joins_through_a_seed_named_by_host_name_and_is_known_by_its_ip() -> None:
    # As in compose and Kubernetes, where the seed is the name every replica answers to.
    first, second = addresses(24061)[:2]

    async def scenario() -> None:
        me = await resolved_member(f"localhost:{second.rpartition(':')[2]}")
        assert me == second
        seed = Membership(first, [], CONFIG)
        joiner = Membership(me, [f"localhost:{first.rpartition(':')[2]}", "no-such-host.invalid:24069"], CONFIG)
        try:
            await seed.start()
            await joiner.start()
            await all_alive([seed, joiner], [first, second], seconds(FORMED))
        finally:
            await seed.close()
            await joiner.close()

    asyncio.run(scenario())


def test_a_member_whose_own_name_does_not_resolve_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"RIDESAGA_MEMBER 'no-such-host.invalid:24070': the host does not resolve"):
        asyncio.run(resolved_member("no-such-host.invalid:24070"))


def test_a_bad_datagram_is_logged_with_its_sender_and_dropped_and_the_member_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    names = addresses(24051)
    vandal = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    vandal.bind(("127.0.0.1", 24059))

    async def scenario() -> None:
        async with group(names, Recorder()) as members:
            for garbage in (b"\xff not json", b'{"type":"ping","sender":"127.0.0.1:24059","seq":-1,"rumours":[]}'):
                vandal.sendto(garbage, ("127.0.0.1", 24051))
            await eventually(
                lambda: len([r for r in caplog.records if r.getMessage() == "bad datagram dropped"]) == 2,
                seconds(FORMED),
                "two bad datagrams logged",
                list(members.values()),
            )
            await all_alive(list(members.values()), names, seconds(FORMED))

    with caplog.at_level(logging.WARNING, logger="services.driver.membership"):
        try:
            asyncio.run(scenario())
        finally:
            vandal.close()
    dropped = [r for r in caplog.records if r.getMessage() == "bad datagram dropped"]
    fields = [getattr(r, "fields", {}) for r in dropped]
    assert [f.get("from") for f in fields] == ["127.0.0.1:24059"] * 2
    assert "not JSON" in fields[0]["error"] and "'seq'" in fields[1]["error"]
