import math

import pytest

from services.rider.domain import new_rider
from services.runtime import validation
from services.runtime.errors import InvalidArgument


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


@pytest.mark.parametrize("value", ["tok_visa", "tok_chargeDeclined", "tok_visa_debit", "tok_unknownBrand", "tok_1Mq9"])
def test_a_card_token_of_the_right_shape_is_accepted_known_to_the_processor_or_not(value: str) -> None:
    assert validation.payment_method("payment_method", value) == value


@pytest.mark.parametrize(
    "value", ["", "cash", "visa", "tok_", "TOK_visa", "tok_visa ", "tok_vi$a", "tok_visa\n", "tok_" + "x" * 61]
)
def test_a_malformed_payment_method_is_rejected_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.payment_method("payment_method", value)
    assert error.value.field == "payment_method"
    assert str(error.value).startswith("payment_method: ")


def test_the_longest_token_accepted_is_64_characters() -> None:
    longest = "tok_" + "x" * 60
    assert validation.payment_method("payment_method", longest) == longest


def test_a_new_rider_is_refused_a_malformed_card_at_the_edge_and_defaults_to_tok_visa() -> None:
    with pytest.raises(InvalidArgument, match=r"^payment_method: "):
        new_rider("Ada", "cash")
    assert new_rider("Ada", "tok_unknownBrand").payment_method == "tok_unknownBrand"
    assert new_rider("Ada", "").payment_method == "tok_visa"
