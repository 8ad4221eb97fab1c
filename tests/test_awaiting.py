"""The kiosk waits for staff and learns the answer from the shared store (edge/meals/awaiting.py): a real
SQLite file, resolved by `edge.confirm.confirm` through a second Store, as the staff-screen process does."""

from __future__ import annotations

import test_confirm as confirm_tests
from test_confirm import at, pending

from edge.config import Config
from edge.meals.awaiting import ConfirmWait
from edge.meals.confirm import confirm
from edge.store import Store

cfg = confirm_tests.cfg
store = confirm_tests.store


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_kiosk_learns_each_answer_from_the_store(store: Store, cfg: Config) -> None:
    clock = Clock()
    wait = ConfirmWait(store, 60, every=0.5, clock=clock)
    yes, no, slow = (pending(store, at("11:10")) for _ in range(3))
    for cid in (yes, no, slow):
        wait.watch(cid, "S0001")
    clock.t += 1
    assert wait.poll() == []  # nobody answered yet
    staff = Store(cfg.store_path)  # the staff screen's own connection
    try:
        assert confirm(staff, cfg, yes, True, "Li", now=at("11:12")).kind == "meal"
        assert confirm(staff, cfg, no, False, "Li", now=at("11:12")).kind == "rejected"
    finally:
        staff.close()
    assert wait.poll() == []  # read at most every 0.5 s
    clock.t += 0.5
    got = {o.confirmation_id: o for o in wait.poll()}
    assert got[yes].kind == "paid" and got[yes].event_id == store.list_events()[0].event_id
    assert got[no].kind == "rejected" and got[no].event_id is None
    assert wait.waiting == [slow]
    clock.t += 59
    assert [o.kind for o in wait.poll()] == ["timeout"] and wait.waiting == []
    assert store.get_confirmation(slow).state == "pending"  # still on the staff screen


def test_confirmed_without_a_meal_is_no_meal(store: Store, cfg: Config) -> None:
    clock = Clock()
    wait = ConfirmWait(store, 60, clock=clock)
    cid = pending(store, at("09:00"))  # outside the meal windows: the rules give no meal
    wait.watch(cid, "S0001")
    assert confirm(store, cfg, cid, True, "Li", now=at("11:00")).kind == "closed"
    clock.t += 1
    assert [o.kind for o in wait.poll()] == ["no_meal"]


def test_the_answer_becomes_what_the_kiosk_says(store: Store, cfg: Config) -> None:
    """edge.app.answered: the meal with its amount once staff confirmed, else plainly where to go."""
    from edge.app import answered
    from edge.meals.awaiting import Outcome

    cid = pending(store, at("11:10"))
    r = confirm(store, cfg, cid, True, "Li", now=at("11:12"))
    d = answered(cfg, store, Outcome("paid", cid, "S0001", r.event_id), at("11:12"))
    assert (d.kind, d.name, d.payable_fen, d.event_id, d.confirmation_id) == ("meal", "Wang Fang", 700, r.event_id, cid)
    assert d.message == "Welcome Wang Fang: lunch, please pay ¥7.00 (¥3.00 subsidy applied)"
    assert d.speech == "Wang Fang, lunch checked in. Please pay seven yuan."
    no = answered(cfg, store, Outcome("rejected", 2, "S0001"), at("11:12"))
    assert (no.kind, no.name, no.message) == ("rejected", None, "Not confirmed: please see staff to check in")
    assert answered(cfg, store, Outcome("timeout", 3, "S0001"), at("11:12")).message == "Please see staff to check in"
    assert answered(cfg, store, Outcome("no_meal", 4, "S0001"), at("11:12")).message == "Please see staff"
