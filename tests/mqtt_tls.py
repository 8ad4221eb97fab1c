"""A Mosquitto with the deployment configuration of docs/deployment.md, on a free loopback port, and the
certificates it needs (made here with `cryptography`): a CA, the broker's certificate, one client
certificate per identity. Also a login (password_file) variant and small paho clients for the tests.

The broker configuration and ACL are read out of docs/deployment.md (the blocks after the
`<!-- tested: NAME -->` markers), so the documented configuration is the one the tests run.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from conftest import MosquittoBroker
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "docs" / "deployment.md"
PREFIX = "meal/v1"
DISTRICT = "xuhui"
# identities as docs/deployment.md names them: kiosks "<district>/<centre>/<kiosk>", district servers plain
KIOSK_A = f"{DISTRICT}/centre-001/kiosk-1"
KIOSK_A2 = f"{DISTRICT}/centre-001/kiosk-2"
KIOSK_B = f"{DISTRICT}/centre-002/kiosk-1"
SERVER = "district-xuhui-1"
IDENTITIES = (KIOSK_A, KIOSK_A2, KIOSK_B, SERVER)


def topic(identity: str, leaf: str) -> str:
    return f"{PREFIX}/{identity}/{leaf}"


# -- certificates --------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meal-edge test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    #: identity -> (certificate, key)
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @classmethod
    def make(cls, folder: Path, identities: tuple[str, ...] = IDENTITIES, ca_name: str = "meal-edge test CA",
             server: bool = True) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert(ca_name, ca_key, _name(ca_name), ca_key, ca=True)
        pki = cls(folder, folder / "ca.crt", folder / "broker.crt", folder / "broker.key")
        pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        if server:
            skey = ec.generate_private_key(ec.SECP256R1())
            pki.server_cert.write_bytes(_cert("localhost", skey, ca_cert.subject, ca_key, server=True)
                                        .public_bytes(serialization.Encoding.PEM))
            _write_key(skey, pki.server_key)
        for i, ident in enumerate(identities):
            k = ec.generate_private_key(ec.SECP256R1())
            crt, kp = folder / f"client{i}.crt", folder / f"client{i}.key"
            crt.write_bytes(_cert(ident, k, ca_cert.subject, ca_key).public_bytes(serialization.Encoding.PEM))
            _write_key(k, kp)
            pki.clients[ident] = (crt, kp)
        return pki


# -- the documented configuration -----------------------------------------------------------------


def documented(name: str) -> str:
    """The fenced block after `<!-- tested: NAME -->` in docs/deployment.md."""
    text = DEPLOYMENT.read_text(encoding="utf-8")
    m = re.search(rf"<!-- tested: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", text, re.S)
    if m is None:
        raise AssertionError(f"{DEPLOYMENT}: no block marked <!-- tested: {name} -->")
    return m.group(1)


# paths in the documented blocks and what the test uses instead
_DOC_ETC = "/etc/mosquitto/meal"


def _localise(conf: str, port: int, folder: Path, pki: Pki) -> str:
    conf = re.sub(r"^listener 8883.*$", f"listener {port} 127.0.0.1", conf, flags=re.M)
    conf = conf.replace("persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/data/")
    conf = conf.replace(f"{_DOC_ETC}/ca.crt", str(pki.ca))
    conf = conf.replace(f"{_DOC_ETC}/broker.crt", str(pki.server_cert))
    conf = conf.replace(f"{_DOC_ETC}/broker.key", str(pki.server_key))
    conf = conf.replace(f"{_DOC_ETC}/acl", str(folder / "acl"))
    conf = conf.replace(f"{_DOC_ETC}/passwords", str(folder / "passwords"))
    assert "/etc/" not in conf and "/var/" not in conf, conf
    return conf


class SecureBroker(MosquittoBroker):
    """Mosquitto with the documented TLS configuration: `mode` "certificates" (docs block
    mosquitto-certificates.conf) or "logins" (mosquitto-logins.conf, password_file made with
    mosquitto_passwd -b). `logins` maps identity -> password."""

    def __init__(self, exe: str, workdir: Path, pki: Pki, mode: str = "certificates",
                 logins: dict[str, str] | None = None, acl: str | None = None, conf_edit: Any = None) -> None:
        super().__init__(exe, workdir)
        self.pki = pki
        self.mode = mode
        (workdir / "acl").write_text(documented("acl") if acl is None else acl)
        if mode == "logins":
            pw = workdir / "passwords"
            pw.touch(mode=0o600)
            for user, password in (logins or {}).items():
                # -b takes the password on the command line: acceptable for a throwaway test broker only
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                               capture_output=True)
        conf = _localise(documented(f"mosquitto-{mode}.conf"), self.port, workdir, pki)
        if conf_edit is not None:
            conf = conf_edit(conf)
        # as in MosquittoBroker: run as this user (root would drop to `mosquitto`), log everything
        self.conf.write_text(conf + f"\nuser {getpass.getuser()}\nlog_type all\n")
        self.conf_text = conf


def start_secure(exe: str, workdir: Path, pki: Pki, **kw: Any) -> SecureBroker:
    b = SecureBroker(exe, workdir, pki, **kw)
    b.start()
    return b


# -- clients ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes
    retain: bool


class TestClient:
    """A paho MQTT 5 client that records what happens to it, for the attack tests."""

    __test__ = False  # not a pytest test class

    def __init__(self, broker: MosquittoBroker, client_id: str, *, pki: Pki | None = None,
                 identity: str | None = None, ca: Path | None = None, tls: bool = True,
                 username: str | None = None, password: str | None = None, clean_start: bool = True,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.broker = broker
        self.msgs: list[Got] = []
        self.connects: list[str] = []  # reason code of each CONNACK
        self.disconnects: list[str] = []
        self.subacks: dict[int, list[int]] = {}
        self.pubacks: dict[int, int] = {}
        self.assigned_id: str | None = None
        self.session_present: bool | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.closed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        if tls:
            certfile = keyfile = None
            if cert is not None:
                certfile, keyfile = (str(p) for p in cert)
            elif identity is not None and pki is not None:
                certfile, keyfile = (str(p) for p in pki.clients[identity])
            c.tls_set(ca_certs=str(ca or (pki.ca if pki else "")), certfile=certfile, keyfile=keyfile)
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        self.client = c
        self.clean_start = clean_start
        self.error: str | None = None

    def start(self, wait: float = 5.0) -> TestClient:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if self.clean_start else 3600
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=5, clean_start=self.clean_start,
                                properties=props)
        except OSError as e:  # TLS handshake refused, connection reset
            self.error = f"{type(e).__name__}: {e}"
            self.closed.set()
            return self
        self.client.loop_start()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not (self.connected.is_set() or self.closed.is_set()):
            time.sleep(0.02)
        return self

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connects.append(str(rc))
        self.session_present = bool(getattr(flags, "session_present", False))
        if props is not None and getattr(props, "AssignedClientIdentifier", None):
            self.assigned_id = props.AssignedClientIdentifier
        if rc.is_failure:
            self.closed.set()
        else:
            self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnects.append(str(rc))
        self.connected.clear()
        self.closed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.msgs.append(Got(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self.subacks[mid] = [int(r.value) for r in rcs]

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.pubacks[mid] = int(rc.value)

    def subscribe(self, topic_filter: str, timeout: float = 5.0) -> list[int]:
        """The SUBACK reason codes (0, 1, 2: granted QoS; >= 0x80: refused)."""
        _, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None
        wait_for(lambda: mid in self.subacks, timeout, f"SUBACK for {topic_filter}")
        return self.subacks[mid]

    def publish(self, t: str, payload: bytes | str, retain: bool = False, timeout: float = 5.0) -> int:
        """The PUBACK reason code (0: accepted; 0x87: not authorised; 0x10: no matching subscribers)."""
        info = self.client.publish(t, payload, qos=1, retain=retain)
        wait_for(lambda: info.mid in self.pubacks, timeout, f"PUBACK for {t}")
        return self.pubacks[info.mid]

    def got(self, t: str | None = None) -> list[Got]:
        with self._lock:
            return [m for m in self.msgs if t is None or m.topic == t]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
