"""Slices of a labelled face set (e.g. LFW's East Asian and elderly identities), read from name lists.

Two formats, told apart by the suffix:
* `.txt`: one identity (folder name) per line; blank lines and lines starting with `#` are ignored;
* `.csv`: a header row with a `name` column (other columns, e.g. birth_year, are kept out of the way).

A slice is named after its file (`lfw_east_asian.txt` -> "lfw_east_asian"). Names that are not in the
face set are reported, not silently dropped: a misspelt list would otherwise shrink a slice unseen.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class SliceError(ValueError):
    """A slice file that cannot be read, phrased so the fix is clear."""


@dataclass(frozen=True)
class Slice:
    name: str
    identities: frozenset[str]
    source: str

    def restrict(self, known: Iterable[str]) -> tuple[Slice, list[str]]:
        """This slice cut to the identities of a face set, and the names the set does not have."""
        have = set(known)
        missing = sorted(self.identities - have)
        return Slice(self.name, self.identities & have, self.source), missing


def parse_slice(text: str, name: str, source: str = "<text>", csv_format: bool = False) -> Slice:
    names: list[str] = []
    if csv_format:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or "name" not in [f.strip() for f in reader.fieldnames]:
            raise SliceError(f"{source}: a CSV slice needs a header row with a 'name' column")
        for line, row in enumerate(reader, start=2):
            value = next((v for k, v in row.items() if k is not None and k.strip() == "name"), None)
            if value is None or not value.strip():
                raise SliceError(f"{source}, line {line}: empty name")
            names.append(value.strip())
    else:
        for raw in text.splitlines():
            s = raw.strip()
            if s and not s.startswith("#"):
                names.append(s)
    if not names:
        raise SliceError(f"{source}: no identities listed")
    return Slice(name, frozenset(names), source)


def read_slice(path: Path) -> Slice:
    p = Path(path)
    if p.suffix.lower() not in (".txt", ".csv"):
        raise SliceError(f"{p}: a slice is a .txt (one name per line) or a .csv with a 'name' column")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SliceError(f"{p}: slice file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SliceError(f"{p}: cannot read it ({e})") from None
    return parse_slice(text, p.stem, str(p), csv_format=p.suffix.lower() == ".csv")


def slices_for(paths: Iterable[Path], known: Iterable[str]) -> list[Slice]:
    """Read each slice file and cut it to the identities in the face set (logging any it lacks)."""
    have = list(known)
    out = []
    for path in paths:
        s, missing = read_slice(path).restrict(have)
        if missing:
            log.warning(
                "%s: %d of its names are not in the face set (e.g. %s)", s.source, len(missing), ", ".join(missing[:3])
            )
        out.append(s)
    return out
