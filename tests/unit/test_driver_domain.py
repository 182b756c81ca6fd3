import pytest

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
