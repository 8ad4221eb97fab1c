"""The kiosk's publisher over TLS with its own identity, against the documented broker configuration
(docs/deployment.md, tests/mqtt_tls.py): delivery works with a certificate or a login, the secrets come from
private files only, the session outlives a restart (MQTT 5 session expiry), the clock state is in the
retained status, and `check-config` warns about a plain link."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import _find_mosquitto, meal_event
from jsonschema import Draft202012Validator
from mqtt_tls import KIOSK_A, KIOSK_B, SERVER, Pki, SecureBroker, TestClient, start_secure, topic, wait_for

from edge.cli.main import main as edge_main
from edge.config import DEFAULT_CONFIG, Config, ConfigError, parse_config
from edge.delivery.publish import Publisher
from edge.security.clockguard import ClockState
from edge.security.signing import verify_event
from edge.store import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STATUS = Draft202012Validator(json.loads((ROOT / "docs" / "status.schema.json").read_text()))
EVENTS = Draft202012Validator(json.loads((ROOT / "docs" / "events.schema.json").read_text()))
PASSWORD = "kiosk-a-9f3Kx"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def _broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki, **kw: Any) -> Iterator[SecureBroker]:
    exe = _find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = start_secure(exe, tmp_path_factory.mktemp("broker"), pki, **kw)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def cert_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    yield from _broker(tmp_path_factory, pki)


@pytest.fixture(scope="module")
def login_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureBroker]:
    yield from _broker(tmp_path_factory, pki, mode="logins", logins={KIOSK_A: PASSWORD, SERVER: "srv-pw-1"})


def kiosk_config(folder: Path, broker: SecureBroker, **keys: str) -> tuple[Config, Path]:
    """The default config (centre-001/kiosk-1 in xuhui = identity KIOSK_A) pointed at `broker`, with TLS on
    and the given [mqtt] / [mqtt.tls] keys (each appears once in the default file) set to these strings."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        DEFAULT_CONFIG.replace("port = 1883", f"port = {broker.port}")
        .replace('[store]\npath = ""', '[store]\npath = "store.sqlite"')
        .replace("keepalive = 30", "keepalive = 5")
        .replace("[mqtt.tls]\nenabled = false", "[mqtt.tls]\nenabled = true")
    )
    # only [mqtt] and [mqtt.tls] are changed ([store] has a key_file too: the template key)
    head, mqtt = text.split("\n[mqtt]\n", 1)
    for key, value in {"ca_file": str(broker.pki.ca), **keys}.items():
        assert mqtt.count(f"\n{key} = \"\"") == 1, key
        mqtt = mqtt.replace(f"\n{key} = \"\"", f"\n{key} = {json.dumps(value)}")
    text = head + "\n[mqtt]\n" + mqtt
    path = folder / "meal-edge.toml"
    path.write_text(text)
    return parse_config(text, path), path


def cert_config(folder: Path, broker: SecureBroker, identity: str = KIOSK_A) -> tuple[Config, Path]:
    cert, key = broker.pki.clients[identity]
    return kiosk_config(folder, broker, cert_file=str(cert), key_file=str(key))


def login_config(folder: Path, broker: SecureBroker, mode: int = 0o600) -> tuple[Config, Path]:
    pw = folder / "mqtt-password"
    folder.mkdir(parents=True, exist_ok=True)
    pw.write_text(PASSWORD + "\n")
    os.chmod(pw, mode)
    return kiosk_config(folder, broker, username=KIOSK_A, password_file="mqtt-password")


def collector(broker: SecureBroker, **kw: Any) -> TestClient:
    c = TestClient(broker, "collector", pki=broker.pki, identity=SERVER, **kw).start()
    assert c.connected.is_set(), c.connects
    c.subscribe("meal/v1/xuhui/+/+/events")
    return c


def published(store: Store, cfg: Config, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(store.record_meal(meal_event(senior_id=f"S{i:04d}"), topic(KIOSK_A, "events")).event_id)
    return ids


def test_delivery_with_the_kiosk_certificate(tmp_path: Path, cert_broker: SecureBroker) -> None:
    cfg, _ = cert_config(tmp_path, cert_broker)
    assert cfg.mqtt.authenticated
    district = collector(cert_broker)
    store = Store(cfg.store_path)
    pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.2)
    assert "TLS, certificate" in pub.link
    try:
        pub.start()
        wait_for(lambda: pub.connected, 10, "the kiosk connected over TLS")
        ids = published(store, cfg, 3)
        pub.wake()
        wait_for(lambda: len(district.got()) == 3 and store.pending_count() == 0, 10, "3 events delivered")
        got = [json.loads(m.payload) for m in district.got()]
        assert [e["event_id"] for e in got] == ids
        for e in got:
            EVENTS.validate(e)
            verify_event(e, store.signer.key().public_key())
        log = cert_broker.log_path.read_text(errors="replace")
        assert f"as {KIOSK_A} (p5, c0," in log  # MQTT 5, clean start off, the identity as client id
    finally:
        pub.stop(timeout=2)
        district.stop()
        store.close()


def test_delivery_with_a_login_from_a_private_file(tmp_path: Path, login_broker: SecureBroker) -> None:
    cfg, _ = login_config(tmp_path, login_broker)
    district = TestClient(login_broker, "collector", ca=login_broker.pki.ca, username=SERVER,
                          password="srv-pw-1").start()
    district.subscribe("meal/v1/xuhui/+/+/events")
    store = Store(cfg.store_path)
    pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.2)
    assert f"login {KIOSK_A}" in pub.link
    try:
        pub.start()
        published(store, cfg, 2)
        pub.wake()
        wait_for(lambda: len(district.got()) == 2 and store.pending_count() == 0, 10, "2 events delivered")
    finally:
        pub.stop(timeout=2)
        district.stop()
        store.close()
    assert PASSWORD not in login_broker.log_path.read_text(errors="replace")


def test_secrets_only_from_private_files(tmp_path: Path, login_broker: SecureBroker,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg, cfg_path = login_config(tmp_path, login_broker, mode=0o644)
    with Store(cfg.store_path) as store, pytest.raises(ConfigError, match="readable by every user") as e:
        Publisher(store, cfg.mqtt_link, cfg.centre)
    assert str(tmp_path / "mqtt-password") in str(e.value)
    assert PASSWORD not in str(e.value) and PASSWORD not in caplog.text
    # a password in the config text is not a key at all
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config(cfg_path.read_text().replace('password_file = "mqtt-password"', f'password = "{PASSWORD}"'))
    # a client key others can read is refused the same way
    cfg2, _ = cert_config(tmp_path / "cert", login_broker)
    key = Path(cfg2.mqtt.tls.key_file)
    os.chmod(key, 0o644)
    try:
        with Store(cfg.store_path) as store, pytest.raises(ConfigError, match="client key.*readable by every"):
            Publisher(store, cfg2.mqtt_link, cfg2.centre)
    finally:
        os.chmod(key, 0o600)


def test_a_kiosk_with_another_identity_is_refused_and_keeps_its_events(tmp_path: Path, cert_broker: SecureBroker,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Kiosk B's certificate on a kiosk configured as A: the broker refuses A's topics (PUBACK not authorized);
    the events stay pending, each refusal is logged once."""
    cfg, _ = cert_config(tmp_path, cert_broker, identity=KIOSK_B)
    district = collector(cert_broker)
    store = Store(cfg.store_path)
    pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.1)
    caplog.set_level(logging.ERROR, logger="edge.delivery.publish")
    try:
        pub.start()
        [event_id] = published(store, cfg, 1)
        pub.wake()
        wait_for(lambda: store.list_events()[0].attempts >= 3, 10, "several refused attempts")
        assert store.pending_count() == 1 and district.got() == []
        refusals = [r for r in caplog.records if "broker refused event" in r.getMessage()]
        assert len(refusals) == 1 and event_id in refusals[0].getMessage()
        assert "Not authorized" in refusals[0].getMessage()
    finally:
        pub.stop(timeout=1)
        district.stop()
        store.close()


@pytest.mark.parametrize("expiry,kept", [(604800, True), (0, False)])
def test_session_survives_a_restart_for_its_expiry(tmp_path: Path, cert_broker: SecureBroker, expiry: int,
                                                   kept: bool) -> None:
    cfg, _ = cert_config(tmp_path, cert_broker)
    cfg = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"session_expiry": expiry})})
    with Store(cfg.store_path) as store:
        pub = Publisher(store, cfg.mqtt_link, cfg.centre)
        pub.start()
        wait_for(lambda: pub.connected, 10, "connected")
        pub.stop(timeout=2)
    # the same identity comes back without clean start: does the broker still hold the session?
    probe = TestClient(cert_broker, "whatever", pki=cert_broker.pki, identity=KIOSK_A, clean_start=False).start()
    try:
        assert probe.connected.is_set()
        assert probe.session_present is kept
    finally:
        probe.stop()


def test_clock_state_in_the_retained_status(tmp_path: Path, cert_broker: SecureBroker) -> None:
    cfg, _ = cert_config(tmp_path, cert_broker)
    sh = ZoneInfo("Asia/Shanghai")
    newest = datetime(2026, 11, 30, 11, 45, tzinfo=sh)
    with Store(cfg.store_path) as store:
        pub = Publisher(store, cfg.mqtt_link, cfg.centre)
        pub.set_clock(ClockState("behind", newest - timedelta(days=30), newest))
        pub.start()
        try:
            wait_for(lambda: pub.connected, 10, "connected")

            def status() -> dict[str, Any]:
                mon = TestClient(cert_broker, "m", pki=cert_broker.pki, identity=SERVER).start()
                mon.subscribe(topic(KIOSK_A, "status"))
                wait_for(lambda: mon.got(), 5, "the retained status")
                mon.stop()
                return dict(json.loads(mon.got()[-1].payload))

            s = status()
            STATUS.validate(s)
            assert s["clock"] == {"state": "behind", "newest_event": "2026-11-30T11:45:00+08:00"}
            pub.set_clock(ClockState("ok", newest + timedelta(minutes=1), newest))  # the clock was fixed
            time.sleep(0.5)
            s = status()
            STATUS.validate(s)
            assert s["state"] == "online" and s["clock"]["state"] == "ok"
        finally:
            pub.stop(timeout=2)


def test_check_config_warns_about_a_plain_link(tmp_path: Path, cert_broker: SecureBroker,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text(DEFAULT_CONFIG)
    assert edge_main(["check-config", str(plain)]) == 0
    out, err = capsys.readouterr()
    assert "plain MQTT, unauthenticated" in out and "UNAUTHENTICATED and UNENCRYPTED" in err
    _, secure = cert_config(tmp_path, cert_broker)
    assert edge_main(["check-config", str(secure)]) == 0
    out, err = capsys.readouterr()
    assert "TLS, certificate" in out and "WARNING" not in err
