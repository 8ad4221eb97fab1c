"""The roster link's messages (edge.delivery.rosterwire): what one side signs the other accepts, and
nothing altered, re-addressed or sealed for another senior gets through."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.delivery import rosterwire as rw


def _batch(key: Ed25519PrivateKey, tkey: bytes) -> bytes:
    emb = np.linspace(-1, 1, rw.EMBEDDING_DIM, dtype=np.float32)
    tid = rw.new_msg_id()
    t = rw.WireTemplate(template_id=tid, model_id="sface", quality=0.9,
                        sealed=rw.seal_template(tkey, "S1", "sface", tid, emb))
    state = rw.SeniorState(name="王芳", birth_date=date(1946, 3, 1), hukou="本区", status="active",
                           home_centre="centre-001", templates=[t])
    msg = rw.RosterBatch(msg_id=rw.new_msg_id(), district="xuhui", centre_id="centre-001", kiosk_id="kiosk-1",
                         sent_at=datetime.now(UTC), from_version=0, to_version=2, model_id="sface",
                         changes=[rw.Change(version=1, senior_id="S1", op="state", state=state),
                                  rw.Change(version=2, senior_id="S2", op="absent", why="removed")])
    return rw.encode(msg, key)


def test_a_signed_batch_round_trips_and_its_template_opens_for_its_senior_only() -> None:
    key, tkey = Ed25519PrivateKey.generate(), bytes(range(32))
    payload = _batch(key, tkey)
    msg = rw.decode(payload, key.public_key())
    assert isinstance(msg, rw.RosterBatch)
    assert [c.version for c in msg.changes] == [1, 2]
    first = msg.changes[0].state
    assert first is not None
    vec = rw.open_template(tkey, "S1", first.templates[0])
    assert np.allclose(vec, np.linspace(-1, 1, rw.EMBEDDING_DIM))
    with pytest.raises(rw.WireError, match="does not open"):
        rw.open_template(tkey, "S2", first.templates[0])  # moved to another senior
    with pytest.raises(rw.WireError, match="does not open"):
        rw.open_template(bytes(32), "S1", first.templates[0])  # another district's key


def test_an_altered_or_foreign_message_is_refused() -> None:
    key, tkey = Ed25519PrivateKey.generate(), bytes(range(32))
    payload = _batch(key, tkey)
    obj = json.loads(payload)
    obj["changes"][0]["state"]["status"] = "deceased"
    with pytest.raises(rw.WireError, match="signature"):
        rw.decode(rw.dumps(obj), key.public_key())
    with pytest.raises(rw.WireError, match="signature"):
        rw.decode(payload, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(rw.WireError, match="not JSON"):
        rw.decode(b"\xff", key.public_key())
    msg = rw.decode(payload, key.public_key())
    with pytest.raises(rw.WireError, match="topic is"):
        rw.check_origin(msg, "xuhui", "centre-001", "kiosk-2")


def test_topics_parse_back() -> None:
    t = rw.topic("meal/v1", "xuhui", "centre-001", "kiosk-1", "up", "templates")
    assert t == "meal/v1/xuhui/centre-001/kiosk-1/up/templates"
    assert rw.parse_topic("meal/v1", t) == ("xuhui", "centre-001", "kiosk-1", "up", "templates")
    with pytest.raises(rw.WireError):
        rw.parse_topic("meal/v1", "meal/v1/xuhui/centre-001/kiosk-1/events")


def test_the_transport_key_file_is_read_as_base64_hex_or_raw_and_never_when_others_can_read_it(tmp_path) -> None:
    key = bytes(range(32))
    f = tmp_path / "roster.key"
    for data in (base64.b64encode(key) + b"\n", key.hex().encode(), key):
        f.write_bytes(data)
        f.chmod(0o600)
        assert rw.read_transport_key(f) == key
    f.write_text(rw.new_transport_key_text())
    assert len(rw.read_transport_key(f)) == 32
    f.write_bytes(b"short")
    with pytest.raises(rw.WireError, match="not a roster transport key"):
        rw.read_transport_key(f)
    f.write_bytes(base64.b64encode(key))
    f.chmod(0o644)
    with pytest.raises(rw.WireError, match="readable by every user"):
        rw.read_transport_key(f)
