"""Enrolment logic, independent of the command line: photos -> checked templates -> store.

`Enroller.enrol(senior, photos)` runs, for each photo: decode, detect, quality checks, embed; then,
over the photos that passed: do they show one person (each other and the senior's existing templates),
is that person already enrolled under another id (refused unless `force`), do they resemble someone
else (warning only), is there room (at most `max_templates` photo templates per senior;
templates refreshed from check-ins, edge/recognition/refresh.py, do not count). Only then is anything written.

Distances follow `edge.recognition.match`: Euclidean between L2-normalised dlib descriptors, d = sqrt(2 - 2 cos).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.meals.rules import Senior
from edge.recognition.decide import Policy as DecisionPolicy
from edge.recognition.decide import default_policy, lookalikes, senior_distances
from edge.recognition.detect import (
    TURNED_YAW_YUNET,
    Face,
    FaceDetector,
    ImageError,
    decode_image,
    dlib_chips,
    read_image,
    with_dlib5,
)
from edge.recognition.duplicates import Combine, DuplicateRule, duplicate_in
from edge.recognition.embed.base import Embedder
from edge.recognition.match import Gallery, normalise
from edge.store import Store, StoreError, TemplateIn
from edge.store.auditlog import AuditEntry
from enroll.quality import TURNED, UNREADABLE, Assessment, Issue, QualityPolicy, assess
from enroll.results import (
    ALREADY_ENROLLED,
    CAPACITY,
    DISAGREES,
    DUPLICATE,
    LOOKALIKE,
    NO_PHOTOS,
    NOT_SAVED,
    SAME_PHOTO,
    TOO_MANY_PHOTOS,
    EnrolResult,
    PhotoIn,
    PhotoOutcome,
    PhotoSource,
    Problem,
    mismatch,
    senior_problems,
    validate_senior,
)

# re-exported: callers (meal-enroll, tests, the staff screen) import them from here
__all__ = [
    "CAPACITY", "DISAGREES", "DUPLICATE", "SAME_PHOTO", "EnrolPolicy", "EnrolResult", "Enroller", "PhotoIn",
    "PhotoOutcome", "PhotoSource", "check_image", "enrol_policy_for", "gallery_from_store", "validate_senior",
]

log = logging.getLogger(__name__)

#: Staff photos can be phone pictures (4000 px wide) or small scans: detect on up to 1600 px with one
#: upsampling so that a second, smaller face in the picture is still found.
ENROL_DETECT_WIDTH = 1600
ENROL_UPSAMPLE = 1


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


def check_image(detector: FaceDetector, rgb: np.ndarray, quality: QualityPolicy) -> tuple[Assessment, list[Face]]:
    """Detect and judge one picture exactly as enrolment does: every face, the chip of the largest, then
    `enroll.quality.assess`. Shared by photo enrolment and camera capture (enroll/capture.py), so a frame
    kept at the kiosk is judged by the same rule as a photo given to `add`. The faces found are returned
    too (largest first), so a live prompt can say how many people it sees."""
    faces = detector.detect(rgb)
    # The photo checks (sharpness, pose, light) are calibrated on dlib's 150 chip and its 5 points,
    # whichever detector found the face: dlib's points are found in the box of the largest face.
    judged = [with_dlib5(rgb, f) for f in faces[:1]] + faces[1:]
    verdict = assess(rgb, judged, dlib_chips(rgb, judged[:1]), quality)
    if faces and faces[0].scheme != "dlib5" and faces[0].turned and not any(i.code == TURNED for i in verdict.issues):
        # dlib's 5-point shape, fitted in another detector's box, pulls towards a frontal face: on the stage clip
        # it read the pianist's profile next to the camera as turned 0.14, and capture kept it. The detector's
        # own points read the turn fully (YuNet: 1.1-1.4 there; above TURNED_YAW_YUNET for 0.5% of LFW photos).
        turned = Issue(
            TURNED,
            f"face turned too far (turn {faces[0].yaw:.2f} by the detector's points, max {TURNED_YAW_YUNET:.2f}): "
            "look straight at the camera",
        )
        verdict = Assessment((turned, *verdict.issues), warnings=verdict.warnings)
    return verdict, faces


def gallery_from_store(store: Store, model_id: str) -> Gallery:
    return Gallery.from_pairs(store.templates(model_id=model_id), model_id)


def _extend(gallery: Gallery, senior_id: str, embeddings: np.ndarray) -> Gallery:
    pairs = [(gallery.senior_ids[o], t) for o, t in zip(gallery.owner, gallery.templates, strict=True)]
    pairs += [(senior_id, e) for e in embeddings]
    return Gallery.from_pairs(pairs, gallery.model_id)


def _own_templates(gallery: Gallery, senior_id: str) -> np.ndarray:
    if senior_id not in gallery.senior_ids:
        return np.zeros((0, gallery.templates.shape[1]), np.float32)
    return gallery.templates[gallery.owner == gallery.senior_ids.index(senior_id)]


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sims = normalise(a) @ normalise(b).T
    return np.sqrt(np.clip(2.0 - 2.0 * sims, 0.0, 4.0))


def _components(adj: np.ndarray) -> list[list[int]]:
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
class _Candidate:
    index: int  # into result.photos
    chip: np.ndarray
    score: float
    data: bytes | None
    embedding: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


class Enroller:
    """Enrols seniors into a Store. Keeps the gallery it checks duplicates against in memory and
    extends it after each enrolment, so a bulk import does not re-read the database for every row."""

    def __init__(
        self,
        store: Store,
        detector: FaceDetector,
        embedder: Embedder,
        gallery_loader: Callable[[], Gallery] | None = None,
        quality: QualityPolicy | None = None,
        policy: EnrolPolicy | None = None,
        keep_photos: bool = False,
        decision_policy: DecisionPolicy | None = None,
        actor: str | None = None,
        district_upload: bool | None = None,
    ) -> None:
        self.store = store
        #: queue the templates for the district roster with the enrolment (issue 13); None: as the store is set
        #: up ([roster] enabled, recorded in the store by the daemon; meal-enroll passes its config's setting)
        self.district_upload = district_upload
        #: who enrols, for the audit log (meal-enroll: the operating-system user); None writes no audit line
        self.actor = actor
        self.detector = detector
        self.embedder = embedder
        self.quality = quality or QualityPolicy()
        self.policy = policy or enrol_policy_for(embedder.model_id)
        self.keep_photos = keep_photos
        self._load = gallery_loader or (lambda: gallery_from_store(store, embedder.model_id))
        self._gallery: Gallery | None = None
        # the kiosk's calibrated thresholds (lookalike rule); hand-set defaults when none are given
        self.decision_policy = decision_policy or default_policy(embedder.model_id)

    @property
    def gallery(self) -> Gallery:
        if self._gallery is None:
            self._gallery = self._load()
        return self._gallery

    def enrol(self, senior: Senior, photos: Sequence[PhotoSource], force: bool = False) -> EnrolResult:
        res = EnrolResult(senior)
        res.refuse(*senior_problems(senior))
        if not photos:
            res.refuse(Problem(NO_PHOTOS, "no photos: give 1 to 5 photos of the senior's face"))
        elif len(photos) > self.policy.max_templates:
            res.refuse(Problem(
                TOO_MANY_PHOTOS,
                f"{len(photos)} photos, at most {self.policy.max_templates}: "
                f"keep the best {self.policy.max_templates}",
            ))
        if res.problems:
            return res
        existing = self.store.get_senior(senior.senior_id)
        n_existing = n_photos = 0
        if existing is not None:
            clash = mismatch(senior, existing)
            if clash:
                res.refuse(clash)
                return res
            n_existing = self.store.template_count(senior.senior_id)
            # check-in templates (edge/recognition/refresh.py) never take an enrolment photo's place
            n_photos = self.store.photo_template_count(senior.senior_id)
        res.templates_total = n_existing

        cands = self._check_photos(photos, res)
        if cands:
            embs = self.embedder.embed(np.stack([c.chip for c in cands]))
            for c, e in zip(cands, embs, strict=True):
                c.embedding = np.asarray(e, np.float32)
            own = _own_templates(self.gallery, senior.senior_id)
            cands = self._drop_same_photos(cands, own, res)
            cands = self._agreeing(cands, own, res, senior, force)
            cands = self._not_duplicates(cands, senior, res, force)
            cands = self._within_capacity(cands, n_photos, res)
        if not cands:
            return res
        try:
            if existing is None:
                self.store.add_senior(senior)
                res.created = True
            added = self.store.add_templates(
                senior.senior_id,
                [
                    TemplateIn(
                        embedding=c.embedding,
                        model_id=self.embedder.model_id,
                        quality=c.score,
                        source=res.photos[c.index].label,
                        photo=c.data if self.keep_photos else None,
                    )
                    for c in cands
                ],
                upload=self.store.roster_uploads_enabled() if self.district_upload is None else self.district_upload,
                audit=None
                if self.actor is None
                else AuditEntry(
                    self.actor,
                    "enrol",
                    f"senior:{senior.senior_id}",
                    # counts and the model only: a photo's file name may be the senior's name
                    {"templates": len(cands), "new_senior": existing is None, "model_id": self.embedder.model_id},
                ),
            )
        except StoreError as e:
            res.refuse(Problem(NOT_SAVED, f"not saved: {e}"))
            if res.created:
                # Do not leave a senior without templates behind (add and add_templates are two steps).
                try:
                    self.store.remove_senior(senior.senior_id)
                except StoreError:
                    log.warning("could not undo the half-done enrolment of %s", senior.senior_id)
                res.created = False
            return res
        for c in cands:
            res.photos[c.index].accepted = True
        res.templates_added = added
        res.templates_total = n_existing + added
        self._gallery = _extend(self.gallery, senior.senior_id, np.stack([c.embedding for c in cands]))
        log.info("enrolled %s: %d template(s) added", senior.senior_id, added)
        return res

    def check_senior(self, senior: Senior) -> list[str]:
        return [p.message for p in self.senior_checks(senior)]

    def senior_checks(self, senior: Senior) -> list[Problem]:
        """The refusals `enrol` would give before looking at any photo (bad details, id already used by
        someone else). Camera capture asks first, so a senior is not kept in front of the camera for an
        enrolment that cannot happen; `enrol` checks again (nothing is assumed between the two)."""
        problems = senior_problems(senior)
        existing = self.store.get_senior(senior.senior_id) if not problems else None
        if existing is not None:
            clash = mismatch(senior, existing)
            if clash:
                problems.append(clash)
        return problems

    def check_image(self, rgb: np.ndarray) -> tuple[Assessment, list[Face]]:
        """One picture judged with this enroller's detector and quality policy (see `check_image`)."""
        return check_image(self.detector, rgb, self.quality)

    # -- steps ---------------------------------------------------------------------------------

    def _check_photos(self, photos: Sequence[PhotoSource], res: EnrolResult) -> list[_Candidate]:
        cands = []
        for src in photos:
            label = src.label if isinstance(src, PhotoIn) else Path(src).name
            out = PhotoOutcome(label)
            res.photos.append(out)
            try:
                if isinstance(src, PhotoIn) and src.rgb is None:
                    # an upload: decoded here, as a file is, so a damaged one is refused the same way
                    rgb, data = decode_image(src.data or b"", label), src.data
                elif isinstance(src, PhotoIn):
                    # dlib's chip extraction refuses non-contiguous arrays (e.g. a slice of a photo)
                    rgb, data = np.ascontiguousarray(src.rgb), src.data
                else:
                    rgb, data = read_image(src)
            except ImageError as e:
                out.code, out.reason = UNREADABLE, str(e).removeprefix(f"{label}: ")
                continue
            verdict, faces = check_image(self.detector, rgb, self.quality)
            out.warnings += verdict.warnings
            if not verdict.ok or verdict.chip is None:
                out.code, out.reason = verdict.issues[0].code, verdict.message
                continue
            # the embedder's own chip of the judged face (SFace: aligned on the detector's landmarks)
            chip = self.embedder.chips(rgb, faces[:1])[0]
            out.score = verdict.score
            if self.keep_photos and data is None:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                data = buf.tobytes() if ok else None
            cands.append(_Candidate(len(res.photos) - 1, chip, verdict.score, data))
        return cands

    def _drop_same_photos(
        self, cands: list[_Candidate], own: np.ndarray, res: EnrolResult
    ) -> list[_Candidate]:
        keep: list[_Candidate] = []
        for c in cands:
            ref = np.concatenate([own, np.stack([k.embedding for k in keep])]) if keep else own
            if len(ref) and float(_pairwise(c.embedding[None], ref).min()) < self.policy.same_photo_distance:
                out = res.photos[c.index]
                out.code = SAME_PHOTO
                out.reason = "the same photo is already enrolled for this senior: skipped"
                continue
            keep.append(c)
        return keep

    def _agreeing(
        self, cands: list[_Candidate], own: np.ndarray, res: EnrolResult, senior: Senior, force: bool = False
    ) -> list[_Candidate]:
        """Keep the photos that show the same person as the senior's existing templates, or, for a new
        senior, as the clear majority of the new photos. A lone disagreement cannot be settled: refuse."""
        lim = self.policy.agree_distance
        if not cands:
            return cands
        embs = np.stack([c.embedding for c in cands])
        if len(own):
            return self._like_enrolled(cands, own, res, senior, force)
        if len(cands) == 1:
            return cands
        d = _pairwise(embs, embs)
        comps = sorted(_components(d < lim), key=len, reverse=True)
        best = comps[0]
        if len(best) * 2 > len(cands):
            for c_i, c in enumerate(cands):
                if c_i not in best:
                    near = float(np.min(d[c_i, best]))
                    self._refuse(
                        res,
                        c,
                        DISAGREES,
                        f"does not look like the same person as the other photos (distance {near:.2f}, "
                        f"need under {lim:.2f}): check it is this senior's photo",
                    )
            return [cands[i] for i in best]
        for c in cands:
            self._refuse(
                res,
                c,
                DISAGREES,
                "the photos do not agree on one person (no majority of them alike): "
                "check every photo is of this senior and enrol again",
            )
        return []

    def own_distance_limit(self) -> float:
        """The kiosk's own rule for "this is that senior", bound to the model in use: a single photo scored
        against the senior's templates as the kiosk scores one frame (edge.decide.senior_distances) must be
        within the distance at which the kiosk would take it for them at all (accept or ask staff). Never laxer
        than the hand-set agree_distance (a model without calibration gets the looser default thresholds)."""
        return min(self.decision_policy.thresholds(1).confirm_distance, self.policy.agree_distance)

    def _like_enrolled(
        self, cands: list[_Candidate], own: np.ndarray, res: EnrolResult, senior: Senior, force: bool
    ) -> list[_Candidate]:
        """Photos added to an enrolled senior. EnrolPolicy.agree_distance was measured on plain dlib
        descriptors; mirrored ones sit closer together, so a stranger's photo passed it (issue 15). The
        decision policy's thresholds are calibrated for exactly this model: a photo the kiosk would not
        recognise as this senior is a stranger's template that would let the stranger eat on the senior's
        subsidy. Refused with the distance, unless --force (a senior whose look changed)."""
        lim = self.own_distance_limit()
        pol = self.decision_policy
        mine = Gallery.from_pairs([(senior.senior_id, t) for t in own], self.embedder.model_id)
        d = senior_distances(mine, np.stack([c.embedding for c in cands]), pol.template_weight)[:, 0]
        keep = []
        for c, di in zip(cands, d, strict=True):
            if di <= lim:
                keep.append(c)
                continue
            why = (
                f"does not look like {senior.senior_id} as already enrolled (distance {di:.2f}; the kiosk "
                f"recognises this senior only under {lim:.2f} with model {self.embedder.model_id})"
            )
            if force:
                res.photos[c.index].warnings.append(f"{why}: added anyway (--force)")
                keep.append(c)
                continue
            self._refuse(
                res,
                c,
                DISAGREES,
                f"{why}: check it is this senior's photo; if it is (new glasses, a changed look), "
                "add it with --force, or `remove` the senior and enrol again with new photos",
            )
        return keep

    def _not_duplicates(
        self, cands: list[_Candidate], senior: Senior, res: EnrolResult, force: bool
    ) -> list[_Candidate]:
        others = self.gallery.without(senior.senior_id)
        if not cands or len(others) == 0:
            return cands
        pol = self.policy
        # the photos together, against each enrolled senior (edge.recognition.duplicates: at district scale a
        # rule on any single photo flagged a third of new seniors)
        dup = duplicate_in(others, np.stack([c.embedding for c in cands]), pol.duplicate_rule)
        if dup is not None:
            who = self._describe(dup.senior_id)
            why = f"distance {dup.distance:.2f} < {pol.duplicate_distance:.2f}, next senior {dup.second_distance:.2f}"
            if force:
                res.warnings.append(f"enrolled despite looking like {who} ({why}; --force)")
                return cands
            for c in cands:
                self._refuse(
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
        near = lookalikes(self.gallery, senior.senior_id, np.stack([c.embedding for c in cands]), self.decision_policy)
        if near:
            other_id, d = near[0]
            res.warning_codes.append(LOOKALIKE)
            res.warnings.append(
                f"looks similar to {self._describe(other_id)} "
                f"(distance {d:.2f}, same-person limit {pol.duplicate_distance:.2f}): a sibling or lookalike? "
                "The kiosk will ask staff to confirm either of them unless the match is clear"
            )
        return cands

    def _within_capacity(
        self, cands: list[_Candidate], n_photos: int, res: EnrolResult
    ) -> list[_Candidate]:
        room = max(0, self.policy.max_templates - n_photos)
        if len(cands) <= room:
            return cands
        ranked = sorted(cands, key=lambda c: c.score, reverse=True)
        for c in ranked[room:]:
            self._refuse(
                res,
                c,
                CAPACITY,
                f"the senior already has {n_photos} photo template(s), at most {self.policy.max_templates}: "
                "`remove` and enrol again to replace photos",
            )
        keep = {id(c) for c in ranked[:room]}
        return [c for c in cands if id(c) in keep]

    def _refuse(self, res: EnrolResult, c: _Candidate, code: str, reason: str) -> None:
        out = res.photos[c.index]
        out.code, out.reason, out.accepted = code, reason, False

    def _describe(self, senior_id: str) -> str:
        s = self.store.get_senior(senior_id)
        return f"{senior_id} {s.name}" if s is not None else senior_id

    def forget(self, senior_id: str) -> None:
        """Drop a removed senior from the in-memory gallery."""
        if self._gallery is not None:
            self._gallery = self._gallery.without(senior_id)
