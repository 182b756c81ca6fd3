"""The SWIM datagram codec (services/driver/membership.py): every message survives a round
trip, and every malformed datagram is refused with BadDatagram naming what was wrong; seeds
named by host name stand for every address they resolve to."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.blocks import swim
from services.driver.membership import MAX_DATAGRAM, BadDatagram, decode, encode, resolved_seeds

addresses = st.builds(
    lambda host, port: f"{host}:{port}", st.sampled_from(["127.0.0.1", "10.0.3.7"]), st.integers(1, 65535)
)
counts = st.integers(0, 2**40)
rumours = st.lists(st.builds(swim.Rumour, addresses, st.sampled_from(list(swim.State)), counts), max_size=8).map(tuple)
messages = st.one_of(
    st.builds(swim.Ping, addresses, counts, rumours),
    st.builds(swim.Ack, addresses, counts, rumours),
    st.builds(swim.PingReq, addresses, counts, addresses, rumours),
    st.builds(swim.Join, addresses, counts),
    st.builds(swim.Sync, addresses, rumours, st.booleans()),
)


@given(messages)
def test_every_message_survives_a_round_trip(message: swim.Message) -> None:
    assert decode(encode(message)) == message


def test_the_wire_form_is_compact_readable_json() -> None:
    ping = swim.Ping("127.0.0.1:24001", 7, (swim.Rumour("127.0.0.1:24002", swim.State.SUSPECT, 3),))
    assert encode(ping) == (
        b'{"type":"ping","sender":"127.0.0.1:24001","seq":7,"rumours":[["127.0.0.1:24002","suspect",3]]}'
    )


def test_a_message_too_large_for_one_datagram_is_refused() -> None:
    everyone = tuple(swim.Rumour(f"10.0.{i // 250}.{i % 250}:7000", swim.State.ALIVE, i) for i in range(3000))
    with pytest.raises(ValueError, match="does not fit"):
        encode(swim.Sync("127.0.0.1:24001", everyone))


def test_a_sync_of_a_few_dozen_members_fits_with_room_to_spare() -> None:
    view = tuple(swim.Rumour(f"10.0.0.{i}:7000", swim.State.SUSPECT, 2**31) for i in range(50))
    assert len(encode(swim.Sync("10.0.0.1:7000", view, answer=True))) < MAX_DATAGRAM / 10


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


PING = {"type": "ping", "sender": "127.0.0.1:1", "seq": 1, "rumours": [["127.0.0.1:2", "alive", 0]]}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not JSON"),
        (b"{ping", "not JSON"),
        (b"\xff\xfe\xfa", "not JSON"),
        (b"[" * 50_000, "not JSON"),  # nesting deep enough to exhaust the parser's recursion
        (_json([1, 2]), "not a JSON object"),
        (_json({**PING, "type": "gossip"}), "unknown message type 'gossip'"),
        (_json({k: v for k, v in PING.items() if k != "type"}), "unknown message type None"),
        (_json({k: v for k, v in PING.items() if k != "seq"}), "missing field 'seq'"),
        (_json({k: v for k, v in PING.items() if k != "sender"}), "missing field 'sender'"),
        (_json({k: v for k, v in PING.items() if k != "rumours"}), "missing field 'rumours'"),
        (_json({**PING, "seq": "1"}), "field 'seq' must be a non-negative integer"),
        (_json({**PING, "seq": -1}), "field 'seq' must be a non-negative integer"),
        (_json({**PING, "seq": True}), "field 'seq' must be a non-negative integer"),
        (_json({**PING, "seq": 1.5}), "field 'seq' must be a non-negative integer"),
        (_json({**PING, "sender": 42}), "field 'sender' must be a 'host:port' address"),
        (_json({**PING, "sender": "driver-1"}), "field 'sender' must be a 'host:port' address"),
        (_json({**PING, "sender": "127.0.0.1:70000"}), "field 'sender' must be a 'host:port' address"),
        (_json({**PING, "rumours": {}}), "field 'rumours' must be a list"),
        (
            _json({**PING, "rumours": [["127.0.0.1:2", "alive"]]}),
            r"rumours\[0\] must be \[member, state, incarnation\]",
        ),
        (_json({**PING, "rumours": [["127.0.0.1:2", "zombie", 0]]}), r"bad state 'zombie' in rumours\[0\]"),
        (_json({**PING, "rumours": [["127.0.0.1:2", ["alive"], 0]]}), r"bad state \['alive'\] in rumours\[0\]"),
        (_json({**PING, "rumours": [["127.0.0.1:2", "alive", -3]]}), r"rumours\[0\] incarnation must be a non-neg"),
        (_json({**PING, "rumours": [[None, "alive", 0]]}), r"rumours\[0\] member must be a 'host:port' address"),
        (_json({"type": "ping-req", "sender": "127.0.0.1:1", "seq": 1, "rumours": []}), "missing field 'target'"),
        (
            _json({"type": "join", "sender": "127.0.0.1:1", "incarnation": None}),
            "field 'incarnation' must be a non-neg",
        ),
        (_json({"type": "sync", "sender": "127.0.0.1:1", "members": []}), "missing field 'answer'"),
        (
            _json({"type": "sync", "sender": "127.0.0.1:1", "members": [], "answer": 1}),
            "field 'answer' must be a boolean",
        ),
        (_json({"type": "sync", "sender": "127.0.0.1:1", "members": [1], "answer": False}), r"members\[0\] must be"),
    ],
)
def test_a_malformed_datagram_is_refused_naming_the_problem(data: bytes, problem: str) -> None:
    with pytest.raises(BadDatagram, match=problem):
        decode(data)


def test_bad_datagram_is_a_value_error() -> None:
    assert issubclass(BadDatagram, ValueError)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70_000)
    | st.floats(allow_nan=False)
    | st.sampled_from(list(swim.State)).map(str)
    | addresses
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)
fields = st.sampled_from(["type", "sender", "seq", "target", "rumours", "members", "incarnation", "answer"])
bodies = st.dictionaries(fields, json_values | st.sampled_from(["ping", "ack", "ping-req", "join", "sync"]))


@given(bodies | json_values)
def test_any_json_decodes_to_a_message_or_is_refused_as_a_bad_datagram(body: object) -> None:
    """Nothing but BadDatagram escapes decode: a TypeError or KeyError here would stop the member."""
    try:
        message = decode(json.dumps(body).encode())
    except BadDatagram:
        return
    assert decode(encode(message)) == message


def test_a_seed_named_by_host_name_stands_for_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    # In Kubernetes the seeds' name is a headless Service: one A record per replica.
    answers = {"driver-members": ["10.0.0.7", "10.0.0.8", "10.0.0.7"]}

    async def getaddrinfo(_loop: object, host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (ip, port)) for ip in answers[host]]

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", getaddrinfo)
    seeds = ["driver-members:7003", "10.0.0.9:7003", "not-yet:7003"]
    assert asyncio.run(resolved_seeds(seeds)) == ["10.0.0.7:7003", "10.0.0.8:7003", "10.0.0.9:7003"]
