"""The calibrated decision policy of a model, read from its file in models/ (written by `meal-edge calibrate`,
edge/lab/calibrate.py): which file belongs to which model, its format, and a clear CalibrationError when it is
missing, unreadable or made for another model. The policy itself and what it decides: edge/recognition/decide.py.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.paths import PROJECT_MODELS_DIR
from edge.recognition.decide import CalibrationError, FrameThresholds, Policy

#: thresholds for the default model (mirrored descriptors) and for plain descriptors (`mirror = false`)
CALIBRATION_FILE = "calibration.toml"
CALIBRATION_FILE_NO_MIRROR = "calibration-nomirror.toml"
#: SFace's thresholds live beside dlib's: calibration-sface.toml / calibration-sface-nomirror.toml
SFACE_MODEL_PREFIX = "face_recognition_sface"
#: a calibration file this program cannot read is an error, not a guess
CALIBRATION_FORMAT = 1


def default_calibration_path(model_id: str) -> Path:
    """The file in models/ for this model's variant; load_policy still checks the model_id inside."""
    from edge.recognition.embed.mirror import MIRROR_SUFFIX

    name = CALIBRATION_FILE if model_id.endswith(MIRROR_SUFFIX) else CALIBRATION_FILE_NO_MIRROR
    if model_id.startswith(SFACE_MODEL_PREFIX):
        name = name.replace("calibration", "calibration-sface", 1)
    return PROJECT_MODELS_DIR / name


def _num(d: Mapping[str, Any], key: str, where: str) -> float:
    try:
        v = d[key]
    except KeyError as e:
        raise CalibrationError(f"{where}: missing key {key!r}") from e
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise CalibrationError(f"{where}: {key} must be a number, got {v!r}")
    return float(v)


def policy_from_dict(data: Mapping[str, Any], where: str = "<calibration>") -> Policy:
    cal = data.get("calibration")
    pol = data.get("policy")
    if not isinstance(cal, dict) or not isinstance(pol, dict):
        raise CalibrationError(f"{where}: needs [calibration] and [policy] tables (written by meal-edge calibrate)")
    if cal.get("format") != CALIBRATION_FORMAT:
        raise CalibrationError(f"{where}: calibration format {cal.get('format')!r}, expected {CALIBRATION_FORMAT}")
    model_id = cal.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise CalibrationError(f"{where}: [calibration] model_id is missing")
    rows = []
    for i, r in enumerate(pol.get("frames", [])):
        w = f"{where}: policy.frames[{i}]"
        rows.append(
            FrameThresholds(
                int(_num(r, "frames", w)),
                _num(r, "accept_distance", w),
                _num(r, "min_margin", w),
                _num(r, "confirm_distance", w),
                _num(r, "confirm_margin", w),
                _num(r, "min_agreement", w),
            )
        )
    w = f"{where}: [policy]"
    return Policy(
        accept_distance=_num(pol, "accept_distance", w),
        confirm_distance=_num(pol, "confirm_distance", w),
        min_margin=_num(pol, "min_margin", w),
        confirm_margin=_num(pol, "confirm_margin", w),
        model_id=model_id,
        min_agreement=_num(pol, "min_agreement", w),
        per_frames=tuple(sorted(rows, key=lambda t: t.frames)),
        lookalike_distance=_num(pol, "lookalike_distance", w),
        lookalike_margin=_num(pol, "lookalike_margin", w),
        template_weight=_num(pol, "template_weight", w),
        source=where,
    )


def load_policy(model_id: str, path: Path | None = None) -> Policy:
    """The calibrated policy for this model; a clear CalibrationError if missing or made for another model."""
    p = Path(path) if path is not None else default_calibration_path(model_id)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise CalibrationError(
            f"{p}: calibration file not found; run `meal-edge calibrate FACES_DIR` for model {model_id!r}"
        ) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CalibrationError(f"{p}: not valid TOML: {e}") from e
    policy = policy_from_dict(data, str(p))
    if policy.model_id != model_id:
        raise CalibrationError(
            f"{p}: thresholds were calibrated for model {policy.model_id!r}, but the embedder is "
            f"{model_id!r}; run `meal-edge calibrate` for this model (old thresholds are not reused)"
        )
    return policy
