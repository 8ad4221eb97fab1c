"""Matcher and tracker on constructed inputs where the right answer is known."""

from __future__ import annotations

import numpy as np

from edge.recognition.detect import Face
from edge.recognition.match import Gallery, match, normalise
from edge.recognition.track import Tracker, iou


def _gallery(rng: np.random.Generator, seniors: int, per: int) -> tuple[Gallery, np.ndarray]:
    centres = normalise(rng.normal(size=(seniors, 128)))
    pairs = []
    for i, c in enumerate(centres):
        for _ in range(per):
            pairs.append((f"S{i:04d}", c + rng.normal(scale=0.02, size=128)))
    rng.shuffle(pairs)  # type: ignore[arg-type]
    return Gallery.from_pairs(pairs, "m"), centres


def test_best_and_second_best_are_different_seniors() -> None:
    rng = np.random.default_rng(1)
    g, centres = _gallery(rng, 50, 3)
    assert len(g) == 50 and g.n_templates == 150
    cands = match(g, centres[[7, 21]] * 3.0)  # scale must not matter: descriptors are normalised
    assert [c.senior_id for c in cands] == ["S0007", "S0021"]
    for c in cands:
        assert c.second_id != c.senior_id
        assert c.distance < 0.3 < 1.0 < c.second_distance
        assert c.margin == c.second_distance - c.distance


def test_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    g, _ = _gallery(rng, 30, 4)
    probes = rng.normal(size=(10, 128)).astype(np.float32)
    cands = match(g, probes)
    for p, c in zip(probes, cands, strict=True):
        per_senior: dict[str, float] = {}
        for t, o in zip(g.templates, g.owner, strict=True):
            d = float(np.linalg.norm(normalise(p) - t))
            sid = g.senior_ids[o]
            per_senior[sid] = min(per_senior.get(sid, 9.0), d)
        ranked = sorted(per_senior.items(), key=lambda kv: kv[1])
        assert c.senior_id == ranked[0][0] and c.second_id == ranked[1][0]
        assert abs(c.distance - ranked[0][1]) < 1e-4 and abs(c.second_distance - ranked[1][1]) < 1e-4


def test_empty_single_and_without() -> None:
    rng = np.random.default_rng(3)
    probe = rng.normal(size=128)
    assert match(Gallery.empty(), probe)[0].senior_id is None
    one = Gallery.from_pairs([("A", probe)])
    c = match(one, probe)[0]
    assert c.senior_id == "A" and c.second_id is None and c.distance < 1e-3
    g, centres = _gallery(rng, 5, 2)
    g2 = g.without("S0002")
    assert "S0002" not in g2.senior_ids and g2.n_templates == 8
    assert match(g2, centres[2])[0].senior_id != "S0002"
    assert match(g2, centres[3])[0].senior_id == "S0003"


def _face(top: int, left: int, size: int = 100) -> Face:
    return Face((top, left + size, top + size, left), np.zeros((5, 2), np.float32), 1.0)


def test_iou() -> None:
    assert iou(_face(0, 0).box, _face(0, 0).box) == 1.0
    assert iou(_face(0, 0).box, _face(0, 200).box) == 0.0
    assert abs(iou(_face(0, 0).box, _face(0, 50).box) - 1 / 3) < 1e-9


def test_tracker_one_track_per_presence() -> None:
    tr = Tracker(iou_match=0.3, max_missing=2)
    ids = []
    for i in range(10):  # one face drifting slowly, plus a second one appearing at frame 5
        faces = [_face(50, 100 + 5 * i)] + ([_face(50, 400)] if i >= 5 else [])
        assigned, ended = tr.update(faces, i, i / 10)
        assert not ended
        ids.append(sorted(t.id for t, _ in assigned))
    assert ids[0] == [1] and ids[-1] == [1, 2]
    # both leave: tracks end after max_missing empty frames, once each
    ended_all = []
    for i in range(10, 15):
        _, ended = tr.update([], i, i / 10)
        ended_all += [t.id for t in ended]
    assert sorted(ended_all) == [1, 2]
    assert len(tr.tracks) == 0


def test_tracker_keeps_track_through_a_short_gap_and_fast_move() -> None:
    tr = Tracker(iou_match=0.3, max_missing=3)
    tr.update([_face(50, 100)], 0, 0.0)
    tr.update([], 1, 0.1)  # detector missed a frame
    assigned, _ = tr.update([_face(50, 150)], 2, 0.2)  # moved half a face width: low IoU, close centre
    assert assigned[0][0].id == 1 and len(assigned[0][0].observations) == 2
    assigned, _ = tr.update([_face(50, 500)], 3, 0.3)  # far away: somebody else
    assert assigned[0][0].id == 2
