import math

import pytest

from services.shared import validation
from services.shared.errors import InvalidArgument


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_name_is_rejected_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^name: is required$"):
        validation.name("name", value)


def test_long_name_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="at most 100"):
        validation.name("name", "x" * 101)


def test_name_is_trimmed() -> None:
    assert validation.name("name", "  Ada ") == "Ada"


@pytest.mark.parametrize(
    ("lat", "lng", "problem"),
    [(91.0, 0.0, "latitude"), (-90.5, 0.0, "latitude"), (0.0, 180.5, "longitude"), (math.nan, 0.0, "finite")],
)
def test_bad_coordinates_name_the_field_and_the_problem(lat: float, lng: float, problem: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.coordinates("pickup", lat, lng)
    assert error.value.field == "pickup"
    assert problem in str(error.value)


def test_identifier_must_be_a_uuid() -> None:
    with pytest.raises(InvalidArgument, match="rider_id: must be a UUID"):
        validation.identifier("rider_id", "not-a-uuid")
    with pytest.raises(InvalidArgument, match="rider_id: is required"):
        validation.identifier("rider_id", "")
