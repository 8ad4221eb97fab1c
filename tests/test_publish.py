"""Exactly-once delivery over a real Mosquitto (see conftest.py): at-least-once QoS 1 from the outbox,
de-duplicated by event_id at the receiver, marked delivered only on the broker's PUBACK."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from conftest import MosquittoBroker, meal_event
from jsonschema import Draft202012Validator
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import DEFAULT_CONFIG, Config, parse_config
from edge.delivery.events import MealEvent, event_topic, status_topic
from edge.delivery.publish import Publisher
from edge.store import Store

ROOT = Path(__file__).resolve().parents[1]
SH = ZoneInfo("Asia/Shanghai")
EVENTS = Draft202012Validator(json.loads((ROOT / "docs" / "events.schema.json").read_text()))
STATUS = Draft202012Validator(json.loads((ROOT / "docs" / "status.schema.json").read_text()))


def make_config(broker: MosquittoBroker, tmp_path: Path) -> tuple[Config, Path]:
    """A config file (for child processes) and the parsed Config pointing at the test broker."""
    text = (
        DEFAULT_CONFIG.replace("port = 1883", f"port = {broker.port}")
        .replace('[store]\npath = ""', '[store]\npath = "store.sqlite"')
        .replace("keepalive = 30", "keepalive = 5")
    )
    path = tmp_path / "meal-edge.toml"
    path.write_text(text)
    cfg = parse_config(text, path)
    assert cfg.mqtt.port == broker.port and cfg.store_path == tmp_path / "store.sqlite"
    return cfg, path


def events_topic(cfg: Config) -> str:
    return event_topic(cfg.mqtt.topic_prefix, cfg.centre.district, cfg.centre.id, cfg.centre.kiosk_id)


def meal(cfg: Config, senior_id: str = "S0001") -> MealEvent:
    c = cfg.centre
    return meal_event(centre_id=c.id, district=c.district, kiosk_id=c.kiosk_id, senior_id=senior_id)


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A district-side subscriber: persistent session, QoS 1, reconnects by itself."""

    def __init__(self, broker: MosquittoBroker, topic: str, client_id: str = "district-collector") -> None:
        self.msgs: list[Msg] = []
        self._lock = threading.Lock()
        self.topic = topic
        self.client_id = client_id
        self.connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(1, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=5)
        c.loop_start()
        self.client = c
        assert self.connected.wait(5), "collector could not connect"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.msgs.append(Msg(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(m.payload) for m in self.msgs if m.topic.endswith("/events")]

    def raw_events(self) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.msgs if m.topic.endswith("/events")]

    def statuses(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(m.payload) for m in self.msgs if m.topic.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: MosquittoBroker, topic: str, timeout: float = 5.0) -> Msg:
    """What a monitor subscribing now gets: the retained message."""
    got: list[Msg] = []
    ev = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got.append(Msg(msg.topic, bytes(msg.payload), bool(msg.retain)))
        ev.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"monitor-{time.monotonic_ns()}")
    c.on_message = on_message
    c.on_connect = lambda client, *a: client.subscribe(topic, qos=1)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        assert ev.wait(timeout), f"no retained message on {topic}"
        return got[0]
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.fixture
def setup(mosquitto_broker: MosquittoBroker, tmp_path: Path):
    cfg, cfg_path = make_config(mosquitto_broker, tmp_path)
    store = Store(cfg.store_path)
    collector = Collector(mosquitto_broker, f"{cfg.mqtt.topic_prefix}/#")
    started: list[Publisher] = []

    def publisher() -> Publisher:
        p = Publisher(
            store, cfg.mqtt, cfg.centre, poll_interval=0.2, reconnect_min_delay=1, reconnect_max_delay=2
        )
        started.append(p)
        p.start()
        return p

    yield cfg, cfg_path, store, collector, publisher
    for p in started:
        p.stop(timeout=1)
    collector.close()
    store.close()


def test_events_arrive_once_with_the_documented_schema(setup, mosquitto_broker: MosquittoBroker) -> None:
    cfg, _, store, collector, publisher = setup
    pub = publisher()
    wait_until(lambda: pub.connected, 5, "publisher connected")
    stored = []
    for i in range(5):
        stored.append(store.record_meal(meal(cfg, f"S{i:04d}"), events_topic(cfg)))
        pub.wake()
    wait_until(lambda: len(collector.events()) >= 5, 5, "5 events at the collector")
    wait_until(lambda: store.pending_count() == 0, 5, "all events marked delivered")
    time.sleep(0.3)  # a duplicate would show up now
    got = collector.events()
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["event_id"] for e in got] == [s.event_id for s in stored]
    assert collector.raw_events() == [s.payload for s in stored]  # byte for byte as stored
    for e in got:
        EVENTS.validate(e)
    assert all(r.delivered_at is not None and r.attempts == 1 for r in store.list_events())

    pub.stop(timeout=2)
    status = json.loads(retained(mosquitto_broker, status_topic_of(cfg)).payload)
    STATUS.validate(status)
    assert (status["state"], status["reason"]) == ("offline", "stopped")


def status_topic_of(cfg: Config) -> str:
    return status_topic(cfg.mqtt.topic_prefix, cfg.centre.district, cfg.centre.id, cfg.centre.kiosk_id)


def test_marked_delivered_only_after_the_puback(setup, mosquitto_broker: MosquittoBroker) -> None:
    cfg, _, store, collector, publisher = setup
    pub = publisher()
    wait_until(lambda: pub.connected, 5, "publisher connected")
    mosquitto_broker.pause()  # the TCP connection stays up, but nothing is read or acknowledged
    ev = store.record_meal(meal(cfg), events_topic(cfg))
    pub.wake()
    wait_until(lambda: store.list_events()[0].attempts >= 1, 5, "the event handed to the MQTT client")
    time.sleep(0.5)
    assert store.pending_count() == 1, "marked delivered without an acknowledgement"
    mosquitto_broker.resume()
    wait_until(lambda: store.pending_count() == 0, 5, "delivery after the PUBACK")
    wait_until(lambda: len(collector.events()) >= 1, 5, "the event at the collector")
    time.sleep(0.3)
    assert [e["event_id"] for e in collector.events()] == [ev.event_id]


@pytest.mark.slow
def test_broker_down_events_queue_and_drain_in_order(
    setup, mosquitto_broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, _, store, collector, publisher = setup
    caplog.set_level(logging.INFO, logger="edge.delivery.publish")
    pub = publisher()
    wait_until(lambda: pub.connected, 5, "publisher connected")
    first = store.record_meal(meal(cfg, "S0000"), events_topic(cfg))
    pub.wake()
    wait_until(lambda: store.pending_count() == 0, 5, "the first event delivered")
    # the collector's PUBACK too: a message still in flight to it would be sent again after the restart
    # (MQTT's at-least-once, which the district de-duplicates by event_id), and this test counts deliveries
    wait_until(lambda: not mosquitto_broker.unacked(collector.client_id), 5, "the collector acknowledged")

    mosquitto_broker.stop()  # clean stop: Mosquitto saves the collector's persistent session
    wait_until(lambda: not pub.connected, 5, "publisher noticed the broker is gone")
    queued = [store.record_meal(meal(cfg, f"S{i:04d}"), events_topic(cfg)) for i in range(1, 7)]
    pub.wake()
    time.sleep(3.5)  # several reconnect attempts (back-off 1 s, 2 s)
    assert store.pending_count() == 6
    assert all(r.delivered_at is None for r in store.list_events(pending_only=True))

    mosquitto_broker.start()
    wait_until(lambda: store.pending_count() == 0, 10, "the backlog delivered after the broker came back")
    wait_until(lambda: len(collector.events()) >= 7, 10, "all events at the collector")
    time.sleep(0.3)
    got = collector.events()
    assert [e["seq"] for e in got] == list(range(1, 8))  # in order, each once
    assert [e["event_id"] for e in got] == [first.event_id] + [q.event_id for q in queued]

    warnings = [
        r.getMessage() for r in caplog.records if r.name == "edge.delivery.publish" and r.levelno >= logging.WARNING
    ]
    outage = [m for m in warnings if "lost" in m or "unreachable" in m]
    back = [m for m in warnings if "is back" in m]
    assert len(outage) == 1, warnings  # once per outage, not once per retry
    assert len(back) == 1 and "draining 6 pending events" in back[0], warnings


def start_child(cfg_path: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "child.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "edge.delivery.publish", "--config", str(cfg_path), "--poll", "0.2", "-v"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def test_sigkill_between_commit_and_ack_resends_the_same_event(
    setup, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg, cfg_path, store, collector, publisher = setup
    child = start_child(cfg_path, tmp_path)
    try:
        wait_until(lambda: any(s["state"] == "online" for s in collector.statuses()), 10, "child online")
        mosquitto_broker.pause()  # the child can send, but no PUBACK will come back
        ev = store.record_meal(meal(cfg), events_topic(cfg))  # committed; the child polls the outbox
        wait_until(lambda: store.list_events()[0].attempts >= 1, 5, "the child sent the event")
        child.kill()  # SIGKILL between commit and acknowledgement
        child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    mosquitto_broker.resume()
    [row] = store.list_events()
    assert row.delivered_at is None and row.attempts == 1

    pub = publisher()  # the daemon restarted
    wait_until(lambda: store.pending_count() == 0, 10, "re-sent event acknowledged")
    wait_until(lambda: len(collector.events()) >= 1, 5, "the event at the collector")
    time.sleep(0.3)
    [row] = store.list_events()
    assert row.attempts == 2 and row.delivered_at is not None
    # same event_id, same seq, same bytes: a receiver de-duplicates by event_id
    assert {e["event_id"] for e in collector.events()} == {ev.event_id}
    assert set(collector.raw_events()) == {ev.payload}
    print(f"copies received: {len(collector.raw_events())}")
    assert pub.delivered == 1
    # the broker published the killed child's last will
    wait_until(lambda: any(s["reason"] == "connection_lost" for s in collector.statuses()), 5, "last will")


def test_retained_status_birth_and_last_will(
    setup, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    cfg, cfg_path, store, collector, _ = setup
    topic = status_topic_of(cfg)
    child = start_child(cfg_path, tmp_path)
    try:
        wait_until(lambda: any(s["state"] == "online" for s in collector.statuses()), 10, "child online")
        birth = retained(mosquitto_broker, topic)
        assert birth.retain
        status = json.loads(birth.payload)
        STATUS.validate(status)
        assert (status["state"], status["reason"], status["kiosk_id"]) == ("online", "connected", "kiosk-1")
        child.kill()
        child.wait(5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    wait_until(lambda: collector.statuses()[-1]["state"] == "offline", 5, "the last will")
    will = retained(mosquitto_broker, topic)
    assert will.retain
    status = json.loads(will.payload)
    STATUS.validate(status)
    assert (status["state"], status["reason"]) == ("offline", "connection_lost")


def test_clean_stop_with_broker_down_keeps_events_pending(setup, mosquitto_broker: MosquittoBroker) -> None:
    cfg, _, store, collector, publisher = setup
    mosquitto_broker.stop()
    pub = publisher()
    store.record_meal(meal(cfg), events_topic(cfg))
    pub.wake()
    time.sleep(0.5)
    t0 = time.monotonic()
    pub.stop(timeout=1)
    assert time.monotonic() - t0 < 3
    assert store.pending_count() == 1
    # and a later publisher delivers it
    mosquitto_broker.start()
    pub2 = publisher()
    wait_until(lambda: store.pending_count() == 0, 10, "delivery by the next publisher")
    assert pub2.delivered == 1


def test_publisher_restart_resends_identical_bytes(setup, mosquitto_broker: MosquittoBroker) -> None:
    """Unit of the restart path without processes: stored payload bytes are what goes out."""
    cfg, _, store, collector, publisher = setup
    ev = replace(meal(cfg), match={"distance": 0.25, "frames": 3, "model_id": "m", "backend": "dlib"})
    stored = store.record_meal(ev, events_topic(cfg))
    publisher()
    wait_until(lambda: store.pending_count() == 0, 5, "delivery")
    wait_until(lambda: len(collector.raw_events()) == 1, 5, "the event at the collector")
    assert collector.raw_events() == [stored.payload]


# -- the pure drain bookkeeping ------------------------------------------------------------------------


def test_inflight_window_bookkeeping() -> None:
    from edge.delivery.outbox import InflightWindow
    from edge.store import StoredEvent

    w = InflightWindow(3)
    evs = [StoredEvent(f"e{i}", i, "t", b"{}") for i in (5, 1, 4, 2, 3)]
    first = w.to_send(evs)
    assert [e.seq for e in first] == [1, 2, 3]  # seq order, bounded by the window
    for mid, e in enumerate(first, start=10):
        w.add(mid, e.event_id)
    assert w.room == 0 and w.to_send(evs) == [] and "e2" in w
    assert w.ack(11) == "e2" and w.ack(11) is None and w.ack(999) is None  # unknown mids: status messages
    assert [e.seq for e in w.to_send(evs)] == [2]  # e2 is still in the outbox until marked: sent again
    with pytest.raises(ValueError):
        w.add(10, "e9")


def test_outage_is_logged_once() -> None:
    from edge.delivery.outbox import Outage

    o = Outage()
    assert o.recovered(0.0) is None
    assert o.failed(1.0) is True
    assert [o.failed(t) for t in (2.0, 4.0, 8.0)] == [False, False, False]
    assert o.retries == 3
    assert o.recovered(9.5) == 8.5
    assert o.failed(20.0) is True


def test_sigterm_publishes_offline_stopped(setup, mosquitto_broker: MosquittoBroker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, cfg_path, store, collector, _ = setup
    child = start_child(cfg_path, tmp_path)
    try:
        wait_until(lambda: any(s["state"] == "online" for s in collector.statuses()), 10, "child online")
        child.terminate()
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    status = json.loads(retained(mosquitto_broker, status_topic_of(cfg)).payload)
    assert (status["state"], status["reason"]) == ("offline", "stopped")
    time.sleep(0.3)
    assert not any(s["reason"] == "connection_lost" for s in collector.statuses())  # no last will
