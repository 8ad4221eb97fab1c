"""Issue 15, defect 8: the matcher does one matrix product per batch, on one BLAS thread, and its answers
are unchanged (bench/bench_match.py shows the speed; this shows what is computed)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from edge.recognition import decide, match
from edge.recognition.match import Gallery, normalise


def gallery(n_seniors: int = 50, per: int = 3, seed: int = 0) -> Gallery:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_seniors * per, 128)).astype(np.float32)
    return Gallery.from_pairs((f"S{i // per:04d}", e) for i, e in enumerate(emb))


def test_scoring_a_batch_is_one_product_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    g = gallery()
    probes = np.random.default_rng(1).normal(size=(5, 128)).astype(np.float32)
    calls: list[tuple[int, ...]] = []
    real = match.similarities

    def counted(p: np.ndarray, m: np.ndarray) -> np.ndarray:
        calls.append(m.shape)
        return real(p, m)

    monkeypatch.setattr(match, "similarities", counted)
    monkeypatch.setattr(decide, "similarities", counted)
    d = decide.senior_distances(g, probes, template_weight=0.5)  # the kiosk's scoring: templates and centroids
    assert calls == [(g.n_templates + len(g), 128)], calls
    calls.clear()
    match.match(g, probes)
    assert calls == [(g.n_templates, 128)], calls

    # the same numbers as the plain formulas
    p = normalise(probes)
    t = p @ g.templates.T
    nearest = np.stack([t[:, g.owner == s].max(axis=1) for s in range(len(g))], axis=1)
    cent = normalise(np.stack([g.templates[g.owner == s].mean(axis=0) for s in range(len(g))]))
    want = np.sqrt(np.clip(2 - 2 * (0.5 * nearest + 0.5 * (p @ cent.T)), 0, 4))
    np.testing.assert_allclose(d, want, atol=1e-5)
    np.testing.assert_allclose(g.senior_distances(probes), np.sqrt(np.clip(2 - 2 * nearest, 0, 4)), atol=1e-5)


def test_the_product_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_matmul = np.ndarray.__matmul__

    class Probe(np.ndarray):
        def __matmul__(self, other: np.ndarray) -> np.ndarray:  # type: ignore[override]
            # numpy's own BLAS (scipy or onnxruntime may load another one, which numpy's @ does not use)
            blas = [i for i in threadpool_info() if i["user_api"] == "blas" and "numpy" in i["filepath"]]
            seen.extend(i["num_threads"] for i in blas)
            return real_matmul(np.asarray(self), other)

    g = gallery()
    match.similarities(np.ones((5, 128), np.float32).view(Probe), g.templates)
    assert seen == [1]
