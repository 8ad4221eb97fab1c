"""Writing the TOML files meal-edge generates (model manifest, calibration); tomllib only reads."""

from __future__ import annotations

import json
from typing import Any


def toml_value(v: Any) -> str:
    """A plain value (bool, int, float, str, or a list of them) in TOML syntax."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(round(v, 6))
    if isinstance(v, str):
        # JSON string escapes are valid in TOML basic strings
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v)} to TOML")
