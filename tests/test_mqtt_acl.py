"""The documented broker configuration (docs/deployment.md) against the attacks of issue 12, on a real
Mosquitto over TLS on loopback, with certificates made by the test (tests/mqtt_tls.py).

Each attack test has a positive control (the same client doing the allowed thing succeeds), so a test
cannot pass merely because nothing works."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _find_mosquitto
from mqtt_tls import (
    DISTRICT,
    KIOSK_A,
    KIOSK_A2,
    KIOSK_B,
    PREFIX,
    SERVER,
    Pki,
    SecureBroker,
    TestClient,
    start_secure,
    topic,
    wait_for,
)

NOT_AUTHORIZED = 0x87
PASSWORDS = {KIOSK_A: "pw-a-Xk3r9", KIOSK_B: "pw-b-Qm2v7", SERVER: "pw-srv-Zt8p1"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exe() -> str:
    found = _find_mosquitto()
    if found is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto): the ACL tests need a real broker")
    return found


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(exe: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    b = start_secure(exe, tmp_path_factory.mktemp("tls-broker"), pki)
    yield b
    b.stop()


@pytest.fixture(scope="module")
def login_broker(exe: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    b = start_secure(exe, tmp_path_factory.mktemp("login-broker"), pki, mode="logins", logins=PASSWORDS)
    yield b
    b.stop()


class Clients:
    """Clients of one test, all stopped at its end."""

    def __init__(self, broker: SecureBroker, pki: Pki) -> None:
        self.broker, self.pki = broker, pki
        self.all: list[TestClient] = []

    def cert(self, identity: str, client_id: str | None = None, **kw: object) -> TestClient:
        c = TestClient(self.broker, client_id or f"asked-{identity}", pki=self.pki, identity=identity, **kw)  # type: ignore[arg-type]
        self.all.append(c)
        return c.start()

    def login(self, user: str | None, password: str | None, client_id: str = "", **kw: object) -> TestClient:
        c = TestClient(self.broker, client_id or f"asked-{user}", ca=self.pki.ca, username=user,
                       password=password, **kw)  # type: ignore[arg-type]
        self.all.append(c)
        return c.start()

    def raw(self, client_id: str, **kw: object) -> TestClient:
        c = TestClient(self.broker, client_id, **kw)  # type: ignore[arg-type]
        self.all.append(c)
        return c.start()

    def stop(self) -> None:
        for c in self.all:
            c.stop()


@pytest.fixture
def tls(tls_broker: SecureBroker, pki: Pki) -> Iterator[Clients]:
    cs = Clients(tls_broker, pki)
    yield cs
    cs.stop()


@pytest.fixture
def logins(login_broker: SecureBroker, pki: Pki) -> Iterator[Clients]:
    cs = Clients(login_broker, pki)
    yield cs
    cs.stop()


def district_collector(cs: Clients, use_login: bool = False) -> TestClient:
    """The district server, with the shared subscription meal-district uses."""
    srv = cs.login(SERVER, PASSWORDS[SERVER]) if use_login else cs.cert(SERVER)
    assert srv.connected.is_set(), srv.connects
    for leaf in ("events", "status"):
        assert srv.subscribe(f"$share/meal-district/{PREFIX}/{DISTRICT}/+/+/{leaf}") == [1]
    return srv


def assert_cannot_publish_as_other(cs: Clients, attacker: TestClient, srv: TestClient) -> None:
    """`attacker` (kiosk B) writes a valid-looking event and a retained `online` under kiosk A's topics:
    the broker refuses both, nothing reaches the district, no retained status is left; B's own event
    on its own topic (sent after the forgeries) does arrive."""
    forged_event = topic(KIOSK_A, "events")
    forged_status = topic(KIOSK_A, "status")
    assert attacker.publish(forged_event, b'{"schema":"meal-edge/meal-event/1","seq":1}') == NOT_AUTHORIZED
    assert attacker.publish(forged_status, b'{"state":"online"}', retain=True) == NOT_AUTHORIZED
    # also a kiosk of the same centre, and the district's own downlink
    assert attacker.publish(topic(KIOSK_A2, "events"), b"x") == NOT_AUTHORIZED
    assert attacker.publish(topic(KIOSK_A, "down/command"), b"x") == NOT_AUTHORIZED
    own = topic(KIOSK_B, "events")
    assert attacker.publish(own, b"genuine") == 0
    wait_for(lambda: srv.got(own), 5, "kiosk B's own event at the district")
    time.sleep(0.3)
    assert [m.topic for m in srv.got()] == [own], "a forged message reached the district"
    # a monitor subscribing now finds no retained status for kiosk A
    monitor = cs.cert(SERVER, client_id="monitor") if cs.broker.mode == "certificates" else \
        cs.login(SERVER, PASSWORDS[SERVER], client_id="monitor")
    assert monitor.subscribe(forged_status) == [1]
    time.sleep(0.5)
    assert monitor.got() == []


def test_kiosk_cannot_publish_under_another_centre(tls: Clients) -> None:
    srv = district_collector(tls)
    b = tls.cert(KIOSK_B)
    assert b.connected.is_set(), b.connects
    assert_cannot_publish_as_other(tls, b, srv)


def test_kiosk_cannot_take_another_kiosks_client_id(tls: Clients) -> None:
    """Kiosk B (its own valid certificate) connects with kiosk A's client id, persistent session, and
    subscribes to junk/#: A is not disconnected and A's session does not get B's subscription."""
    kiosk_a_id = "meal-edge-centre-001-kiosk-1"  # what the kiosk asks for by default (edge.publish)
    a = tls.cert(KIOSK_A, client_id=kiosk_a_id, clean_start=False)
    assert a.connected.is_set(), a.connects
    for asked in (kiosk_a_id, KIOSK_A):  # the default id, and the identity itself
        b = tls.cert(KIOSK_B, client_id=asked, clean_start=False)
        assert b.connected.is_set(), b.connects  # connected: as itself
        b.subscribe("junk/#")
    time.sleep(1.0)
    assert a.disconnects == [] and a.connected.is_set(), f"kiosk A was kicked off: {a.disconnects}"
    # A is still itself: its own event goes through, and it was not subscribed to junk by anybody
    srv = district_collector(tls)
    assert a.publish(topic(KIOSK_A, "events"), b"after") == 0
    wait_for(lambda: srv.got(topic(KIOSK_A, "events")), 5, "kiosk A's event")
    assert a.got() == []
    log = tls.broker.log_path.read_text(errors="replace")
    assert f"as {KIOSK_B} (" in log and f"as {kiosk_a_id} (" not in log  # the broker used identities as ids


def test_same_identity_takes_over_its_own_session_only(tls: Clients) -> None:
    """Positive control for the test above: the same identity connecting again does replace the session
    (MQTT requires it); so the test above would see a kick if B's connection were taken as A."""
    a = tls.cert(KIOSK_A2)
    assert a.connected.is_set()
    again = tls.cert(KIOSK_A2, client_id="anything")
    assert again.connected.is_set()
    wait_for(lambda: a.disconnects, 5, "the old connection of the same identity to be taken over")


def test_kiosk_cannot_read_others_topics(tls: Clients) -> None:
    """B subscribes to everything it can think of; the broker delivers it only its own downlink."""
    srv = district_collector(tls)
    a = tls.cert(KIOSK_A)
    b = tls.cert(KIOSK_B)
    for f in ("#", f"{PREFIX}/#", f"{PREFIX}/{DISTRICT}/+/+/events", topic(KIOSK_A, "#"), topic(KIOSK_A, "down/#"),
              f"$share/g/{PREFIX}/#", topic(KIOSK_B, "down/#")):
        b.subscribe(f)  # Mosquitto 2.0 grants the SUBACK and filters each message by the read ACL
    assert a.subscribe(topic(KIOSK_A, "down/#")) == [1]
    assert a.publish(topic(KIOSK_A, "events"), b"a's event") == 0
    assert a.publish(topic(KIOSK_A, "status"), b"a's status", retain=True) == 0
    assert srv.publish(topic(KIOSK_A, "down/cmd"), b"for a") == 0
    assert srv.publish(topic(KIOSK_B, "down/cmd"), b"for b") == 0
    wait_for(lambda: a.got(topic(KIOSK_A, "down/cmd")), 5, "A's downlink message")
    wait_for(lambda: b.got(topic(KIOSK_B, "down/cmd")), 5, "B's own downlink message")
    wait_for(lambda: srv.got(topic(KIOSK_A, "events")), 5, "A's event at the district")
    time.sleep(0.3)
    # (one copy per overlapping subscription that matches: #, meal/v1/#, its own down/#, ...)
    assert {m.topic for m in b.got()} == {topic(KIOSK_B, "down/cmd")}, f"B read others' messages: {b.got()}"
    assert [m.payload for m in a.got()] == [b"for a"]
    # nor can a kiosk read what the district reads
    late = tls.cert(KIOSK_B, client_id="late")
    late.subscribe(f"{PREFIX}/{DISTRICT}/+/+/status")
    time.sleep(0.5)
    assert late.got() == [], "B read A's retained status"


def test_strangers_cannot_connect(tls: Clients, pki: Pki, tmp_path: Path) -> None:
    # plaintext MQTT on the TLS port
    plain = tls.raw("plain", tls=False, username=KIOSK_A)
    assert not plain.connected.is_set()
    # TLS, but no client certificate
    nocert = tls.raw("nocert", ca=pki.ca)
    assert not nocert.connected.is_set() and (nocert.error or nocert.disconnects or nocert.connects)
    # a certificate with kiosk A's name from another CA
    rogue = Pki.make(tmp_path / "rogue", identities=(KIOSK_A,), ca_name="rogue CA", server=False)
    forged = tls.raw("forged", ca=pki.ca, cert=rogue.clients[KIOSK_A])
    assert not forged.connected.is_set()
    # the broker's identity is checked too: a kiosk does not talk to a broker the district CA did not sign
    wrong_ca = tls.raw("wrong-ca", ca=rogue.ca, cert=pki.clients[KIOSK_A])
    assert not wrong_ca.connected.is_set() and wrong_ca.error and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.error
    # and a raw MQTT CONNECT byte string on the port gets no CONNACK
    with socket.create_connection((tls.broker.host, tls.broker.port), timeout=2) as s:
        s.sendall(bytes.fromhex("101000044d5154540402003c0004746573740000"))
        try:
            reply = s.recv(4)
        except (ConnectionResetError, TimeoutError, OSError):
            reply = b""
    assert not reply.startswith(b"\x20"), "the TLS port answered a plaintext CONNECT"
    # positive control: the genuine kiosk does connect
    assert tls.cert(KIOSK_A).connected.is_set()


# -- the login variant --------------------------------------------------------------------------------


def test_logins_refuse_strangers_and_wrong_passwords(logins: Clients) -> None:
    assert logins.login(KIOSK_A, PASSWORDS[KIOSK_A]).connected.is_set()  # positive control
    for user, pw in ((KIOSK_A, "wrong"), (KIOSK_A, PASSWORDS[KIOSK_B]), (None, None), ("nobody", "x")):
        c = logins.login(user, pw, client_id=f"try-{user}")
        assert not c.connected.is_set(), f"{user!r} connected"
        assert c.connects and c.connects[0] in ("Bad user name or password", "Not authorized"), c.connects
    plain = logins.raw("plain", tls=False, username=KIOSK_A, password=PASSWORDS[KIOSK_A])
    assert not plain.connected.is_set()


def test_login_kiosk_cannot_publish_as_another_or_take_its_id(logins: Clients) -> None:
    srv = district_collector(logins, use_login=True)
    a = logins.login(KIOSK_A, PASSWORDS[KIOSK_A], client_id="meal-edge-centre-001-kiosk-1", clean_start=False)
    b = logins.login(KIOSK_B, PASSWORDS[KIOSK_B], client_id="meal-edge-centre-001-kiosk-1", clean_start=False)
    assert a.connected.is_set() and b.connected.is_set()
    assert_cannot_publish_as_other(logins, b, srv)
    assert a.disconnects == [], f"kiosk A was kicked off by B: {a.disconnects}"
