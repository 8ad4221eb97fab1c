"""Finding a senior for a manual check-in: by name, pinyin initials, id, or meal-card number.

Staff at a busy counter type what is quickest: "wf" for 王芳, "王", the id on the list, or the number
printed on the senior's 餐卡 (meal card). A pure function over the roster; the staff screen and
`meal-edge checkin` call it. Pinyin comes from pypinyin (offline, its own dictionary); a character with
several readings (单 shàn/dān, 曾 zēng/céng) matches any of them, since a wrong guess here would hide the
senior from staff.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

#: at most this many readings of a whole name are tried (a name of 4 characters with 3 readings each is 81)
MAX_READINGS = 64


@dataclass(frozen=True)
class Entry:
    """One roster row as the search sees it."""

    senior_id: str
    name: str
    card_no: str | None = None


@dataclass(frozen=True)
class Found:
    entry: Entry
    #: how it matched, best first: id | card | name | initials | pinyin
    how: str


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().replace(" ", "")


@lru_cache(maxsize=4096)
def readings(name: str) -> tuple[tuple[str, str], ...]:
    """(initials, full pinyin) for each reading of `name`, lower case, no tones: 王芳 -> (("wf", "wangfang"),)."""
    # imported here: its dictionary takes half a second to load, which every `meal-edge` command would pay
    from pypinyin import Style, pinyin

    chars = [c for c in name if not c.isspace()]
    full = pinyin(chars, style=Style.NORMAL, heteronym=True, errors=lambda s: s.casefold())
    per_char = [sorted({_fold(r) for r in options}) or [""] for options in full]
    out: list[tuple[str, str]] = []
    for combo in itertools.islice(itertools.product(*per_char), MAX_READINGS):
        out.append(("".join(r[:1] for r in combo), "".join(combo)))
    return tuple(dict.fromkeys(out))


_RANK = {"id": 0, "card": 1, "name": 2, "initials": 3, "pinyin": 4}


def how_it_matches(entry: Entry, query: str) -> str | None:
    q = _fold(query)
    if not q:
        return None
    if _fold(entry.senior_id) == q:
        return "id"
    if entry.card_no and _fold(entry.card_no) == q:
        return "card"
    if q in _fold(entry.name):
        return "name"
    if q.isascii() and q.isalpha():
        rs = readings(entry.name)
        if any(ini.startswith(q) for ini, _ in rs):
            return "initials"
        if any(full.startswith(q) for _, full in rs):
            return "pinyin"
    if _fold(entry.senior_id).startswith(q):
        return "id"
    if entry.card_no and _fold(entry.card_no).startswith(q):
        return "card"
    return None


def search(entries: Iterable[Entry], query: str, limit: int = 12) -> list[Found]:
    """The roster rows matching `query`, best first (exact id or card, then name, initials, pinyin), then by
    name and id so the same query always lists the same way."""
    found = [Found(e, how) for e in entries if (how := how_it_matches(e, query)) is not None]
    found.sort(key=lambda f: (_RANK[f.how], len(f.entry.name), f.entry.name, f.entry.senior_id))
    return found[:limit]
