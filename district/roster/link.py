"""The district's end of the roster link (docs/roster.md), run by `meal-district serve` when [roster] enabled.

One MQTT client of its own (client id `<serve's>-roster`, persistent session, manual acknowledgement) on the
shared subscription `$share/<group>/<prefix>/<district>/+/+/up/#`, and one worker thread that does everything
in order: it answers SyncRequests (batches from the kiosk's version, or a full snapshot, in parts), stores
TemplateUploads and answers each with an UploadAck, records Receipts, and pushes new changes to every kiosk
(polling the newest version every [roster] push_interval). One thread means a push never overtakes a sync
answer computed after it. A message is acknowledged to the broker after its work committed; a database
outage leaves it unacknowledged (the broker sends it again).

Every uplink message must be signed by the key registered for the kiosk of its topic and name that kiosk
(check_origin); anything else is dropped and logged (without senior names).

With several serve processes, only the one holding the PostgreSQL advisory lock "roster pusher" pushes;
every process answers the messages the broker gives it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from district.broker import make_client
from district.config import Config
from district.db.models import Kiosk
from district.roster import book
from district.roster.keys import RosterKeys
from district.validate import KioskKey
from edge.delivery import rosterwire as rw
from edge.security.signing import SignatureError, public_key_from_text

log = logging.getLogger(__name__)

#: pg_try_advisory_lock key of the one process that pushes: "rpusher"
_PUSHER_LOCK = 0x72_7075_7368_6572


@dataclass(frozen=True)
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    conn: int


@dataclass
class LinkTotals:
    syncs: int = 0
    snapshots: int = 0
    uploads_accepted: int = 0
    uploads_refused: int = 0
    receipts: int = 0
    batches_sent: int = 0
    changes_sent: int = 0
    dropped: int = 0


#: put on the worker's queue by the PostgreSQL listener: a roster change was committed, push now
_WAKE = _Msg(-1, 0, "", b"", -1)


class _Listener:
    """LISTEN for the roster's NOTIFY (PostgreSQL): wakes the pusher as soon as a change is committed, instead of
    at its next poll. Polling stays: this only shortens the wait, and a lost listener connection costs nothing."""

    def __init__(self, engine: Engine, wake: Callable[[], None], stop: threading.Event) -> None:
        self.url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.wake = wake
        self.stop = stop
        self.thread = threading.Thread(target=self._run, name="meal-district-roster-listen", daemon=True)

    def _run(self) -> None:
        import psycopg

        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {book.CHANNEL}")
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error as e:
                log.warning("roster link: listening for changes failed (%s); polling only, retrying in 5 s",
                            str(e).splitlines()[0][:200])
                self.stop.wait(5.0)


class _Leader:
    """Whether this process pushes: always on SQLite; on PostgreSQL while it holds a session advisory lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    def held(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True
        try:
            if self.conn is not None:
                self.conn.execute(text("SELECT 1"))
                self.conn.commit()
                return True
            c = self.engine.connect()
            got = bool(c.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PUSHER_LOCK}).scalar())
            c.commit()
            if got:
                self.conn = c
                log.info("this process pushes roster changes to the kiosks")
            else:
                c.close()
            return got
        except SQLAlchemyError:
            self.release()
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except SQLAlchemyError:
                pass
            self.conn = None


class RosterLink:
    def __init__(self, cfg: Config, engine: Engine, keys: RosterKeys, client_id: str) -> None:
        self.cfg = cfg
        self.engine = engine
        self.keys = keys
        self.client_id = client_id
        self.prefix = cfg.district.topic_prefix
        self.district = cfg.district.id
        self.totals = LinkTotals()
        self.connected = threading.Event()
        self._queue: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._conn = 0
        self._leader = _Leader(engine)
        self._pushed_max = -1
        #: per kiosk: versions up to which changes were looked at for it (none applied to it beyond sent)
        self._scanned: dict[KioskKey, int] = {}
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # -- MQTT ------------------------------------------------------------------------------------------

    @property
    def subscription(self) -> str:
        return f"$share/{self.cfg.ingest.group}/{rw.district_up_filter(self.prefix, self.district)}"

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.cfg, self.client_id)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        paho_log = logging.getLogger("district.serve.paho")
        c.enable_logger(paho_log)
        return c

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: Properties | None) -> None:
        if rc.is_failure:
            log.error("roster link: the broker refused the connection: %s", rc)
            return
        self._conn += 1
        client.subscribe([(self.subscription, SubscribeOptions(qos=1))])

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, rcs: list[ReasonCode],
                      props: Properties | None) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("roster link: the broker refused the subscription to %s: %s (the district needs read access "
                      "to .../+/+/up/# and write access to .../+/+/down/#)", self.subscription,
                      ", ".join(str(rc) for rc in rcs))
            return
        log.info("roster link subscribed to %s", self.subscription)
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags, rc: ReasonCode,
                       props: Properties | None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("roster link: connection to the broker lost (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Msg(msg.mid, msg.qos, msg.topic, bytes(msg.payload), self._conn))

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        b = self.cfg.broker
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = b.session_expiry
        p.ReceiveMaximum = 100
        self._client.connect_async(b.host, b.port, keepalive=b.keepalive, clean_start=False, properties=p)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="meal-district-roster", daemon=True)
        self._thread.start()
        if self.engine.dialect.name == "postgresql":
            _Listener(self.engine, lambda: self._queue.put(_WAKE), self._stop).thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is None:
            return  # never started (serve --retire)
        self._queue.put(_WAKE)  # the worker may be waiting up to push_interval for a message
        self._thread.join(30)
        self._client.disconnect()
        self._client.loop_stop()
        self._leader.release()

    def _run(self) -> None:
        interval = self.cfg.roster.push_interval
        next_push = time.monotonic()
        while not self._stop.is_set():
            try:
                m = self._queue.get(timeout=max(0.0, min(interval, next_push - time.monotonic())))
            except queue.Empty:
                m = None
            try:
                if m is not None and m is not _WAKE:
                    self._handle_and_ack(m)
                if m is not None or time.monotonic() >= next_push:
                    # also right after a message: an accepted upload is a new version to send out now
                    self.push()
                    next_push = time.monotonic() + interval
            except Exception:  # a bug must not end the link: the message comes again
                log.exception("roster link: unexpected error")
                self._stop.wait(1.0)

    def _handle_and_ack(self, m: _Msg) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.handle(m.topic, m.payload)
                break
            except SQLAlchemyError as e:
                log.error("roster link: database error (%s); retrying in %.0f s", str(e).splitlines()[0][:200], delay)
                if self._stop.wait(delay):
                    return  # unacknowledged: the broker sends it again
                delay = min(delay * 2, 30.0)
        if m.qos > 0 and m.conn == self._conn:
            self._client.ack(m.mid, m.qos)

    # -- messages --------------------------------------------------------------------------------------

    def _drop(self, t: str, why: str) -> None:
        self.totals.dropped += 1
        log.warning("roster link: dropped a message on %s: %s", t, why)

    def handle(self, t: str, payload: bytes) -> None:
        try:
            district, centre, kiosk_id, direction, _name = rw.parse_topic(self.prefix, t)
        except rw.WireError as e:
            return self._drop(t, str(e))
        if district != self.district or direction != "up":
            return self._drop(t, "not an uplink of this district")
        kiosk = KioskKey(district, centre, kiosk_id)
        with self.engine.connect() as conn:
            # looked up each time (a primary-key read): a kiosk registered a moment ago syncs at once
            key_text = conn.execute(select(Kiosk.public_key).where(
                Kiosk.district == district, Kiosk.centre_id == centre, Kiosk.kiosk_id == kiosk_id)).scalar()
        if not key_text:
            return self._drop(t, "no public key registered for this kiosk (meal-district kiosk register)")
        try:
            msg = rw.decode(payload, public_key_from_text(key_text), max_bytes=self.cfg.roster.max_upload_bytes)
            rw.check_origin(msg, district, centre, kiosk_id)
        except (rw.WireError, SignatureError) as e:
            return self._drop(t, str(e))
        if isinstance(msg, rw.SyncRequest):
            self.answer_sync(kiosk, msg)
        elif isinstance(msg, rw.TemplateUpload):
            self.answer_upload(kiosk, msg)
        elif isinstance(msg, rw.Receipt):
            n = book.record_receipt(self.engine, kiosk, msg)
            self.totals.receipts += 1
            log.info("roster receipt from %s: version %d, %d erasure(s) confirmed", kiosk, msg.version, n)
        else:
            self._drop(t, f"{msg.type} is not an uplink message")
        return None

    def _envelope(self, k: KioskKey) -> dict[str, object]:
        return {"msg_id": str(uuid.uuid4()), "district": k.district, "centre_id": k.centre_id,
                "kiosk_id": k.kiosk_id, "sent_at": datetime.now(UTC)}

    def _publish(self, k: KioskKey, name: str, msg: rw.RosterBatch | rw.UploadAck) -> None:
        t = rw.topic(self.prefix, k.district, k.centre_id, k.kiosk_id, "down", name)
        info = self._client.publish(t, rw.encode(msg, self.keys.signing), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            log.warning("roster link: publishing to %s failed: %s", t, mqtt.error_string(info.rc))

    def answer_upload(self, k: KioskKey, msg: rw.TemplateUpload) -> None:
        v = book.accept_upload(self.engine, k, msg, self.keys.transport, self.keys.cipher)
        if v.accepted:
            self.totals.uploads_accepted += 1
        else:
            self.totals.uploads_refused += 1
        log.info("roster upload %s from %s: %s", msg.msg_id, k,
                 f"accepted, version {v.version}" if v.accepted else f"refused ({v.reason_code})")
        ack = rw.UploadAck(**self._envelope(k), upload_id=msg.msg_id, senior_id=msg.senior_id,
                           accepted=v.accepted, reason_code=v.reason_code,
                           reason=rw.REFUSALS.get(v.reason_code or ""), version=v.version)
        self._publish(k, "acks", ack)

    def answer_sync(self, k: KioskKey, msg: rw.SyncRequest) -> None:
        now = datetime.now(UTC)
        size = self.cfg.roster.batch_changes
        with self.engine.begin() as conn:
            before = book.kiosk_synced(conn, k, msg.model_id, now)
        with self.engine.connect() as conn:
            upto = book.max_version(conn)
            # start over: asked for; a kiosk ahead of the district (a restored district backup); or a kiosk that
            # changed its face model (what it holds has none of the new model's templates)
            full = msg.full or msg.version > upto or (before is not None and before != msg.model_id
                                                       and msg.version > 0)
            if full:
                upto, changes = book.snapshot(conn, k.centre_id, msg.model_id, self.keys.transport, self.keys.cipher)
            else:
                changes = book.changes_since(conn, k.centre_id, msg.model_id, msg.version, upto, self.keys.transport,
                                             self.keys.cipher)
        batches = self._batches(k, msg.model_id, msg.version, upto, changes, size, full)
        for b in batches:
            self._publish(k, "roster", b)
        with self.engine.begin() as conn:
            book.set_sent(conn, k, upto)
        self._scanned[k] = upto
        self.totals.syncs += 1
        self.totals.snapshots += int(full)
        self.totals.batches_sent += len(batches)
        self.totals.changes_sent += len(changes)
        log.info("roster sync from %s (%s, version %d%s): %d change(s) in %d message(s) up to version %d", k,
                 msg.model_id, msg.version, ", full" if full else "", len(changes), len(batches), upto)

    def _batches(self, k: KioskKey, model_id: str, start: int, upto: int, changes: list[rw.Change], size: int,
                 full: bool) -> list[rw.RosterBatch]:
        parts = [changes[i : i + size] for i in range(0, len(changes), size)] or [[]]
        out: list[rw.RosterBatch] = []
        frm = 0 if full else start
        for i, part in enumerate(parts, start=1):
            to = upto if full or i == len(parts) else part[-1].version
            out.append(rw.RosterBatch(**self._envelope(k), from_version=frm, to_version=to,
                                      full=full, part=i, parts=len(parts), model_id=model_id, changes=part))
            if not full:
                frm = to
        return out

    def push(self) -> None:
        """Send what changed since each kiosk's last batch (only the pushing process)."""
        with self.engine.connect() as conn:
            upto = book.max_version(conn)
        if upto <= self._pushed_max or not self._leader.held():
            return
        size = self.cfg.roster.batch_changes
        with self.engine.connect() as conn:
            kiosks = book.roster_kiosks(conn)
            for row in kiosks:
                k = KioskKey(row.district, row.centre_id, row.kiosk_id)
                sent = row.sent_version
                scan_from = max(sent, self._scanned.get(k, sent))
                if scan_from >= upto or row.model_id is None:
                    continue
                changes = book.changes_since(conn, k.centre_id, row.model_id, scan_from, upto, self.keys.transport,
                                             self.keys.cipher)
                self._scanned[k] = upto
                if not changes:
                    continue
                batches = self._batches(k, row.model_id, sent, upto, changes, size, False)
                for b in batches:
                    self._publish(k, "roster", b)
                with self.engine.begin() as w:
                    book.set_sent(w, k, upto)
                self.totals.batches_sent += len(batches)
                self.totals.changes_sent += len(changes)
        self._pushed_max = upto
