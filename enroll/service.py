"""Enrolment logic, independent of the command line: photos -> checked templates -> store.

`Enroller.enrol(senior, photos)` runs, for each photo: decode, detect, quality checks, embed; then,
over the photos that passed: do they show one person (each other and the senior's existing templates),
is that person already enrolled under another id (refused unless `force`), do they resemble someone
else (warning only), is there room (at most `max_templates` photo templates per senior;
templates refreshed from check-ins, edge/recognition/refresh.py, do not count). Only then is anything written.
The checks over the photos, and the distances they use (EnrolPolicy), are in enroll/photochecks.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge.meals.rules import Senior
from edge.recognition.decide import Policy as DecisionPolicy
from edge.recognition.decide import default_policy
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
from edge.recognition.embed.base import Embedder
from edge.recognition.match import Gallery
from edge.store import Store, StoreError, TemplateIn
from edge.store.auditlog import AuditEntry
from enroll.photochecks import (
    Candidate,
    EnrolPolicy,
    agreeing,
    drop_same_photos,
    enrol_policy_for,
    not_duplicates,
    own_distance_limit,
    own_templates,
    within_capacity,
)
from enroll.quality import TURNED, UNREADABLE, Assessment, Issue, QualityPolicy, assess
from enroll.results import (
    CAPACITY,
    DISAGREES,
    DUPLICATE,
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
    "CAPACITY", "DISAGREES", "DUPLICATE", "SAME_PHOTO", "EnrolResult", "Enroller", "PhotoIn",
    "PhotoOutcome", "PhotoSource", "check_image", "gallery_from_store", "validate_senior",
]

log = logging.getLogger(__name__)

#: Staff photos can be phone pictures (4000 px wide) or small scans: detect on up to 1600 px with one
#: upsampling so that a second, smaller face in the picture is still found.
ENROL_DETECT_WIDTH = 1600
ENROL_UPSAMPLE = 1


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
            own = own_templates(self.gallery, senior.senior_id)
            pol, dpol, model_id = self.policy, self.decision_policy, self.embedder.model_id
            cands = drop_same_photos(cands, own, res, pol)
            cands = agreeing(cands, own, res, senior, force, policy=pol, decision_policy=dpol, model_id=model_id)
            cands = not_duplicates(
                cands, senior, res, force, gallery=self.gallery, policy=pol, decision_policy=dpol,
                describe=self._describe,
            )
            cands = within_capacity(cands, n_photos, res, pol)
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

    def _check_photos(self, photos: Sequence[PhotoSource], res: EnrolResult) -> list[Candidate]:
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
            cands.append(Candidate(len(res.photos) - 1, chip, verdict.score, data))
        return cands

    def own_distance_limit(self) -> float:
        """The kiosk's own rule for "this is that senior" with this enroller's policies (see
        enroll.photochecks.own_distance_limit)."""
        return own_distance_limit(self.policy, self.decision_policy)

    def _describe(self, senior_id: str) -> str:
        s = self.store.get_senior(senior_id)
        return f"{senior_id} {s.name}" if s is not None else senior_id

    def forget(self, senior_id: str) -> None:
        """Drop a removed senior from the in-memory gallery."""
        if self._gallery is not None:
            self._gallery = self._gallery.without(senior_id)
