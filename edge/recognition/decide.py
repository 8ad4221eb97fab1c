"""The 1:N decision for one presence: accept a senior, ask staff to confirm a candidate, or unknown.

Why not one distance threshold: with hundreds of enrolled seniors a never-enrolled visitor is
usually *somebody's* near neighbour, and "first match under 0.6" picks whichever senior happens to
come first. The policy therefore looks at

* the fused probe: the k frames of one track are L2-normalised, averaged and renormalised. A fused
  probe is less noisy but also sits closer to every face, so every threshold is calibrated per
  frame count (`FrameThresholds`), never shared between k=1 and k=3;
* the best senior's distance (each senior scored by the nearest of their templates);
* the margin to the second-best *senior* (a lookalike in the gallery makes a close match
  untrustworthy), raised per pair for known lookalikes (siblings, twins) found at enrolment;
* agreement: the fraction of frames whose own nearest senior is the fused best (a tracker swap or
  a bad frame shows up here);

and has a third outcome, `confirm`: the kiosk shows the candidate's name and a member of staff (or
the senior) confirms. Accepting needs all of: close, clear margin, frames agree. Anything less
good but still plausible goes to staff; the rest is unknown.

Thresholds live in models/calibration.toml, written by `meal-edge calibrate` and keyed by the
model_id, so a model change cannot silently keep old thresholds (edge/recognition/calibration.py reads them).
Distances are Euclidean between L2-normalised descriptors (edge.recognition.match), in [0, 2].
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge.recognition.embed.base import EMBEDDING_DIM
from edge.recognition.match import Gallery, normalise, similarities

log = logging.getLogger(__name__)

Outcome = Literal["accept", "confirm", "unknown"]
#: agreement is a fraction j/k stored rounded (0.6667 for 2 of 3): compare with this slack
AGREEMENT_TOLERANCE = 1e-3


class CalibrationError(ValueError):
    """Missing, unreadable or mismatched calibration, phrased for the operator."""


@dataclass(frozen=True)
class FrameThresholds:
    """Thresholds for probes fused from exactly `frames` frames (fused probes sit closer to everyone)."""

    frames: int
    accept_distance: float
    min_margin: float
    confirm_distance: float
    confirm_margin: float
    #: fraction of frames whose own nearest senior must be the fused best, to accept
    min_agreement: float = 1.0


@dataclass(frozen=True)
class Policy:
    """Thresholds on the normalised-distance scale. The top-level values apply to frame counts without
    their own row in `per_frames`; probes with more frames than the largest calibrated count use only
    the most recent `max_frames` frames, so they are never judged by thresholds made for fewer."""

    accept_distance: float
    confirm_distance: float
    min_margin: float
    confirm_margin: float
    model_id: str
    min_agreement: float = 1.0
    per_frames: tuple[FrameThresholds, ...] = ()
    #: enrolment flags another senior as a lookalike when their templates are this close
    lookalike_distance: float = 0.40
    #: the margin a flagged pair needs before the kiosk accepts one of them without staff
    lookalike_margin: float = 0.12
    #: how a senior is scored from their templates: similarity = w * (nearest template) + (1 - w) *
    #: (centroid of all their templates). The centroid averages enrolment noise away as fusion does
    #: for frames; the nearest template keeps a senior recognisable when one photo differs (glasses).
    template_weight: float = 0.5
    #: where these thresholds came from (calibration file path, or "default")
    source: str = "default"

    def __post_init__(self) -> None:
        if not (0 <= self.accept_distance <= self.confirm_distance <= 2):
            raise CalibrationError("need 0 <= accept_distance <= confirm_distance <= 2")
        if not (0 <= self.confirm_margin <= self.min_margin):
            raise CalibrationError("need 0 <= confirm_margin <= min_margin")
        for t in self.per_frames:
            if t.frames < 1 or not (0 <= t.accept_distance <= t.confirm_distance <= 2):
                raise CalibrationError(f"frames={t.frames}: need 0 <= accept_distance <= confirm_distance <= 2")
            if not (0 <= t.confirm_margin <= t.min_margin):
                raise CalibrationError(f"frames={t.frames}: need 0 <= confirm_margin <= min_margin")
        if not 0 <= self.template_weight <= 1:
            raise CalibrationError("template_weight must be between 0 and 1")
        ks = [t.frames for t in self.per_frames]
        if ks != sorted(set(ks)):
            raise CalibrationError("per-frame thresholds must have distinct frame counts in increasing order")

    @property
    def max_frames(self) -> int | None:
        return self.per_frames[-1].frames if self.per_frames else None

    def thresholds(self, frames: int) -> FrameThresholds:
        for t in self.per_frames:
            if t.frames == frames:
                return t
        return FrameThresholds(
            frames,
            self.accept_distance,
            self.min_margin,
            self.confirm_distance,
            self.confirm_margin,
            self.min_agreement,
        )


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    #: the accepted senior, or the candidate staff must confirm; None when unknown
    senior_id: str | None
    #: distance of the fused probe to the best senior
    distance: float
    #: second-best senior's distance minus the best's (2.0 with a one-senior gallery)
    margin: float
    frames: int
    #: why it is not a plain accept, e.g. ("ambiguous_margin",); empty for a clean accept
    reasons: tuple[str, ...] = ()
    #: the best senior even when the outcome is unknown (for logs and evaluation, never for paying)
    best_id: str | None = None
    second_id: str | None = None
    agreement: float = 1.0


@dataclass(frozen=True)
class Features:
    """What the policy looks at for one probe; evaluation sweeps thresholds over these."""

    best: int  # index into gallery.senior_ids, -1 for an empty gallery
    second: int
    distance: float
    margin: float
    agreement: float
    frames: int
    #: float32 [S]: fused probe's distance to each senior
    senior_distances: np.ndarray = field(repr=False)


def fuse(embeddings: np.ndarray) -> np.ndarray:
    """float32 [k,128] raw descriptors -> one L2-normalised [128] probe (mean of normalised frames)."""
    e = normalise(np.atleast_2d(np.asarray(embeddings, np.float32)))
    return normalise(e.mean(axis=0))


def _check(embeddings: np.ndarray) -> np.ndarray:
    e = np.atleast_2d(np.asarray(embeddings, np.float32))
    if e.ndim != 2 or e.shape[1] != EMBEDDING_DIM or e.shape[0] < 1:
        raise ValueError(f"embeddings must be float32 [k>=1, {EMBEDDING_DIM}], got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings contain NaN or infinity")
    return e


_SCORED: weakref.WeakKeyDictionary[Gallery, np.ndarray] = weakref.WeakKeyDictionary()


def centroids(gallery: Gallery) -> np.ndarray:
    """float32 [S,128]: each senior's templates averaged and renormalised (cached per gallery object)."""
    return _templates_and_centroids(gallery)[gallery.n_templates :]


def _templates_and_centroids(gallery: Gallery) -> np.ndarray:
    """float32 [T+S,128]: the templates, then each senior's centroid: what a probe is scored against, in one
    matrix so that scoring is one product (cached per gallery object)."""
    m = _SCORED.get(gallery)
    if m is None:
        c = normalise(np.add.reduceat(gallery.templates, gallery.starts, axis=0))
        m = np.ascontiguousarray(np.vstack([gallery.templates, c]))
        _SCORED[gallery] = m
    return m


def senior_distances(gallery: Gallery, probes: np.ndarray, template_weight: float) -> np.ndarray:
    """float64 [n,S] on the distance scale sqrt(2 - 2 s), s blending nearest-template and centroid cosine."""
    p = normalise(np.atleast_2d(probes))
    if template_weight >= 1:
        return gallery.senior_distances(p).astype(np.float64)
    t = gallery.n_templates
    sims = similarities(p, _templates_and_centroids(gallery))  # [n, T+S]: templates and centroids at once
    nearest = np.maximum.reduceat(sims[:, :t], gallery.starts, axis=1) if template_weight > 0 else 0.0
    s = template_weight * nearest + (1 - template_weight) * sims[:, t:]
    return np.sqrt(np.clip(2.0 - 2.0 * s.astype(np.float64), 0.0, 4.0))


def features(
    gallery: Gallery, embeddings: np.ndarray, max_frames: int | None = None, template_weight: float = 0.5
) -> Features:
    e = _check(embeddings)
    if max_frames is not None and len(e) > max_frames:
        e = e[-max_frames:]
    k = len(e)
    if len(gallery) == 0:
        return Features(-1, -1, 2.0, 0.0, 0.0, k, np.zeros(0, np.float32))
    frames_and_fused = np.vstack([normalise(e), fuse(e)[None]])
    d = senior_distances(gallery, frames_and_fused, template_weight)  # [k+1, S]
    fused = d[-1]
    order = np.argsort(fused, kind="stable")
    best = int(order[0])
    if len(order) > 1:
        second = int(order[1])
        margin = float(fused[second] - fused[best])
    else:
        second, margin = -1, 2.0
    agreement = float(np.mean(np.argmin(d[:-1], axis=1) == best)) if k > 1 else 1.0
    return Features(best, second, float(fused[best]), margin, agreement, k, fused)


def verdict_from(
    gallery: Gallery,
    f: Features,
    policy: Policy,
    pair_margins: Mapping[frozenset[str], float] | None = None,
) -> Verdict:
    if f.best < 0:
        return Verdict("unknown", None, 2.0, 0.0, f.frames, ("empty_gallery",))
    t = policy.thresholds(f.frames)
    best_id = gallery.senior_ids[f.best]
    second_id = gallery.senior_ids[f.second] if f.second >= 0 else None

    def out(outcome: Outcome, reasons: tuple[str, ...]) -> Verdict:
        return Verdict(
            outcome,
            best_id if outcome != "unknown" else None,
            f.distance,
            f.margin,
            f.frames,
            reasons,
            best_id,
            second_id,
            f.agreement,
        )

    if f.distance > t.confirm_distance:
        return out("unknown", ("no_close_match",))
    if f.margin < t.confirm_margin:
        return out("unknown", ("ambiguous_margin",))

    reasons: list[str] = []
    if f.distance > t.accept_distance:
        reasons.append("not_close_enough")
    if f.margin < t.min_margin:
        reasons.append("ambiguous_margin")
    if f.agreement < t.min_agreement - AGREEMENT_TOLERANCE:
        reasons.append("frames_disagree")
    if pair_margins:
        for pair, needed in pair_margins.items():
            if best_id not in pair or len(pair) != 2:
                continue
            (other,) = pair - {best_id}
            try:
                j = gallery.senior_ids.index(other)
            except ValueError:
                continue
            if f.senior_distances[j] - f.distance < max(needed, t.min_margin):
                reasons.append("lookalike_margin")
                break
    return out("confirm" if reasons else "accept", tuple(reasons))


def decide(
    gallery: Gallery,
    embeddings: np.ndarray,
    policy: Policy,
    pair_margins: Mapping[frozenset[str], float] | None = None,
) -> Verdict:
    """One decision for one presence. embeddings: float32 [k,128] raw descriptors of k frames of one track."""
    if gallery.model_id and policy.model_id and gallery.model_id != policy.model_id:
        raise CalibrationError(
            f"gallery templates were made with model {gallery.model_id!r} but the thresholds were "
            f"calibrated for {policy.model_id!r}; re-enrol or re-calibrate"
        )
    f = features(gallery, embeddings, policy.max_frames, policy.template_weight)
    return verdict_from(gallery, f, policy, pair_margins)


def decide_sequential(
    gallery: Gallery,
    embeddings: np.ndarray,
    policy: Policy,
    pair_margins: Mapping[frozenset[str], float] | None = None,
    *,
    min_frames: int = 3,
    max_frames: int = 5,
) -> Verdict | None:
    """The kiosk's decision as a track's frames arrive (Pipeline.decide_track): decide on the first
    `min_frames`, and while that is not an accept, again with each further frame up to `max_frames`; the
    first accept stands, else the last verdict. None when there are fewer than `min_frames` frames (the
    kiosk does not decide on so little).

    Each look is one more chance for a stranger to be accepted, so the never-enrolled rate of this rule is
    higher than that of any single frame count: `meal-edge eval --kiosk` and `calibrate --measure` measure it.
    """
    e = _check(embeddings)
    if len(e) < min_frames:
        return None
    v: Verdict | None = None
    for k in range(min_frames, min(len(e), max_frames) + 1):
        v = decide(gallery, e[:k], policy, pair_margins)
        if v.outcome == "accept":
            return v
    return v


def lookalikes(gallery: Gallery, senior_id: str, embeddings: np.ndarray, policy: Policy) -> list[tuple[str, float]]:
    """Other seniors whose templates sit within policy.lookalike_distance of these enrolment embeddings.

    Returns (senior_id, distance of the closest new photo to that senior), closest first. Enrolment warns staff
    and stores pair_margins[frozenset({senior_id, other})] = policy.lookalike_margin, so the kiosk
    asks staff to confirm unless one of the pair is clearly nearer.
    """
    e = _check(embeddings)
    others = gallery.without(senior_id)
    if len(others) == 0:
        return []
    # each new photo scored against the others as the kiosk would score a single frame of this senior
    d = senior_distances(others, e, policy.template_weight).min(axis=0)
    close = np.flatnonzero(d <= policy.lookalike_distance)
    return sorted(((others.senior_ids[i], float(d[i])) for i in close), key=lambda x: (x[1], x[0]))


def lookalike_pairs(gallery: Gallery, policy: Policy, chunk: int = 2048) -> dict[frozenset[str], float]:
    """Every pair of enrolled seniors that `lookalikes` would flag, with the margin the pair needs.

    Computed from the gallery itself whenever it is loaded, so enrolment warnings and kiosk decisions
    follow one rule and nothing has to be stored or kept in step. Each template is scored as a
    single-frame probe against every other senior (one matrix product per chunk of templates).
    """
    pairs: dict[frozenset[str], float] = {}
    if len(gallery) < 2:
        return pairs
    ids = gallery.senior_ids
    for start in range(0, gallery.n_templates, chunk):
        own = gallery.owner[start : start + chunk]
        d = senior_distances(gallery, gallery.templates[start : start + chunk], policy.template_weight)
        d[np.arange(len(own)), own] = np.inf
        rows, cols = np.nonzero(d <= policy.lookalike_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            pairs[frozenset((ids[own[r]], ids[c]))] = policy.lookalike_margin
    return pairs


def lookalike_pairs_touching(
    gallery: Gallery, policy: Policy, changed: Collection[str], chunk: int = 2048
) -> dict[frozenset[str], float]:
    """The pairs `lookalike_pairs` finds that involve a senior of `changed`, at O(changed x all) instead of
    O(all x all): after a district roster change the daemon keeps the other pairs and adds these (edge/app.py)."""
    pairs: dict[frozenset[str], float] = {}
    ids = gallery.senior_ids
    mine = [i for i, sid in enumerate(ids) if sid in changed]
    if len(gallery) < 2 or not mine:
        return pairs
    # the changed seniors' templates as probes against everyone ...
    rows = np.flatnonzero(np.isin(gallery.owner, mine))
    for start in range(0, len(rows), chunk):
        sel = rows[start : start + chunk]
        own = gallery.owner[sel]
        d = senior_distances(gallery, gallery.templates[sel], policy.template_weight)
        d[np.arange(len(own)), own] = np.inf
        for r, c in zip(*np.nonzero(d <= policy.lookalike_distance), strict=True):
            pairs[frozenset((ids[own[r]], ids[c]))] = policy.lookalike_margin
    # ... and everyone's templates as probes against the changed seniors only
    sub = gallery.only(ids[i] for i in mine)
    for start in range(0, gallery.n_templates, chunk):
        own = gallery.owner[start : start + chunk]
        d = senior_distances(sub, gallery.templates[start : start + chunk], policy.template_weight)
        d[own[:, None] == np.array(mine)[None, :]] = np.inf
        for r, c in zip(*np.nonzero(d <= policy.lookalike_distance), strict=True):
            pairs[frozenset((ids[own[r]], sub.senior_ids[c]))] = policy.lookalike_margin
    return pairs


#: face_recognition's default tolerance 0.6 on raw dlib descriptors (norm ~1.37) is ~0.44 normalised
REFERENCE_TOLERANCE = 0.44


def tolerance_policy(model_id: str = "", distance: float = REFERENCE_TOLERANCE) -> Policy:
    """One fixed threshold, no margin, no agreement: what face_recognition's examples do. For side-by-side
    comparisons (bench/, tests) only; on LFW it accepts most never-enrolled people (docs/accuracy.md)."""
    return Policy(
        accept_distance=distance,
        confirm_distance=distance,
        min_margin=0.0,
        confirm_margin=0.0,
        model_id=model_id,
        min_agreement=0.0,
        lookalike_distance=0.0,
        lookalike_margin=0.0,
        template_weight=1.0,
        source=f"fixed tolerance {distance}",
    )


def default_policy(model_id: str = "") -> Policy:
    """Conservative hand-set thresholds for tests and for a model that has not been calibrated yet;
    the daemon uses load_policy()."""
    return Policy(
        accept_distance=0.40,
        confirm_distance=0.50,
        min_margin=0.08,
        confirm_margin=0.03,
        model_id=model_id,
        per_frames=(
            FrameThresholds(1, 0.40, 0.08, 0.50, 0.03, 1.0),
            FrameThresholds(2, 0.38, 0.08, 0.48, 0.03, 1.0),
            FrameThresholds(3, 0.36, 0.08, 0.46, 0.03, 1.0),
        ),
        lookalike_distance=0.40,
        lookalike_margin=0.12,
        source="default",
    )
