"""The meal desk: what the kiosk does once it has decided who stands in front of it.

A verdict from edge/recognition/decide.py comes in; out comes the kiosk's `Decision`: unknown, a pending staff
confirmation (kept in the store for `meal-edge confirm` and the staff screen), or the meal rules' answer
(edge/meals/rules.py) - a meal recorded with its event and outbox row in one transaction, a repeat or a refusal.
An automatic meal may refresh the senior's templates (edge/recognition/refresh.py); a meal or a confirmation
keeps its audit snapshot (edge/store/evidence.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypedDict

import numpy as np

from edge.config import Config
from edge.delivery.events import event_topic
from edge.meals import feedback
from edge.meals.feedback import Decision
from edge.meals.recorded import meal_event
from edge.meals.rules import ALREADY_SERVED, Senior, decide_meal, meal_window
from edge.recognition.decide import Verdict
from edge.recognition.embed.base import Embedder
from edge.recognition.refresh import CheckIn, RefreshRule, checkin_source, is_checkin_source, refresh_reasons
from edge.security.clockguard import ClockGuard
from edge.store import AlreadyServed, Store, StoreError, TemplateIn
from edge.store.evidence import EvidenceKeeper, confirmation_name

log = logging.getLogger(__name__)


class _Said(TypedDict):
    message: str
    speech: str


class MealDesk:
    def __init__(
        self,
        cfg: Config,
        *,
        store: Store,
        embedder: Embedder,
        on_event: Callable[[], None] | None = None,
        evidence: EvidenceKeeper | None = None,
        liveness_enabled: bool = False,
        clock_guard: ClockGuard | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.embedder = embedder
        #: called after each recorded meal (the publisher's wake-up)
        self.on_event = on_event
        self.evidence = evidence
        self.liveness_enabled = liveness_enabled
        #: no decision on a clock earlier than the newest event (or far beyond it at start)
        self.clock_guard = clock_guard
        self.topic = event_topic(cfg.mqtt.topic_prefix, cfg.centre.district, cfg.centre.id, cfg.centre.kiosk_id)
        r = cfg.recognition
        self.refresh_rule = RefreshRule(
            enabled=r.refresh_templates,
            max_templates=r.refresh_max,
            max_distance=r.refresh_distance,
            min_margin=r.refresh_min_margin,
            every_days=r.refresh_every_days,
        )

    def _say(self, kind: str, now: datetime | None = None, **kw: Any) -> _Said:
        """The Decision's message (screen) and speech (voice); "closed" also says when the next meal starts."""
        if kind == "closed" and now is not None:
            kw["next_meal"] = feedback.next_meal(self.cfg.rules.meals, now.astimezone(self.cfg.centre.tz))
        w = feedback.words(kind, lang=self.cfg.centre.language, **kw)
        return {"message": w.screen, "speech": w.speech}

    def decide(
        self,
        track_id: int,
        verdict: Verdict,
        now: datetime,
        source_ts: float,
        in_view_s: float = 0.0,
        *,
        probe: np.ndarray | None = None,
        live: bool | None = None,
    ) -> Decision:
        """What the verdict on one presence comes to: unknown, a pending staff confirmation, or the meal rules'
        answer (a recorded meal, a repeat, a refusal). probe (the fused descriptor) and live (the liveness
        verdict) serve only the template refresh."""
        common: dict[str, Any] = dict(
            track_id=track_id,
            decided_at=now.astimezone(self.cfg.centre.tz),
            source_ts=source_ts,
            distance=verdict.distance,
            margin=verdict.margin,
            frames=verdict.frames,
            in_view_s=in_view_s,
        )
        clock = self.clock_guard.check(now) if self.clock_guard is not None else None
        senior = self.store.get_senior(verdict.senior_id) if verdict.senior_id else None
        if clock is not None and not clock.ok:
            # nothing is decided, recorded or kept: the senior is sent to staff, who fix the clock
            d = Decision("clock", **self._say("clock"), reasons=(f"clock_{clock.state}",), **common)
        elif verdict.outcome == "unknown" or senior is None:
            d = Decision("unknown", **self._say("unknown"), reasons=verdict.reasons, **common)
        elif verdict.outcome == "confirm":
            d = Decision(
                "confirm",
                **self._say("confirm"),
                senior_id=senior.senior_id,
                name=senior.name,
                reasons=verdict.reasons,
                confirmation_id=self._pending_confirmation(senior, verdict, common["decided_at"]),
                **common,
            )
        else:
            d = self._apply_rules(senior, verdict, now, common, probe=probe, live=live)
        return d

    def pays(self, verdict: Verdict, now: datetime) -> bool:
        """Would the rules record a meal for the verdict's senior now? False for a repeat, a refusal or a
        closed kiosk: then nothing is paid whatever liveness says. True when unsure (store error)."""
        try:
            senior = self.store.get_senior(verdict.senior_id) if verdict.senior_id else None
            if senior is None:
                return True
            c = self.cfg.centre
            prior = self.store.meals_on(senior.senior_id, now.astimezone(c.tz).date())
        except StoreError as e:
            log.error("could not read %s's meals before the liveness check: %s", verdict.senior_id, e)
            return True
        return decide_meal(senior, now, prior, self.cfg.rules, c.district, c.tz).kind == "meal"

    def keep_evidence(self, d: Decision, image: np.ndarray, box: tuple[int, int, int, int]) -> None:
        """Only what can cost or pay public money: a recorded meal, or a confirmation staff will be asked about.
        Unknown faces are not kept (they are nobody's meal)."""
        if self.evidence is None:
            return
        if d.kind == "meal" and d.event_id:
            self.evidence.save(d.event_id, image, box, d.decided_at)
        elif d.kind == "confirm" and d.confirmation_id is not None:
            self.evidence.save(confirmation_name(d.confirmation_id), image, box, d.decided_at)

    def _pending_confirmation(self, senior: Senior, verdict: Verdict, decided_at: datetime) -> int | None:
        """Keep the `confirm` decision for staff (`meal-edge confirm`); the rules are applied when staff
        accept it, as of `decided_at`. A store failure is logged; the kiosk still asks staff.
        One card per senior per meal window: a new uncertain attempt joins the pending one (issue 15)."""
        try:
            window = meal_window(self.cfg.rules.meals, decided_at)
            for c in self.store.pending_confirmations(self.cfg.centre.kiosk_id):
                same = c.decided_at.astimezone(self.cfg.centre.tz)
                if (c.senior_id, c.local_date) == (senior.senior_id, decided_at.date()) and (
                    meal_window(self.cfg.rules.meals, same) == window
                ):
                    log.info("confirmation %d for %s is still pending: this attempt joins it", c.id, c.senior_id)
                    return c.id
            return self.store.add_confirmation(
                kiosk_id=self.cfg.centre.kiosk_id,
                senior_id=senior.senior_id,
                decided_at=decided_at,
                local_date=decided_at.date(),
                distance=verdict.distance,
                margin=verdict.margin,
                frames=verdict.frames,
                reasons=verdict.reasons,
            )
        except StoreError as e:
            log.error("could not record the confirmation for %s: %s", senior.senior_id, e)
            return None

    def _apply_rules(
        self,
        senior: Senior,
        verdict: Verdict,
        now: datetime,
        common: dict[str, Any],
        *,
        probe: np.ndarray | None = None,
        live: bool | None = None,
    ) -> Decision:
        c = self.cfg.centre
        tz = c.tz
        local_date = now.astimezone(tz).date()
        prior = self.store.meals_on(senior.senior_id, local_date)
        r = decide_meal(senior, now, prior, self.cfg.rules, c.district, tz)
        base = dict(
            senior_id=senior.senior_id,
            name=senior.name,
            meal=r.meal,
            reasons=r.reasons,
            **self._say(r.kind, now),
            **common,
        )
        if r.kind != "meal":
            return Decision(r.kind, **base)
        event = meal_event(
            self.cfg, r, senior.senior_id, kiosk_id=c.kiosk_id, local_date=local_date, decided_at=now.astimezone(tz),
            match={
                "distance": round(verdict.distance, 4),
                "margin": round(verdict.margin, 4),
                "frames": verdict.frames,
                "model_id": self.embedder.model_id,
                "backend": self.embedder.name,
            },
            source_ts=common["source_ts"],
        )
        try:
            stored = self.store.record_meal(event, self.topic)
        except AlreadyServed as e:
            # recorded meanwhile by someone else (a staff confirmation): the rules' answer is a repeat
            log.info("%s", e)
            return Decision("repeat", **{**base, **self._say("repeat"), "reasons": (ALREADY_SERVED,)})
        except StoreError as e:
            # Nothing half-written (one transaction); the senior is told and staff can re-run it.
            log.error("could not record meal for %s: %s", senior.senior_id, e)
            return Decision("error", **{**base, **self._say("error"), "reasons": ("store_failed",)})
        if self.clock_guard is not None:
            self.clock_guard.recorded(event.decided_at)
        if self.on_event is not None:
            self.on_event()
        # only here: an automatic accept that became a recorded meal (never confirm, repeat, unknown)
        self._maybe_refresh(senior.senior_id, verdict, stored.event_id, now, probe, live)
        base.update(
            self._say("meal", name=senior.name, meal=r.meal, payable_fen=r.payable_fen, subsidy_fen=r.subsidy_fen)
        )
        return Decision(
            "meal",
            price_fen=r.price_fen,
            subsidy_fen=r.subsidy_fen,
            payable_fen=r.payable_fen,
            event_id=stored.event_id,
            seq=stored.seq,
            **base,
        )

    def _maybe_refresh(
        self, senior_id: str, verdict: Verdict, event_id: str, now: datetime, probe: np.ndarray | None,
        live: bool | None,
    ) -> None:
        """Template refresh (edge/recognition/refresh.py) after an automatic meal. Never affects the meal: a store
        failure is logged and the check-in goes on."""
        rule = self.refresh_rule
        if not rule.enabled:
            return
        try:
            check = CheckIn(
                kind="meal",
                automatic=True,  # staff-confirmed meals are recorded by `meal-edge confirm`, not here
                liveness_enabled=self.liveness_enabled,
                live=live,
                distance=verdict.distance,
                margin=verdict.margin,
                now=now,
                last_refresh=self.store.last_checkin_template_at(senior_id),
                has_probe=probe is not None,
            )
            why = refresh_reasons(rule, check)
            if why:
                log.debug("template refresh: senior=%s event=%s not refreshed: %s", senior_id, event_id, ",".join(why))
                return
            assert probe is not None
            erased = self.store.add_checkin_template(
                senior_id,
                # quality is a photo-quality score; a check-in has none (`meal-enroll show` prints none)
                TemplateIn(probe, self.embedder.model_id, quality=0.0, source=checkin_source(event_id)),
                keep=rule.max_templates,
                at=now,
            )
            n = sum(is_checkin_source(src) for _, _, _, src, _ in self.store.template_info(senior_id))
        except StoreError as e:
            log.error("template refresh for %s (event %s) failed; the meal stands: %s", senior_id, event_id, e)
            return
        log.info(
            "template refresh: senior=%s event=%s distance=%.3f margin=%.3f check-in templates now %d%s",
            senior_id, event_id, verdict.distance, verdict.margin, n,
            f" (replaced template {', '.join(map(str, erased))})" if erased else "",
        )
