"""Helpers for the roster tests: a district config with the roster link on, its keys in a test folder, and a
scripted kiosk built on edge.delivery.rosterwire only (the real kiosk side is edge/delivery/rostersync.py;
this one keeps the roster it applies in a dict, with the same rules: in order, idempotent, gaps -> sync)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from conftest import MosquittoBroker
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from district_support import DISTRICT, PREFIX, config_text
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from district.config import Config, parse_config
from edge.delivery import rosterwire as rw
from edge.security.signing import public_key_text


def roster_config(broker: MosquittoBroker, db: str, tmp_path: Path, batch_changes: int = 500,
                  push_interval: float = 0.1) -> tuple[Config, Path]:
    """A district config with [roster] enabled and its three keys made in tmp_path/keys."""
    from district.roster.keys import roster_init

    keys = tmp_path / "keys"
    text = config_text(broker, db).replace(
        "[roster]\nenabled = false", "[roster]\nenabled = true").replace(
        'signing_key_file = ""', f'signing_key_file = "{keys / "roster-signing.key"}"').replace(
        'transport_key_file = ""', f'transport_key_file = "{keys / "roster-transport.key"}"').replace(
        'template_key_file = ""', f'template_key_file = "{keys / "roster-template.key"}"').replace(
        "batch_changes = 500", f"batch_changes = {batch_changes}").replace(
        "push_interval = 0.2", f"push_interval = {push_interval}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "district.toml"
    path.write_text(text)
    cfg = parse_config(text, path)
    assert cfg.roster.enabled and cfg.roster.batch_changes == batch_changes
    roster_init(cfg)
    return cfg, path


def embedding(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(rw.EMBEDDING_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class Held:
    state: rw.SeniorState
    version: int
    #: template_id -> embedding, opened with the transport key
    templates: dict[str, np.ndarray] = field(default_factory=dict)


class ScriptedKiosk:
    """A kiosk's roster link reduced to its rules, on a real MQTT connection."""

    def __init__(self, broker: MosquittoBroker, district_key: Ed25519PublicKey, transport: bytes,
                 centre: str = "centre-001", kiosk: str = "kiosk-1", model_id: str = "sface",
                 receipts: bool = True) -> None:
        self.broker = broker
        self.district_key = district_key
        self.transport = transport
        self.centre, self.kiosk, self.model_id = centre, kiosk, model_id
        self.key = Ed25519PrivateKey.generate()
        self.receipts = receipts
        self.version = 0
        self.roster: dict[str, Held] = {}
        self.acks: dict[str, rw.UploadAck] = {}
        self.batches: list[rw.RosterBatch] = []
        self.erased: dict[str, int] = {}
        self.seen_ids: set[str] = set()
        self.snapshot_seen: set[str] = set()
        self.gaps = 0
        self.lock = threading.Lock()
        self.client: mqtt.Client | None = None

    @property
    def public_key(self) -> str:
        return public_key_text(self.key.public_key())

    def register(self, engine: Any) -> None:
        from district.store import register_kiosk

        register_kiosk(engine, DISTRICT, self.centre, self.kiosk, self.public_key, actor="test")

    def _topic(self, direction: rw.Direction, name: str) -> str:
        return rw.topic(PREFIX, DISTRICT, self.centre, self.kiosk, direction, name)

    def _env(self) -> dict[str, Any]:
        return {"msg_id": rw.new_msg_id(), "district": DISTRICT, "centre_id": self.centre, "kiosk_id": self.kiosk,
                "sent_at": datetime.now(UTC)}

    def connect(self, sync: bool = True) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{self.centre}-{self.kiosk}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.on_message = self._on_message
        self.client = c  # before subscribing: a batch may come at once (and a gap is answered from the callback)
        c.connect(self.broker.host, self.broker.port)
        c.loop_start()
        r, _ = c.subscribe(self._topic("down", "#"), qos=1)
        assert r == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)
        if sync:
            self.sync()

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def send(self, name: str, msg: rw.Message, wait: bool = True) -> str:
        """wait=False inside paho's callbacks (waiting there would block the loop that reads the PUBACK)."""
        assert self.client is not None
        info = self.client.publish(self._topic("up", name), rw.encode(msg, self.key), qos=1)
        if wait:
            info.wait_for_publish(10)
        return msg.msg_id

    def sync(self, full: bool = False) -> None:
        self.send("sync", rw.SyncRequest(**self._env(), version=0 if full else self.version, model_id=self.model_id,
                                         full=full))

    def upload(self, senior_id: str, vectors: list[np.ndarray], model_id: str | None = None) -> tuple[str, list[str]]:
        model = model_id or self.model_id
        ts = []
        for v in vectors:
            tid = rw.new_msg_id()
            ts.append(rw.WireTemplate(template_id=tid, model_id=model, quality=0.9,
                                      sealed=rw.seal_template(self.transport, senior_id, model, tid, v)))
        msg = rw.TemplateUpload(**self._env(), senior_id=senior_id, templates=ts)
        return self.send("templates", msg), [t.template_id for t in ts]

    def _on_message(self, client: mqtt.Client, userdata: object, m: mqtt.MQTTMessage) -> None:
        msg = rw.decode(bytes(m.payload), self.district_key)
        rw.check_origin(msg, DISTRICT, self.centre, self.kiosk)
        with self.lock:
            if isinstance(msg, rw.UploadAck):
                self.acks[msg.upload_id] = msg
            elif isinstance(msg, rw.RosterBatch):
                self.batches.append(msg)
                self._apply(msg)

    def _apply(self, b: rw.RosterBatch) -> None:
        assert b.model_id == self.model_id
        if not b.full and b.from_version > self.version:
            self.gaps += 1
            self.send("sync", rw.SyncRequest(**self._env(), version=self.version, model_id=self.model_id), False)
            return
        erased: dict[str, int] = {}
        for ch in b.changes:
            self.seen_ids.add(ch.senior_id)
            if b.full:
                self.snapshot_seen.add(ch.senior_id)
            elif ch.version <= self.version:
                continue  # already applied, or superseded (docs/roster.md)
            if ch.op == "absent":
                held = self.roster.pop(ch.senior_id, None)
                if ch.why == "removed":
                    erased[ch.senior_id] = len(held.templates) if held else 0
            else:
                assert ch.state is not None
                tm = {t.template_id: rw.open_template(self.transport, ch.senior_id, t) for t in ch.state.templates}
                assert all(t.model_id == self.model_id for t in ch.state.templates)
                self.roster[ch.senior_id] = Held(ch.state, ch.version, tm)
        if b.full:
            if b.part < b.parts:
                return
            for sid in set(self.roster) - self.snapshot_seen:
                del self.roster[sid]
            self.snapshot_seen = set()
        self.version = max(self.version, b.to_version) if not b.full else b.to_version
        self.erased.update(erased)
        if self.receipts:
            self.send("receipts", rw.Receipt(**self._env(), version=self.version, model_id=self.model_id,
                                             erased=erased), False)

    def wait(self, cond: Any, timeout: float = 10, what: str = "the kiosk") -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with self.lock:
                if cond(self):
                    return time.monotonic() - t0
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (version {self.version})")
