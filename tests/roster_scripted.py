"""A scripted district for the kiosk's roster tests, built only on edge.delivery.rosterwire (the contract):
it keeps a roster with versions, makes signed batches, and (`serve`) answers a kiosk over a real Mosquitto
like the district server does: sync requests with compacted batches, uploads with acks, receipts recorded.

It is a test double of the *other side of the wire*, never of what the kiosk tests are about (the kiosk's
store, link and daemon are the real ones)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.delivery import rosterwire as rw

PREFIX = "meal/v1"


def embedding(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(rw.EMBEDDING_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@dataclass
class Entry:
    version: int
    state: rw.SeniorState | None  # None: removed
    #: (template_id, model_id, quality, embedding)
    templates: list[tuple[str, str, float, np.ndarray]] = field(default_factory=list)
    centres: list[str] | None = None


class ScriptedDistrict:
    def __init__(self, district: str = "xuhui", model_id: str = "model-a") -> None:
        self.district = district
        self.model_id = model_id
        self.key = Ed25519PrivateKey.generate()
        self.tkey = os.urandom(rw.TRANSPORT_KEY_BYTES)
        self.version = 0
        self.roster: dict[str, Entry] = {}
        self.lock = threading.Lock()
        self.receipts: list[rw.Receipt] = []
        self.uploads: list[rw.TemplateUpload] = []
        self.syncs: list[rw.SyncRequest] = []
        self.kiosk_keys: dict[tuple[str, str], object] = {}
        self._client: mqtt.Client | None = None

    # -- the roster ----------------------------------------------------------------------------------

    def put(self, senior_id: str, *, name: str = "王芳", status: str = "active", card_no: str | None = None,
            home_centre: str = "centre-001", centres: list[str] | None = None,
            embeddings: list[np.ndarray] | None = None, birth_date: date = date(1946, 3, 1),
            hukou: str = "本区") -> int:
        """Add or change a senior; new embeddings are added to the ones kept. Returns the new version."""
        with self.lock:
            old = self.roster.get(senior_id)
            temps = list(old.templates) if old is not None and old.state is not None else []
            for e in embeddings or []:
                temps.append((rw.new_msg_id(), self.model_id, 0.9, np.asarray(e, np.float32)))
            self.version += 1
            st = rw.SeniorState(name=name, birth_date=birth_date, hukou=hukou, status=status,  # type: ignore[arg-type]
                                card_no=card_no, home_centre=home_centre, centres=centres)
            self.roster[senior_id] = Entry(self.version, st, temps, centres)
            return self.version

    def remove(self, senior_id: str) -> int:
        with self.lock:
            self.version += 1
            self.roster[senior_id] = Entry(self.version, None)
            return self.version

    def in_scope(self, e: Entry, centre: str) -> bool:
        return e.centres is None or centre in e.centres

    def change_for(self, senior_id: str, e: Entry, centre: str, model_id: str) -> rw.Change:
        if e.state is None:
            return rw.Change(version=e.version, senior_id=senior_id, op="absent", why="removed")
        if not self.in_scope(e, centre):
            return rw.Change(version=e.version, senior_id=senior_id, op="absent", why="out_of_scope")
        temps = [rw.WireTemplate(template_id=tid, model_id=m, quality=q,
                                 sealed=rw.seal_template(self.tkey, senior_id, m, tid, emb))
                 for tid, m, q, emb in e.templates if m == model_id]
        return rw.Change(version=e.version, senior_id=senior_id, op="state",
                         state=e.state.model_copy(update={"templates": temps}))

    def changes_since(self, version: int, centre: str, model_id: str) -> list[rw.Change]:
        with self.lock:
            items = sorted((e.version, sid, e) for sid, e in self.roster.items() if e.version > version)
            return [self.change_for(sid, e, centre, model_id) for _, sid, e in items]

    def batch(self, centre: str, kiosk: str, changes: list[rw.Change], from_version: int, to_version: int | None = None,
              *, full: bool = False, part: int = 1, parts: int = 1, model_id: str | None = None) -> rw.RosterBatch:
        top = to_version if to_version is not None else max([from_version, *(c.version for c in changes)])
        return rw.RosterBatch(msg_id=rw.new_msg_id(), district=self.district, centre_id=centre, kiosk_id=kiosk,
                              sent_at=datetime.now(UTC), from_version=from_version, to_version=top, full=full,
                              part=part, parts=parts, model_id=model_id or self.model_id, changes=changes)

    # -- over MQTT -----------------------------------------------------------------------------------

    def serve(self, host: str, port: int, *, chunk: int = 500, tls: tuple[str, str, str] | None = None) -> None:
        """Answer kiosks on a real broker (tls: ca, cert, key of a district identity)."""
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"scripted-district-{os.getpid()}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        if tls is not None:
            c.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])
        self.chunk = chunk
        connected = threading.Event()

        def on_connect(client: mqtt.Client, *a: object) -> None:
            client.subscribe(rw.district_up_filter(PREFIX, self.district), qos=1)
            connected.set()

        c.on_connect = on_connect
        c.on_message = self._on_message
        c.connect(host, port)
        c.loop_start()
        if not connected.wait(10):
            raise RuntimeError("scripted district could not connect")
        self._client = c

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def send(self, centre: str, kiosk: str, msg: rw.RosterBatch | rw.UploadAck) -> None:
        assert self._client is not None
        name = "roster" if isinstance(msg, rw.RosterBatch) else "acks"
        self._client.publish(rw.topic(PREFIX, self.district, centre, kiosk, "down", name), rw.encode(msg, self.key),
                             qos=1)

    def push(self, centre: str, kiosk: str, from_version: int, model_id: str | None = None) -> None:
        """Send what changed after `from_version` (as the district's pusher does)."""
        changes = self.changes_since(from_version, centre, model_id or self.model_id)
        if changes:
            self.send(centre, kiosk, self.batch(centre, kiosk, changes, from_version, model_id=model_id))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        district, centre, kiosk, _, name = rw.parse_topic(PREFIX, msg.topic)
        key = self.kiosk_keys.get((centre, kiosk))
        m = rw.decode(msg.payload, key)  # type: ignore[arg-type]
        rw.check_origin(m, district, centre, kiosk)
        if isinstance(m, rw.SyncRequest):
            self.syncs.append(m)
            self._answer_sync(centre, kiosk, m)
        elif isinstance(m, rw.TemplateUpload):
            self.uploads.append(m)
            self._answer_upload(centre, kiosk, m)
        elif isinstance(m, rw.Receipt):
            self.receipts.append(m)

    def _answer_sync(self, centre: str, kiosk: str, m: rw.SyncRequest) -> None:
        start = 0 if m.full else m.version
        changes = self.changes_since(start, centre, m.model_id)
        if m.full:
            changes = [c for c in changes if c.op == "state"]
            top = self.version
            parts = max(1, -(-len(changes) // self.chunk))
            for i in range(parts):
                self.send(centre, kiosk, self.batch(centre, kiosk, changes[i * self.chunk:(i + 1) * self.chunk], 0,
                                                    top, full=True, part=i + 1, parts=parts, model_id=m.model_id))
            return
        prev = start
        n = max(1, -(-len(changes) // self.chunk))
        for i in range(0, len(changes), self.chunk):  # a catch-up in parts, as the district sends it
            part = changes[i:i + self.chunk]
            self.send(centre, kiosk, self.batch(centre, kiosk, part, prev, model_id=m.model_id,
                                                part=i // self.chunk + 1, parts=n))
            prev = part[-1].version

    def _answer_upload(self, centre: str, kiosk: str, m: rw.TemplateUpload) -> None:
        with self.lock:
            e = self.roster.get(m.senior_id)
        base = dict(msg_id=rw.new_msg_id(), district=self.district, centre_id=centre, kiosk_id=kiosk,
                    sent_at=datetime.now(UTC), upload_id=m.msg_id, senior_id=m.senior_id)
        code = None
        if e is None:
            code = "unknown_senior"
        elif e.state is None:
            code = "removed"
        elif e.state.status == "deceased":
            code = "deceased"
        if code is not None:
            self.send(centre, kiosk, rw.UploadAck(**base, accepted=False, reason_code=code, reason=rw.REFUSALS[code]))
            return
        assert e is not None and e.state is not None
        embs = [(t.template_id, t.model_id, t.quality, rw.open_template(self.tkey, m.senior_id, t))
                for t in m.templates]
        with self.lock:
            self.version += 1
            e.templates.extend(embs)
            e.version = self.version
            v = self.version
        self.send(centre, kiosk, rw.UploadAck(**base, accepted=True, version=v))
