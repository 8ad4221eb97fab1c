"""MQTT delivery of the outbox: the only module that imports paho.

paho-mqtt 2.x, callback API version 2, MQTT 5, QoS 1, a persistent session (clean_start False, session
expiry `[mqtt] session_expiry`) under a stable client id. Over TLS with the kiosk's own identity (a client
certificate or a login, docs/deployment.md) the broker binds the client id to that identity; the
secrets come only from files or systemd credentials (edge.security.secrets) and are never logged.
A retained `status` topic carries an `online` birth message, published on every connect, and an `offline`
last will the broker publishes if the connection dies uncleanly.

Delivery is at least once with end-to-end de-duplication by `event_id` at the district:
- the pipeline commits the event and its outbox row first (`Store.record_meal`), then calls `wake()`;
- this module's thread hands undelivered events to paho in seq order, at most `window` at a time;
- an event is marked delivered only when the broker's PUBACK for its message id arrives;
- if the connection drops, paho re-sends the unacknowledged ones on reconnect; if the process dies,
  the next start re-sends every undelivered event from the outbox, byte for byte.
While the broker is away nothing is lost: events wait in SQLite (for days if need be) and paho
reconnects with exponential back-off; the outage is logged once when it starts and once when it ends.

`python -m edge.delivery.publish --config FILE` runs the publisher alone (drains an outbox; used by tests).
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import CentreConfig, ConfigError, MqttConfig
from edge.delivery.events import status_payload, status_topic
from edge.delivery.outbox import InflightWindow, Outage
from edge.security.clockguard import ClockState
from edge.security.secrets import SecretError, credential_path, read_secret, read_secret_file
from edge.store import Store, StoreError

log = logging.getLogger(__name__)

QOS = 1
_paho_log = logging.getLogger("edge.delivery.publish.paho")


def client_id_for(mqtt_cfg: MqttConfig, centre: CentreConfig) -> str:
    return mqtt_cfg.client_id or f"meal-edge-{centre.id}-{centre.kiosk_id}"


def secure_link(client: mqtt.Client, cfg: MqttConfig) -> str:
    """Set up TLS and the kiosk's identity on `client` from [mqtt] (paths already resolved); returns how the
    link is authenticated, for the log. Raises ConfigError naming the key and the file, never a secret."""
    t = cfg.tls
    parts = []
    try:
        if t.enabled:
            key = ""
            if t.key_credential:
                key = str(credential_path(t.key_credential))
            elif t.key_file:
                key = t.key_file
            if key:
                # paho reads the key itself: check first that it is a private file
                read_secret_file(key, "[mqtt.tls] client key")
            try:
                client.tls_set(ca_certs=t.ca_file or None, certfile=t.cert_file or None, keyfile=key or None,
                               cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as e:
                files = ", ".join(f for f in (t.ca_file, t.cert_file) if f) or "system CAs"
                raise ConfigError(f"[mqtt.tls]: cannot load the TLS files ({files}; key {'set' if key else 'none'}): "
                                  f"{e}") from None
            parts.append("TLS" + (f", certificate {t.cert_file}" if t.cert_file else ""))
        if cfg.username:
            password = read_secret(file=cfg.password_file or None, credential=cfg.password_credential or None,
                                   what="[mqtt] password")
            client.username_pw_set(cfg.username, password)
            parts.append(f"login {cfg.username}")
    except SecretError as e:
        raise ConfigError(str(e)) from None
    return ", ".join(parts) or "plain MQTT, unauthenticated"


def link_check(cfg: MqttConfig) -> tuple[str, list[str]]:
    """For `check-config`: how the link would be set up, and what is unsafe about it. Reads the TLS files and
    secrets as `run` would (ConfigError names any problem); prints nothing secret."""
    how = secure_link(mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5), cfg)
    warnings: list[str] = []
    if not cfg.enabled:
        return "MQTT off ([mqtt] enabled = false): events stay in the store", warnings
    if not cfg.tls.enabled:
        warnings.append(
            "[mqtt.tls] is off: the link to the broker is UNAUTHENTICATED and UNENCRYPTED. Anyone on the network "
            "can read every meal event and publish forged events and statuses under this kiosk's topics, and "
            "take over its client id. Only for the demo or a broker on this machine; a centre uses TLS with "
            "the kiosk's own certificate or login (docs/deployment.md)"
        )
    elif not cfg.authenticated:
        warnings.append(
            "[mqtt.tls] is on but the kiosk has no identity (no cert_file, no username): the broker cannot tell "
            "this kiosk from any other client (docs/deployment.md)"
        )
    if cfg.session_expiry == 0:
        warnings.append("[mqtt] session_expiry = 0: the broker drops this kiosk's session at every disconnect")
    return how, warnings


class Publisher:
    def __init__(
        self,
        store: Store,
        mqtt_cfg: MqttConfig,
        centre_cfg: CentreConfig,
        *,
        window: int = 20,
        poll_interval: float = 1.0,
        reconnect_min_delay: int = 1,
        reconnect_max_delay: int = 60,
    ) -> None:
        """`poll_interval`: how often the outbox is checked without a wake() (events recorded by
        another process, retries after a store error)."""
        self.store = store
        self.cfg = mqtt_cfg
        self.centre = centre_cfg
        self.client_id = client_id_for(mqtt_cfg, centre_cfg)
        self.status_topic = status_topic(mqtt_cfg.topic_prefix, centre_cfg.district, centre_cfg.id,
                                         centre_cfg.kiosk_id)
        self.poll_interval = poll_interval
        self._window = InflightWindow(window)
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # set once the broker has acknowledged this connection's birth message: by then paho has
        # queued its re-sends of unacknowledged events, so new events go out after them, in seq order
        self._ready = threading.Event()
        self._birth_mid: int | None = None
        self._outage = Outage()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        #: the camera's state for the retained status (set_camera); None until the daemon knows it
        self._camera: str | None = None

        self._clock: ClockState | None = None
        self._refused: set[str] = set()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5)
        self.link = secure_link(c, mqtt_cfg)
        c.max_inflight_messages_set(window)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(reconnect_min_delay, reconnect_max_delay)
        c.will_set(self.status_topic, self._status("offline", "connection_lost"), qos=QOS, retain=True)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_log = self._on_log
        c.on_message = self._on_message
        self._client = c
        #: other links sharing this connection (the roster link, edge/delivery/rostersync.py): the broker gives
        #: the kiosk's identity one client id, so a second connection would throw this one off
        self._subscribers: list[tuple[str, Callable[[], None], Callable[[str, bytes], None]]] = []

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        log.info("MQTT publisher %s -> %s:%d (%s; status %s); %d events pending",
                 self.client_id, self.cfg.host, self.cfg.port, self.link, self.status_topic, self._pending_count())
        if not self.cfg.authenticated:
            log.warning("MQTT link to %s:%d is not TLS with this kiosk's own identity: events can be read and forged "
                        "on the network (set up [mqtt.tls], docs/deployment.md)", self.cfg.host, self.cfg.port)
        props = Properties(PacketTypes.CONNECT)
        # the broker keeps the session (subscriptions, unacknowledged messages) this long while we are away
        props.SessionExpiryInterval = self.cfg.session_expiry
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive, clean_start=False,
                                   properties=props)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="meal-edge-publisher", daemon=True)
        self._thread.start()

    def attach(self, topic_filter: str, on_connect: Callable[[], None],
               on_message: Callable[[str, bytes], None]) -> None:
        """Subscribe `topic_filter` (QoS 1) at every connect, then call `on_connect()` (paho's thread: it must
        only hand over); `on_message(topic, payload)` gets the messages (paho's thread too)."""
        self._subscribers.append((topic_filter, on_connect, on_message))
        if self._client.is_connected():
            self._client.subscribe(topic_filter, qos=QOS)
            on_connect()

    def send(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Publish one message of an attached link (QoS 1). Queued by paho while the broker is away."""
        return self._client.publish(topic, payload, qos=QOS)

    def wake(self) -> None:
        """Called by the pipeline right after record_meal: send without waiting for the next poll."""
        self._wake.set()

    def set_camera(self, state: str | None) -> None:
        """The camera's state ("ok", "missing") goes into the retained status now and at every connect."""
        if state == self._camera:
            return
        self._camera = state
        if self._ready.is_set() and not self._stopping.is_set():
            self._client.publish(self.status_topic, self._status("online", "connected", with_clock=True), qos=QOS,
                                 retain=True)

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def link_up(self) -> bool:
        """The MQTT connection is up (an attached link sends only then: paho would queue without bound)."""
        return bool(self._client.is_connected())

    def stop(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` for in-flight acknowledgements, publish `offline`, disconnect.
        Anything not acknowledged stays pending in the store and is sent again on the next start."""
        deadline = time.monotonic() + timeout
        while len(self._window) and self._ready.is_set() and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.02)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        self._process_acks()
        if self._ready.is_set():
            info = self._client.publish(self.status_topic, self._status("offline", "stopped"), qos=QOS,
                                        retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as e:
                log.debug("offline status not confirmed: %s", e)
        self._client.disconnect()
        self._client.loop_stop()
        self._process_acks()
        self._thread = None
        log.info("MQTT publisher stopped; %d events pending", self._pending_count())

    # -- paho callbacks (paho's network thread) -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Any) -> None:
        if reason_code.is_failure:
            if self._outage.failed(time.monotonic()):
                log.error("MQTT broker %s:%d refused the connection: %s; events queue locally",
                          self.cfg.host, self.cfg.port, reason_code)
            return
        length = self._outage.recovered(time.monotonic())
        if length is not None:
            log.warning("MQTT broker %s:%d is back after %.0f s; draining %d pending events in order",
                        self.cfg.host, self.cfg.port, length, self._pending_count())
        else:
            log.info("MQTT connected to %s:%d", self.cfg.host, self.cfg.port)
        info = client.publish(self.status_topic, self._status("online", "connected", with_clock=True), qos=QOS,
                              retain=True)
        self._birth_mid = info.mid
        for topic_filter, on_connect, _ in self._subscribers:
            client.subscribe(topic_filter, qos=QOS)
            on_connect()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        for topic_filter, _, on_message in self._subscribers:
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                on_message(msg.topic, bytes(msg.payload))

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho reports every failed reconnect as an ERROR ("Client is not connected"), also after a clean stop
        # with the broker gone; the outage is logged once by us (Outage), so paho's own lines are details.
        if level == mqtt.MQTT_LOG_ERR and "not connected" not in buf and not self._stopping.is_set():
            _paho_log.warning("%s", buf)
        else:
            _paho_log.debug("%s", buf)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._outage.failed(time.monotonic()):
            log.warning("MQTT broker %s:%d unreachable; events queue locally and are sent when it is back "
                        "(retrying with back-off)", self.cfg.host, self.cfg.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Any) -> None:
        self._ready.clear()
        self._birth_mid = None
        if self._stopping.is_set():
            return
        if self._outage.failed(time.monotonic()):
            log.warning("MQTT connection to %s:%d lost (%s); %d events in flight will be sent again, "
                        "new events queue locally", self.cfg.host, self.cfg.port, reason_code,
                        len(self._window))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Any) -> None:
        # Runs with paho's message lock held: no SQL here, just hand the PUBACK to our thread.
        if mid == self._birth_mid:
            self._ready.set()
        self._acks.put((mid, not reason_code.is_failure, str(reason_code)))
        self._wake.set()

    # -- our thread --------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            try:
                self._process_acks()
                if self._ready.is_set() and not self._stopping.is_set():
                    self._fill_window()
            except StoreError as e:
                # e.g. disk full while marking delivered: the event stays pending and is re-sent later
                log.error("publisher: %s", e)
                self._stopping.wait(self.poll_interval)
            except Exception:
                log.exception("publisher: unexpected error; retrying")
                self._stopping.wait(self.poll_interval)

    def _process_acks(self) -> None:
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            event_id = self._window.ack(mid)
            if event_id is None:
                continue  # a status message
            if ok:
                self.store.mark_delivered(event_id, datetime.now(UTC))
                self.delivered += 1
            else:
                # e.g. "Not authorized": the broker's ACL does not give this identity the topic. It stays
                # pending and is tried again; logged once per event, not once per retry
                if event_id not in self._refused:
                    self._refused.add(event_id)
                    log.error("broker refused event %s: %s (check the kiosk's identity and the broker's ACL, "
                              "docs/deployment.md)", event_id, reason)
                self.store.note_attempt(event_id, f"refused by broker: {reason}")

    def _fill_window(self) -> None:
        room = self._window.room
        if room == 0:
            return
        pending = self.store.pending(limit=room + len(self._window))
        for ev in self._window.to_send(pending):
            info = self._client.publish(ev.topic, ev.payload, qos=QOS)
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # NO_CONN: the connection dropped just now; paho keeps the message and sends it on
                # reconnect, so it is tracked like any other in-flight message
                self._window.add(info.mid, ev.event_id)
                err = None if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else "not connected; queued in client"
                self.store.note_attempt(ev.event_id, err)
            else:
                self.store.note_attempt(ev.event_id, mqtt.error_string(info.rc))
                log.warning("could not hand event %s to the MQTT client: %s", ev.event_id,
                            mqtt.error_string(info.rc))
                return

    # -- helpers -------------------------------------------------------------------------------------

    def _status(self, state: str, reason: str, with_clock: bool = False) -> bytes:
        clock = self._clock if with_clock else None
        return status_payload(
            state, self.centre.id, self.centre.district, self.centre.kiosk_id, reason,
            clock=None if clock is None else clock.state,
            newest_event=None if clock is None else clock.newest, camera=self._camera,
        )

    def set_clock(self, state: ClockState) -> None:
        """The clock guard's state changed: the retained `online` status says so (at once when connected)."""
        self._clock = state
        if self._ready.is_set():
            self._client.publish(self.status_topic, self._status("online", "connected", with_clock=True), qos=QOS,
                                 retain=True)

    def _pending_count(self) -> int:
        try:
            return self.store.pending_count()
        except StoreError:
            return -1


# -------------------------------------------------------------------------------------------------
# python -m edge.delivery.publish --config FILE [--store PATH]: drain the outbox until SIGTERM/SIGINT


def main(argv: list[str] | None = None) -> int:
    from edge.config import load_config

    p = argparse.ArgumentParser(prog="python -m edge.delivery.publish", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--config", required=True, help="meal-edge TOML config")
    p.add_argument("--store", help="store file (default: [store] path of the config)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between outbox checks (default 1)")
    p.add_argument("--reconnect-max", type=int, default=60, help="longest wait between reconnects (s)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(args.config)
        store = Store(
            Path(args.store) if args.store else cfg.store_path,
            keep_photos=cfg.store.keep_photos,
            key_file=cfg.template_key_path,
        )
    except (ConfigError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        pub = Publisher(
            store, cfg.mqtt_link, cfg.centre, poll_interval=args.poll, reconnect_max_delay=args.reconnect_max
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        store.close()
        return 2
    pub.start()
    while not done.wait(0.5):
        pass
    pub.stop()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
