"""Finding a senior by name, pinyin initials, id or meal-card number (edge/meals/search.py)."""

from __future__ import annotations

import pytest

from edge.meals.search import Entry, readings, search

ROSTER = [
    Entry("S0001", "王芳", "C1001"),
    Entry("S0002", "汪峰"),
    Entry("S0003", "李王"),
    Entry("S0010", "单丽华", "880012"),
    Entry("S0011", "曾国藩"),
    Entry("S0100", "Maria Chen"),
]


def names(query: str) -> list[tuple[str, str]]:
    return [(f.entry.name, f.how) for f in search(ROSTER, query)]


def test_pinyin_initials_find_every_name_that_fits() -> None:
    assert names("wf") == [("汪峰", "initials"), ("王芳", "initials")]
    assert names("WF") == names("wf")
    assert names("wangf") == [("汪峰", "pinyin"), ("王芳", "pinyin")]


@pytest.mark.parametrize("query", ["slh", "dlh", "zgf"])
def test_a_character_with_several_readings_matches_any(query: str) -> None:
    assert len(names(query)) == 1


def test_id_and_card_exact_come_first() -> None:
    assert names("S0001") == [("王芳", "id")]
    assert names("s0001") == [("王芳", "id")]
    assert names("C1001") == [("王芳", "card")]
    assert names("880012") == [("单丽华", "card")]
    assert [n for n, _ in names("S001")] == ["单丽华", "曾国藩"]  # an id prefix


def test_a_name_or_part_of_it() -> None:
    assert names("王") == [("李王", "name"), ("王芳", "name")]
    assert names("丽华") == [("单丽华", "name")]
    assert names("maria") == [("Maria Chen", "name")]
    assert names("  ") == [] and names("xyz") == []


def test_readings_are_plain_letters() -> None:
    assert ("wf", "wangfang") in readings("王芳")
    assert readings("Maria Chen")[0][1] == "mariachen"
