"""Error-rate arithmetic and per-probe feature tables shared by `meal-edge eval` and `meal-edge calibrate`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.lab.faceset import FaceSet
from edge.recognition.decide import (
    Verdict,
    fuse,
    senior_distances,
)
from edge.recognition.match import Gallery, normalise


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for k events in n trials ((0, 1) when n == 0)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    out: dict[str, Any] = {"count": k, "n": n, "rate": (k / n) if n else 0.0, "ci95": [lo, hi]}
    if k == 0 and n > 0:
        out["rule_of_three_upper"] = min(1.0, 3.0 / n)
    return out


@dataclass(frozen=True)
class Probe:
    #: the enrolled identity, or None for a never-enrolled person
    truth: str | None
    #: float32 [k, 128] raw descriptors
    embeddings: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.embeddings.shape[0])


def tally(probes: Sequence[Probe], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Counts and rates for a list of (probe, verdict) pairs, enrolled and never-enrolled separately."""
    c: Counter[str] = Counter()
    for p, v in zip(probes, verdicts, strict=True):
        if p.truth is not None:
            c["genuine"] += 1
            if v.outcome == "accept":
                c["correct" if v.senior_id == p.truth else "wrong"] += 1
            elif v.outcome == "confirm":
                c["confirm"] += 1
                c["confirm_right" if v.senior_id == p.truth else "confirm_wrong_candidate"] += 1
            else:
                c["rejected"] += 1
        else:
            c["impostor"] += 1
            if v.outcome == "accept":
                c["impostor_accept"] += 1
            elif v.outcome == "confirm":
                c["impostor_confirm"] += 1
            else:
                c["impostor_unknown"] += 1
    g, i = c["genuine"], c["impostor"]
    frames = Counter(p.frames for p in probes if p.truth is not None)
    return {
        "correct_rate": c["correct"] / g if g else 0.0,
        "wrong_rate": c["wrong"] / g if g else 0.0,
        "rejected_rate": c["rejected"] / g if g else 0.0,
        "confirm_rate": c["confirm"] / g if g else 0.0,
        # the senior is fed without being turned away: accepted correctly, or the right name shown to staff
        "served_rate": (c["correct"] + c["confirm_right"]) / g if g else 0.0,
        "impostor_accept_rate": c["impostor_accept"] / i if i else 0.0,
        "impostor_confirm_rate": c["impostor_confirm"] / i if i else 0.0,
        "counts": {
            k: c[k]
            for k in (
                "genuine",
                "correct",
                "wrong",
                "confirm",
                "confirm_right",
                "confirm_wrong_candidate",
                "rejected",
                "impostor",
                "impostor_accept",
                "impostor_confirm",
                "impostor_unknown",
            )
        },
        "intervals": {
            "correct": rate(c["correct"], g),
            "wrong": rate(c["wrong"], g),
            "rejected": rate(c["rejected"], g),
            "confirm": rate(c["confirm"], g),
            "served": rate(c["correct"] + c["confirm_right"], g),
            "impostor_accept": rate(c["impostor_accept"], i),
            "impostor_confirm": rate(c["impostor_confirm"], i),
        },
        "genuine_probes_by_frames": {str(k): frames[k] for k in sorted(frames)},
    }


@dataclass(frozen=True)
class FeatureTable:
    """Vectorised decide.features for many probes, for threshold sweeps and calibration."""

    distance: np.ndarray  # float [n] fused probe to best senior
    margin: np.ndarray  # float [n]
    agreement: np.ndarray  # float [n]
    frames: np.ndarray  # int [n]
    best_correct: np.ndarray  # bool [n] best senior is the probe's own identity
    genuine: np.ndarray  # bool [n] probe's identity is enrolled

    def __len__(self) -> int:
        return int(self.distance.shape[0])

    @staticmethod
    def concat(tables: Sequence[FeatureTable]) -> FeatureTable:
        return FeatureTable(*(np.concatenate([getattr(t, f) for t in tables]) for f in FeatureTable._fields()))

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("distance", "margin", "agreement", "frames", "best_correct", "genuine")

    def select(self, mask: np.ndarray) -> FeatureTable:
        return FeatureTable(*(getattr(self, f)[mask] for f in self._fields()))


def feature_table(
    gallery: Gallery,
    probes: Sequence[Probe],
    template_weight: float,
    exclude_own: bool = False,
    chunk: int = 2048,
) -> FeatureTable:
    """Same numbers as decide.features for each probe (fused mean of normalised frames, nearest template
    per senior, best vs second senior, frame agreement). With exclude_own, the probe's own identity is
    masked out of the gallery (leave-one-out impostor trials for calibration)."""
    n = len(probes)
    ids = {s: i for i, s in enumerate(gallery.senior_ids)}
    out_d = np.empty(n)
    out_m = np.empty(n)
    out_a = np.empty(n)
    out_k = np.empty(n, np.int64)
    out_c = np.zeros(n, bool)
    out_g = np.zeros(n, bool)
    for s in range(0, n, chunk):
        part = probes[s : s + chunk]
        fused = np.stack([fuse(p.embeddings) for p in part])
        frames = np.concatenate([normalise(p.embeddings) for p in part])
        owner = np.repeat(np.arange(len(part)), [p.frames for p in part])
        df = senior_distances(gallery, fused, template_weight)  # [m, S]
        dk = senior_distances(gallery, frames, template_weight)  # [sum k, S]
        own = np.array([ids.get(p.truth, -1) if p.truth is not None else -1 for p in part])
        if exclude_own:
            rows = np.flatnonzero(own >= 0)
            df[rows, own[rows]] = np.inf
            dk[np.isin(owner, rows), own[owner[np.isin(owner, rows)]]] = np.inf
        order = np.argsort(df, axis=1, kind="stable")
        best = order[:, 0]
        r = np.arange(len(part))
        d1 = df[r, best]
        d2 = df[r, order[:, 1]] if df.shape[1] > 1 else np.full(len(part), d1 + 2.0)
        frame_best = np.argmin(dk, axis=1)
        agree = np.bincount(owner, weights=(frame_best == best[owner]), minlength=len(part))
        k = np.array([p.frames for p in part])
        out_d[s : s + chunk] = d1
        out_m[s : s + chunk] = np.where(np.isfinite(d2), d2 - d1, 2.0)
        out_a[s : s + chunk] = np.where(k > 1, agree / k, 1.0)
        out_k[s : s + chunk] = k
        genuine = (own >= 0) & (not exclude_own)
        out_g[s : s + chunk] = genuine
        out_c[s : s + chunk] = genuine & (best == own)
    return FeatureTable(out_d, out_m, out_a, out_k, out_c, out_g)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def calibration_tables(
    fs: FaceSet, photos_per_person: int, max_frames: int, rounds: int, seed: int, template_weight: float
) -> dict[int, tuple[FeatureTable, FeatureTable]]:
    """k -> (enrolled trials, never-enrolled trials)."""
    gen: dict[int, list[FeatureTable]] = {k: [] for k in range(1, max_frames + 1)}
    imp: dict[int, list[FeatureTable]] = {k: [] for k in range(1, max_frames + 1)}
    for r in range(rounds):
        rng = np.random.default_rng([seed, r])
        pairs: list[tuple[str, np.ndarray]] = []
        shuffled: dict[str, np.ndarray] = {}
        for n in fs.identities:
            e = fs.embeddings[n][rng.permutation(len(fs.embeddings[n]))]
            shuffled[n] = e
            pairs.extend((n, x) for x in e[:photos_per_person])
        gallery = Gallery.from_pairs(pairs, model_id=fs.model_id)
        for k in range(1, max_frames + 1):
            g_probes: list[Probe] = []
            i_probes: list[Probe] = []
            for n, e in shuffled.items():
                rest = e[photos_per_person:]
                g_probes.extend(Probe(n, rest[j : j + k]) for j in range(0, len(rest) - k + 1, k))
                i_probes.extend(Probe(n, e[j : j + k]) for j in range(0, len(e) - k + 1, k))
            if g_probes:
                gen[k].append(feature_table(gallery, g_probes, template_weight))
            if i_probes:
                imp[k].append(feature_table(gallery, i_probes, template_weight, exclude_own=True))
    return {k: (FeatureTable.concat(gen[k]), FeatureTable.concat(imp[k])) for k in gen if gen[k] and imp[k]}
