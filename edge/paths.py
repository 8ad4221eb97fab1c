"""Where meal-edge finds the files it ships with, and where it keeps the files it makes.

Shipped files are package data, read through `importlib.resources`, so they are found wherever the package is
installed (a wheel, pipx, a Debian package, an image, or this checkout in development):

- `edge.models`: the model manifest and the calibration files. The repository keeps them in its top-level
  `models/` folder (their source of truth); the build installs that folder as the package `edge.models`.
- `edge.schemas`: the JSON schemas of the events and the status message (`docs/*.schema.json` in the repository).
- `edge/default-config.toml`, and the page templates and static files under `edge/screens/`.

Files made at run time (the converted .onnx, the store, audit snapshots) go to the state folder, never into the
installed package: `[paths] state_dir` in the config, else `$STATE_DIRECTORY` (set by systemd's
`StateDirectory=`, /var/lib/meal-edge for the service), else `$XDG_STATE_HOME/meal-edge`, else
`~/.local/state/meal-edge`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

APP = "meal-edge"


def _package_dir(package: str, in_checkout: str) -> Path:
    """A package-data folder as a plain path (a wheel, a system package or this checkout: zip imports are not
    supported). Run from a checkout that was never installed, the folder beside `edge/`."""
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / in_checkout


#: the shipped models/ folder (manifest.toml, calibration*.toml); read-only in an installed package
PROJECT_MODELS_DIR = _package_dir("edge.models", "models")


def schema_text(name: str) -> str:
    """A shipped JSON schema (`events.schema.json`, `status.schema.json`), as text."""
    try:
        return resources.files("edge.schemas").joinpath(name).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        return (Path(__file__).resolve().parent.parent / "docs" / name).read_text(encoding="utf-8")


def default_config_text() -> str:
    """The complete, commented default config (`meal-edge default-config`)."""
    return resources.files("edge").joinpath("default-config.toml").read_text(encoding="utf-8")


def checkout_models_dir() -> Path | None:
    """The repository's models/ folder when running from a checkout (a development install), where
    `meal-edge calibrate` and `meal-edge models build --models-dir` may rewrite the shipped files; None in an
    installed package."""
    repo = PROJECT_MODELS_DIR.parent
    if PROJECT_MODELS_DIR.name == "models" and (repo / "pyproject.toml").is_file() and (repo / "edge").is_dir():
        return PROJECT_MODELS_DIR
    return None


def default_state_dir() -> Path:
    """The state folder when the config names none (see the module doc)."""
    systemd = os.environ.get("STATE_DIRECTORY", "")
    if systemd:
        # systemd passes one path per StateDirectory= entry, colon-separated: ours is the first
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # the XDG spec: a relative value is invalid and is ignored
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP
    return Path.home() / ".local" / "state" / APP


def built_models_dir(state_dir: Path | None = None) -> Path:
    """Where the converted model (.onnx) is written and read: `models/` in the state folder."""
    return (state_dir or default_state_dir()) / "models"
