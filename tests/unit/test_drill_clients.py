"""What a drill's riders do after a failed request (retry with the key, stop, or give up
and book anew), what the history records of each attempt, and which riders are stranded
where no driver is."""

from __future__ import annotations

import time

import grpc
import pytest

from drills.history import FAIL, INFO, INVOKE, History
from drills.workload import (
    REBOOK_BOUND_SECONDS,
    REBOOK_PAUSE_SECONDS,
    REQUEST_GIVE_UP_SECONDS,
    Clients,
    Mix,
    books_again,
    request_retry,
)
from services.rider.client import Attempt

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "after_seconds", "retried"),
    [
        (Code.UNAVAILABLE, 1.0, True),  # unknown outcome: the same key again
        (Code.DEADLINE_EXCEEDED, 1.0, True),
        (Code.RESOURCE_EXHAUSTED, 1.0, True),  # only rate limited
        (Code.FAILED_PRECONDITION, 1.0, False),  # refused: nothing happened
        (Code.INVALID_ARGUMENT, 1.0, False),
        (Code.UNAVAILABLE, REQUEST_GIVE_UP_SECONDS, False),  # retried long enough
    ],
)
def test_a_retrying_rider_resends_its_key_until_refused_or_past_its_deadline(
    code: grpc.StatusCode, after_seconds: float, retried: bool
) -> None:
    wait = request_retry(gives_up=False).delay(code, 1, since=0.0, now=after_seconds)
    assert (wait is not None) == retried


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.INTERNAL])
def test_a_rider_who_gives_up_never_resends_its_key(code: grpc.StatusCode) -> None:
    assert request_retry(gives_up=True).delay(code, 1, since=0.0, now=0.0) is None


def test_each_attempt_is_recorded_as_invoked_then_refused_or_unknown() -> None:
    history = History()
    record = Clients(history, time.monotonic(), Mix(gives_up=True)).recorder(3, "request", {}, True, key="k-1")
    record(Attempt(1))
    record(Attempt(1, Code.UNAVAILABLE, "no healthy upstream", retrying=True))
    record(Attempt(2))
    record(Attempt(2, Code.FAILED_PRECONDITION, "already has a live ride"))
    assert [(e.process, e.type, e.key, e.value.get("code"), e.value.get("gave_up")) for e in history.events] == [
        (3, INVOKE, "k-1", None, None),
        (3, INFO, "k-1", "UNAVAILABLE", True),  # the request may have happened
        (3, INVOKE, "k-1", None, None),
        (3, FAIL, "k-1", "FAILED_PRECONDITION", True),  # it certainly did not
    ]


def test_a_rider_who_gave_up_tries_again_only_while_its_slot_is_taken_and_within_the_bound() -> None:
    last_chance = REBOOK_BOUND_SECONDS - REBOOK_PAUSE_SECONDS
    assert books_again(Code.FAILED_PRECONDITION, since_giving_up=1.0)  # "already has a live ride"
    assert books_again(Code.FAILED_PRECONDITION, since_giving_up=last_chance)
    assert not books_again(Code.FAILED_PRECONDITION, since_giving_up=last_chance + 0.1)
    assert not books_again(Code.UNAVAILABLE, since_giving_up=1.0)  # retried with its key already
    assert not books_again(None, since_giving_up=1.0)


def test_every_nth_rider_is_stranded_and_none_by_default() -> None:
    assert [n for n in range(12) if Mix(stranded_every=4).stranded(n)] == [3, 7, 11]
    assert not any(Mix().stranded(n) for n in range(12))
