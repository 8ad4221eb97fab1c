"""The decision policy on constructed embeddings whose right answer is known by construction.

Unit vectors are placed at exact distances from each other (d = 2 sin(theta/2) on the unit sphere), so
every case states the distances it relies on and checks them before checking the verdict.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from edge.lab.calibrate import render_toml
from edge.recognition.calibration import load_policy, policy_from_dict
from edge.recognition.decide import (
    CalibrationError,
    FrameThresholds,
    Policy,
    decide,
    default_policy,
    features,
    fuse,
    lookalike_pairs,
    lookalikes,
)
from edge.recognition.match import Gallery

DIM = 128
RNG = np.random.default_rng(1234)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def random_unit(rng: np.random.Generator = RNG) -> np.ndarray:
    return unit(rng.standard_normal(DIM))


def at(u: np.ndarray, d: float, rng: np.random.Generator = RNG) -> np.ndarray:
    """A unit vector at exactly Euclidean distance d from unit vector u, in a random direction."""
    v = rng.standard_normal(DIM)
    v -= v.dot(u) * u
    v = v / np.linalg.norm(v)
    theta = 2 * np.arcsin(d / 2)
    return unit(np.cos(theta) * u + np.sin(theta) * v)


def dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(unit(a) - unit(b)))


def gallery_of(templates: dict[str, list[np.ndarray]], model_id: str = "") -> Gallery:
    # raw descriptors are not unit length: scale them to show the policy does not depend on the norm
    return Gallery.from_pairs(((s, 0.6 * t) for s, ts in templates.items() for t in ts), model_id=model_id)


POLICY = default_policy()
T3 = POLICY.thresholds(3)
T1 = POLICY.thresholds(1)


def crowd(n: int = 20) -> dict[str, list[np.ndarray]]:
    """Unrelated seniors (random directions sit ~1.41 apart, far from everyone)."""
    return {f"other-{i:02d}": [random_unit(), random_unit()] for i in range(n)}


def test_clear_accept_three_frames() -> None:
    a = random_unit()
    g = gallery_of({"A": [a, at(a, 0.25)], **crowd()})
    frames = np.stack([at(a, 0.15) for _ in range(3)])
    v = decide(g, frames, POLICY)
    assert v.distance < T3.accept_distance and v.margin > T3.min_margin
    assert (v.outcome, v.senior_id, v.frames, v.reasons) == ("accept", "A", 3, ())


def test_never_enrolled_is_unknown() -> None:
    g = gallery_of(crowd())
    v = decide(g, np.stack([random_unit()] * 3), POLICY)
    assert v.distance > T3.confirm_distance
    assert (v.outcome, v.senior_id, v.reasons) == ("unknown", None, ("no_close_match",))


def test_empty_gallery_is_unknown() -> None:
    v = decide(Gallery.empty(), random_unit()[None], POLICY)
    assert (v.outcome, v.senior_id, v.reasons) == ("unknown", None, ("empty_gallery",))


def _two_close_seniors(d_a: float, d_b: float) -> tuple[Gallery, np.ndarray]:
    p = random_unit()
    g = gallery_of({"A": [at(p, d_a)], "B": [at(p, d_b)], **crowd()})
    return g, p[None]


def test_close_but_ambiguous_goes_to_staff() -> None:
    # margin 0.05: above confirm_margin (0.03), below min_margin (0.08)
    g, probe = _two_close_seniors(0.30, 0.35)
    v = decide(g, probe, POLICY)
    assert v.margin == pytest.approx(0.05, abs=1e-3)
    assert (v.outcome, v.senior_id, v.reasons) == ("confirm", "A", ("ambiguous_margin",))


def test_too_ambiguous_is_unknown_and_names_nobody() -> None:
    g, probe = _two_close_seniors(0.30, 0.31)
    v = decide(g, probe, POLICY)
    assert v.margin < T1.confirm_margin
    assert (v.outcome, v.senior_id, v.reasons) == ("unknown", None, ("ambiguous_margin",))
    assert v.best_id == "A" and v.second_id == "B"


def test_plausible_but_not_close_enough_goes_to_staff() -> None:
    g, probe = _two_close_seniors(0.45, 0.70)  # between accept (0.40) and confirm (0.50)
    v = decide(g, probe, POLICY)
    assert (v.outcome, v.senior_id, v.reasons) == ("confirm", "A", ("not_close_enough",))


def test_frames_disagreeing_go_to_staff() -> None:
    a = random_unit()
    b = at(a, 0.55)
    g = gallery_of({"A": [a], "B": [b], **crowd()})
    # two good frames of A and one frame that is clearly B (a tracker swap or a second person)
    frames = np.stack([at(a, 0.05), at(a, 0.05), at(b, 0.05)])
    f = features(g, frames)
    assert g.senior_ids[f.best] == "A"
    assert f.agreement == pytest.approx(2 / 3)
    assert f.distance <= T3.accept_distance and f.margin >= T3.min_margin, "precondition: fused looks like A"
    v = decide(g, frames, POLICY)
    assert (v.outcome, v.senior_id, v.reasons) == ("confirm", "A", ("frames_disagree",))
    # the same frames without the stray one are a clean accept
    assert decide(g, frames[:2], POLICY).outcome == "accept"


def test_lookalike_pair_needs_larger_margin() -> None:
    p = random_unit()
    a, twin = at(p, 0.05), at(p, 0.15)  # twins: their templates are at most 0.20 apart
    a_templates = [a, at(a, 0.03)]
    others = crowd()
    g = gallery_of({"A": a_templates, "TWIN": [twin], **others})
    # enrolment of A finds the twin (and nobody else); enrolment of an unrelated senior finds nobody
    found = lookalikes(g, "A", np.stack(a_templates), POLICY)
    assert [s for s, _ in found] == ["TWIN"]
    assert found[0][1] == pytest.approx(min(dist(x, twin) for x in a_templates), abs=1e-4)
    assert found[0][1] <= POLICY.lookalike_distance
    assert lookalikes(g, "other-00", np.stack(others["other-00"]), POLICY) == []

    probe = np.stack([p] * 3)
    f = features(g, probe)
    assert f.margin == pytest.approx(0.10, abs=2e-3)  # between min_margin 0.08 and lookalike_margin 0.12
    assert decide(g, probe, POLICY).outcome == "accept"
    # the whole-gallery scan the kiosk runs at load finds exactly this pair, with the same rule
    pairs = lookalike_pairs(g, POLICY, chunk=3)
    assert pairs == {frozenset(("A", "TWIN")): POLICY.lookalike_margin}
    v = decide(g, probe, POLICY, pairs)
    assert (v.outcome, v.senior_id, v.reasons) == ("confirm", "A", ("lookalike_margin",))
    # a pair margin for an unrelated pair changes nothing
    assert decide(g, probe, POLICY, {frozenset(("other-01", "other-02")): 1.0}).outcome == "accept"


def test_fused_thresholds_are_per_frame_count() -> None:
    # 0.38 from A: accepted from one frame (accept 0.40), but not from three fused frames (accept 0.36),
    # because fused probes sit closer to everyone
    g, probe = _two_close_seniors(0.38, 0.90)
    assert decide(g, probe, POLICY).outcome == "accept"
    v3 = decide(g, np.repeat(probe, 3, axis=0), POLICY)
    assert v3.frames == 3 and (v3.outcome, v3.reasons) == ("confirm", ("not_close_enough",))


def test_more_frames_than_calibrated_uses_latest() -> None:
    a = random_unit()
    g = gallery_of({"A": [a], **crowd()})
    frames = np.stack([random_unit() for _ in range(4)] + [at(a, 0.1) for _ in range(3)])
    v = decide(g, frames, POLICY)  # the default policy is calibrated up to 3 frames
    assert (v.frames, v.outcome, v.senior_id) == (3, "accept", "A")


def test_fuse_is_mean_of_normalised_frames() -> None:
    x, y = random_unit(), random_unit()
    np.testing.assert_allclose(fuse(np.stack([10 * x, 0.1 * y])), unit(x + y), atol=1e-6)


def test_bad_embeddings_are_rejected() -> None:
    g = gallery_of(crowd(2))
    with pytest.raises(ValueError, match="128"):
        decide(g, np.zeros((3, 64), np.float32), POLICY)
    with pytest.raises(ValueError, match="NaN"):
        decide(g, np.full((1, 128), np.nan, np.float32), POLICY)


def _write_calibration(tmp_path: Path, model_id: str) -> Path:
    policy = Policy(
        0.4,
        0.5,
        0.08,
        0.03,
        model_id,
        per_frames=(FrameThresholds(1, 0.41, 0.07, 0.5, 0.02, 1.0), FrameThresholds(3, 0.35, 0.06, 0.45, 0.02, 2 / 3)),
    )
    text = render_toml(policy, {"format": 1, "model_id": model_id, "frame_counts": [1, 3]}, [])
    p = tmp_path / "calibration.toml"
    p.write_text(text)
    return p


def test_calibration_round_trip_and_model_mismatch(tmp_path: Path) -> None:
    p = _write_calibration(tmp_path, "dlib:aaaa")
    pol = load_policy("dlib:aaaa", p)
    t3 = pol.thresholds(3)
    assert (t3.accept_distance, t3.min_margin, t3.confirm_distance, t3.confirm_margin) == (0.35, 0.06, 0.45, 0.02)
    assert t3.min_agreement == pytest.approx(2 / 3)
    assert pol.max_frames == 3 and pol.source == str(p)
    with pytest.raises(CalibrationError, match="calibrated for model 'dlib:aaaa'.*'onnx:bbbb'"):
        load_policy("onnx:bbbb", p)
    g = Gallery.from_pairs([("A", random_unit())], model_id="onnx:bbbb")
    with pytest.raises(CalibrationError, match="re-enrol or re-calibrate"):
        decide(g, random_unit()[None], pol)


def test_missing_or_broken_calibration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not found; run `meal-edge calibrate"):
        load_policy("m", tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[calibration]\nformat = 1\nmodel_id = 'm'\n[policy]\naccept_distance = 'x'\n")
    with pytest.raises(CalibrationError, match="accept_distance must be a number"):
        load_policy("m", bad)
    with pytest.raises(CalibrationError, match="format"):
        policy_from_dict(tomllib.loads("[calibration]\nformat = 99\n[policy]\n"))


def test_inconsistent_thresholds_are_refused() -> None:
    with pytest.raises(CalibrationError):
        Policy(0.5, 0.4, 0.08, 0.03, "m")  # accept beyond confirm
    with pytest.raises(CalibrationError):
        Policy(0.4, 0.5, 0.03, 0.08, "m")  # confirm margin above accept margin


@pytest.mark.parametrize("mirror", [True, False], ids=["mirrored", "plain"])
def test_committed_calibration_matches_the_reference_model(mirror: bool) -> None:
    from edge.modelbuild.modelfiles import model_id_for
    from edge.recognition.calibration import default_calibration_path
    from edge.recognition.embed.mirror import mirrored_model_id

    model_id = mirrored_model_id(model_id_for()) if mirror else model_id_for()
    pol = load_policy(model_id)
    assert default_calibration_path(model_id).name == ("calibration.toml" if mirror else "calibration-nomirror.toml")
    assert [t.frames for t in pol.per_frames][0] == 1
    # fused probes sit closer to everyone: no fused threshold is looser than the single-frame one
    assert all(t.accept_distance <= pol.thresholds(1).accept_distance + 1e-9 for t in pol.per_frames)
