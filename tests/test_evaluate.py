"""Evaluation arithmetic on constructed inputs, and one small real-face run on LFW photos from ../shared."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge.lab.evaluate import evaluate
from edge.lab.faceset import FaceSet, in_holdout, split_identities
from edge.lab.features import FeatureTable, Probe, feature_table, rate, tally, wilson
from edge.lab.oracle import best_thresholds, oracle_report
from edge.lab.trial import build_trial, sweep
from edge.recognition.decide import Verdict, default_policy, features
from edge.recognition.match import Gallery

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"


# ------------------------------------------------------------------------------------------ intervals


def test_wilson_known_values() -> None:
    lo, hi = wilson(5, 100)
    assert lo == pytest.approx(0.02154, abs=1e-4) and hi == pytest.approx(0.11175, abs=1e-4)
    # zero events: the upper bound is z^2 / (n + z^2), close to the rule of three
    lo, hi = wilson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(3.8415 / 103.8415, abs=1e-5)
    assert wilson(100, 100) == (pytest.approx(1 - 3.8415 / 103.8415, abs=1e-5), 1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_rate_reports_rule_of_three_only_for_zero_events() -> None:
    r0 = rate(0, 300)
    assert r0["count"] == 0 and r0["rate"] == 0.0 and r0["rule_of_three_upper"] == pytest.approx(0.01)
    r1 = rate(3, 300)
    assert "rule_of_three_upper" not in r1 and r1["rate"] == pytest.approx(0.01)
    assert r1["ci95"][0] < 0.01 < r1["ci95"][1]


# ------------------------------------------------------------------------------------------ tallies


def V(outcome: str, sid: str | None) -> Verdict:  # noqa: N802 - reads like a constructor
    return Verdict(outcome, sid if outcome != "unknown" else None, 0.3, 0.1, 3)  # type: ignore[arg-type]


def test_tally_counts_every_outcome() -> None:
    e = np.zeros((3, 128), np.float32)
    probes = [Probe("a", e)] * 6 + [Probe(None, e)] * 4
    verdicts = [
        V("accept", "a"),
        V("accept", "a"),
        V("accept", "b"),  # wrong senior
        V("confirm", "a"),
        V("confirm", "b"),  # staff shown the wrong name
        V("unknown", None),
        V("accept", "c"),  # never-enrolled accepted
        V("confirm", "a"),
        V("unknown", None),
        V("unknown", None),
    ]
    r = tally(probes, verdicts)
    c = r["counts"]
    assert (c["genuine"], c["correct"], c["wrong"], c["confirm"], c["rejected"]) == (6, 2, 1, 2, 1)
    assert (c["confirm_right"], c["confirm_wrong_candidate"]) == (1, 1)
    assert (c["impostor"], c["impostor_accept"], c["impostor_confirm"], c["impostor_unknown"]) == (4, 1, 1, 2)
    assert r["correct_rate"] == pytest.approx(2 / 6) and r["wrong_rate"] == pytest.approx(1 / 6)
    assert r["confirm_rate"] == pytest.approx(2 / 6) and r["rejected_rate"] == pytest.approx(1 / 6)
    assert r["served_rate"] == pytest.approx(3 / 6)
    assert r["impostor_accept_rate"] == pytest.approx(0.25) and r["impostor_confirm_rate"] == pytest.approx(0.25)
    assert r["correct_rate"] + r["wrong_rate"] + r["confirm_rate"] + r["rejected_rate"] == pytest.approx(1)
    assert r["intervals"]["wrong"]["ci95"] == list(wilson(1, 6))
    assert r["genuine_probes_by_frames"] == {"3": 6}


# ------------------------------------------------------------------------------------------ features, sweep


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, 128)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, people: int, photos: int, spread: float) -> dict[str, np.ndarray]:
    centres = _unit(rng, people)
    out = {}
    for i, c in enumerate(centres):
        e = c + spread * rng.standard_normal((photos, 128)).astype(np.float32) / np.sqrt(128)
        out[f"p{i:03d}"] = (0.7 * e).astype(np.float32)  # raw descriptors need not be unit length
    return out


def test_feature_table_matches_decide_features() -> None:
    rng = np.random.default_rng(7)
    emb = _clustered(rng, 12, 6, 0.5)
    g = Gallery.from_pairs((n, x) for n, e in emb.items() for x in e[:3])
    probes = [Probe(n, e[3 : 3 + k]) for n, e in emb.items() for k in (1, 2, 3)]
    probes.append(Probe(None, _unit(rng, 3)))
    t = feature_table(g, probes, 0.5)
    for i, p in enumerate(probes):
        f = features(g, p.embeddings)
        assert t.distance[i] == pytest.approx(f.distance, abs=1e-5)
        assert t.margin[i] == pytest.approx(f.margin, abs=1e-5)
        assert t.agreement[i] == pytest.approx(f.agreement)
        assert t.best_correct[i] == (p.truth == g.senior_ids[f.best])
        assert t.genuine[i] == (p.truth is not None)
    # leave-one-out: with its own identity masked, a probe's best is somebody else
    loo = feature_table(g, probes[:-1], 0.5, exclude_own=True)
    assert not loo.genuine.any() and (loo.distance > t.distance[:-1] - 1e-6).all()


def test_sweep_is_monotone_in_the_accept_distance() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    table = FeatureTable(
        distance=rng.uniform(0.1, 0.9, n),
        margin=rng.uniform(0, 0.3, n),
        agreement=rng.choice([1 / 3, 2 / 3, 1.0], n),
        frames=rng.choice([1, 3], n),
        best_correct=rng.random(n) < 0.8,
        genuine=rng.random(n) < 0.5,
    )
    table = FeatureTable(
        table.distance, table.margin, table.agreement, table.frames, table.best_correct & table.genuine, table.genuine
    )
    for use_margin in (True, False):
        rows = sweep(table, default_policy(), "x", use_margin=use_margin)
        for key in ("correct_rate", "wrong_rate", "impostor_accept_rate"):
            vals = [r[key] for r in rows]
            assert all(b >= a for a, b in zip(vals, vals[1:], strict=False)), key
        fnir = [r["fnir"] for r in rows]
        assert all(b <= a for a, b in zip(fnir, fnir[1:], strict=False))
        last = rows[-1]
        assert last["correct"] + last["wrong"] + round(last["rejected_rate"] * last["genuine"]) == last["genuine"]
    # distance alone accepts at least as much as distance + margin + agreement
    with_gate = sweep(table, default_policy(), "x")
    alone = sweep(table, default_policy(), "x", use_margin=False)
    assert all(a["impostor_accept"] >= b["impostor_accept"] for a, b in zip(alone, with_gate, strict=True))
    assert alone[-1]["impostor_accept"] == int((~table.genuine & (table.distance <= 0.9)).sum())


# ------------------------------------------------------------------------------------------ protocol


def _faceset(emb: dict[str, np.ndarray]) -> FaceSet:
    ids = tuple(sorted(emb))
    files = {n: tuple(f"{n}_{i:04d}.jpg" for i in range(len(emb[n]))) for n in ids}
    return FaceSet(Path("/nowhere"), "test-model", ids, emb, files, sum(len(e) for e in emb.values()), 0)


def test_build_trial_probe_groups_follow_the_documented_rule() -> None:
    rng = np.random.default_rng(0)
    counts = {"four": 4, "five": 5, "six": 6, "eight": 8, "nine": 9, "three": 3}
    emb = {n: _unit(rng, k) for n, k in counts.items()}
    fs = _faceset(emb)
    tr = build_trial(fs, gallery_size=5, photos_per_person=3, probe_frames=3, impostors=5, seed=0)
    assert sorted(tr.gallery.senior_ids) == ["eight", "five", "four", "nine", "six"]  # "three" cannot be enrolled
    by: dict[str | None, list[int]] = {}
    for p in tr.genuine:
        by.setdefault(p.truth, []).append(p.frames)
    # fewer frames if fewer remain; leftovers that cannot fill a group are dropped
    assert by == {"four": [1], "five": [2], "six": [3], "eight": [3], "nine": [3, 3]}
    assert len(tr.genuine_single) == 1 + 2 + 3 + 5 + 6
    assert [p.frames for p in tr.impostor] == [3] and len(tr.impostor_single) == 3
    assert tr.gallery.n_templates == 15
    # enrolment and probe photos never overlap
    for n, e in tr.enrolled.items():
        probes = np.concatenate([p.embeddings for p in tr.genuine_single if p.truth == n])
        assert not (np.abs(probes[:, None] - e[None]).sum(-1) < 1e-9).any()
    again = build_trial(fs, 5, 3, 3, 5, seed=0)
    assert all(np.array_equal(a.embeddings, b.embeddings) for a, b in zip(tr.genuine, again.genuine, strict=True))
    with pytest.raises(ValueError, match="cannot enrol 6"):
        build_trial(fs, 6, 3, 3, 0, seed=0)


def _args(**kw: object) -> argparse.Namespace:
    d: dict[str, object] = dict(
        gallery_size=20, photos_per_person=3, probe_frames=3, impostors=10, seed=0, split="all", out=None
    )
    d.update(kw)
    return argparse.Namespace(**d)


def test_evaluate_on_separable_clusters(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    fs = _faceset(_clustered(rng, 30, 7, 0.15))  # tight clusters ~1.4 apart: every answer is clear
    r = evaluate(fs, default_policy("test-model"), _args(out=tmp_path))
    assert r["counts"]["genuine"] == 20 and r["counts"]["impostor"] == 10
    assert (r["correct_rate"], r["wrong_rate"], r["impostor_accept_rate"]) == (1.0, 0.0, 0.0)
    assert r["single"]["counts"]["genuine"] == 20 * 4 and r["single"]["correct_rate"] == 1.0
    json.dumps(r)  # one JSON object
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert len(rows) > 20 and {"curve", "accept_distance", "fnir", "impostor_accept_rate"} <= set(rows[0])
    assert (tmp_path / "det.png").read_bytes()[:4] == b"\x89PNG"


def _table(distance: list[float], margin: list[float], correct: list[bool]) -> FeatureTable:
    n = len(distance)
    return FeatureTable(
        np.array(distance), np.array(margin), np.ones(n), np.full(n, 3), np.array(correct), np.ones(n, bool)
    )


def test_best_thresholds_on_constructed_trials() -> None:
    """Four enrolled trials (the 0.40 one's best senior is someone else) and two never-enrolled ones."""
    g = _table([0.1, 0.2, 0.3, 0.4], [0.1, 0.1, 0.01, 0.1], [True, True, True, False])
    i = _table([0.25, 0.35], [0.1, 0.1], [False, False])
    grid = dict(distances=np.round(np.arange(0.0, 0.5, 0.05), 4), margins=np.array([0.0, 0.01, 0.05, 0.1, 0.15]))
    # one stranger of two allowed: accept up to 0.30 (0.35 would let the second one in, 0.40 the wrong
    # senior); the 0.30 trial's margin is 0.01, so no margin above that
    r = best_thresholds(g, i, max_wrong_rate=0.0, max_impostor_rate=0.5, **grid)  # type: ignore[arg-type]
    assert r == {"distance": 0.3, "margin": 0.01, "correct": 3, "wrong": 0, "impostor_accept": 1,
                 "enrolled": 4, "never_enrolled": 2}  # fmt: skip
    # no stranger allowed: the 0.25 one must stay out, and its margin equals the accepted ones', so the
    # distance has to do it
    r = best_thresholds(g, i, max_wrong_rate=0.0, max_impostor_rate=0.0, **grid)  # type: ignore[arg-type]
    assert (r["distance"], r["margin"], r["correct"], r["impostor_accept"]) == (0.2, 0.1, 2, 0)
    # a wrong accept allowed (1 in 4): the 0.40 trial may be accepted, but it adds no correct accept and
    # the second stranger would come in with it, so the answer is unchanged
    assert best_thresholds(g, i, 0.25, 0.5, **grid)["correct"] == 3  # type: ignore[arg-type]
    # nothing allowed at all on a grid that starts above every trial: no threshold
    r = best_thresholds(g, i, 0.0, 0.0, distances=np.array([0.45]), margins=np.array([0.0]))
    assert (r["distance"], r["correct"]) == (None, 0)


def test_upper_bound_uses_never_enrolled_probes_of_each_frame_count() -> None:
    rng = np.random.default_rng(5)
    centres = _unit(rng, 24)
    # 4..7 photos a person: enrolled probes of 1, 2 and 3 frames
    fs = _faceset({f"p{i:02d}": centres[i] + 0.1 * _unit(rng, 4 + i % 4) for i in range(24)})
    tr = build_trial(fs, gallery_size=16, photos_per_person=3, probe_frames=3, impostors=8, seed=0)
    o = oracle_report(tr, default_policy("test-model"))
    assert set(o["by_frames"]) == {"1", "2", "3"}
    for k, row in o["by_frames"].items():
        assert row["never_enrolled"] == sum(len(e) // int(k) for e in tr.never_enrolled.values())
        assert row["enrolled"] == sum(1 for p in tr.genuine if p.frames == int(k))
    # tight, well separated people: every enrolled probe can be accepted with no stranger and no wrong senior
    assert o["correct"]["count"] == len(tr.genuine) and o["correct"]["rate"] == 1.0
    assert all(r["wrong"] == 0 and r["impostor_accept"] == 0 for r in o["by_frames"].values())


def test_identity_split_is_fixed_and_about_half() -> None:
    names = [f"Person_{i}" for i in range(2000)]
    calib, held = split_identities(names)
    assert set(calib).isdisjoint(held) and len(calib) + len(held) == 2000
    assert 900 < len(held) < 1100
    assert in_holdout("Person_17") == in_holdout("Person_17")


# ------------------------------------------------------------------------------------------ real faces


@pytest.mark.slow
def test_real_faces_small(tmp_path: Path) -> None:
    """Six held-out LFW people enrolled with 3 photos, probed with 3 fused photos, plus 3 never-enrolled."""
    if not LFW.is_dir():
        pytest.skip(f"../shared/data/faces/lfw_deepfunneled not found: {LFW}")
    from edge.lab.faceset import list_photos, load_faceset
    from edge.recognition.calibration import load_policy
    from edge.recognition.decide import CalibrationError

    photos = list_photos(LFW)
    held = [n for n in sorted(photos) if in_holdout(n)]
    enrol = [n for n in held if 6 <= len(photos[n]) <= 7][:6]
    strangers = [n for n in held if len(photos[n]) == 3][:3]
    fs = load_faceset(LFW, identities=enrol + strangers, cache_dir=tmp_path)
    try:
        policy = load_policy(fs.model_id)
    except CalibrationError as e:
        pytest.skip(f"no calibration for this model yet: {e}")
    assert fs.n_photos <= 50  # keep the test small
    n_enrol = len([n for n in enrol if len(fs.embeddings[n]) > 3])
    r = evaluate(fs, policy, _args(gallery_size=n_enrol, impostors=3, kiosk=True))
    c = r["counts"]
    assert c["genuine"] >= 5 and c["impostor"] == 3
    assert c["wrong"] == 0 and c["impostor_accept"] == 0
    assert c["correct"] + c["confirm_right"] >= c["genuine"] - 1
    # the kiosk's rule on the same people: one presence of 3-4 photos each (6-7 photos, 3 enrolled)
    k = r["kiosk"]
    kc = k["counts"]
    assert kc["genuine"] == sum(1 for n in enrol if len(fs.embeddings[n]) - 3 >= 3)
    assert kc["impostor"] == 3 and kc["wrong"] == 0 and kc["impostor_accept"] == 0
    assert kc["correct"] + kc["confirm"] + kc["rejected"] == kc["genuine"]
    assert sum(k["excluded_short_probes"].values()) == 0 and set(k["enrolled_by_frames"]) <= {"3", "4"}


# ------------------------------------------------------------------------------------------ calibration


def test_choose_thresholds_meets_targets_on_constructed_trials() -> None:
    from edge.lab.calibrate import Targets, choose_thresholds

    rng = np.random.default_rng(5)
    ng, ni = 4000, 8000
    # enrolled: close (0.10-0.30) with clear margins; 40 of them closest to a wrong senior at 0.28-0.32
    gd = rng.uniform(0.10, 0.30, ng)
    gm = rng.uniform(0.05, 0.30, ng)
    gc = np.ones(ng, bool)
    gc[:40] = False
    gd[:40] = rng.uniform(0.28, 0.32, 40)
    gm[:40] = rng.uniform(0.0, 0.04, 40)
    # never-enrolled: far (0.32-0.60), small margins
    idd = rng.uniform(0.32, 0.60, ni)
    im = rng.uniform(0.0, 0.05, ni)
    g = FeatureTable(gd, gm, np.ones(ng), np.ones(ng, int), gc, np.ones(ng, bool))
    i = FeatureTable(idd, im, np.ones(ni), np.ones(ni, int), np.zeros(ni, bool), np.zeros(ni, bool))
    t = Targets(wrong=0.0005, impostor=0.0025)
    th, fig = choose_thresholds(1, g, i, t)
    assert fig["wrong_rate"] <= t.wrong and fig["impostor_accept_rate"] <= t.impostor
    assert th.min_margin > gm[:40].max()  # the margin is what keeps the 40 wrong-best probes out
    assert fig["correct_rate"] > 0.95
    assert th.confirm_distance >= th.accept_distance and th.confirm_margin <= th.min_margin
    # the figures are what the chosen rule does on these trials
    acc = (gd <= th.accept_distance) & (gm >= th.min_margin)
    assert fig["correct_rate"] == pytest.approx((acc & gc).mean())
