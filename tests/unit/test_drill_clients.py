"""What a drill's riders do after a failed request (retry with the key, stop, or give up
and book anew), and which riders are stranded where no driver is."""

from __future__ import annotations

import grpc
import pytest

from drills.workload import (
    GIVE_UP,
    REBOOK_BOUND_SECONDS,
    REBOOK_PAUSE_SECONDS,
    RETRY,
    STOP,
    Mix,
    after_failure,
    books_again,
)

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("code", "past_deadline", "action"),
    [
        (Code.UNAVAILABLE, False, RETRY),  # unknown outcome: the same key again
        (Code.DEADLINE_EXCEEDED, False, RETRY),
        (Code.RESOURCE_EXHAUSTED, False, RETRY),  # only rate limited
        (Code.FAILED_PRECONDITION, False, STOP),  # refused: nothing happened
        (Code.INVALID_ARGUMENT, False, STOP),
        (Code.UNAVAILABLE, True, STOP),  # retried long enough
    ],
)
def test_a_retrying_rider_resends_its_key_until_refused_or_past_its_deadline(
    code: grpc.StatusCode, past_deadline: bool, action: str
) -> None:
    assert after_failure(code, gives_up=False, past_deadline=past_deadline) == action


@pytest.mark.parametrize("code", [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.INTERNAL])
def test_a_rider_who_gives_up_never_resends_its_key(code: grpc.StatusCode) -> None:
    assert after_failure(code, gives_up=True, past_deadline=False) == GIVE_UP


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
