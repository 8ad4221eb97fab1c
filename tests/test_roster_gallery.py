"""The daemon's gallery after a district roster change (edge.recognition.enrolled.GalleryHolder.poke): rebuilt for
the changed seniors only, it must be exactly the gallery (and the lookalike pairs) a full reload gives."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from roster_scripted import ScriptedDistrict, embedding

from edge.recognition.decide import default_policy, lookalike_pairs, lookalike_pairs_touching
from edge.recognition.enrolled import GalleryHolder
from edge.recognition.match import Gallery
from edge.store import Store

M = "model-a"
C, K = "centre-001", "kiosk-1"


def _near(v: np.ndarray, seed: int, eps: float = 0.05) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(v.shape).astype(np.float32)
    w = v + eps * n / np.linalg.norm(n)
    return w / np.linalg.norm(w)


def _same(a: GalleryHolder, b: GalleryHolder) -> None:
    ga, gb = a.current.gallery, b.current.gallery
    assert ga.senior_ids == gb.senior_ids
    assert np.array_equal(ga.owner, gb.owner)
    for i in range(len(ga)):  # the same templates per senior (order within a senior may differ)
        ta = sorted(map(tuple, np.round(ga.templates[ga.owner == i], 5)))
        tb = sorted(map(tuple, np.round(gb.templates[gb.owner == i], 5)))
        assert ta == tb, ga.senior_ids[i]
    assert a.current.pair_margins == b.current.pair_margins


def test_pairs_touching_are_the_full_pairs_that_involve_the_changed() -> None:
    pol = default_policy(M)
    base = [embedding(i) for i in range(40)]
    pairs = [(f"S{i:02d}", e) for i, e in enumerate(base)] + [(f"S{i:02d}", _near(base[i], i)) for i in range(40)]
    pairs += [("T00", _near(base[3], 100, 0.3)), ("T01", _near(base[7], 101, 0.3)), ("T01", embedding(500))]
    g = Gallery.from_pairs(pairs, M)
    full = lookalike_pairs(g, pol)
    assert full, "the test gallery has lookalikes"
    for changed in ({"T00"}, {"T01", "S05"}, {"S03", "S07", "T00"}):
        want = {p: m for p, m in full.items() if p & changed}
        assert lookalike_pairs_touching(g, pol, changed) == want, changed


def test_a_poked_gallery_equals_a_full_reload(tmp_path: Path) -> None:
    d = ScriptedDistrict(model_id=M)
    for i in range(60):
        d.put(f"S{i:03d}", embeddings=[embedding(i), _near(embedding(i), 1000 + i)])
    with Store(tmp_path / "k.sqlite") as store:
        store.apply_roster_batch(d.batch(C, K, d.changes_since(0, C, M), 0), d.tkey, M)
        holder = GalleryHolder(store, default_policy(M), check_every=3600)
        v = d.version
        # a lookalike of S010 arrives, S020 gets a template, S030 is removed
        d.put("L001", embeddings=[_near(embedding(10), 77, 0.3)])
        d.put("S020", embeddings=[embedding(999)])
        d.remove("S030")
        r = store.apply_roster_batch(d.batch(C, K, d.changes_since(v, C, M), v), d.tkey, M)
        assert r.seniors == {"L001", "S020", "S030"}
        holder.poke(r.seniors)
        t0 = time.monotonic()
        while "L001" not in holder.current.gallery.senior_ids and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        while holder._reloading.locked():
            time.sleep(0.01)
        assert "S030" not in holder.current.gallery.senior_ids
        assert any("L001" in p for p in holder.current.pair_margins)
        _same(holder, GalleryHolder(store, default_policy(M)))
