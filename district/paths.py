"""Where the district server keeps its state, and the files it ships inside the package."""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    """$STATE_DIRECTORY (systemd StateDirectory=), else $XDG_STATE_HOME/meal-district, else
    ~/.local/state/meal-district."""
    if sd := os.environ.get("STATE_DIRECTORY"):
        return Path(sd.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meal-district"


def default_database_url() -> str:
    return f"sqlite:///{state_dir() / 'meal-district.sqlite'}"


@cache
def _schema_text(name: str) -> str:
    return resources.files("district").joinpath("schemas", name).read_text(encoding="utf-8")


def schema(name: str) -> dict[str, Any]:
    """A JSON schema shipped in district/schemas (docs/*.schema.json, linked at build time); "FILE#DEF" is the
    definition DEF of that file (docs/events.schema.json holds v1 and v2 under $defs) as a schema of its own,
    so that a payload is checked against its own version and the error names the field.
    A fresh object each call: fastjsonschema.compile adds keys to the dict it is given."""
    file, _, part = name.partition("#")
    obj: dict[str, Any] = json.loads(_schema_text(file))
    if not part:
        return obj
    defs = obj.get("$defs", {})
    sub: dict[str, Any] = {"$schema": obj.get("$schema"), **defs[part], "$defs": defs}
    # The documented definitions extend the shared `common` fields by $ref and close the object with
    # unevaluatedProperties, which fastjsonschema cannot compile (every payload would take the slow
    # jsonschema path, 3.5x the ingest CPU). Inline the shared fields and close the object with
    # additionalProperties instead: the same accepted set, compiled.
    if sub.get("$ref") == "#/$defs/common" and sub.get("unevaluatedProperties") is False:
        common = defs["common"]
        sub.pop("$ref")
        sub.pop("unevaluatedProperties")
        sub["properties"] = {**common.get("properties", {}), **sub.get("properties", {})}
        sub["additionalProperties"] = False
        # the other versions' definitions are not referenced from here
        sub["$defs"] = {k: v for k, v in defs.items() if "unevaluatedProperties" not in v}
    return sub


def package_dir(*parts: str) -> Path:
    """A folder inside the installed package (templates, migrations): real files, also from a wheel."""
    return Path(str(resources.files("district").joinpath(*parts)))
