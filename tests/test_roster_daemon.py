"""The roster link inside the real daemon (`meal-edge run` as a child process, real store, real Mosquitto): it
syncs at start on the publisher's connection, applies a pushed suspension and rebuilds the gallery for that
senior only, still stops within 5 s; without the district key it runs but says it does not sync."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MosquittoBroker, free_port
from roster_scripted import ScriptedDistrict, embedding
from test_defects_daemon import Daemon, assert_clean_stop, write_config

from edge.config import DEFAULT_CONFIG, parse_config
from edge.recognition.embed.mirror import reference_model_id
from edge.security.signing import load_key, public_key_text
from edge.store import Store

pytestmark = pytest.mark.slow
#: the default config's model (what the daemon's gallery holds templates of)
_R = parse_config(DEFAULT_CONFIG).recognition
MODEL = reference_model_id(_R.mirror, _R.model)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.close()


def roster_daemon_config(folder: Path, broker: MosquittoBroker, d: ScriptedDistrict, key: bool = True) -> Path:
    cfg = write_config(folder, camera=str(folder / "no-camera"), display_port=free_port(), mqtt_port=broker.port)
    (folder / "roster.key").write_text(d.tkey.hex())
    os.chmod(folder / "roster.key", 0o600)
    text = cfg.read_text().replace("over the [mqtt] connection.\nenabled = false",
                                   "over the [mqtt] connection.\nenabled = true")
    text = text.replace('transport_key_file = ""', 'transport_key_file = "roster.key"')
    if key:
        text = text.replace('district_key = ""', f'district_key = "{public_key_text(d.key.public_key())}"')
    cfg.write_text(text)
    return cfg


def test_the_daemon_syncs_applies_a_suspension_and_stops_in_time(
        tmp_path: Path, mosquitto_broker: MosquittoBroker, daemons: list[Daemon]) -> None:
    d = ScriptedDistrict(model_id=MODEL)
    for i in range(30):
        d.put(f"S{i:03d}", embeddings=[embedding(i), embedding(100 + i)])
    d.serve(mosquitto_broker.host, mosquitto_broker.port)
    try:
        cfg = roster_daemon_config(tmp_path, mosquitto_broker, d)
        d.kiosk_keys[("centre-001", "kiosk-1")] = load_key(tmp_path / "state" / "signing.key").public_key()
        k = Daemon(cfg)
        daemons.append(k)
        k.wait_for("roster link: version 0")
        k.wait_for("30 seniors, 60 templates")  # rebuilt in the background after the first batch
        with Store(tmp_path / "state" / "meal.sqlite") as store:
            assert store.roster_state().version == 30 and store.roster_uploads_enabled()
            v = d.put("S007", status="suspended")
            t0 = time.monotonic()
            d.push("centre-001", "kiosk-1", 30)
            while time.monotonic() - t0 < 5:
                s = store.get_senior("S007")
                if s is not None and s.status == "suspended":
                    break
                time.sleep(0.02)
            assert s is not None and s.status == "suspended", k.log[-2000:]
            assert store.roster_state().version == v
        k.wait_for("gallery: 1 seniors changed", 5)  # only S007 rebuilt, not the whole gallery
        t0 = time.monotonic()
        while not any(r.version == v for r in d.receipts) and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        assert any(r.version == v for r in d.receipts), "the receipt for the suspension's version"
        assert_clean_stop(k, k.terminate())
    finally:
        d.stop()


def test_without_the_district_key_the_daemon_runs_and_says_it_does_not_sync(
        tmp_path: Path, mosquitto_broker: MosquittoBroker, daemons: list[Daemon]) -> None:
    d = ScriptedDistrict(model_id=MODEL)
    cfg = roster_daemon_config(tmp_path, mosquitto_broker, d, key=False)
    k = Daemon(cfg)
    daemons.append(k)
    k.wait_for("meal-edge running")
    assert "district roster: this kiosk does NOT sync: no district roster key" in k.log
    assert_clean_stop(k, k.terminate())
