"""Small wording helpers for the command lines' output."""

from __future__ import annotations


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 decision", "2 decisions", "0 decisions"; `words` for an irregular plural."""
    return f"{n} {word if n == 1 else words or word + 's'}"
