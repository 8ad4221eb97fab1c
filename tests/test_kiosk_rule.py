"""The kiosk's sequential decision (edge.recognition.decide.decide_sequential): decide on 3 frames, then again with each
further frame up to 5, the first accept stands. Constructed embeddings whose answer is known, the real
Pipeline deciding the same way, and the calibration trials measuring the rule."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import test_confirm as confirm_tests
from test_confirm import light_pipeline
from test_decide import at as near
from test_decide import crowd, gallery_of, random_unit

from edge.config import Config
from edge.lab.faceset import FaceSet
from edge.lab.kiosk_rule import kiosk_round, measure_kiosk_rule
from edge.meals.rules import Senior
from edge.recognition.decide import FrameThresholds, Policy, decide, decide_sequential
from edge.recognition.detect import Face
from edge.recognition.track import Observation, Track
from edge.store import Store, TemplateIn

MODEL = "test-model"
cfg = confirm_tests.cfg  # the same fixtures: a config and a store with senior S0001
store = confirm_tests.store
# accept distance shrinks with the frame count, as calibration finds (fused probes sit closer to everyone)
ROWS = tuple(
    FrameThresholds(k, a, 0.05, a, 0.04, 0.5) for k, a in ((1, 0.40), (2, 0.38), (3, 0.36), (4, 0.35), (5, 0.34))
)
POLICY = Policy(0.34, 0.34, 0.05, 0.04, MODEL, 0.5, ROWS)


def frames_of(a: np.ndarray, distances: list[float]) -> np.ndarray:
    return np.stack([near(a, d) for d in distances])


def test_accepts_at_the_first_frame_count_that_accepts() -> None:
    a = random_unit()
    g = gallery_of({"A": [a], **crowd()}, MODEL)
    # three poor frames (fused ~0.44 from A: not accepted), then two exact ones pull the fused probe in
    f = frames_of(a, [0.8, 0.8, 0.8, 0.0, 0.0])
    assert decide(g, f[:3], POLICY).outcome != "accept"
    v = decide_sequential(g, f, POLICY)
    assert v is not None and (v.outcome, v.senior_id) == ("accept", "A") and v.frames in (4, 5)
    # a clear presence is accepted on the first look and later frames are never used
    clear = frames_of(a, [0.1, 0.1, 0.1, 0.9, 0.9])
    v3 = decide_sequential(g, clear, POLICY)
    assert v3 is not None and (v3.outcome, v3.frames) == ("accept", 3)


def test_a_stranger_gets_the_last_verdict_and_too_few_frames_get_none() -> None:
    g = gallery_of({"A": [random_unit()], **crowd()}, MODEL)
    stranger = np.stack([random_unit() for _ in range(7)])
    v = decide_sequential(g, stranger, POLICY)
    assert v is not None and v.outcome == "unknown" and v.frames == 5  # at most max_frames looked at
    assert decide_sequential(g, stranger[:2], POLICY) is None
    assert decide_sequential(g, stranger[:2], POLICY, min_frames=2, max_frames=2) is not None


def test_frames_beyond_the_maximum_are_not_used() -> None:
    a = random_unit()
    g = gallery_of({"A": [a], **crowd()}, MODEL)
    f = np.concatenate([np.stack([random_unit() for _ in range(5)]), frames_of(a, [0.0, 0.0])])
    v = decide_sequential(g, f, POLICY)
    assert v is not None and v.outcome != "accept"


@pytest.mark.parametrize(
    "distances", [[0.1] * 5, [0.55, 0.55, 0.55, 0.05, 0.05], [0.55, 0.55, 0.55, 0.55, 0.05], [0.9] * 5]
)
def test_the_pipeline_decides_exactly_as_decide_sequential(store: Store, cfg: Config, distances: list[float]) -> None:
    """Frames arriving one by one into the real Pipeline give the pure function's verdict (liveness off)."""
    rng = np.random.default_rng(7)
    a = random_unit(rng)
    store.add_templates("S0001", [TemplateIn(a, MODEL, 1.0, "a.jpg")])
    others = {f"O{i}": [random_unit(rng)] for i in range(10)}
    for sid, (t,) in others.items():
        store.add_senior(Senior(sid, sid, date(1950, 1, 1), "xuhui"))
        store.add_templates(sid, [TemplateIn(t, MODEL, 1.0, "a.jpg")])
    pipe = light_pipeline(cfg, store, policy=POLICY)
    frames = frames_of(a, distances)
    face = Face((10, 110, 110, 10), np.zeros((5, 2), np.float32), 1.0)
    track = Track(1, 0, 0)
    decision = None
    for i, e in enumerate(frames):
        track.observations.append(Observation(i, i / 10, face, e))
        decision = pipe.decide_track(track, None, final=i == len(frames) - 1)  # type: ignore[arg-type]
        if decision is not None:
            break
    want = decide_sequential(pipe.holder.current.gallery, frames, POLICY)
    assert decision is not None and want is not None
    assert decision.frames == want.frames and decision.distance == pytest.approx(want.distance, abs=1e-6)
    assert (decision.kind == "meal") == (want.outcome == "accept")
    assert (decision.senior_id if want.outcome != "unknown" else None) == want.senior_id


def test_measure_kiosk_rule_counts_on_a_constructed_face_set() -> None:
    """8 photos a person: 3 enrolled, one group of 5 as the enrolled probe, and one never-enrolled group of 5
    (the first 5 photos, the person masked out). Well separated people: all correct, no stranger accepted."""
    rng = np.random.default_rng(3)
    people = {f"P{i}": random_unit(rng) for i in range(12)}
    emb = {n: np.stack([near(c, 0.1, rng) for _ in range(8)]) for n, c in people.items()}
    fs = FaceSet(None, MODEL, tuple(sorted(emb)), emb, {n: tuple(f"{j}.jpg" for j in range(8)) for n in emb}, 96, 0)  # type: ignore[arg-type]
    r = measure_kiosk_rule(fs, POLICY, 3, rounds=2, seed=0)
    assert (r["enrolled_trials"], r["never_enrolled_trials"]) == (24, 24)
    assert r["correct"]["count"] == 24 and r["wrong"]["count"] == 0 and r["impostor_accept"]["count"] == 0
    # identical twins: with each person masked out, their twin is accepted in their place; every
    # enrolled probe is counted exactly once
    centres = {f"T{i}{j}": c for i in range(6) for j, c in enumerate([random_unit(rng)] * 2)}
    emb2 = {n: np.stack([near(c, 0.05, rng) for _ in range(8)]) for n, c in centres.items()}
    fs2 = FaceSet(None, MODEL, tuple(sorted(emb2)), emb2, {n: fs.files["P0"] for n in emb2}, 96, 0)  # type: ignore[arg-type]
    r2 = measure_kiosk_rule(fs2, POLICY, 3, 2, 0)
    assert r2["impostor_accept"]["count"] == 24
    assert r2["correct"]["count"] + r2["wrong"]["count"] + r2["not_accepted"]["count"] == 24


def test_measure_kiosk_rule_decides_each_trial_as_decide_sequential() -> None:
    """The calibrator's vectorised rule and the kiosk's pure function, on the same constructed trials: every
    presence gets the same accept (and the same senior), and the trials mix early, late and no accepts so
    that the comparison covers each branch. Siblings (centres 0.1 or 0.3 apart) make strangers get accepted as the
    sibling when they are masked out."""
    rng = np.random.default_rng(11)
    centres: dict[str, np.ndarray] = {}
    for i in range(15):
        c = random_unit(rng)
        centres[f"S{i:02d}a"], centres[f"S{i:02d}b"] = c, near(c, 0.1 if i < 5 else 0.3, rng)
    emb = {n: np.stack([near(c, float(rng.uniform(0.15, 0.75)), rng) for _ in range(13)]) for n, c in centres.items()}
    files = {n: tuple(f"{j}.jpg" for j in range(13)) for n in emb}
    fs = FaceSet(None, MODEL, tuple(sorted(emb)), emb, files, 13 * len(emb), 0)  # type: ignore[arg-type]
    first_frames: list[int] = []
    stranger_accepts: list[bool] = []
    for r in range(2):
        rd = kiosk_round(fs, POLICY, 3, seed=5, r=r)
        assert len(rd.enrolled) == 2 * len(emb) and len(rd.strangers) == 2 * len(emb)
        for (n, x), acc, ok in zip(rd.enrolled, rd.accepted, rd.correct, strict=True):
            v = decide_sequential(rd.gallery, x, POLICY)
            assert v is not None and (v.outcome == "accept") == acc and (acc and v.senior_id == n) == ok
            first_frames.append(v.frames if acc else 0)
        for (n, x), acc in zip(rd.strangers, rd.stranger_accepted, strict=True):
            v = decide_sequential(rd.gallery.without(n), x, POLICY)
            assert v is not None and (v.outcome == "accept") == acc
            stranger_accepts.append(bool(acc))
    assert {0, 3} <= set(first_frames) and set(first_frames) & {4, 5}
    assert any(stranger_accepts) and not all(stranger_accepts)
