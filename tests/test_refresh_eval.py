"""`meal-edge eval --simulate-refresh`: the simulation on constructed embeddings where the answer is known, and one
small real-face run on LFW photos from ../shared (skipped when it is missing)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge.config import RecognitionConfig
from edge.lab.evaluate import evaluate, format_report
from edge.lab.faceset import FaceSet, in_holdout
from edge.lab.features import Probe
from edge.lab.refresh_sim import daemon_refresh_rule, refresh_report, simulate_refresh
from edge.lab.trial import Trial, build_trial, enrolment_pair_margins
from edge.recognition import refresh as rf
from edge.recognition.decide import Policy, default_policy, fuse, lookalike_pairs
from edge.recognition.match import Gallery
from edge.recognition.refresh import RefreshRule

SHARED = Path(os.environ.get("MEAL_EDGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
LFW = SHARED / "data" / "faces" / "lfw_deepfunneled"
MODEL = "test-model"
RULE = daemon_refresh_rule()

# ------------------------------------------------------------------------------------------ geometry
# Unit vectors in 128-d; seniors "s2".."s5" are random directions (~1.4 apart from everything). Senior "a" is
# enrolled with 3 photos at a0 and drifts in the plane (a0, u): at(t) is t radians away, 2 sin(t/2) in distance.

_rng = np.random.default_rng(0)
_BASE = _rng.standard_normal((7, 128))
_BASE /= np.linalg.norm(_BASE, axis=1, keepdims=True)
A0 = _BASE[0]
U = _BASE[1] - (_BASE[1] @ A0) * A0
U /= np.linalg.norm(U)
Z = _BASE[6] - (_BASE[6] @ A0) * A0 - (_BASE[6] @ U) * U
Z /= np.linalg.norm(Z)


def at(t: float, z: float = 0.0) -> np.ndarray:
    """A unit vector t radians from a0 towards u, then z radians off that plane."""
    v = np.cos(t) * A0 + np.sin(t) * U
    return (np.cos(z) * v + np.sin(z) * Z).astype(np.float32)


def probe(truth: str | None, v: np.ndarray) -> Probe:
    return Probe(truth, np.repeat(v[None], 3, axis=0).astype(np.float32))  # three frames that agree


def trial(enrolled: dict[str, np.ndarray], genuine: list[Probe], impostor: list[Probe]) -> Trial:
    """Enrolled photos as given, check-ins as given; each never-enrolled probe's first frame is its single photo."""
    enrolled = {n: enrolled[n] for n in sorted(enrolled)}
    g = Gallery.from_pairs(((n, x) for n, e in enrolled.items() for x in e), model_id=MODEL)
    single = [Probe(None, p.embeddings[:1]) for p in impostor]
    strangers = {f"x{i}": p.embeddings for i, p in enumerate(impostor)}
    return Trial(g, enrolled, strangers, genuine, impostor, [], single, len(enrolled), len(impostor))


def others() -> dict[str, np.ndarray]:
    return {f"s{i}": np.repeat(_BASE[i][None], 3, axis=0).astype(np.float32) for i in range(2, 6)}


# ------------------------------------------------------------------------------------------ the rule


def test_the_rule_is_the_daemons_with_the_config_defaults() -> None:
    r = RecognitionConfig()
    assert RULE == RefreshRule(
        enabled=True,
        max_templates=r.refresh_max,
        max_distance=r.refresh_distance,
        min_margin=r.refresh_min_margin,
        every_days=r.refresh_every_days,
    )


# ------------------------------------------------------------------------------------------ drift


def drift_trial() -> Trial:
    enrolled = {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()}
    return trial(enrolled, [probe("a", at(0.1 * (i + 1))) for i in range(5)], [])


def test_a_drifting_senior_stays_accepted_only_with_refresh() -> None:
    """Probes 0.1, 0.2, ... 0.5 rad from the enrolment photos: without refresh the 4th is sent to staff and the
    5th turned away; with refresh the first three (distance <= 0.20) are stored and the senior is still accepted."""
    tr = drift_trial()
    policy = default_policy(MODEL)
    sim = simulate_refresh(tr, policy, {}, RULE, seed=0, shuffle=False)
    assert [s.baseline.outcome for s in sim.steps] == ["accept", "accept", "accept", "confirm", "unknown"]
    assert [s.verdict.outcome for s in sim.steps] == ["accept"] * 5
    assert all(s.verdict.senior_id == "a" for s in sim.steps)
    assert [s.refreshed for s in sim.steps] == [True, True, True, False, False]
    assert sim.steps[3].reasons == (rf.TOO_FAR,)  # 0.22: accepted, but outside the refresh gate
    # bounded at refresh_max = 2: the third refresh replaced the oldest; the photo templates are kept
    assert sim.replaced == 1 and list(sim.checkin_templates) == ["a"]
    kept = sim.checkin_templates["a"]
    assert len(kept) == RULE.max_templates == 2
    assert np.allclose(kept[0], fuse(tr.genuine[1].embeddings)) and np.allclose(kept[1], fuse(tr.genuine[2].embeddings))
    assert sim.gallery.n_templates == tr.gallery.n_templates + 2
    assert sim.months == 5

    r = refresh_report(tr, policy, {}, seed=0, shuffle=False)
    assert (r["refreshes"], r["people_refreshed"], r["refreshes_replacing_oldest"], r["poisoned_refreshes"]) == (
        3,
        1,
        1,
        0,
    )
    assert r["refreshes_by_visit"] == {"1": 1, "2": 1, "3": 1}
    assert r["schedule"]["rate_limit_binds"] is False
    later = r["later_probes"]
    w, wo = later["with_refresh"]["counts"], later["without_refresh"]["counts"]
    assert w["genuine"] == wo["genuine"] == 4  # the same 4 later check-ins in both arms
    assert (wo["correct"], wo["confirm"], wo["rejected"]) == (2, 1, 1)
    assert (w["correct"], w["confirm"], w["rejected"]) == (4, 0, 0)
    assert later["changed"] == {"confirm -> correct": 1, "rejected -> correct": 1}
    assert r["all_probes"]["with_refresh"]["counts"]["genuine"] == 5
    json.dumps(r)


def test_refresh_max_bounds_every_senior() -> None:
    tr = trial(
        {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()},
        [probe("a", at(0.02 * i, 0.01 * i)) for i in range(6)],  # all very close: every check-in refreshes
        [],
    )
    for keep in (1, 2, 3):
        rule = RefreshRule(enabled=True, max_templates=keep)
        sim = simulate_refresh(tr, default_policy(MODEL), {}, rule, seed=0, shuffle=False)
        assert all(s.refreshed for s in sim.steps)
        assert len(sim.checkin_templates["a"]) == keep and sim.replaced == 6 - keep
        assert np.allclose(sim.checkin_templates["a"][-1], fuse(tr.genuine[-1].embeddings))  # the newest is kept
        assert sim.gallery.n_templates == tr.gallery.n_templates + keep


def test_rate_limit_is_the_daemons() -> None:
    """With a 45-day limit, monthly (31-day) check-ins can refresh only every other month."""
    tr = trial(
        {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()},
        [probe("a", at(0.02 * i)) for i in range(5)],
        [],
    )
    rule = RefreshRule(enabled=True, every_days=45)
    sim = simulate_refresh(tr, default_policy(MODEL), {}, rule, seed=0, shuffle=False)
    assert [s.refreshed for s in sim.steps] == [True, False, True, False, True]
    assert sim.steps[1].reasons == (rf.TOO_SOON,)
    assert refresh_report(tr, default_policy(MODEL), {}, 0, rule=rule, shuffle=False)["schedule"]["rate_limit_binds"]


# ------------------------------------------------------------------------------------------ no refresh


def test_no_refresh_for_confirm_or_unknown_even_inside_the_distance_and_margin_gate() -> None:
    enrolled = {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()}
    # a policy that asks staff at 0.15 (accept only up to 0.10): distance 0.15 and margin ~1.2 pass the gate
    strict = Policy(0.10, 0.46, 0.08, 0.03, MODEL)
    sim = simulate_refresh(trial(enrolled, [probe("a", at(0.15))], []), strict, {}, RULE, 0)
    (s,) = sim.steps
    assert s.verdict.outcome == "confirm" and s.verdict.distance <= 0.20 and s.verdict.margin >= 0.20
    assert s.reasons == (rf.NOT_AUTOMATIC_MEAL,) and not sim.checkin_templates
    # "b" 0.40 rad beyond the probe: margin ~0.29 passes the gate, but this policy wants 0.35 even to ask staff
    enrolled["b"] = np.repeat(at(0.5)[None], 3, axis=0)
    picky = Policy(0.36, 0.46, 0.35, 0.35, MODEL)
    sim = simulate_refresh(trial(enrolled, [probe("a", at(0.1))], []), picky, {}, RULE, 0)
    (s,) = sim.steps
    assert s.verdict.outcome == "unknown" and s.verdict.distance <= 0.20 and s.verdict.margin >= 0.20
    assert s.reasons == (rf.NOT_AUTOMATIC_MEAL,) and not sim.checkin_templates
    assert sim.gallery.n_templates == 18


def test_a_wrong_accept_refreshes_only_inside_the_gate_and_is_counted_as_poisoned() -> None:
    """The daemon cannot know an accept is wrong: only the distance and margin gate keeps a wrong accept out of
    the templates. "x" is enrolled far away but their probes land near "a"."""
    enrolled = {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()}
    enrolled["x"] = np.repeat(_BASE[6][None], 3, axis=0).astype(np.float32)
    policy = default_policy(MODEL)
    far = trial(enrolled, [probe("x", at(0.3))], [])  # accepted as "a" at 0.30: a wrong accept outside the gate
    sim = simulate_refresh(far, policy, {}, RULE, 0)
    (s,) = sim.steps
    assert (s.verdict.outcome, s.verdict.senior_id) == ("accept", "a")
    assert s.reasons == (rf.TOO_FAR,) and not sim.checkin_templates
    near = trial(enrolled, [probe("x", at(0.1))], [])  # a wrong accept at 0.10: the daemon would store it
    sim = simulate_refresh(near, policy, {}, RULE, 0)
    assert sim.steps[0].refreshed and list(sim.checkin_templates) == ["a"]
    r = refresh_report(near, policy, {}, 0)
    assert r["refreshes"] == 1 and r["poisoned_refreshes"] == 1
    assert r["all_probes"]["with_refresh"]["counts"]["wrong"] == 1


def test_the_without_arm_is_the_plain_eval_on_the_same_trial() -> None:
    rng = np.random.default_rng(11)
    emb = {}
    for i in range(40):
        c = rng.standard_normal(128)
        c /= np.linalg.norm(c)
        k = int(rng.integers(3, 14))
        emb[f"p{i:03d}"] = (c + 0.12 * rng.standard_normal((k, 128)) / np.sqrt(128)).astype(np.float32)
    ids = tuple(sorted(emb))
    files = {n: tuple(f"{n}_{j:04d}.jpg" for j in range(len(emb[n]))) for n in ids}
    fs = FaceSet(Path("/nowhere"), MODEL, ids, emb, files, sum(len(e) for e in emb.values()), 0)
    policy = default_policy(MODEL)
    args = argparse.Namespace(
        gallery_size=25,
        photos_per_person=3,
        probe_frames=3,
        impostors=10,
        seed=3,
        split="all",
        out=None,
        simulate_refresh=True,
    )
    r = evaluate(fs, policy, args)
    rr = r["refresh"]
    without = rr["all_probes"]["without_refresh"]["counts"]
    assert {k: without[k] for k in ("genuine", "correct", "wrong", "confirm", "rejected")} == {
        k: r["counts"][k] for k in ("genuine", "correct", "wrong", "confirm", "rejected")
    }
    imp = rr["never_enrolled"]["without_refresh"]["counts"]
    assert (imp["impostor"], imp["impostor_accept"], imp["impostor_confirm"]) == (
        r["counts"]["impostor"],
        r["counts"]["impostor_accept"],
        r["counts"]["impostor_confirm"],
    )
    assert rr["never_enrolled_single"]["without_refresh"]["counts"]["impostor"] == r["single"]["counts"]["impostor"]
    assert rr["later_checkins"] == rr["checkins"] - rr["people"] > 0
    assert rr["refreshes"] > 0
    assert "template refresh simulated" in format_report(r)
    json.dumps(r)
    # the option adds a key and changes nothing else
    args.simulate_refresh = False
    plain = evaluate(fs, policy, args)
    assert "refresh" not in plain and plain == {k: v for k, v in r.items() if k != "refresh"}
    # with refresh switched off, every check-in is decided exactly as without it
    tr = build_trial(fs, 25, 3, 3, 10, seed=3)
    pairs = enrolment_pair_margins(tr, policy)
    sim = simulate_refresh(tr, policy, pairs, RefreshRule(enabled=False), seed=3)
    assert all(s.reasons[0] == rf.OFF and s.verdict == s.baseline for s in sim.steps)
    assert sim.gallery is tr.gallery and sim.pair_margins == pairs


def test_lookalike_pairs_are_recomputed_over_the_whole_gallery_as_the_daemon_does() -> None:
    """Senior "b" sits 0.4 rad off the point "a" drifts to: no lookalike of a's photos (0.49 > 0.40), but once a's
    check-in templates have moved there, the daemon's reload (lookalike_pairs on every template) flags the pair."""
    enrolled = {
        "a": np.repeat(A0[None], 3, axis=0).astype(np.float32),
        "b": np.repeat(at(0.3, 0.4)[None], 3, axis=0),
        **others(),
    }
    tr = trial(enrolled, [probe("a", at(0.1 * (i + 1))) for i in range(3)], [])
    policy = default_policy(MODEL)
    pairs = enrolment_pair_margins(tr, policy)
    assert pairs == lookalike_pairs(tr.gallery, policy) == {}
    sim = simulate_refresh(tr, policy, pairs, RULE, 0, shuffle=False)
    assert [s.refreshed for s in sim.steps] == [True, True, True]
    assert sim.pair_margins == lookalike_pairs(sim.gallery, policy) == {frozenset({"a", "b"}): policy.lookalike_margin}
    fixed = simulate_refresh(tr, policy, pairs, RULE, 0, recompute_pairs=False, shuffle=False)
    assert fixed.pair_margins == {}
    r = refresh_report(tr, policy, pairs, 0, shuffle=False)
    assert r["lookalike_pairs"] == {
        "initial": 0,
        "final": 1,
        "added": 1,
        "removed": 0,
        "daemon_rule_at_start_agrees": True,
    }


def test_never_enrolled_probes_against_the_final_gallery() -> None:
    """A stranger standing where "a" drifted to: unknown against the enrolment gallery, accepted against the
    refreshed one (what the safety figures measure), though never close enough to be stored."""
    tr = trial(
        {"a": np.repeat(A0[None], 3, axis=0).astype(np.float32), **others()},
        [probe("a", at(0.1 * (i + 1))) for i in range(3)],
        [probe(None, at(0.5)), probe(None, _BASE[1].astype(np.float32))],
    )
    r = refresh_report(tr, default_policy(MODEL), {}, 0, shuffle=False)
    ne = r["never_enrolled"]
    assert ne["without_refresh"]["counts"]["impostor_accept"] == 0
    assert ne["with_refresh"]["counts"]["impostor_accept"] == 1
    assert ne["changed"] == {"unknown -> accept": 1}
    assert r["never_enrolled_single"]["with_refresh"]["counts"]["impostor"] == 2
    assert r["never_enrolled_passing_refresh_gate"]["probes"] == [0, 0]


# ------------------------------------------------------------------------------------------ real faces


def test_real_faces_small(tmp_path: Path) -> None:
    """Held-out LFW people with 9+ photos (two or more 3-photo check-ins) and three never-enrolled people.
    Uses the warm embedding cache when it holds these photos (read only), else embeds them into tmp_path."""
    if not LFW.is_dir():
        pytest.skip(f"../shared/data/faces/lfw_deepfunneled not found: {LFW}")
    from edge.lab.faceset import DEFAULT_CACHE_DIR, EmbeddingCache, cache_path, list_photos, load_faceset
    from edge.modelbuild.modelfiles import model_id_for
    from edge.recognition.calibration import load_policy
    from edge.recognition.decide import CalibrationError
    from edge.recognition.embed.mirror import mirrored_model_id

    photos = list_photos(LFW)
    held = [n for n in sorted(photos) if in_holdout(n)]
    enrol = [n for n in held if 9 <= len(photos[n]) <= 10][:5]
    strangers = [n for n in held if len(photos[n]) == 3][:3]
    names = enrol + strangers
    model_id = mirrored_model_id(model_id_for())
    cache = EmbeddingCache(cache_path(DEFAULT_CACHE_DIR, model_id, 640, 1), model_id)
    warm = all(cache.get(EmbeddingCache.key(p))[0] for n in names for p in photos[n])
    # dlib's model: the refresh thresholds are on its scale (not yet calibrated for SFace, the default)
    fs = load_faceset(LFW, identities=names, cache_dir=DEFAULT_CACHE_DIR if warm else tmp_path, model="dlib")
    try:
        policy = load_policy(fs.model_id)
    except CalibrationError as e:
        pytest.skip(f"no calibration for this model yet: {e}")
    n_enrol = len([n for n in enrol if len(fs.embeddings.get(n, ())) > 3])
    args = argparse.Namespace(
        gallery_size=n_enrol,
        photos_per_person=3,
        probe_frames=3,
        impostors=3,
        seed=0,
        split="holdout",
        out=None,
        simulate_refresh=True,
    )
    r = evaluate(fs, policy, args)
    rr = r["refresh"]
    assert rr["people"] == n_enrol and rr["later_checkins"] >= n_enrol
    later = rr["later_probes"]
    assert later["with_refresh"]["counts"]["genuine"] == later["without_refresh"]["counts"]["genuine"]
    assert rr["poisoned_refreshes"] == 0 and rr["refreshes"] <= rr["checkins"]
    assert rr["checkin_templates_final"] <= RULE.max_templates * n_enrol
    for arm in ("without_refresh", "with_refresh"):
        assert later[arm]["counts"]["wrong"] == 0
        assert rr["never_enrolled"][arm]["counts"]["impostor_accept"] == 0
    json.dumps(r)
