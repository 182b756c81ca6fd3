import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.driver import domain
from services.runtime.errors import InvalidArgument


def test_a_driver_is_available_only_while_heard_from() -> None:
    assert domain.is_available(1_000.0, 1_000.0 + domain.MAX_SILENCE_MS)
    assert not domain.is_available(1_000.0, 1_001.0 + domain.MAX_SILENCE_MS)
    assert not domain.is_available(None, 0.0)


@pytest.mark.parametrize(
    ("radius", "limit", "field"), [(0.0, 5, "radius_km"), (51.0, 5, "radius_km"), (1.0, 0, "limit")]
)
def test_nearby_query_bounds(radius: float, limit: int, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        domain.nearby_query(domain.Position(37.77, -122.42), radius, limit)
    assert error.value.field == field


def test_new_driver_validates_its_name() -> None:
    with pytest.raises(InvalidArgument, match="name"):
        domain.new_driver(" ")
    assert domain.new_driver("Grace").name == "Grace"


@given(st.uuids(), st.uuids(), st.uuids(), st.integers(1, 2**40), st.integers(1, 2**40))
def test_answers_of_different_offers_never_share_a_message_id(
    ride: uuid.UUID, first: uuid.UUID, second: uuid.UUID, fence_a: int, fence_b: int
) -> None:
    # Two drivers offered the same ride can hold the same fence (it counts per driver).
    same_offer = (first, fence_a) == (second, fence_b)
    for name in (domain.answer_message_id, domain.completion_message_id):
        assert (name(ride, first, fence_a) == name(ride, second, fence_b)) == same_offer
    assert domain.answer_message_id(ride, first, 1) != domain.answer_message_id(ride, second, 1) or first == second
