"""The one place that wires the pipeline.

capture -> detect -> track -> embed -> match/decide -> meal desk (rules -> store + outbox) -> feedback; the
publisher delivers from the outbox.

`Pipeline` takes every part as an argument, so `run` (live camera, wall clock), `replay` (file,
pinned clock), the demo, the tests and the benchmarks all drive the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.config import Config
from edge.meals import feedback
from edge.meals.awaiting import Outcome
from edge.meals.desk import MealDesk
from edge.meals.feedback import Decision
from edge.recognition.capture import Frame
from edge.recognition.decide import Policy, Verdict, decide, fuse
from edge.recognition.detect import Face, FaceDetector
from edge.recognition.embed.base import Embedder
from edge.recognition.enrolled import GalleryHolder
from edge.recognition.liveness import LivenessChecker, LivenessVerdict
from edge.recognition.match import normalise
from edge.recognition.serve import ServeRule, choose
from edge.recognition.track import Observation, Snapshot, Track, Tracker
from edge.security.clockguard import ClockGuard, ClockState
from edge.store import Store
from edge.store.evidence import EvidenceKeeper

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

log = logging.getLogger(__name__)

Clock = Callable[[Frame], datetime]


def replay_clock(start: datetime) -> Clock:
    """The clock of a replay: `start` plus each frame's offset into the source."""
    return lambda frame: start + timedelta(seconds=frame.source_ts)


# A decided track is re-embedded now and then; a descriptor this far from the track's own fused
# descriptor means another person stepped into the same place, which is a new presence.
IDENTITY_SWITCH_DISTANCE = 0.62
# SFace spreads one person's photos wider on the unit sphere than dlib: on the LFW calibration half, 98% of
# same-person pairs of different photos are closer than 1.1 (cosine 0.40), 0.03% of different people
# (provisional, issue 10; frames of one presence are much closer than different photos)
IDENTITY_SWITCH_DISTANCE_SFACE = 1.1


def identity_switch_distance(model_id: str) -> float:
    return IDENTITY_SWITCH_DISTANCE_SFACE if model_id.startswith("face_recognition_sface") else IDENTITY_SWITCH_DISTANCE


RECHECK_EVERY = 15
MAX_OBSERVATIONS = 64


@dataclass
class Stats:
    frames: int = 0
    faces: int = 0
    embedded: int = 0
    decisions: int = 0
    t_detect: float = 0.0
    t_embed: float = 0.0
    t_match: float = 0.0
    t_rules: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        *,
        detector: FaceDetector,
        embedder: Embedder,
        store: Store,
        policy: Policy,
        clock: Clock,
        gallery: GalleryHolder | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        on_event: Callable[[], None] | None = None,
        on_hint: Callable[[str | None], None] | None = None,
        liveness: LivenessChecker | None = None,
        evidence: EvidenceKeeper | None = None,
        clock_guard: ClockGuard | None = None,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.embedder = embedder
        self.store = store
        self.policy = policy
        self.clock = clock
        self.holder = gallery or GalleryHolder(store, policy)
        self.on_decision = on_decision
        #: called with every looked-at frame: "closer", "turn" or None (edge.meals.feedback says the words)
        self.on_hint = on_hint
        self.liveness = liveness
        self.evidence = evidence
        #: no decision on a clock earlier than the newest event (or far beyond it at start)
        self.clock_guard = clock_guard
        t = cfg.track
        self.tracker = Tracker(iou_match=t.iou_match, max_missing=t.max_missing_frames)
        d = cfg.detect
        #: who is served in a frame (edge/recognition/serve.py); the presence being served, by track id
        self.serve_rule = ServeRule(d.serve, d.min_face_px, d.min_face_ratio, iou_match=t.iou_match)
        self._serving: int | None = None
        self.stats = Stats()
        self.desk = MealDesk(
            cfg,
            store=store,
            embedder=embedder,
            on_event=on_event,
            evidence=evidence,
            liveness_enabled=liveness is not None,
            clock_guard=clock_guard,
        )

    @property
    def idle(self) -> bool:
        """Nobody in view: the daemon may look at fewer frames (a face is found within 1/idle_fps s)."""
        return not self.tracker.tracks

    # -- per frame -----------------------------------------------------------------------------
    def process(self, frame: Frame) -> list[Decision]:
        self.holder.maybe_reload()
        st = self.stats
        st.frames += 1
        t0 = time.perf_counter()
        seen = self.detector.detect(frame.image)
        serving = self.tracker.tracks.get(self._serving) if self._serving is not None else None
        served = choose(seen, self.serve_rule, serving.box if serving is not None else None)
        faces = served.faces
        st.t_detect += time.perf_counter() - t0
        st.faces += len(faces)
        assigned, ended = self.tracker.update(faces, frame.index, frame.source_ts)
        if assigned:
            self._serving = assigned[0][0].id
        elif serving is None:
            self._serving = None

        want: list[tuple[Track, Observation]] = []
        for track, obs in assigned:
            if self.liveness is not None and not track.decided:
                # frames[i] and the last len(frames) observations stay in step: both grow here
                track.frames.append(frame.image)
                del track.frames[: -self.cfg.liveness.max_frames]
            if self.evidence is not None and not track.decided:
                track.snapshot = (frame.image, obs.face.box)
            if self._due(track, obs):
                want.append((track, obs))
        if want:
            t0 = time.perf_counter()
            chips = self.embedder.chips(frame.image, [o.face for _, o in want])
            embs = self.embedder.embed(chips)
            st.t_embed += time.perf_counter() - t0
            st.embedded += len(want)
            for (_, obs), e in zip(want, embs, strict=True):
                obs.embedding = e

        decisions: list[Decision] = []
        for track, obs in want:
            if track.decided:
                self._recheck(track, obs)
            else:
                d = self.decide_track(track, frame, final=False)
                if d is not None:
                    decisions.append(d)
        for track, _ in assigned:
            del track.observations[:-MAX_OBSERVATIONS]
        decisions.extend(self._end(ended, frame))
        if self.on_hint is not None:
            self.on_hint(self._hint(served.too_small, served.crowded, assigned))
        return decisions

    @staticmethod
    def _hint(too_small: bool, crowded: bool, assigned: list[tuple[Track, Observation]]) -> str | None:
        """What would help the kiosk see the person in front of it: a face seen but too small to use
        ("closer"), two people side by side at the front ("one": one at a time), or an undecided presence turned
        away ("turn"); None when nothing would. Faces much smaller than the nearest are the queue behind
        (edge/recognition/serve.py)."""
        if too_small and not assigned:
            return "closer"
        if crowded:
            return "one"
        if not assigned:
            return None
        track, obs = max(assigned, key=lambda a: a[1].face.width)
        return "turn" if not track.decided and obs.face.turned else None

    def finish(self, frame: Frame | None = None) -> list[Decision]:
        """End of the source: every open presence gets its decision now."""
        return self._end(self.tracker.flush(), frame)

    def run(self, frames: Iterable[Frame], stop: Callable[[], bool] = lambda: False) -> list[Decision]:
        out: list[Decision] = []
        last: Frame | None = None
        for frame in frames:
            out.extend(self.process(frame))
            last = frame
            if stop():
                break
        out.extend(self.finish(last))
        return out

    # -- internals -----------------------------------------------------------------------------
    def _due(self, track: Track, obs: Observation) -> bool:
        if obs.face.turned:
            # A face in profile is not embedded: its descriptor is far from everyone's (the pianist passing the
            # camera on the stage clip became an "unknown" presence) and would pull a fused probe away from the
            # senior's own. The person is asked to face the screen (_hint); a presence that never does gets no
            # decision. HOG did this implicitly: it does not find faces turned that far.
            return False
        if track.decided:
            return track.frames_since_embed >= RECHECK_EVERY
        return track.frames_since_embed >= self.cfg.track.reembed_every

    def _recheck(self, track: Track, obs: Observation) -> None:
        """A decided presence whose face no longer matches itself is somebody else: start afresh."""
        assert obs.embedding is not None
        earlier = track.embeddings[:-1]
        if not earlier:
            return
        ref = normalise(np.mean(normalise(np.stack(earlier)), axis=0))
        d = float(np.linalg.norm(normalise(obs.embedding) - ref))
        if d > identity_switch_distance(self.embedder.model_id):
            log.info("track %d: a different face (%.2f) took its place; new presence", track.id, d)
            track.decided = False
            track.observations[:] = [obs]
            track.first_ts = obs.source_ts
            track.frames.clear()

    def decide_track(self, track: Track, frame: Frame, final: bool) -> Decision | None:
        embs = track.embeddings
        t = self.cfg.track
        if len(embs) < t.min_frames:
            if final and embs:
                log.debug("track %d ended after %d embedded frames: too brief to decide", track.id, len(embs))
            return None
        t0 = time.perf_counter()
        enrolled = self.holder.current
        verdict = decide(enrolled.gallery, np.stack(embs[-t.max_frames :]), self.policy, enrolled.pair_margins)
        self.stats.t_match += time.perf_counter() - t0
        if verdict.outcome != "accept" and len(embs) < t.max_frames and not final:
            return None  # more frames may still settle it
        live: bool | None = None
        # Liveness guards money only: a senior who already ate this meal (or gets none now) is told so at
        # once; a still face or a looping video never turns that into a staff card.
        if verdict.outcome == "accept" and self.liveness is not None and self.desk.pays(verdict, self.clock(frame)):
            lv = self._liveness(track)
            live = lv.live
            if lv.live is None and not final and len(track.frames) < self.cfg.liveness.max_frames:
                return None  # not enough motion seen yet: keep watching before paying anything
            if not lv.live:
                # A suspected photo or screen is not refused outright (an elderly face can look flat,
                # a senior can stand very still): staff check it instead.
                verdict = replace(
                    verdict, outcome="confirm", reasons=(*verdict.reasons, "liveness_not_confirmed", *lv.reasons)
                )
        track.decided = True
        track.frames.clear()
        snapshot, track.snapshot = track.snapshot, None  # the frame is not held while the senior stays in view
        ts = track.observations[-1].source_ts
        probe = None
        if self.desk.refresh_rule.enabled and verdict.outcome == "accept":
            probe = fuse(np.stack(embs[-t.max_frames :][-verdict.frames :]))  # the frames decide() fused
        return self.finalise(
            track.id, verdict, self.clock(frame), ts, ts - track.first_ts, probe=probe, live=live,
            snapshot=snapshot,
        )

    def _liveness(self, track: Track) -> LivenessVerdict:
        n = len(track.frames)
        faces: list[Face] = [o.face for o in track.observations[len(track.observations) - n :]] if n else []
        assert self.liveness is not None
        return self.liveness.assess(track.frames, faces)

    def _end(self, ended: list[Track], frame: Frame | None) -> list[Decision]:
        out = []
        for track in ended:
            if track.decided or frame is None:
                continue
            d = self.decide_track(track, frame, final=True)
            if d is not None:
                out.append(d)
        return out

    def finalise(
        self,
        track_id: int,
        verdict: Verdict,
        now: datetime,
        source_ts: float,
        in_view_s: float = 0.0,
        *,
        probe: np.ndarray | None = None,
        live: bool | None = None,
        snapshot: Snapshot | None = None,
    ) -> Decision:
        """One presence's decision from its verdict (edge/meals/desk.py applies the meal rules and records the
        meal), counted, logged and shown. probe (the fused descriptor) and live (the liveness verdict) serve
        only the template refresh; snapshot (a frame and the face box) is kept as audit evidence of a meal or
        a pending confirmation."""
        t0 = time.perf_counter()
        d = self.desk.decide(track_id, verdict, now, source_ts, in_view_s, probe=probe, live=live)
        self.stats.t_rules += time.perf_counter() - t0
        self.stats.decisions += 1
        self.stats.by_kind[d.kind] = self.stats.by_kind.get(d.kind, 0) + 1
        log.info(
            "decision track=%d kind=%s senior=%s meal=%s subsidy=%d payable=%d reasons=%s",
            d.track_id, d.kind, d.senior_id, d.meal, d.subsidy_fen, d.payable_fen, ",".join(d.reasons),
        )
        if self.on_decision is not None:
            self.on_decision(d)
        if snapshot is not None:  # after the senior has been told: the write may wait on a slow disk
            self.desk.keep_evidence(d, *snapshot)
        return d


# -- after a confirmation --------------------------------------------------------------------------
def answered(cfg: Config, store: Store, o: Outcome, now: datetime) -> Decision:
    """What the kiosk shows and says once staff answered a confirmation (edge.meals.awaiting), or did not in
    time: the meal and the amount to pay, "not confirmed", or "please see staff"."""
    lang = cfg.centre.language
    senior = store.get_senior(o.senior_id)
    name = senior.name if senior is not None else None
    common: dict[str, Any] = dict(
        track_id=0, decided_at=now.astimezone(cfg.centre.tz), source_ts=0.0, senior_id=o.senior_id,
        confirmation_id=o.confirmation_id,
    )
    ev = store.event(o.event_id) if o.kind == "paid" and o.event_id else None
    if ev is not None:
        w = feedback.words(
            "meal", lang=lang, name=name, meal=ev.meal, payable_fen=ev.payable_fen, subsidy_fen=ev.subsidy_fen
        )
        return Decision(
            "meal", message=w.screen, speech=w.speech, name=name, meal=ev.meal, price_fen=ev.price_fen,
            subsidy_fen=ev.subsidy_fen, payable_fen=ev.payable_fen, event_id=ev.event_id, seq=ev.seq, **common,
        )
    # confirmed without a meal (served meanwhile, suspended, outside the windows): staff say why, not the screen
    kind = o.kind if o.kind in ("rejected", "timeout") else "refused"
    w = feedback.words(kind, lang=lang)
    return Decision(kind, message=w.screen, speech=w.speech, **common)


# -- wiring from the config -----------------------------------------------------------------------
@dataclass(frozen=True)
class Parts:
    """What a pipeline is built from; `build_parts` makes them from the config, tests and benches may
    hand-build them."""

    store: Store
    embedder: Embedder
    policy: Policy
    detector: FaceDetector


def build_parts(
    cfg: Config, *, store_path: Path | None = None, signing_key: Ed25519PrivateKey | None = None
) -> Parts:
    """Open the store and build detector, embedder and decision policy from the config. `signing_key`: what
    meal events are signed with (None: the key beside the store, see edge/store/signer.py)."""
    from edge.recognition.calibration import load_policy
    from edge.recognition.detectors import make_detector
    from edge.recognition.embed.factory import make_embedder
    from edge.recognition.refresh import scale_warning

    store = Store(store_path or cfg.store_path, signing_key=signing_key, key_file=cfg.template_key_path)
    r, d = cfg.recognition, cfg.detect
    embedder = make_embedder(r.backend, r.threads, mirror=r.mirror, model=r.model, onnx_dir=cfg.model_dir)
    policy = load_policy(embedder.model_id, cfg.calibration_path)
    if w := scale_warning(r.refresh_templates, r.model):
        log.warning("%s", w)
    detector = make_detector(d.detector, d.detect_width, d.upsample, onnx_dir=cfg.model_dir)
    return Parts(store, embedder, policy, detector)


def make_clock_guard(
    cfg: Config, store: Store, *, start_check: bool = True, on_change: Callable[[ClockState], None] | None = None
) -> ClockGuard:
    """The clock guard over this store's newest event; `start_check` False skips the "too far ahead at start"
    check (a replay's pinned clock may be any time after the store's events)."""
    skew = timedelta(days=cfg.clock.max_start_skew_days) if start_check else None
    return ClockGuard(store.newest_event_time(), skew, on_change=on_change)


def make_pipeline(
    cfg: Config, parts: Parts, clock: Clock, *, evidence_dir: Path | None = None,
    clock_guard: ClockGuard | None = None, **kw: Any
) -> Pipeline:
    """The pipeline `run`, `replay` and the demo use. Audit snapshots go to evidence_dir (a replay passes its
    scratch folder) or else to [evidence] dir, when [evidence] enabled. The clock guard is `clock_guard`, or
    one over the store (make_clock_guard)."""
    evidence = None
    if cfg.evidence.enabled:
        evidence = EvidenceKeeper(evidence_dir or cfg.evidence_dir, cfg.evidence.retention_days)
    liveness = None
    if cfg.liveness.enabled:
        from edge.recognition.liveness import LivenessParams

        lc = cfg.liveness
        liveness = LivenessChecker(
            LivenessParams(
                min_frames=lc.min_frames, max_frames=lc.max_frames, pair_gap=lc.pair_gap, threshold=lc.threshold
            )
        )
    return Pipeline(
        cfg,
        detector=parts.detector,
        embedder=parts.embedder,
        store=parts.store,
        policy=parts.policy,
        clock=clock,
        liveness=liveness,
        evidence=evidence,
        clock_guard=clock_guard or make_clock_guard(cfg, parts.store),
        **kw,
    )
