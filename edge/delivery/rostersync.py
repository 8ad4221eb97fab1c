"""The kiosk's side of the district roster link (issue 13; the contract is edge/delivery/rosterwire.py).

It shares the event publisher's MQTT connection (edge/delivery/publish.py `attach`): the broker gives a kiosk
identity exactly one client id, so a second connection would throw the first off. On every connect it
subscribes `<kiosk>/down/#` and asks the district for what follows the version it has reached (SyncRequest).

Everything else runs on the link's own thread (paho's thread only hands messages over):
- a `down/roster` batch, signed by the district's roster key, is applied in one store transaction
  (edge/store/rosterdb.py): in order, idempotently; a gap (the batch starts after our version) or a broken
  snapshot makes it ask again; after it a Receipt says the version reached and what was erased;
- a `down/acks` answer records the district's verdict on an upload (refused: the templates go);
- uploads queued by enrolments (roster_uploads) are sealed for transit, signed with the kiosk's event key and
  sent, again at every connect and every `resend_after` s until the district answers;
- `meal-edge roster resync` (a flag in the store) makes it ask for a full snapshot.
After anything that changes the roster it calls `on_change(senior_ids)` (the daemon rebuilds its gallery for
those seniors in the background).

A kiosk without the district's public key never applies a batch: `problem()` says why, at start and in
`meal-edge roster status`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.config import Config
from edge.delivery import rosterwire as rw
from edge.security.signing import SignatureError, public_key_from_text
from edge.store import Store, StoreError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from edge.delivery.publish import Publisher

log = logging.getLogger(__name__)

#: a sync request is not repeated sooner than this (a burst of pushed batches after a gap asks once)
SYNC_GAP_S = 2.0
#: a snapshot older than the kiosk's version is taken only this soon after a sync request
SNAPSHOT_ANSWER_S = 600.0


class RosterSetupError(ValueError):
    """Why this kiosk cannot sync with the district roster, phrased with the fix."""


@dataclass(frozen=True)
class RosterKeys:
    district: Ed25519PublicKey
    transport: bytes


def load_keys(cfg: Config) -> RosterKeys:
    """The district's public roster key and the transport key from [roster]; RosterSetupError says what is
    missing (never a secret)."""
    r = cfg.roster
    if not r.enabled:
        raise RosterSetupError("[roster] enabled = false: this kiosk keeps its own roster")
    if not cfg.mqtt.enabled:
        raise RosterSetupError("[mqtt] enabled = false: the roster travels over the MQTT link")
    text = r.district_key
    path = cfg.roster_district_key_path
    if path is not None:
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise RosterSetupError(f"[roster] district_key_file {path}: cannot read it ({e})") from None
    if not text.strip():
        raise RosterSetupError(
            "no district roster key: set [roster] district_key to what `meal-district keys roster-init` printed "
            "(or district_key_file); without it the kiosk never accepts roster changes"
        )
    try:
        district = public_key_from_text(text)
    except SignatureError as e:
        raise RosterSetupError(f"[roster] district key: {e}") from None
    try:
        transport = rw.read_transport_key(cfg.roster_transport_key_path)
    except rw.WireError as e:
        raise RosterSetupError(
            f"roster transport key: {e} (set [roster] transport_key_file, or the systemd credential "
            f"{rw.TRANSPORT_CREDENTIAL!r})"
        ) from None
    return RosterKeys(district, transport)


def problem(cfg: Config) -> str | None:
    """Why this kiosk would not sync with the district roster, or None when it would."""
    try:
        load_keys(cfg)
    except RosterSetupError as e:
        return str(e)
    return None


class RosterLink:
    def __init__(
        self,
        store: Store,
        cfg: Config,
        keys: RosterKeys,
        signing_key: Ed25519PrivateKey,
        model_id: str,
        *,
        on_change: Callable[[Collection[str] | None], None] | None = None,
        resend_after: float = 60.0,
    ) -> None:
        self.store = store
        self.centre = cfg.centre
        self.prefix = cfg.mqtt.topic_prefix
        self.keys = keys
        self.signing_key = signing_key
        self.model_id = model_id
        self.on_change = on_change
        self.poll = cfg.roster.poll_seconds
        self.resend_after = resend_after
        c = cfg.centre
        self.down_filter = f"{rw.kiosk_base(self.prefix, c.district, c.id, c.kiosk_id)}/down/#"
        self._inbox: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._send: Callable[[str, bytes], mqtt.MQTTMessageInfo] | None = None
        self._up: Callable[[], bool] = lambda: False
        self._last_sync = 0.0
        self._last_receipt = 0.0
        #: when the unanswered sync request was sent (the district answers every one, even with nothing new)
        self._awaiting: float | None = None
        #: when the last batch arrived (a snapshot whose last part never comes is asked for again)
        self._last_batch: float | None = None
        #: seniors changed by the parts applied so far of a catch-up in parts, not yet told to on_change
        self._unannounced: set[str] = set()
        self._sent: dict[str, float] = {}  # upload_id -> when it was last handed to the broker
        self._receipts: list[tuple[mqtt.MQTTMessageInfo, dict[str, int]]] = []
        #: counters, for tests and the log
        self.batches = 0
        self.applied_at: float | None = None

    # -- wiring --------------------------------------------------------------------------------------

    def attach(self, publisher: Publisher) -> None:
        self._send = publisher.send
        self._up = lambda: publisher.link_up
        publisher.attach(self.down_filter, self._connected_cb, self._message_cb)

    def start(self) -> None:
        self.store.set_roster_uploads(True)  # every enrolment on this store now goes to the district too
        log.info("roster link: version %d, model %s, listening on %s", self.store.roster_state().version,
                 self.model_id, self.down_filter)
        self._thread = threading.Thread(target=self._run, name="meal-edge-roster", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    # paho's thread: hand over only
    def _connected_cb(self) -> None:
        self._connected.set()
        self._inbox.put(None)

    def _message_cb(self, topic: str, payload: bytes) -> None:
        self._inbox.put((topic, payload))

    # -- the link's thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._inbox.get(timeout=self.poll)
            except queue.Empty:
                item = None
            try:
                if self._connected.is_set():
                    self._connected.clear()
                    self._sent.clear()  # paho may have lost what was in flight: send the pending uploads again
                    self.sync(full=self.store.take_resync_request())
                if item is not None:
                    self.handle(*item)
                    continue  # drain the inbox before the periodic work
                if not self._up():
                    continue  # nothing is sent while the broker is away: it all goes again at the next connect
                if self.store.take_resync_request():
                    self.sync(full=True)
                elif self._awaiting is not None and time.monotonic() - self._awaiting > self.resend_after:
                    log.warning("roster: no answer from the district to the sync request in %.0f s; asking again",
                                self.resend_after)
                    self.sync()
                elif self._last_batch is not None and time.monotonic() - self._last_batch > self.resend_after \
                        and self.store.roster_state().snapshot_to is not None:
                    log.warning("roster: a full snapshot stopped before its last part; asking for it again")
                    self._last_batch = None
                    self.sync(full=True)
                self._send_uploads()
                self._check_receipts()
            except StoreError as e:
                log.error("roster link: %s", e)
                self._stopping.wait(self.poll)
            except Exception:
                log.exception("roster link: unexpected error; going on")
                self._stopping.wait(self.poll)

    def _topic(self, name: str) -> str:
        c = self.centre
        return rw.topic(self.prefix, c.district, c.id, c.kiosk_id, "up", name)

    def _envelope(self) -> dict[str, object]:
        c = self.centre
        return dict(msg_id=rw.new_msg_id(), district=c.district, centre_id=c.id, kiosk_id=c.kiosk_id,
                    sent_at=datetime.now(UTC))

    def _publish(self, name: str, msg: rw.SyncRequest | rw.TemplateUpload | rw.Receipt) -> mqtt.MQTTMessageInfo:
        assert self._send is not None, "attach() the link to the publisher first"
        return self._send(self._topic(name), rw.encode(msg, self.signing_key))

    def sync(self, full: bool = False) -> None:
        version = self.store.roster_state().version
        self._last_sync = self._awaiting = time.monotonic()
        log.info("roster: asking the district for %s", "a full snapshot" if full else f"changes after {version}")
        self._publish("sync", rw.SyncRequest(**self._envelope(), version=version, model_id=self.model_id,
                                             full=full))

    def handle(self, topic: str, payload: bytes) -> None:
        c = self.centre
        try:
            district, centre, kiosk, direction, name = rw.parse_topic(self.prefix, topic)
            if direction != "down":
                raise rw.WireError(f"{topic}: not a downlink topic")
            msg = rw.decode(payload, self.keys.district)
            rw.check_origin(msg, c.district, c.id, c.kiosk_id)
            if (district, centre, kiosk) != (c.district, c.id, c.kiosk_id):
                raise rw.WireError(f"{topic}: another kiosk's topic")
        except rw.WireError as e:
            # unsigned, forged, altered or misaddressed: never applied
            log.error("roster: message on %s refused: %s", topic, e)
            return
        if isinstance(msg, rw.RosterBatch):
            self._batch(msg)
        elif isinstance(msg, rw.UploadAck):
            self._ack(msg)
        else:
            log.warning("roster: unexpected %s on %s ignored", msg.type, topic)

    def _batch(self, b: rw.RosterBatch) -> None:
        if b.full and b.part == 1 and b.to_version < self.store.roster_state().version \
                and time.monotonic() - self._last_sync > SNAPSHOT_ANSWER_S:
            # an old snapshot replayed (by whoever can publish on the broker) would roll statuses back: a snapshot
            # behind this kiosk is taken only as the answer to a sync request (the district restored a backup)
            log.error("roster: a full snapshot at version %d, behind this kiosk's, that answers no sync request: "
                      "ignored", b.to_version)
            return
        if b.part >= b.parts:
            self._awaiting = None  # the answer is complete (a catch-up whose last part is lost is asked for again)
        self._last_batch = time.monotonic()
        r = self.store.apply_roster_batch(b, self.keys.transport, self.model_id)
        self.batches += 1
        if r.outcome in ("gap", "snapshot_restart"):
            if time.monotonic() - self._last_sync >= SYNC_GAP_S:
                self.sync(full=r.outcome == "snapshot_restart")
            return
        if r.outcome in ("applied", "snapshot_part") and r.changed:
            self.applied_at = time.monotonic()
            log.info("roster: %s %d..%d applied (%d changes%s), version %d", "snapshot part" if b.full else "batch",
                     b.from_version, b.to_version, r.changed, f", {len(r.erased)} erased" if r.erased else "",
                     r.version)
            self._unannounced |= r.seniors
        if self.on_change is not None and self._unannounced and b.part >= b.parts:
            # after the last part of a catch-up or snapshot: one gallery rebuild for all its parts, not one per part
            # (a district gallery takes seconds to rebuild; the kiosk keeps serving with the previous one meanwhile)
            changed, self._unannounced = self._unannounced, set()
            self.on_change(changed)
        if r.outcome == "applied":
            self._receipt(r.version)

    def _receipt(self, version: int) -> None:
        self._last_receipt = time.monotonic()
        owed = self.store.roster_state().erased_pending
        info = self._publish("receipts", rw.Receipt(**self._envelope(), version=version,
                                                    model_id=self.model_id, erased=owed))
        if owed:
            self._receipts.append((info, owed))

    def _check_receipts(self) -> None:
        left = []
        for info, owed in self._receipts:
            if info.is_published():
                self.store.receipt_acknowledged(owed)
            else:
                left.append((info, owed))
        self._receipts = left
        if not self._receipts and self.store.roster_state().erased_pending \
                and time.monotonic() - self._last_receipt > self.resend_after:
            self._receipt(self.store.roster_state().version)  # owed from before a restart

    def _ack(self, ack: rw.UploadAck) -> None:
        n = self.store.answer_upload(ack)
        self._sent.pop(ack.upload_id, None)
        if ack.accepted:
            log.info("roster: upload %s of senior %s accepted (version %s)", ack.upload_id, ack.senior_id, ack.version)
        else:
            log.error("roster: the district refused the templates of senior %s (%s): %d removed here; "
                      "`meal-edge roster status` says why", ack.senior_id, ack.reason_code, n)
            if self.on_change is not None:
                self.on_change({ack.senior_id})

    def _send_uploads(self) -> None:
        now = time.monotonic()
        recent = {u for u, t in self._sent.items() if now - t < self.resend_after}
        for up in self.store.pending_uploads(skip=recent):
            if not up.templates:
                continue  # nothing left to send (erased meanwhile); the row goes with the senior
            temps = [rw.WireTemplate(template_id=uid, model_id=up.model_id, quality=min(1.0, max(0.0, q)),
                                     sealed=rw.seal_template(self.keys.transport, up.senior_id, up.model_id, uid, e))
                     for uid, q, e in up.templates]
            env = self._envelope()
            env["msg_id"] = up.upload_id  # the district answers with upload_id = this
            self._publish("templates", rw.TemplateUpload(**env, senior_id=up.senior_id, templates=temps))
            self._sent[up.upload_id] = now
            self.store.mark_upload_sent(up.upload_id)
            log.info("roster: sent %d template(s) of senior %s to the district", len(temps), up.senior_id)
