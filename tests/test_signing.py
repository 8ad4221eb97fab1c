"""Signed, chained events (edge/security/signing.py): a genuine event verifies; forged, altered, replayed
and chain-broken ones do not. Key files are 0600 and never replaced."""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.security.signing import (
    ChainError,
    KeyFileError,
    SignatureError,
    canonical_bytes,
    check_link,
    check_origin,
    create_key,
    event_hash,
    load_key,
    load_or_create_key,
    public_key_from_text,
    public_key_text,
    sign_event,
    verify_chain,
    verify_event,
)


def v2_event(seq: int, prev_hash: str, **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "schema": "meal-edge/meal-event/2",
        "event_id": f"6f1c2f4e-8d0b-4a4e-9d4b-{seq:012d}",
        "seq": seq,
        "kind": "meal",
        "centre_id": "centre-001",
        "district": "xuhui",
        "kiosk_id": "kiosk-1",
        "senior_id": "S0001",
        "meal": "午餐",  # non-ASCII: canonical bytes keep UTF-8 as is
        "local_date": "2026-11-30",
        "decided_at": "2026-11-30T11:45:03.250000+08:00",
        "currency": "CNY",
        "price_fen": 1000,
        "subsidy_fen": 300,
        "payable_fen": 700,
        "reasons": ["subsidised"],
        "confirmed_by": None,
        "check_in": "face",
        "staff_id": None,
        "match": {"distance": 0.31, "margin": 0.12, "frames": 3, "model_id": "dlib-r1", "backend": "onnx"},
        "source_ts": None,
        "prev_hash": prev_hash,
    }
    ev.update(over)
    return ev


def chain(key: Ed25519PrivateKey, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    prev = ""
    for seq in range(1, n + 1):
        ev = sign_event(v2_event(seq, prev), key)
        prev = event_hash(ev)
        out.append(ev)
    return out


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_genuine_event_and_chain_verify(key: Ed25519PrivateKey) -> None:
    events = chain(key, 4)
    pub = key.public_key()
    for ev in events:
        verify_event(ev, pub)
        check_origin(ev, "xuhui", "centre-001", "kiosk-1")
    check_link(events[0], None)
    for prev, ev in zip(events, events[1:], strict=False):
        check_link(ev, prev)
    assert verify_chain(reversed(events), pub) == 4
    # what travels is JSON text: the district parses it and gets the same verdict
    for ev in events:
        verify_event(json.loads(json.dumps(ev, ensure_ascii=False)), pub)


def test_canonical_bytes_are_the_documented_form(key: Ed25519PrivateKey) -> None:
    ev = sign_event({"b": 1, "a": "张", "sig": "ignored"}, key)
    assert canonical_bytes(ev) == '{"a":"张","b":1}'.encode()
    assert canonical_bytes(ev) == canonical_bytes({"a": "张", "b": 1})
    raw = base64.b64decode(ev["sig"], validate=True)
    assert len(raw) == 64 and ev["sig"].endswith("=")  # standard, padded base64
    import hashlib

    assert event_hash(ev) == hashlib.sha256(canonical_bytes(ev) + raw).hexdigest()
    with pytest.raises(SignatureError, match="canonical"):
        canonical_bytes({"x": float("nan")})


def test_forged_with_another_key_fails(key: Ed25519PrivateKey) -> None:
    forger = Ed25519PrivateKey.generate()
    forged = sign_event(v2_event(1, ""), forger)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_event(forged, key.public_key())
    with pytest.raises(SignatureError, match="not signed"):
        verify_event(v2_event(1, ""), key.public_key())
    garbage = dict(sign_event(v2_event(1, ""), key), sig="not base64!")
    with pytest.raises(SignatureError, match="base64"):
        verify_event(garbage, key.public_key())
    short = dict(sign_event(v2_event(1, ""), key), sig=base64.b64encode(b"x" * 10).decode())
    with pytest.raises(SignatureError, match="10 bytes"):
        verify_event(short, key.public_key())


@pytest.mark.parametrize(
    "field,value",
    [
        ("subsidy_fen", 0),
        ("payable_fen", 1000),
        ("senior_id", "S0002"),
        ("local_date", "2026-12-01"),
        ("decided_at", "2026-11-30T11:45:03.250001+08:00"),
        ("meal", "dinner"),
        ("confirmed_by", "staff"),
        ("check_in", "manual"),
        ("staff_id", "w01"),
        ("reasons", ["subsidised", "x"]),
        ("match", {"distance": 0.3}),
        ("prev_hash", "0" * 64),
        ("schema", "meal-edge/meal-event/1"),
        ("event_id", "6f1c2f4e-8d0b-4a4e-9d4b-999999999999"),
        ("extra", "added"),
    ],
)
def test_any_altered_field_fails(key: Ed25519PrivateKey, field: str, value: Any) -> None:
    ev = sign_event(v2_event(1, ""), key)
    verify_event(ev, key.public_key())
    altered = copy.deepcopy(ev)
    altered[field] = value
    with pytest.raises(SignatureError):
        verify_event(altered, key.public_key())


def test_removed_field_fails(key: Ed25519PrivateKey) -> None:
    ev = sign_event(v2_event(1, ""), key)
    for field in ev:
        if field == "sig":
            continue
        altered = {k: v for k, v in ev.items() if k != field}
        with pytest.raises(SignatureError):
            verify_event(altered, key.public_key())


def test_replayed_under_another_kiosk_or_seq_fails(key: Ed25519PrivateKey) -> None:
    ev = sign_event(v2_event(7, "a" * 64), key)
    pub = key.public_key()
    # the same bytes re-published as another kiosk's event: its registered key is another one
    other_kiosk = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError):
        verify_event(ev, other_kiosk)
    # ... or the ids rewritten to the other kiosk: the signature covers them
    for field, value in (("kiosk_id", "kiosk-2"), ("centre_id", "centre-002"), ("district", "minhang"),
                         ("seq", 8), ("seq", 6)):
        with pytest.raises(SignatureError):
            verify_event({**ev, field: value}, pub)
    # a genuine event arriving on another kiosk's topic claims the wrong origin
    with pytest.raises(SignatureError, match="claims another kiosk"):
        check_origin(ev, "xuhui", "centre-001", "kiosk-2")


def test_chain_breaks_are_found(key: Ed25519PrivateKey) -> None:
    e1, e2, e3, e4 = chain(key, 4)
    pub = key.public_key()
    # deleted: seq 3 dropped and the kiosk's seq 4 checked against seq 2
    with pytest.raises(ChainError, match="seq - 1"):
        check_link(e4, e2)
    # deleted and renumbered by someone who holds the key but rewrote history: the hash does not match
    e3_again = sign_event(v2_event(3, event_hash(e1)), key)
    with pytest.raises(ChainError, match="chain broken at seq 3"):
        check_link(e3_again, e2)
    # an altered predecessor (re-signed with the key, so its own signature holds) breaks the next link
    e2_altered = sign_event({**e2, "subsidy_fen": 0, "payable_fen": 1000}, key)
    verify_event(e2_altered, pub)
    with pytest.raises(ChainError, match="chain broken at seq 3"):
        check_link(e3, e2_altered)
    # reordered without the key: seq is signed
    with pytest.raises(SignatureError, match="does not verify"):
        verify_chain([e1, {**e3, "seq": 2}, {**e2, "seq": 3}], pub)
    # reordered with the key (events re-signed in another order): the first re-signed event no longer
    # follows the seq - 1 event the district already holds
    e3_as_2 = sign_event({**e3, "seq": 2, "prev_hash": event_hash(e1)}, key)
    e2_as_3 = sign_event({**e2, "seq": 3, "prev_hash": event_hash(e3_as_2)}, key)
    check_link(e2_as_3, e3_as_2)  # consistent among themselves ...
    with pytest.raises(ChainError, match="chain broken at seq 3"):
        check_link(e2_as_3, e2)  # ... but not with the seq 2 received before
    # seq 1 starts the chain with ""
    bad_first = sign_event(v2_event(1, "b" * 64), key)
    with pytest.raises(ChainError, match="empty"):
        check_link(bad_first, None)
    with pytest.raises(ChainError, match="predecessor is needed"):
        check_link(e2, None)
    with pytest.raises(ChainError, match="another kiosk"):
        check_link(e2, {**e1, "kiosk_id": "kiosk-2"})
    with pytest.raises(ChainError, match="no 'prev_hash'"):
        check_link({k: v for k, v in e2.items() if k != "prev_hash"}, e1)
    # a gap in a run handed to verify_chain
    with pytest.raises(ChainError):
        verify_chain([e1, e2, e4], pub)


def test_public_key_text_round_trip(key: Ed25519PrivateKey) -> None:
    pub = key.public_key()
    text = public_key_text(pub)
    assert len(text) == 44 and base64.b64decode(text) == pub.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    ev = sign_event(v2_event(1, ""), key)
    verify_event(ev, public_key_from_text(text))
    verify_event(ev, public_key_from_text(f"  {text}\n"))
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    verify_event(ev, public_key_from_text(pem))
    for bad in ("", "abc", base64.b64encode(b"x" * 31).decode(), "-----BEGIN PUBLIC KEY-----\nxx\n-----END"):
        with pytest.raises(SignatureError):
            public_key_from_text(bad)


def test_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state" / "signing.key"
    k1 = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name != "signing.key"]  # no temporary file left
    k2 = load_or_create_key(path)
    assert public_key_text(k1.public_key()) == public_key_text(k2.public_key())
    with pytest.raises(KeyFileError, match="already exists"):
        create_key(path)
    assert public_key_text(load_key(path).public_key()) == public_key_text(k1.public_key())


def test_key_made_once_under_a_race(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    texts: list[str] = []
    barrier = threading.Barrier(6)

    def make() -> None:
        barrier.wait()
        texts.append(public_key_text(load_or_create_key(path).public_key()))

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(texts) == 6 and len(set(texts)) == 1


def test_load_key_refusals(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    with pytest.raises(KeyFileError, match="keys init"):
        load_key(path)
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_key(path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_key(link)
