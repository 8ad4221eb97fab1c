"""`meal-district serve`: receive every kiosk's events and status over MQTT 5 and commit them, then acknowledge.

- Events: shared subscription `$share/<group>/<prefix>/<district>/+/+/events`, QoS 1, so several serve
  processes (on one or more machines) split the stream; the broker gives each message to one of them.
- Status: `<prefix>/<district>/+/+/status`, not shared: a shared subscription gets no retained messages, and
  each kiosk's current state *is* its retained status. Every process stores it (idempotent).
- Persistent session (clean_start False, session expiry), a stable client id per process: while a process is
  away, the broker keeps its share of the events.
- Manual acknowledgement: paho does not PUBACK by itself; we acknowledge each message, in the order received,
  only after the transaction holding it committed. A crash before that loses nothing: the broker sends the
  message again (to this session when it returns) and the event_id arbiter drops the copy.
- A batch is up to [ingest] batch_max messages or batch_wait_ms, one transaction, then all its acks.
- If the database fails, the batch is kept and retried (1 s doubling to 30 s); the broker stops sending
  once receive_maximum messages are unacknowledged, so nothing piles up in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from district.broker import make_client
from district.config import Config, ConfigError
from district.db.models import Adjustment, Gap, Kiosk
from district.metrics import Metrics
from district.store import BatchResult, BatchWriter, Incoming, merge
from district.validate import KioskKey, Rejected, classify
from district.watch import Watcher

if TYPE_CHECKING:
    from district.roster.link import RosterLink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Msg:
    mid: int
    qos: int
    topic: str
    payload: bytes
    retain: bool
    at: float
    #: which connection delivered it: a message id is only meaningful on its own connection
    conn: int


def topics(cfg: Config) -> tuple[str, str]:
    base = f"{cfg.district.topic_prefix}/{cfg.district.id}/+/+"
    return f"$share/{cfg.ingest.group}/{base}/events", f"{base}/status"


class Server:
    def __init__(self, cfg: Config, engine: Engine, *, instance: int = 1, client_id: str | None = None,
                 metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.client_id = client_id or cfg.client_id(instance)
        self.metrics = metrics or Metrics()
        self.writer = BatchWriter(engine, keep_bytes=cfg.ingest.quarantine_keep_bytes)
        self.watcher = Watcher(engine, cfg.report.daily_subsidy_cap_fen)
        self._queue: queue.SimpleQueue[_Msg] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._conn = 0
        self.connected = threading.Event()
        self._db_down_since: float | None = None
        self._pending_kiosks: set[KioskKey] = set()
        self._pending_keys: set[tuple[str, date]] = set()
        self._pending_voids: set[str] = set()
        self.totals = BatchResult()
        self._retiring = False
        self._client = self._make_client()
        self.roster = self._make_roster_link()

    def _make_roster_link(self) -> RosterLink | None:
        """The roster link ([roster] enabled): its own MQTT client beside the events' (docs/roster.md)."""
        if not self.cfg.roster.enabled:
            return None
        from district.roster.keys import RosterKeyError, load_keys
        from district.roster.link import RosterLink

        try:
            keys = load_keys(self.cfg)
        except RosterKeyError as e:
            raise ConfigError(f"[roster] enabled, but {e}") from e
        return RosterLink(self.cfg, self.engine, keys, f"{self.client_id}-roster")

    # -- MQTT ------------------------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        c = make_client(self.cfg, self.client_id)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        paho_log = logging.getLogger("district.serve.paho")
        # paho 2.2's network thread reports the socket it just closed on a clean stop as an error
        paho_log.addFilter(lambda r: not (self._stop.is_set() and str(r.msg).startswith("Client is not connected")))
        c.enable_logger(paho_log)
        return c

    def _connect_properties(self) -> Properties:
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = self.cfg.broker.session_expiry
        p.ReceiveMaximum = self.cfg.ingest.receive_maximum
        return p

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: Properties | None) -> None:
        if rc.is_failure:
            log.error("broker %s:%d refused the connection: %s", self.cfg.broker.host, self.cfg.broker.port, rc)
            return
        self._conn += 1
        events, status = topics(self.cfg)
        if self._retiring:
            # take no new share of the stream; what the broker queued for this session still comes
            client.unsubscribe([events, status])
            log.info("retiring %s: unsubscribed; storing what the broker kept for this session", self.client_id)
            self.connected.set()
            return
        client.subscribe([(events, SubscribeOptions(qos=1)), (status, SubscribeOptions(qos=1))])
        log.info("connected to %s:%d as %s (session %s)", self.cfg.broker.host, self.cfg.broker.port, self.client_id,
                 "resumed" if flags.session_present else "new")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, rcs: list[ReasonCode],
                      props: Properties | None) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("the broker refused the subscriptions: %s (shared subscriptions need MQTT 5 and ACL access "
                      "to the topics)", ", ".join(str(rc) for rc in rcs))
            return
        log.info("subscribed to %s and %s", *topics(self.cfg))
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags, rc: ReasonCode,
                       props: Properties | None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("connection to the broker lost (%s); reconnecting. Unacknowledged events will be sent again",
                        rc)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(_Msg(msg.mid, msg.qos, msg.topic, bytes(msg.payload), bool(msg.retain), time.time(),
                             self._conn))

    # -- life cycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        b = self.cfg.broker
        self._client.connect_async(b.host, b.port, keepalive=b.keepalive, clean_start=False,
                                   properties=self._connect_properties())
        self._client.loop_start()
        if self.roster is not None and not self._retiring:
            self.roster.start()

    def stop(self) -> None:
        self._stop.set()

    def close(self, end_session: bool = False) -> None:
        props = None
        if end_session:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self._client.disconnect(properties=props)
        self._client.loop_stop()
        if self.roster is not None:
            self.roster.stop()

    def retire(self, idle: float = 5.0, timeout: float = 3600.0) -> BatchResult:
        """Hand this process's share of the stream back for good: a stopped process's persistent session keeps
        being given its share of the shared subscription (held until it returns). Resume the session without
        subscribing, store everything the broker kept for it until nothing came for `idle` seconds, then end
        the session, so the group's other processes get the whole stream."""
        self._retiring = True
        self.start()
        last = time.monotonic()
        deadline = last + timeout
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                batch = self._take()
                if batch:
                    self._commit_and_ack(batch)
                    last = time.monotonic()
                elif self.connected.is_set() and time.monotonic() - last > idle:
                    break
            self.watch()
        finally:
            self.close(end_session=True)
        log.info("retired %s: %d events stored from its queue; its session is ended", self.client_id,
                 self.totals.stored)
        return self.totals

    def run(self) -> None:
        """Until stop(): take batches off the queue, commit, acknowledge, and look for gaps and doubles."""
        self.start()
        last_watch = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self._take()
                try:
                    if batch:
                        self._commit_and_ack(batch)
                    if time.monotonic() - last_watch >= self.cfg.ingest.watch_interval:
                        self.watch()
                        last_watch = time.monotonic()
                except Exception:  # a bug must not end ingestion; unacknowledged messages come again
                    log.exception("unexpected error; %d messages left unacknowledged", len(batch))
                    self._stop.wait(1.0)
            self.watch()
        finally:
            self.close()

    def _take(self) -> list[_Msg]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cfg.ingest.batch_wait_ms / 1000
        while len(batch) < self.cfg.ingest.batch_max:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _classify(self, m: _Msg) -> Incoming:
        i = self.cfg.ingest
        try:
            verdict = classify(m.topic, m.payload, prefix=self.cfg.district.topic_prefix, district=self.cfg.district.id,
                               max_bytes=i.max_payload_bytes, accept_unsigned=i.accept_unsigned, retained=m.retain)
        except Exception as e:  # a validator bug must not stop the district: keep the payload and say why
            log.exception("could not check a payload on %s", m.topic)
            verdict = Rejected(f"internal error while checking: {e!r}"[:300])
        return Incoming(m.topic, m.payload, verdict, datetime.fromtimestamp(m.at, UTC))

    def _commit_and_ack(self, batch: list[_Msg]) -> None:
        incoming = [self._classify(m) for m in batch]
        delay = 1.0
        while True:
            try:
                res = self._write(incoming)
                break
            except SQLAlchemyError as e:
                self.metrics.db_errors.inc()
                if self._db_down_since is None:
                    self._db_down_since = time.monotonic()
                    log.error("database write failed (%s); holding %d messages unacknowledged and retrying",
                              str(e).splitlines()[0][:200], len(batch))
                if self._stop.wait(delay):
                    return  # stopping: nothing acknowledged, the broker sends them again
                delay = min(delay * 2, 30.0)
        if self._db_down_since is not None:
            log.warning("database is back after %.0f s", time.monotonic() - self._db_down_since)
            self._db_down_since = None
        for m in batch:
            if m.qos > 0 and m.conn == self._conn:
                self._client.ack(m.mid, m.qos)
        self.metrics.record(res)
        self._add_totals(res)
        self._pending_kiosks |= res.kiosks
        self._pending_keys |= res.keys
        self._pending_voids |= res.voided

    def _write(self, incoming: list[Incoming]) -> BatchResult:
        """The batch in one transaction. If the database refuses its content (not an outage), each message is
        written alone and the one it refuses is quarantined, so one bad payload cannot stall the stream."""
        try:
            return self.writer.write(incoming)
        except (OperationalError, InterfaceError):
            raise
        except Exception as e:  # refused content, or a bug: find the message, never stop the stream
            log.error("a batch could not be written (%s); writing its %d messages one by one",
                      str(e).splitlines()[0][:200], len(incoming))
        total = BatchResult()
        for m in incoming:
            try:
                one = self.writer.write([m])
            except (OperationalError, InterfaceError):
                raise
            except Exception as e:
                why = str(e.orig if isinstance(e, DBAPIError) and e.orig else e).splitlines()[0]
                log.error("quarantining a payload on %s that could not be stored: %s", m.topic, why)
                one = self.writer.write([Incoming(m.topic, m.payload, Rejected(f"could not be stored: {why}"[:300]),
                                                  m.received_at)])
            merge(total, one)
        return total

    def _add_totals(self, res: BatchResult) -> None:
        t = self.totals
        t.stored += res.stored
        t.duplicates += res.duplicates
        t.conflicts += res.conflicts
        t.quarantined += res.quarantined
        t.statuses += res.statuses

    def watch(self) -> None:
        """Gaps, chain breaks and double subsidies for what changed since the last look; the gauges."""
        kiosks, keys, voids = self._pending_kiosks, self._pending_keys, self._pending_voids
        try:
            if kiosks:
                self.watcher.check_kiosks(kiosks)
            if keys or voids:
                self.watcher.reconcile(keys, voids)
            self._pending_kiosks, self._pending_keys, self._pending_voids = set(), set(), set()
            with self.engine.connect() as conn:
                self.metrics.gaps_open.set(conn.execute(select(func.count()).select_from(Gap)
                                                        .where(Gap.closed_at.is_(None))).scalar_one())
                self.metrics.kiosks.clear()
                for state, n in conn.execute(select(Kiosk.state, func.count()).group_by(Kiosk.state)):
                    self.metrics.kiosks.labels(state).set(n)
                self.metrics.flags.clear()
                for reason, n in conn.execute(select(Adjustment.reason, func.count())
                                              .group_by(Adjustment.reason)):
                    self.metrics.flags.labels(reason).set(n)
        except SQLAlchemyError as e:
            # kept pending: the next look does them
            log.warning("checks for gaps and double subsidies postponed: %s", str(e).splitlines()[0][:200])
