"""The district's MQTT client for [broker] (`meal-district serve` and its roster link, district/roster/link.py):
MQTT v5 with manual acks (a message is acknowledged once stored), the password from its file, TLS with the
server's certificate checked, and reconnecting from 1 s to 30 s. Callers add their callbacks and limits."""

from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from district.config import Config, read_secret


def make_client(cfg: Config, client_id: str) -> mqtt.Client:
    b = cfg.broker
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5,
                    manual_ack=True)
    if b.username:
        c.username_pw_set(b.username, read_secret(b.password_file, cfg) if b.password_file else None)
    if b.tls.enabled:
        c.tls_set(ca_certs=str(cfg.resolve(b.tls.ca_file)) if b.tls.ca_file else None,
                  certfile=str(cfg.resolve(b.tls.cert_file)) if b.tls.cert_file else None,
                  keyfile=str(cfg.resolve(b.tls.key_file)) if b.tls.key_file else None,
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.reconnect_delay_set(1, 30)
    return c
