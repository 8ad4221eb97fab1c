"""Signed (schema 2) events against the kiosk's registered key, with edge.security.signing (Event contract v2):
a good event is stored, a forged or altered one or one from an unregistered kiosk is quarantined, a broken
chain is an alert, and a void reverses its meal. Skipped where the signing module is not installed."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from district_support import DISTRICT, PREFIX, db_url, payload, topic  # noqa: F401

signing = pytest.importorskip("edge.security.signing", reason="edge.security.signing is not installed")

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import Engine, select  # noqa: E402

from district import queries  # noqa: E402
from district.db.engine import open_engine  # noqa: E402
from district.db.models import Alert  # noqa: E402
from district.db.models import Event as EventRow  # noqa: E402
from district.store import BatchWriter, Incoming, register_kiosk  # noqa: E402
from district.validate import classify  # noqa: E402
from district.watch import Watcher  # noqa: E402


@pytest.fixture
def engine(db_url: str) -> Engine:  # noqa: F811
    eng = open_engine(db_url)
    yield eng
    eng.dispose()


def v2(seq: int, key: Ed25519PrivateKey, prev: dict[str, Any] | None, **over: Any) -> dict[str, Any]:
    obj = json.loads(payload(seq, **over))
    obj.update(schema="meal-edge/meal-event/2", check_in="face", staff_id=None,
               prev_hash=signing.event_hash(prev) if prev else "")
    return dict(signing.sign_event(obj, key))


def raw(obj: dict[str, Any]) -> bytes:
    """As a kiosk publishes it: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def ingest(engine: Engine, objs: list[dict[str, Any] | bytes]) -> Any:
    now = datetime.now(UTC)
    batch = []
    for o in objs:
        body = o if isinstance(o, bytes) else raw(o)
        batch.append(Incoming(topic(), body, classify(topic(), body, prefix=PREFIX, district=DISTRICT,
                                                      max_bytes=16384, accept_unsigned=False), now))
    res = BatchWriter(engine).write(batch)
    w = Watcher(engine)
    w.check_kiosks(res.kiosks)
    w.reconcile(res.keys, res.voided)
    return res


def test_signed_events_verify_against_the_registered_key(engine: Engine, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    e1 = v2(1, key, None)
    unregistered = ingest(engine, [e1])
    assert unregistered.quarantined == 1 and "no public key registered" in unregistered.quarantine_reasons[0]
    register_kiosk(engine, DISTRICT, "centre-001", "kiosk-1", signing.public_key_text(key.public_key()))
    e2 = v2(2, key, e1, senior="S0002")
    forged = v2(3, Ed25519PrivateKey.generate(), e2, senior="S0003")
    altered = dict(v2(3, key, e2, senior="S0003"), subsidy_fen=0, payable_fen=1000)
    res = ingest(engine, [e1, e2, forged, altered])
    assert (res.stored, res.quarantined) == (2, 2)
    assert all(r.startswith("bad signature") for r in res.quarantine_reasons)
    with engine.connect() as c:
        rows = {r.seq: r for r in c.execute(select(EventRow.seq, EventRow.event_hash, EventRow.signed))}
    assert rows[1].signed and rows[1].event_hash == signing.event_hash(e1)
    # a chain break: seq 4 names something else as its predecessor than the stored seq 3
    e3 = v2(3, key, e2, senior="S0003")
    e4 = v2(4, key, e2, senior="S0004")  # names seq 2 as its predecessor
    res = ingest(engine, [e3, e4])
    assert res.stored == 2
    with engine.connect() as c:
        [alert] = c.execute(select(Alert.kind, Alert.event_id)).all()
    assert (alert.kind, alert.event_id) == ("chain_break", e4["event_id"])


def test_a_signed_void_reverses_the_meal(engine: Engine) -> None:
    key = Ed25519PrivateKey.generate()
    register_kiosk(engine, DISTRICT, "centre-001", "kiosk-1", signing.public_key_text(key.public_key()))
    meal = v2(1, key, None)
    void = dict(meal, kind="void", voids=meal["event_id"], void_reason="double_serving", seq=2,
                event_id="0f0e0d0c-0b0a-4900-8800-000000000002", check_in="manual", staff_id="staff-7",
                prev_hash=signing.event_hash(meal))
    void.pop("sig")
    void = dict(signing.sign_event(void, key))
    res = ingest(engine, [meal, void])
    assert res.stored == 2, res.quarantine_reasons
    with engine.connect() as c:
        [flag] = queries.flagged(c)
    assert (flag["event_id"], flag["reason"], flag["amount_fen"]) == (meal["event_id"], "voided", 300)


def test_signature_is_over_the_canonical_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    e = v2(1, key, None)
    assert len(base64.b64decode(e["sig"])) == 64
    signing.verify_event(e, key.public_key())


def test_settle_events_with_the_kiosks_key() -> None:
    from district.embedded import settle_events

    key = Ed25519PrivateKey.generate()
    e1 = v2(1, key, None)
    e2 = v2(2, key, e1, senior="S0002")
    keys = {f"{DISTRICT}/centre-001/kiosk-1": signing.public_key_text(key.public_key())}
    line = settle_events([raw(e1), raw(e2)], accept_unsigned=False, public_keys=keys)
    assert "2 meals from 1 kiosk" in line and "subsidy 600 fen" in line, line
    # without the key the signed event cannot be verified: quarantined, not counted
    assert settle_events([raw(e1)], accept_unsigned=False) == (
        "district xuhui: no meal events stored (1 quarantined: meal-district quarantine says why)")


@pytest.mark.slow
def test_a_kiosk_void_through_mosquitto_reverses_the_subsidy(
        mosquitto_broker: Any, db_url: str, tmp_path: Path) -> None:  # noqa: F811
    """The whole way: a manager voids a meal at the kiosk (edge.meals.void, the kiosk's store), the kiosk's own
    publisher sends the meal, the void and the senior's second lunch through a real Mosquitto, `meal-district
    serve` stores and verifies them against the kiosk's registered key and reverses the voided meal's subsidy;
    the second lunch stands (a voided meal does not use up the day's subsidy) and the month settles at 300 fen."""
    from datetime import date

    from district_support import ServeThread, make_config, wait_until
    from test_confirm import at
    from test_publish import make_config as kiosk_config
    from test_void import MANAGER, add_manager

    from district.report import write_report
    from edge.delivery.publish import Publisher
    from edge.meals.checkin import manual_checkin
    from edge.meals.rules import Senior
    from edge.meals.void import void_meal
    from edge.store import Store

    kcfg, _ = kiosk_config(mosquitto_broker, tmp_path)
    kcfg = kcfg.model_copy(update={"centre": kcfg.centre.model_copy(update={"district": DISTRICT})})
    store = Store(kcfg.store_path)
    store.add_senior(Senior("S0001", "Wang Fang", date(1950, 2, 28), DISTRICT))
    add_manager(store)
    meal = manual_checkin(store, kcfg, "S0001", MANAGER, now=at("11:20"))
    assert meal.event_id
    void = void_meal(store, kcfg, meal.event_id, "double_serving", None, MANAGER, now=at("11:30"))
    again = manual_checkin(store, kcfg, "S0001", MANAGER, now=at("11:45"))
    assert void.ok and again.subsidy_fen == 300
    dcfg, _ = make_config(mosquitto_broker, db_url, tmp_path)
    serve = ServeThread(dcfg, client_id="district-void")
    register_kiosk(serve.engine, DISTRICT, kcfg.centre.id, kcfg.centre.kiosk_id,
                   signing.public_key_text(store.signer.key().public_key()))
    publisher = Publisher(store, kcfg.mqtt, kcfg.centre, poll_interval=0.2)
    publisher.start()
    try:
        wait_until(lambda: store.pending_count() == 0, 20, "the broker's PUBACK for all three events")
        wait_until(lambda: serve.server.totals.stored == 3, 20, "the district to store the three events")

        def flags() -> list[dict[str, Any]]:
            with serve.engine.connect() as c:
                return queries.flagged(c)

        wait_until(lambda: len(flags()) == 1, 10, "the void reconciled")
        [flag] = flags()
        assert (flag["event_id"], flag["reason"], flag["amount_fen"]) == (meal.event_id, "voided", 300)
        assert serve.server.totals.quarantined == 0
        with serve.engine.connect() as c:
            stored = {r.event_id: r for r in c.execute(select(EventRow.event_id, EventRow.kind, EventRow.voids,
                                                              EventRow.signed))}
            s = write_report(c, "2026-11", tmp_path / "report", DISTRICT)
        assert (stored[void.event_id].kind, stored[void.event_id].voids, stored[void.event_id].signed) == (
            "void", meal.event_id, True)
        assert (s.totals["subsidy_fen"], s.totals["adjustment_fen"], s.totals["net_subsidy_fen"]) == (600, 300, 300)
    finally:
        publisher.stop(timeout=2)
        serve.stop()
        store.close()
