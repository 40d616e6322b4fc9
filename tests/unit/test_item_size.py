"""DynamoDB's item-size and unit rules, on worked examples from its developer guide."""

from __future__ import annotations

import pytest

from userstore.worker.item_size import item_size, number_size, read_units, value_size, write_units


def test_strings_and_binary_count_their_bytes_and_names_count_too() -> None:
    assert item_size({"id": {"S": "abc"}}) == 2 + 3
    assert item_size({"naïve": {"S": "é"}}) == 6 + 2  # UTF-8, not characters
    assert item_size({"b": {"B": b"\x00" * 10}}) == 1 + 10  # raw, not base64


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 2), ("7", 2), ("12", 2), ("123", 3), ("1000", 2), ("0.001", 2), ("-12345", 4)],
)
def test_numbers_cost_a_byte_per_two_significant_digits_plus_one(text: str, size: int) -> None:
    assert number_size(text) == size


def test_lists_and_maps_cost_three_bytes_plus_one_per_element() -> None:
    assert value_size({"L": [{"S": "ab"}, {"S": "c"}]}) == 3 + (1 + 2) + (1 + 1)
    assert value_size({"M": {"k": {"S": "ab"}}}) == 3 + 1 + 1 + 2
    assert value_size({"BOOL": True}) == 1
    assert value_size({"SS": ["ab", "c"]}) == 3


def test_units_round_up_per_kilobyte_written_and_four_read() -> None:
    assert [write_units(n) for n in (1, 1024, 1025, 2048, 2049)] == [1, 1, 2, 2, 3]
    assert [read_units(n) for n in (1, 4096, 4097)] == [1.0, 1.0, 2.0]
    assert read_units(4097, consistent=False) == 1.0


def test_base64_text_in_a_binary_attribute_is_refused() -> None:
    with pytest.raises(TypeError):
        item_size({"b": {"B": "AAAA"}})
