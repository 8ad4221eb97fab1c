"""Signed, chained meal events (event contract v2, docs/events.md "Signature and chain").

Each kiosk holds an Ed25519 key. Every event carries
- `sig`: base64 (standard, padded) Ed25519 signature over `canonical_bytes(event)`, i.e. the event without
  its `sig`, serialised with sorted keys, no spaces, UTF-8;
- `prev_hash`: `event_hash` of the kiosk's previous event (seq - 1), "" for seq 1.
Because `kiosk_id`, `centre_id`, `district` and `seq` are inside the signed bytes, an event cannot be
re-sent as another kiosk's or under another number without its signature failing; because each event
names the hash of its predecessor, a deleted, reordered or altered event breaks the chain after it.

The district verifies with `verify_event` (the key registered for the event's kiosk) and `check_link`
(against the stored seq - 1 event, when it has it). Nothing here logs key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.security.secrets import write_new_secret

#: the kiosk's key file, in its state folder (beside the store)
KEY_FILE = "signing.key"
SIG_FIELD = "sig"
PREV_FIELD = "prev_hash"
_SIG_BYTES = 64
_RAW_KEY_BYTES = 32
#: the identity fields an event is checked against (what the district registered the key for)
ORIGIN_FIELDS = ("district", "centre_id", "kiosk_id")


class SignatureError(ValueError):
    """The event is not what its kiosk signed (or cannot be checked); the message says which."""


class ChainError(SignatureError):
    """The event's prev_hash does not name its predecessor: an event before it was deleted, reordered
    or altered. Recorded as an alert by the district, not as a rejection of this event."""


class KeyFileError(ValueError):
    """A kiosk key file that cannot be used, phrased for the operator (which file, what to do)."""


# -- canonical form, signature, hash --------------------------------------------------------------


def canonical_bytes(event: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: every field but `sig`, sorted keys, no spaces, UTF-8 as is."""
    try:
        text = json.dumps(
            {k: v for k, v in event.items() if k != SIG_FIELD},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,  # NaN is not JSON: such an event has no canonical form
        )
    except (TypeError, ValueError) as e:
        raise SignatureError(f"event has no canonical JSON form: {e}") from e
    return text.encode("utf-8")


def _sig_bytes(event: Mapping[str, Any]) -> bytes:
    sig = event.get(SIG_FIELD)
    if not isinstance(sig, str) or not sig:
        raise SignatureError("event is not signed (no 'sig')")
    try:
        raw = base64.b64decode(sig.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise SignatureError(f"'sig' is not standard base64: {e}") from e
    if len(raw) != _SIG_BYTES:
        raise SignatureError(f"'sig' is {len(raw)} bytes, an Ed25519 signature is {_SIG_BYTES}")
    return raw


def sign_event(event: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `event` with `sig` set (any `sig` it had is replaced)."""
    signed = {k: v for k, v in event.items() if k != SIG_FIELD}
    signed[SIG_FIELD] = base64.b64encode(key.sign(canonical_bytes(signed))).decode("ascii")
    return signed


def verify_event(event: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raises SignatureError unless `event` is exactly what the holder of `public_key` signed."""
    raw = _sig_bytes(event)
    try:
        public_key.verify(raw, canonical_bytes(event))
    except InvalidSignature:
        raise SignatureError(
            f"signature of event {event.get('event_id')!r} (seq {event.get('seq')!r}, kiosk "
            f"{event.get('kiosk_id')!r}) does not verify: forged, altered, or signed by another key"
        ) from None


def event_hash(event: Mapping[str, Any]) -> str:
    """Lowercase hex sha256 over the signed event: canonical bytes + raw signature bytes."""
    return hashlib.sha256(canonical_bytes(event) + _sig_bytes(event)).hexdigest()


def check_origin(event: Mapping[str, Any], district: str, centre_id: str, kiosk_id: str) -> None:
    """Raises SignatureError when the event claims another kiosk than the one it is checked for (the
    one whose registered key verified it, and whose topic it arrived on)."""
    want = {"district": district, "centre_id": centre_id, "kiosk_id": kiosk_id}
    wrong = [f"{k} {event.get(k)!r} (expected {v!r})" for k, v in want.items() if event.get(k) != v]
    if wrong:
        raise SignatureError(f"event {event.get('event_id')!r} claims another kiosk: " + ", ".join(wrong))


def check_link(event: Mapping[str, Any], previous: Mapping[str, Any] | None) -> None:
    """Raises ChainError unless `event` follows `previous` (its seq - 1 event of the same kiosk, None for
    seq 1). Verify both signatures first: a hash over unverified bytes proves nothing."""
    seq = event.get("seq")
    prev_hash = event.get(PREV_FIELD)
    if not isinstance(prev_hash, str):
        raise ChainError(f"event seq {seq!r} has no '{PREV_FIELD}'")
    if previous is None:
        if seq != 1:
            raise ChainError(f"event seq {seq!r}: its predecessor is needed to check the chain")
        if prev_hash != "":
            raise ChainError(f"event seq 1 must have an empty '{PREV_FIELD}', has {prev_hash!r}")
        return
    if previous.get("kiosk_id") != event.get("kiosk_id") or previous.get("centre_id") != event.get("centre_id"):
        raise ChainError(f"event seq {seq!r} is checked against another kiosk's event")
    if not isinstance(seq, int) or previous.get("seq") != seq - 1:
        raise ChainError(f"event seq {seq!r} is checked against seq {previous.get('seq')!r}, not seq - 1")
    if SIG_FIELD not in previous:
        # an unsigned schema-1 predecessor (a kiosk upgraded to signing): the chain starts here
        if prev_hash != "":
            raise ChainError(f"event seq {seq} follows an unsigned event and must have an empty '{PREV_FIELD}'")
        return
    want = event_hash(previous)
    if prev_hash != want:
        raise ChainError(
            f"chain broken at seq {seq}: '{PREV_FIELD}' {prev_hash!r} is not the hash {want!r} of seq {seq - 1} "
            "as received (an event was altered, deleted or replaced)"
        )


def verify_chain(events: Iterable[Mapping[str, Any]], public_key: Ed25519PublicKey) -> int:
    """Verify a kiosk's run of events (any order, consecutive seq): every signature and every link.
    The first event of the run is linked to nothing unless it is seq 1. Returns how many were checked."""
    run = sorted(events, key=lambda e: int(e.get("seq") or 0))
    for i, ev in enumerate(run):
        verify_event(ev, public_key)
        if i == 0:
            if ev.get("seq") == 1:
                check_link(ev, None)
            continue
        check_link(ev, run[i - 1])
    return len(run)


# -- public keys ----------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    """base64 of the raw 32 bytes: what the district registers for the kiosk."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key from PEM (SubjectPublicKeyInfo) or from base64 of the raw 32 bytes."""
    t = text.strip()
    if t.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(t.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise SignatureError(f"not a PEM public key: {e}") from e
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"the PEM key is {type(key).__name__}, not Ed25519")
        return key
    try:
        raw = base64.b64decode(t.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise SignatureError(f"public key is neither PEM nor base64: {e}") from e
    if len(raw) != _RAW_KEY_BYTES:
        raise SignatureError(f"public key is {len(raw)} bytes, an Ed25519 key is {_RAW_KEY_BYTES} (base64 of 44 chars)")
    return Ed25519PublicKey.from_public_bytes(raw)


# -- the kiosk's key file ---------------------------------------------------------------------------


def load_key(path: Path | str) -> Ed25519PrivateKey:
    """The kiosk's private key from its PEM file. Refused if others than the owner may read or write it."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no signing key; make one with `meal-edge keys init`") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot open the signing key: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{p}: the signing key must be a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{p}: the signing key is readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run `chmod 600 {p}`, and replace the key (keys init) if others may have copied it"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(64 * 1024)
    finally:
        os.close(fd)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"{p}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: the key is {type(key).__name__}, not Ed25519")
    return key


def create_key(path: Path | str) -> Ed25519PrivateKey:
    """Make a new key at `path` (0600, written atomically); KeyFileError if a key is already there.

    The key is written to a 0600 temporary file in the same folder, fsync'd, then hard-linked to `path`:
    the link fails if a key exists (or another process made one meanwhile), so an existing key is never
    replaced (that would orphan the public key the district registered for this kiosk)."""
    p = Path(path)
    try:
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"{p.parent}: cannot create the key's folder: {e.strerror or e}") from e
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        made = write_new_secret(p, pem, prefix=".signing-key-")
    except OSError as e:
        raise KeyFileError(f"{p}: cannot write the signing key: {e.strerror or e}") from e
    if not made:
        raise KeyFileError(f"{p}: a signing key already exists; it is kept")
    return key


def load_or_create_key(path: Path | str) -> Ed25519PrivateKey:
    """The key at `path`, made first if there is none (see create_key)."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        try:
            return create_key(p)
        except KeyFileError:
            if not p.exists():  # not a lost race with another process: a real failure
                raise
    return load_key(p)
