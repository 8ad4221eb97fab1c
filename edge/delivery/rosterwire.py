"""The roster link between the district and its kiosks (issue 13): topics, messages, signatures, sealing.

The district owns the roster. Every change to it (a senior's fields, status, templates, removal) gets a
district-wide version number. Each kiosk receives the changes for the seniors in its scope, applies them in
order and idempotently, and records the version it has reached. Both sides of the link import this module
and nothing else defines these messages (docs/roster.md is the prose version).

Topics (`prefix` is `[mqtt] topic_prefix`, e.g. `meal/v1`; the kiosk's identity is district/centre/kiosk):

    <prefix>/<district>/<centre>/<kiosk>/up/templates   kiosk → district: templates made by an enrolment
    <prefix>/<district>/<centre>/<kiosk>/up/sync        kiosk → district: "send me what follows version V"
    <prefix>/<district>/<centre>/<kiosk>/up/receipts    kiosk → district: "I have applied up to V, erased ..."
    <prefix>/<district>/<centre>/<kiosk>/down/roster    district → kiosk: a batch of changes
    <prefix>/<district>/<centre>/<kiosk>/down/acks      district → kiosk: a template upload accepted/refused

Every message is JSON (`dumps`: sorted keys, no spaces) and signed with Ed25519 over the message without
its `sig`, exactly like a meal event (edge.security.signing): the kiosk signs with its event-signing key
(already registered at the district), the district with its own roster key, whose public half every kiosk
holds in its config. A broker operator can therefore neither forge a status change nor inject a face.

Templates never cross the link in clear: each one is sealed with AES-256-GCM under the district's roster
transport key (32 bytes, shared by the district and its kiosks, from a file or a systemd credential), with
associated data binding it to its senior, model and template id, so a sealed template moved to another
senior fails to open instead of matching. At rest each side re-seals under its own key.

A change in a `down/roster` batch is the senior's whole state after the change as that kiosk should hold it
(fields + the templates of the kiosk's model), or `absent` (erase everything of that senior: removed by
the district, or no longer in this kiosk's scope). Applying a change is therefore idempotent, and a catch-up
can send only each senior's latest state.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.security.signing import SignatureError, sign_event, verify_event

TRANSPORT_KEY_BYTES = 32
#: the systemd credential name of the roster transport key (kiosk and district alike)
TRANSPORT_CREDENTIAL = "meal-roster-key"
EMBEDDING_DIM = 128
_NONCE = 12
_AAD_PREFIX = b"meal/roster-template/1\x00"
#: refusal codes of a template upload (`down/acks`); the text is for the operator, the code for programs
REFUSALS = {
    "unknown_senior": "the district roster has no senior with this id: add them to the district roster first",
    "deceased": "the district roster marks this senior deceased: templates are not accepted",
    "removed": "this senior was removed from the district roster: templates are not accepted",
    "bad_template": "a template could not be opened or is not a face embedding",
    "not_in_scope": "this centre is not among the senior's centres in the district roster",
}
STATUSES = ("active", "suspended", "deceased")
Direction = Literal["up", "down"]


class WireError(ValueError):
    """A roster message that cannot be used; the message says what is wrong with it."""


# -- topics ------------------------------------------------------------------------------------------


def kiosk_base(prefix: str, district: str, centre_id: str, kiosk_id: str) -> str:
    return f"{prefix}/{district}/{centre_id}/{kiosk_id}"


def topic(prefix: str, district: str, centre_id: str, kiosk_id: str, direction: Direction, name: str) -> str:
    """e.g. topic("meal/v1", "xuhui", "centre-001", "kiosk-1", "down", "roster")."""
    return f"{kiosk_base(prefix, district, centre_id, kiosk_id)}/{direction}/{name}"


def district_up_filter(prefix: str, district: str) -> str:
    """What a district serve process subscribes to for the roster's uplink (all kiosks of the district)."""
    return f"{prefix}/{district}/+/+/up/#"


def parse_topic(prefix: str, t: str) -> tuple[str, str, str, Direction, str]:
    """(district, centre_id, kiosk_id, direction, name) of a roster topic; WireError if it is not one."""
    head = prefix.rstrip("/") + "/"
    if not t.startswith(head):
        raise WireError(f"topic {t!r} is not under {prefix!r}")
    parts = t[len(head):].split("/")
    if len(parts) != 5 or parts[3] not in ("up", "down") or not all(parts):
        raise WireError(f"topic {t!r} is not <district>/<centre>/<kiosk>/up|down/<name>")
    direction: Direction = "up" if parts[3] == "up" else "down"
    return parts[0], parts[1], parts[2], direction, parts[4]


# -- messages ----------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireTemplate(_Strict):
    #: a UUID made where the template was made; the same template keeps it everywhere
    template_id: str
    model_id: str
    quality: float = Field(ge=0.0, le=1.0)
    #: base64 of AES-GCM(nonce || ciphertext+tag) under the transport key, see seal_template
    sealed: str

    @field_validator("template_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        uuid.UUID(v)
        return v


class SeniorState(_Strict):
    """A senior as a kiosk should hold them after a change."""

    name: str = Field(min_length=1, max_length=100)
    birth_date: date
    hukou: str = Field(min_length=1, max_length=100)
    status: Literal["active", "suspended", "deceased"]
    card_no: str | None = None
    home_centre: str
    #: the centres where the senior may eat; None means every centre of the district
    centres: list[str] | None = None
    #: the templates for the receiving kiosk's model only (a kiosk never receives what it cannot use)
    templates: list[WireTemplate] = []


class Change(_Strict):
    version: int = Field(ge=1)
    senior_id: str = Field(min_length=1, max_length=64)
    op: Literal["state", "absent"]
    #: for op "state"; None for "absent"
    state: SeniorState | None = None
    #: why a senior became absent: "removed" (erase, and send a receipt) or "out_of_scope"
    why: Literal["removed", "out_of_scope"] | None = None


class _Envelope(_Strict):
    v: Literal[1] = 1
    msg_id: str
    district: str
    centre_id: str
    kiosk_id: str
    sent_at: datetime
    sig: str = ""

    @field_validator("sent_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("sent_at must carry a time zone")
        return v


class RosterBatch(_Envelope):
    """district → kiosk, `down/roster`. Applies when the kiosk's version is ≥ from_version (a gap otherwise:
    the kiosk asks for a sync from its version). `full`: a snapshot in `parts` messages; after the last part the
    kiosk erases every senior the snapshot did not name, then records to_version."""

    type: Literal["roster.batch"] = "roster.batch"
    from_version: int = Field(ge=0)
    to_version: int = Field(ge=0)
    full: bool = False
    part: int = Field(default=1, ge=1)
    parts: int = Field(default=1, ge=1)
    #: the model the templates are for (the kiosk's, as it said in its sync request)
    model_id: str
    changes: list[Change]


class SyncRequest(_Envelope):
    """kiosk → district, `up/sync`: sent on every connect, after a gap, and by `meal-edge roster resync`
    (full=True). The district answers with batches from `version` (or a full snapshot)."""

    type: Literal["roster.sync"] = "roster.sync"
    version: int = Field(ge=0)
    model_id: str
    full: bool = False


class TemplateUpload(_Envelope):
    """kiosk → district, `up/templates`: templates made by an enrolment at this kiosk."""

    type: Literal["roster.templates"] = "roster.templates"
    senior_id: str = Field(min_length=1, max_length=64)
    templates: list[WireTemplate] = Field(min_length=1)


class UploadAck(_Envelope):
    """district → kiosk, `down/acks`: the answer to one TemplateUpload (`upload_id` = its msg_id)."""

    type: Literal["roster.ack"] = "roster.ack"
    upload_id: str
    senior_id: str
    accepted: bool
    #: a key of REFUSALS when refused
    reason_code: str | None = None
    reason: str | None = None
    #: the roster version of the change that added the templates, when accepted
    version: int | None = None


class Receipt(_Envelope):
    """kiosk → district, `up/receipts`: the version the kiosk has applied, and the seniors whose biometric
    data it erased in doing so (an erasure receipt each, with how many templates were deleted)."""

    type: Literal["roster.receipt"] = "roster.receipt"
    version: int = Field(ge=0)
    model_id: str
    erased: dict[str, int] = {}


Message = RosterBatch | SyncRequest | TemplateUpload | UploadAck | Receipt
_BY_TYPE: dict[str, type[_Envelope]] = {
    "roster.batch": RosterBatch, "roster.sync": SyncRequest, "roster.templates": TemplateUpload,
    "roster.ack": UploadAck, "roster.receipt": Receipt,
}


def new_msg_id() -> str:
    return str(uuid.uuid4())


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode(msg: _Envelope, key: Ed25519PrivateKey) -> bytes:
    """The signed wire bytes of a message."""
    obj = msg.model_dump(mode="json", exclude={"sig"})
    return dumps(sign_event(obj, key))


def decode(payload: bytes, public_key: Ed25519PublicKey | None, *, max_bytes: int = 64 * 1024 * 1024) -> Message:
    """Parse and check one message. `public_key`: the sender's (the kiosk's registered key for `up`, the
    district's roster key for `down`); None only where the caller checks the signature itself, after
    finding the key from the parsed origin (see `verify`). WireError says what is wrong."""
    if len(payload) > max_bytes:
        raise WireError(f"message of {len(payload)} bytes is over the {max_bytes}-byte limit")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise WireError("not a JSON object")
    cls = _BY_TYPE.get(str(obj.get("type")))
    if cls is None:
        raise WireError(f"unknown message type {obj.get('type')!r}")
    if public_key is not None:
        verify(obj, public_key)
    try:
        return cls.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as e:
        raise WireError(f"{obj.get('type')}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e


def verify(obj: dict[str, Any], public_key: Ed25519PublicKey) -> None:
    try:
        verify_event(obj, public_key)
    except SignatureError as e:
        raise WireError(f"signature: {e}") from e


def check_origin(msg: _Envelope, district: str, centre_id: str, kiosk_id: str) -> None:
    """The message names the kiosk whose topic it came on (a signed message re-sent on another kiosk's
    topic is refused)."""
    if (msg.district, msg.centre_id, msg.kiosk_id) != (district, centre_id, kiosk_id):
        raise WireError(f"message names {msg.district}/{msg.centre_id}/{msg.kiosk_id}, topic is "
                        f"{district}/{centre_id}/{kiosk_id}")


# -- templates in transit ----------------------------------------------------------------------------


def _aad(senior_id: str, model_id: str, template_id: str) -> bytes:
    return _AAD_PREFIX + b"\x00".join(s.encode("utf-8") for s in (senior_id, model_id, template_id))


def check_transport_key(key: bytes) -> bytes:
    if len(key) != TRANSPORT_KEY_BYTES:
        raise WireError(f"the roster transport key must be {TRANSPORT_KEY_BYTES} bytes, not {len(key)}")
    return key


def parse_transport_key(data: bytes, where: str = "the roster transport key") -> bytes:
    """The 32-byte key from a key file's bytes: base64 text (what `meal-district keys roster-init` writes),
    64 hex digits, or the 32 raw bytes."""
    text = data.strip()
    for decode in (lambda b: base64.b64decode(b, validate=True), bytes.fromhex):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        if len(key) == TRANSPORT_KEY_BYTES:
            return key
    if len(data) == TRANSPORT_KEY_BYTES:
        return data
    raise WireError(f"{where}: not a roster transport key (expected {TRANSPORT_KEY_BYTES} random bytes as "
                    "base64 or hex text): copy the district's key file")


def read_transport_key(file: str | Path | None) -> bytes:
    """The roster transport key from `file`, or (empty/None) from the systemd credential TRANSPORT_CREDENTIAL.
    The file must not be readable by other users (edge.security.secrets); WireError says what is wrong,
    never the key."""
    from edge.security.secrets import SecretError, credential_path, read_secret_file

    try:
        path = credential_path(TRANSPORT_CREDENTIAL) if not file else file
        data = read_secret_file(path, "the roster transport key")
    except SecretError as e:
        raise WireError(str(e)) from e
    return parse_transport_key(data, str(path))


def new_transport_key_text() -> str:
    """A fresh transport key as the base64 text a key file holds."""
    return base64.b64encode(os.urandom(TRANSPORT_KEY_BYTES)).decode("ascii")


def seal_template(key: bytes, senior_id: str, model_id: str, template_id: str, embedding: np.ndarray) -> str:
    vec = np.asarray(embedding, dtype="<f4").reshape(-1)
    if vec.shape != (EMBEDDING_DIM,) or not np.all(np.isfinite(vec)):
        raise WireError(f"a template must be {EMBEDDING_DIM} finite numbers")
    nonce = os.urandom(_NONCE)
    ct = AESGCM(check_transport_key(key)).encrypt(nonce, vec.tobytes(), _aad(senior_id, model_id, template_id))
    return base64.b64encode(nonce + ct).decode("ascii")


def open_template(key: bytes, senior_id: str, t: WireTemplate) -> np.ndarray:
    """The embedding (float32, 128) of a sealed template; WireError if it was altered, moved to another
    senior or model, or sealed under another key."""
    try:
        raw = base64.b64decode(t.sealed.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise WireError(f"template {t.template_id}: not base64") from e
    if len(raw) != _NONCE + EMBEDDING_DIM * 4 + 16:
        raise WireError(f"template {t.template_id}: {len(raw)} bytes, not a sealed {EMBEDDING_DIM}-d template")
    try:
        plain = AESGCM(check_transport_key(key)).decrypt(raw[:_NONCE], raw[_NONCE:],
                                                          _aad(senior_id, t.model_id, t.template_id))
    except InvalidTag as e:
        raise WireError(f"template {t.template_id}: does not open (another key, senior or model)") from e
    vec = np.frombuffer(plain, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(vec)):
        raise WireError(f"template {t.template_id}: not finite")
    return vec
