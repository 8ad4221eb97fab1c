"""TOML config files read into pydantic models, with every error naming its file, line and key.

Shared by the kiosk's config (edge.config) and the district's (district.config), so an operator gets the
same kind of message from both: tomllib reports syntax errors with their line; for validation errors
pydantic's error location (e.g. ("rules", "meals", 1, "start")) is mapped back to the line of that key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")

_STRICT_HINTS = {
    "int_type": "write a whole number without quotes or decimals (money is in fen: 300, not 3.0 or \"300\")",
    "bool_type": "write true or false, without quotes",
    "float_type": "write a number without quotes",
    "string_type": "write text in quotes",
}


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line number of each table and key, by its path (array-of-tables entries by index)."""
    lines: dict[tuple[str | int, ...], int] = {}
    prefix: tuple[str | int, ...] = ()
    array_counts: dict[tuple[str, ...], int] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        if m := _ARRAY_TABLE.match(line):
            name = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            idx = array_counts.get(name, -1) + 1
            array_counts[name] = idx
            prefix = (*name, idx)
            lines.setdefault(name, no)
            lines[prefix] = no
        elif m := _TABLE.match(line):
            prefix = tuple(p.strip().strip('"') for p in m.group(1).split("."))
            lines.setdefault(prefix, no)
        elif m := _KEY.match(line):
            lines.setdefault((*prefix, m.group(1)), no)
    return lines


def line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of the deepest part of `loc` that the text names (a missing key: its table's line)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def describe(e: ValidationError, text: str, path: Path | str, lister: str) -> list[str]:
    """One line per problem: `FILE: line N: key.path: what is wrong (and how to write it)`.
    `lister`: the command that prints every key, named in the unknown-key message."""
    lines = key_lines(text)
    problems = []
    for err in e.errors():
        loc = tuple(err["loc"])
        line = line_for(loc, lines)
        where = f"line {line}" if line else "(missing)"
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (check the spelling; `{lister}` lists every key)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] in _STRICT_HINTS:
            msg = f"{msg}, got {err['input']!r}: {_STRICT_HINTS[err['type']]}"
        problems.append(f"{path}: {where}: {key}: {msg}")
    return problems


def parse(text: str, path: Path | str, model: type[M], lister: str, error: type[Exception]) -> M:
    """The model read from TOML text; `error` (the caller's ConfigError) with every problem, one a line."""
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: TOML syntax error: {e}") from e
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        raise error("\n".join(describe(e, text, path, lister))) from e
    if isinstance(path, Path):
        cfg = cfg.model_copy(update={"source_path": path.resolve()})
    return cfg
