"""Issue 15, defect 2: an already-served senior is a repeat, whatever liveness says; cards do not pile up.

The real Pipeline (rules, store, confirmations) on a real SQLite file, fed tracks and verdicts directly
(test_confirm.light_pipeline); the liveness checker is the one thing stood in for: it always sees a flat,
still face, as the looping clip of the issue did.
"""

from __future__ import annotations

import numpy as np

# cfg and store are test_confirm's fixtures: S0001 Wang Fang enrolled, lunch 10:30-13:30, the kiosk at 11:45
from test_confirm import DAY, TOPIC, _NotLive, at, cfg, light_pipeline, lunch_event, store  # noqa: F401

from edge.config import Config
from edge.meals.feedback import Decision
from edge.recognition.decide import Verdict
from edge.recognition.detect import Face
from edge.recognition.track import Observation, Track
from edge.store import Store, TemplateIn


def clear_track(emb: np.ndarray, track_id: int = 1) -> Track:
    face = Face((10, 110, 110, 10), np.zeros((5, 2), np.float32), 1.0)
    return Track(track_id, 0, 4, observations=[Observation(i, i / 10, face, emb.copy()) for i in range(5)])


def test_an_already_served_senior_is_a_repeat_whatever_liveness_says(store: Store, cfg: Config) -> None:  # noqa: F811
    emb = np.random.default_rng(1).normal(size=128).astype(np.float32)
    store.add_templates("S0001", [TemplateIn(emb, "test-model", 0.9, "a.jpg")])
    store.record_meal(lunch_event(), TOPIC)  # S0001 had lunch at 11:10
    checker = _NotLive()
    seen: list[Decision] = []
    pipe = light_pipeline(cfg, store, liveness=checker, on_decision=seen.append)

    for track_id in range(1, 8):  # the issue: 7 presences in 66 s of a looping clip
        d = pipe.decide_track(clear_track(emb, track_id), None, final=True)  # type: ignore[arg-type]
        assert d is not None and d.kind == "repeat", d
        assert d.reasons == ("already_served_this_meal",) and d.confirmation_id is None
        assert (d.price_fen, d.subsidy_fen, d.payable_fen, d.event_id) == (0, 0, 0, None)
    assert store.pending_confirmations() == []  # no staff card
    assert len(store.list_events()) == 1  # no money moved
    assert checker.calls == 0  # liveness cannot change a repeat: not even asked


def test_uncertain_attempts_of_one_senior_share_one_pending_card(store: Store, cfg: Config) -> None:  # noqa: F811
    pipe = light_pipeline(cfg, store)
    ids = []
    for minute, reasons in ((45, ("ambiguous_margin",)), (46, ("liveness_not_confirmed", "too_still")), (47, ())):
        v = Verdict("confirm", "S0001", 0.41, 0.03, 5, reasons or ("not_close_enough",), best_id="S0001")
        d = pipe.finalise(minute, v, at(f"11:{minute}"), float(minute))
        assert d.kind == "confirm" and d.confirmation_id is not None
        ids.append(d.confirmation_id)
    assert len(set(ids)) == 1, ids
    [c] = store.pending_confirmations()
    assert c.id == ids[0] and c.local_date == DAY

    # the next meal window is another card (dinner is another meal to confirm)
    v = Verdict("confirm", "S0001", 0.41, 0.03, 5, ("ambiguous_margin",), best_id="S0001")
    d = pipe.finalise(99, v, at("17:00"), 99.0)
    assert d.confirmation_id not in ids
    assert len(store.pending_confirmations()) == 2
