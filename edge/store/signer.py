"""Signing each meal event as it is recorded (event contract v2): the store's side of edge.security.signing.

The store calls `sign()` inside the write transaction that allocates the event's seq, so the signature, the
seq and the chain link (`prev_hash` = event_hash of the kiosk's stored seq - 1 event) are committed together
or not at all. The key is the kiosk's, in the state folder beside the store (`meal-edge keys init`); a store
opened without one explicitly loads it there on the first event, and makes it if it is missing (tests,
demo and replay scratch stores; `meal-edge run` refuses to start without a key made by `keys init`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.security.signing import KEY_FILE, KeyFileError, SignatureError, event_hash, load_or_create_key, sign_event


class SigningError(RuntimeError):
    """The event could not be signed (no usable key, or an unreadable predecessor); nothing is recorded."""


def key_path_for(store_path: Path) -> Path:
    """The kiosk's signing key: in the state folder, beside the store."""
    return store_path.parent / KEY_FILE


class EventSigner:
    def __init__(self, key_path: Path, key: Ed25519PrivateKey | None = None) -> None:
        self.key_path = key_path
        self._key = key
        self._lock = threading.Lock()

    def key(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                try:
                    self._key = load_or_create_key(self.key_path)
                except KeyFileError as e:
                    raise SigningError(str(e)) from None
            return self._key

    @staticmethod
    def prev_hash(previous_payload: str | None, seq: int) -> str:
        """The chain link of event `seq`: "" for seq 1, or after an unsigned (schema 1) predecessor, where the
        chain starts (docs/events.md); else the event_hash of the predecessor as stored."""
        if seq == 1 or previous_payload is None:
            if seq != 1:
                raise SigningError(f"event seq {seq - 1} of this kiosk is missing from the store: cannot chain {seq}")
            return ""
        prev = json.loads(previous_payload)
        if "sig" not in prev:
            return ""
        try:
            return event_hash(prev)
        except SignatureError as e:
            raise SigningError(f"stored event seq {seq - 1} cannot be hashed: {e}") from None

    def sign(self, payload: dict[str, Any]) -> dict[str, Any]:
        return sign_event(payload, self.key())
