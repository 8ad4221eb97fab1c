"""Where meal-edge finds the files it ships with and where it keeps the files it makes."""

from __future__ import annotations

from pathlib import Path

# The project's own models/ folder (manifest, built .onnx, calibration), at the repo root.
PROJECT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
