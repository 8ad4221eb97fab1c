"""Vectorised 1:N matcher.

The gallery holds every enrolled template L2-normalised in one float32 matrix, grouped by senior.
Matching a batch of probes is one matrix product; each senior's score is the best of that senior's
templates, and each probe gets its best and second-best *senior* (not template), because the
best-versus-second-best margin between different people is what the decision policy needs.

Distances are Euclidean between L2-normalised descriptors: d = sqrt(2 - 2 cos), in [0, 2].

The product runs on one BLAS thread (`similarities`; set once for the process). Measured with
bench/bench_match.py (issue 15): for a
batch of 5 probes numpy calls sgemm, and OpenBLAS spreads even a 5 x 1,000 x 128 product over its threads;
on a busy 2-core kiosk (the embedder's threads, the camera) waking them cost 5-30 ms for 0.1 ms of work,
slower than face_distance. A single probe is a gemv and was never affected. One thread is as fast or faster
at every gallery size measured, up to 100,000 templates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from threadpoolctl import ThreadpoolController

from edge.recognition.embed.base import EMBEDDING_DIM

_BLAS_LOCK = threading.Lock()
_blas_limited: object = None


def _one_blas_thread() -> None:
    """Numpy's BLAS on one thread, set once for the process and never switched back: switching it per call
    (a context manager) races when two threads match at once (the gallery reload thread and check-in), and
    OpenBLAS can deadlock when its thread count changes while another thread is inside it."""
    global _blas_limited
    if _blas_limited is None:
        with _BLAS_LOCK:
            if _blas_limited is None:
                _blas_limited = ThreadpoolController().limit(limits=1, user_api="blas")


def similarities(probes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float32 [n, R]: probes [n, d] times matrix [R, d] transposed, as ONE product on one BLAS thread."""
    _one_blas_thread()
    return probes @ matrix.T


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Candidate:
    senior_id: str | None
    distance: float
    second_id: str | None
    second_distance: float

    @property
    def margin(self) -> float:
        return self.second_distance - self.distance


@dataclass(frozen=True, eq=False)
class Gallery:
    """Immutable: enrolment builds a new gallery and the pipeline swaps the reference atomically."""

    senior_ids: tuple[str, ...]
    #: float32 [T, 128], L2-normalised, rows grouped by senior (owner is non-decreasing)
    templates: np.ndarray
    #: int32 [T], index into senior_ids
    owner: np.ndarray
    model_id: str = ""

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, np.ndarray]], model_id: str = "") -> Gallery:
        by_senior: dict[str, list[np.ndarray]] = {}
        for sid, emb in pairs:
            by_senior.setdefault(sid, []).append(np.asarray(emb, np.float32).reshape(EMBEDDING_DIM))
        ids = tuple(sorted(by_senior))
        if not ids:
            return cls.empty(model_id)
        rows = [e for sid in ids for e in by_senior[sid]]
        owner = np.array([i for i, sid in enumerate(ids) for _ in by_senior[sid]], dtype=np.int32)
        return cls(ids, normalise(np.stack(rows)), owner, model_id)

    @classmethod
    def empty(cls, model_id: str = "") -> Gallery:
        return cls((), np.zeros((0, EMBEDDING_DIM), np.float32), np.zeros(0, np.int32), model_id)

    def __len__(self) -> int:
        return len(self.senior_ids)

    @property
    def n_templates(self) -> int:
        return int(self.templates.shape[0])

    def without(self, senior_id: str) -> Gallery:
        if senior_id not in self.senior_ids:
            return self
        return self._keep([i for i, s in enumerate(self.senior_ids) if s != senior_id])

    def only(self, senior_ids: Iterable[str]) -> Gallery:
        """The gallery of these seniors alone (their templates, in this gallery's order)."""
        want = set(senior_ids)
        return self._keep([i for i, s in enumerate(self.senior_ids) if s in want])

    def _keep(self, keep: list[int]) -> Gallery:
        rows = np.isin(self.owner, keep)
        remap = np.full(len(self.senior_ids), -1, np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        return Gallery(
            tuple(self.senior_ids[i] for i in keep), self.templates[rows], remap[self.owner[rows]], self.model_id
        )

    @cached_property
    def starts(self) -> np.ndarray:
        """int [S]: the first template row of each senior (computed once per gallery, not per match)."""
        return np.flatnonzero(np.r_[True, self.owner[1:] != self.owner[:-1]])

    def senior_distances(self, probes: np.ndarray) -> np.ndarray:
        """float32 [n, S]: for each probe, the distance to each senior's nearest template."""
        sims = similarities(normalise(np.atleast_2d(probes)), self.templates)  # [n, T]
        best = np.maximum.reduceat(sims, self.starts, axis=1)  # [n, S]
        np.multiply(best, -2.0, out=best)
        np.add(best, 2.0, out=best)
        return np.sqrt(np.clip(best, 0.0, 4.0, out=best), out=best)


def match(gallery: Gallery, probes: np.ndarray) -> list[Candidate]:
    """Best and second-best senior for each probe row of float32 [n, 128]."""
    probes = np.atleast_2d(np.asarray(probes, np.float32))
    n = probes.shape[0]
    if len(gallery) == 0:
        return [Candidate(None, 2.0, None, 2.0) for _ in range(n)]
    d = gallery.senior_distances(probes)
    if d.shape[1] == 1:
        return [Candidate(gallery.senior_ids[0], float(d[i, 0]), None, 2.0) for i in range(n)]
    top2 = np.argpartition(d, 1, axis=1)[:, :2]
    rows = np.arange(n)[:, None]
    top2 = np.take_along_axis(top2, np.argsort(d[rows, top2], axis=1), axis=1)
    return [
        Candidate(
            gallery.senior_ids[top2[i, 0]],
            float(d[i, top2[i, 0]]),
            gallery.senior_ids[top2[i, 1]],
            float(d[i, top2[i, 1]]),
        )
        for i in range(n)
    ]
