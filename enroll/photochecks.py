"""The checks enrolment runs over a senior's photos once they are embedded (enroll/service.py runs them in order):
the same photo again, photos that do not show one person (each other and the senior's existing templates), a
person already enrolled under another id or resembling someone else, and room for more templates. Each takes the
candidates still in play, marks the photos it refuses on the EnrolResult, and returns the ones it keeps.

Distances follow `edge.recognition.match`: Euclidean between L2-normalised descriptors, d = sqrt(2 - 2 cos).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.meals.rules import Senior
from edge.recognition.decide import Policy as DecisionPolicy
from edge.recognition.decide import lookalikes, senior_distances
from edge.recognition.duplicates import Combine, DuplicateRule, duplicate_in
from edge.recognition.match import Gallery, normalise
from enroll.results import ALREADY_ENROLLED, CAPACITY, DISAGREES, DUPLICATE, LOOKALIKE, SAME_PHOTO, EnrolResult, Problem


@dataclass(frozen=True)
class EnrolPolicy:
    """Decision distances (normalised scale, see module doc), measured on LFW with the dlib model.

    Data: 474 LFW photos of 130 people (633 same-person pairs, 110,052 different-person pairs).
    1:1, the same-person threshold sits at 0.40-0.42: at 0.42, 97.9% of same-person pairs and 0.72% of
    different-person pairs fall below it (0.40: 95.7% / 0.30%); dlib's usual raw 0.6 corresponds to ~0.43.
    But the duplicate check is 1:N against every enrolled senior, so its false alarms add up: simulating a
    centre of 130 enrolled seniors (2 photos each) and a new enrolment of 1-2 photos per person,
    - at 0.42 a never-enrolled person would be refused as a "duplicate" 72% of the time, at 0.40 41%;
    - at 0.36: same person caught 98.5%, never-enrolled person refused 7.7% (estimated 40% at 500 seniors);
    - at 0.33: caught 93.8%, refused 0.8% (3% at 500).
    - duplicate_distance 0.36: enrolling someone twice is how one person could draw two subsidies, so we
      accept that about 1 new senior in 13 needs a staff check and --force in a 130-senior centre. dlib keeps
      this per-photo rule (duplicate_combine "any"); SFace, the default model, has the district-scale rule below.
    Lookalikes (siblings, twins) are warned about with the kiosk's own rule, `edge.recognition.decide.lookalikes`
    and the calibrated policy, so staff are told exactly when the kiosk will ask for confirmation.
    - agree_distance 0.46: a senior's own photos must each be this close to another of them; 99.0% of
      same-person pairs pass, 3.3% of different-person pairs would.
    - same_photo_distance 0.04: the same photo enrolled again (re-running an import) gives distance 0
      (dlib is deterministic); it is skipped instead of being stored twice.
    """

    duplicate_distance: float = 0.36
    agree_distance: float = 0.46
    same_photo_distance: float = 0.04
    max_templates: int = 5
    #: the duplicate rule (edge.recognition.duplicates): "any" photo to any template, or the "fused" photos to
    #: each senior's centroid, nearer than the second senior by duplicate_margin
    duplicate_combine: Combine = "any"
    duplicate_margin: float = 0.0

    @property
    def duplicate_rule(self) -> DuplicateRule:
        return DuplicateRule(self.duplicate_distance, self.duplicate_margin, self.duplicate_combine)


#: SFace (provisional, issue 10): its unit vectors spread one person's photos wider than dlib's, so every
#: distance is larger. Measured on 735 photos (YuNet landmarks, plain descriptors) of 200 identities of the
#: LFW calibration half (1,005 same-person and 268,740 different-person pairs):
#: - agree_distance 1.15: 98.8% of same-person pairs pass, 0.21% of different-person pairs would;
#: - same_photo_distance: SFace on onnxruntime is deterministic too (the same chip gives distance 0).
#: The duplicate check (issue 13: every kiosk holds the district's ~4,000 seniors x 3 templates), measured with
#: `meal-edge eval-dupcheck` (edge/lab/dupcheck.py; docs/accuracy.md "Duplicate check at district scale"):
#: galleries of G people x 3 templates, new seniors enrolling with 3 photos; chosen on the LFW calibration half +
#: rmfrd_chinese, figures below on the held-out half of LFW (438 never-enrolled people, 147 enrolled again with
#: 3 other photos, 10 repetitions; 4,000 extrapolated: larger of the measured trend and the pair model).
#: - the old rule, any photo within 1.05 of any template: never-enrolled people flagged 2.3% at 130 seniors,
#:   8.8% at 500, 15.5% at 923, about 52% at 4,000; re-enrolments caught 100%;
#: - fused (the 3 photos' mean) within 0.98 of a senior's centroid, nearer than the next senior by 0.15:
#:   flagged 0.1% at 130, 0.3% at 500 and 923, 0.9-1.2% at 4,000; caught 99.9% at every size. On the
#:   calibration set it catches as many as the old rule at 130 (98.3% both; rmfrd's made-up tight crops are the
#:   misses), but the margin costs catches as the gallery grows: 97.4% at 486 (rmfrd 79% vs the old 86.5%),
#:   modelled 96.8% at 4,000. Chinese seniors at district scale are not measured (docs/accuracy.md).
SFACE_ENROL_POLICY = EnrolPolicy(
    duplicate_distance=0.98,
    duplicate_margin=0.15,
    duplicate_combine="fused",
    agree_distance=1.15,
    same_photo_distance=0.04,
)


def enrol_policy_for(model_id: str) -> EnrolPolicy:
    """The enrolment distances of the model the embedder runs (they are on each model's own scale)."""
    return SFACE_ENROL_POLICY if model_id.startswith("face_recognition_sface") else EnrolPolicy()


def own_templates(gallery: Gallery, senior_id: str) -> np.ndarray:
    if senior_id not in gallery.senior_ids:
        return np.zeros((0, gallery.templates.shape[1]), np.float32)
    return gallery.templates[gallery.owner == gallery.senior_ids.index(senior_id)]


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sims = normalise(a) @ normalise(b).T
    return np.sqrt(np.clip(2.0 - 2.0 * sims, 0.0, 4.0))


def components(adj: np.ndarray) -> list[list[int]]:
    n = len(adj)
    seen: set[int] = set()
    out = []
    for start in range(n):
        if start in seen:
            continue
        comp, todo = [], [start]
        seen.add(start)
        while todo:
            i = todo.pop()
            comp.append(i)
            for j in np.flatnonzero(adj[i]):
                if int(j) not in seen:
                    seen.add(int(j))
                    todo.append(int(j))
        out.append(sorted(comp))
    return out


@dataclass
class Candidate:
    index: int  # into result.photos
    chip: np.ndarray
    score: float
    data: bytes | None
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def drop_same_photos(
    cands: list[Candidate], own: np.ndarray, res: EnrolResult, policy: EnrolPolicy
) -> list[Candidate]:
    """Skip a photo already enrolled for this senior (or given twice now): re-running an import adds nothing."""
    keep: list[Candidate] = []
    for c in cands:
        ref = np.concatenate([own, np.stack([k.embedding for k in keep])]) if keep else own
        if len(ref) and float(pairwise(c.embedding[None], ref).min()) < policy.same_photo_distance:
            out = res.photos[c.index]
            out.code = SAME_PHOTO
            out.reason = "the same photo is already enrolled for this senior: skipped"
            continue
        keep.append(c)
    return keep


def agreeing(
    cands: list[Candidate],
    own: np.ndarray,
    res: EnrolResult,
    senior: Senior,
    force: bool,
    *,
    policy: EnrolPolicy,
    decision_policy: DecisionPolicy,
    model_id: str,
) -> list[Candidate]:
    """Keep the photos that show the same person as the senior's existing templates, or, for a new
    senior, as the clear majority of the new photos. A lone disagreement cannot be settled: refuse."""
    lim = policy.agree_distance
    if not cands:
        return cands
    embs = np.stack([c.embedding for c in cands])
    if len(own):
        return like_enrolled(
            cands, own, res, senior, force, policy=policy, decision_policy=decision_policy, model_id=model_id
        )
    if len(cands) == 1:
        return cands
    d = pairwise(embs, embs)
    comps = sorted(components(d < lim), key=len, reverse=True)
    best = comps[0]
    if len(best) * 2 > len(cands):
        for c_i, c in enumerate(cands):
            if c_i not in best:
                near = float(np.min(d[c_i, best]))
                _refuse(
                    res,
                    c,
                    DISAGREES,
                    f"does not look like the same person as the other photos (distance {near:.2f}, "
                    f"need under {lim:.2f}): check it is this senior's photo",
                )
        return [cands[i] for i in best]
    for c in cands:
        _refuse(
            res,
            c,
            DISAGREES,
            "the photos do not agree on one person (no majority of them alike): "
            "check every photo is of this senior and enrol again",
        )
    return []


def own_distance_limit(policy: EnrolPolicy, decision_policy: DecisionPolicy) -> float:
    """The kiosk's own rule for "this is that senior", bound to the model in use: a single photo scored
    against the senior's templates as the kiosk scores one frame (edge.decide.senior_distances) must be
    within the distance at which the kiosk would take it for them at all (accept or ask staff). Never laxer
    than the hand-set agree_distance (a model without calibration gets the looser default thresholds)."""
    return min(decision_policy.thresholds(1).confirm_distance, policy.agree_distance)


def like_enrolled(
    cands: list[Candidate],
    own: np.ndarray,
    res: EnrolResult,
    senior: Senior,
    force: bool,
    *,
    policy: EnrolPolicy,
    decision_policy: DecisionPolicy,
    model_id: str,
) -> list[Candidate]:
    """Photos added to an enrolled senior. EnrolPolicy.agree_distance was measured on plain dlib
    descriptors; mirrored ones sit closer together, so a stranger's photo passed it (issue 15). The
    decision policy's thresholds are calibrated for exactly this model: a photo the kiosk would not
    recognise as this senior is a stranger's template that would let the stranger eat on the senior's
    subsidy. Refused with the distance, unless --force (a senior whose look changed)."""
    lim = own_distance_limit(policy, decision_policy)
    pol = decision_policy
    mine = Gallery.from_pairs([(senior.senior_id, t) for t in own], model_id)
    d = senior_distances(mine, np.stack([c.embedding for c in cands]), pol.template_weight)[:, 0]
    keep = []
    for c, di in zip(cands, d, strict=True):
        if di <= lim:
            keep.append(c)
            continue
        why = (
            f"does not look like {senior.senior_id} as already enrolled (distance {di:.2f}; the kiosk "
            f"recognises this senior only under {lim:.2f} with model {model_id})"
        )
        if force:
            res.photos[c.index].warnings.append(f"{why}: added anyway (--force)")
            keep.append(c)
            continue
        _refuse(
            res,
            c,
            DISAGREES,
            f"{why}: check it is this senior's photo; if it is (new glasses, a changed look), "
            "add it with --force, or `remove` the senior and enrol again with new photos",
        )
    return keep


def not_duplicates(
    cands: list[Candidate],
    senior: Senior,
    res: EnrolResult,
    force: bool,
    *,
    gallery: Gallery,
    policy: EnrolPolicy,
    decision_policy: DecisionPolicy,
    describe: Callable[[str], str],
) -> list[Candidate]:
    """Refuse a person already enrolled under another id (unless `force`: twins); warn about a lookalike
    with the kiosk's own rule. `describe` names an enrolled senior for the message."""
    others = gallery.without(senior.senior_id)
    if not cands or len(others) == 0:
        return cands
    pol = policy
    # the photos together, against each enrolled senior (edge.recognition.duplicates: at district scale a
    # rule on any single photo flagged a third of new seniors)
    dup = duplicate_in(others, np.stack([c.embedding for c in cands]), pol.duplicate_rule)
    if dup is not None:
        who = describe(dup.senior_id)
        why = f"distance {dup.distance:.2f} < {pol.duplicate_distance:.2f}, next senior {dup.second_distance:.2f}"
        if force:
            res.warnings.append(f"enrolled despite looking like {who} ({why}; --force)")
            return cands
        for c in cands:
            _refuse(
                res,
                c,
                DUPLICATE,
                f"matches already enrolled senior {who} (all photos together: {why}): this person seems to be "
                "enrolled already; check the id, or use --force if they really are different people (e.g. twins)",
            )
        res.refuse(Problem(
            ALREADY_ENROLLED,
            f"looks like already enrolled senior {who} (distance {dup.distance:.2f}): not enrolled",
        ))
        return []
    near = lookalikes(gallery, senior.senior_id, np.stack([c.embedding for c in cands]), decision_policy)
    if near:
        other_id, d = near[0]
        res.warning_codes.append(LOOKALIKE)
        res.warnings.append(
            f"looks similar to {describe(other_id)} "
            f"(distance {d:.2f}, close enough for the kiosk to ask staff): a sibling or lookalike? "
            "The kiosk will ask staff to confirm either of them unless the match is clear"
        )
    return cands


def within_capacity(cands: list[Candidate], n_photos: int, res: EnrolResult, policy: EnrolPolicy) -> list[Candidate]:
    """At most `max_templates` photo templates per senior: the best-scored photos are kept."""
    room = max(0, policy.max_templates - n_photos)
    if len(cands) <= room:
        return cands
    ranked = sorted(cands, key=lambda c: c.score, reverse=True)
    for c in ranked[room:]:
        _refuse(
            res,
            c,
            CAPACITY,
            f"the senior already has {n_photos} photo template(s), at most {policy.max_templates}: "
            "`remove` and enrol again to replace photos",
        )
    keep = {id(c) for c in ranked[:room]}
    return [c for c in cands if id(c) in keep]


def _refuse(res: EnrolResult, c: Candidate, code: str, reason: str) -> None:
    out = res.photos[c.index]
    out.code, out.reason, out.accepted = code, reason, False
