"""The meal event: the value the pipeline decides, and the JSON payload the district receives.

Only meals are events (repeats, unknown faces and refusals are kiosk feedback, not settlement records).
The payload is built once, when the event is recorded with its per-kiosk sequence number, stored as text
and published byte for byte, so a re-send after a reconnect or a restart is identical to the first send.
docs/events.md describes every field; docs/events.schema.json is the contract the tests validate against.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

#: what kiosks publish: v1 plus check_in, staff_id, prev_hash and sig (docs/events.md "Schema 2")
SCHEMA = "meal-edge/meal-event/2"
#: what kiosks published before signing; readers still accept it
SCHEMA_V1 = "meal-edge/meal-event/1"
STATUS_SCHEMA = "meal-edge/status/1"
CURRENCY = "CNY"
#: meal: a meal served; void: reverses an earlier meal of the same local date (docs/events.md "Voids")
KINDS = ("meal", "void")
#: why a meal was voided (the event's `void_reason`): wrong person, served twice, left without eating, other
#: (other needs a `void_note`); staff choose one of these, the words are in edge/meals/void.py
VOID_REASONS = ("wrong_person", "double_serving", "not_eaten", "other")
MAX_VOID_NOTE = 200
#: how the senior was checked in: by face alone, by face with staff confirming, or by hand (later)
CHECK_INS = ("face", "face_confirmed", "manual")


@dataclass(frozen=True)
class MealEvent:
    event_id: str
    kind: str
    centre_id: str
    district: str
    kiosk_id: str
    senior_id: str
    meal: str
    local_date: date
    #: aware, in the centre's time zone
    decided_at: datetime
    price_fen: int
    subsidy_fen: int
    payable_fen: int
    reasons: tuple[str, ...]
    #: "staff" when staff confirmed the match at the kiosk
    confirmed_by: str | None = None
    #: how the face was matched, e.g. {"distance", "margin", "frames", "model_id", "backend"}
    match: dict[str, Any] = field(default_factory=dict)
    #: seconds into the source (replay); None for a live camera
    source_ts: float | None = None
    #: None: derived from confirmed_by ("face", or "face_confirmed" when staff confirmed)
    check_in: str | None = None
    #: the staff member who confirmed (or checked in by hand); None until staff log in (issue 12 item 3)
    staff_id: str | None = None
    #: kind void: the event_id of the meal it reverses, the reason code (VOID_REASONS) and an optional note
    voids: str | None = None
    void_reason: str | None = None
    void_note: str | None = None

    @property
    def check_in_kind(self) -> str:
        if self.check_in is not None:
            return self.check_in
        return "face_confirmed" if self.confirmed_by == "staff" else "face"


def new_event_id() -> str:
    return str(uuid.uuid4())


def iso(dt: datetime) -> str:
    """ISO 8601 with the UTC offset; refuses naive times so no event is ever ambiguous."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: event times must be timezone-aware")
    return dt.isoformat()


def _fen(name: str, v: object) -> int:
    # bool is an int subclass; True fen is a bug, not a price
    if type(v) is not int or v < 0:
        raise ValueError(f"{name} must be a non-negative integer number of fen, got {v!r}")
    return v


def _json_value(key: str, v: object) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int | float):
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"match.{key} is not finite: {v!r}")
        return int(v) if isinstance(v, int) else f
    # numpy scalars from the matcher
    if hasattr(v, "item"):
        return _json_value(key, v.item())
    raise ValueError(f"match.{key} must be a number, string, boolean or null, got {type(v).__name__}")


def build_payload(event: MealEvent, seq: int, prev_hash: str = "") -> dict[str, Any]:
    """The published object, unsigned: the store adds `sig` (edge.security.signing.sign_event) in the
    transaction that allocates `seq`, with `prev_hash` the event_hash of this kiosk's seq - 1 event.
    Raises ValueError for an event that breaks an invariant (never published)."""
    if event.kind not in KINDS:
        raise ValueError(f"only meals and voids are events, got kind {event.kind!r}")
    try:
        uuid.UUID(event.event_id)
    except ValueError as e:
        raise ValueError(f"event_id {event.event_id!r} is not a UUID") from e
    if type(seq) is not int or seq < 1:
        raise ValueError(f"seq must be a positive integer, got {seq!r}")
    price = _fen("price_fen", event.price_fen)
    subsidy = _fen("subsidy_fen", event.subsidy_fen)
    payable = _fen("payable_fen", event.payable_fen)
    if payable != price - subsidy:
        raise ValueError(f"payable_fen {payable} != price_fen {price} - subsidy_fen {subsidy}")
    if event.confirmed_by not in (None, "staff"):
        raise ValueError(f"confirmed_by must be null or 'staff', got {event.confirmed_by!r}")
    for name in ("centre_id", "district", "kiosk_id", "senior_id", "meal"):
        if not getattr(event, name):
            raise ValueError(f"{name} must not be empty")
    check_in = event.check_in_kind
    if check_in not in CHECK_INS:
        raise ValueError(f"check_in must be one of {CHECK_INS}, got {check_in!r}")
    if event.staff_id is not None and (not isinstance(event.staff_id, str) or not event.staff_id):
        raise ValueError(f"staff_id must be null or a staff id, got {event.staff_id!r}")
    if not isinstance(prev_hash, str) or (prev_hash and len(prev_hash) != 64):
        raise ValueError(f"prev_hash must be '' or a sha256 hex digest, got {prev_hash!r}")
    void = _void_fields(event)
    return {
        "schema": SCHEMA,
        "event_id": event.event_id,
        "seq": seq,
        "kind": event.kind,
        "centre_id": event.centre_id,
        "district": event.district,
        "kiosk_id": event.kiosk_id,
        "senior_id": event.senior_id,
        "meal": event.meal,
        "local_date": event.local_date.isoformat(),
        "decided_at": iso(event.decided_at),
        "currency": CURRENCY,
        "price_fen": price,
        "subsidy_fen": subsidy,
        "payable_fen": payable,
        "reasons": list(event.reasons),
        "confirmed_by": event.confirmed_by,
        "match": {str(k): _json_value(str(k), v) for k, v in event.match.items()},
        "source_ts": None if event.source_ts is None else float(event.source_ts),
        "check_in": check_in,
        "staff_id": event.staff_id,
        "prev_hash": prev_hash,
        **void,
    }


def _void_fields(event: MealEvent) -> dict[str, str]:
    """`voids`, `void_reason` (and `void_note` when given) of a void; nothing for a meal, which must not carry
    them (the schema forbids them there)."""
    if event.kind != "void":
        if event.voids is not None or event.void_reason is not None or event.void_note is not None:
            raise ValueError("voids, void_reason and void_note belong to a void only")
        return {}
    try:
        uuid.UUID(str(event.voids))
    except ValueError as e:
        raise ValueError(f"a void names the event_id of the meal it voids, got {event.voids!r}") from e
    if event.voids == event.event_id:
        raise ValueError("a void cannot void itself")
    if event.void_reason not in VOID_REASONS:
        raise ValueError(f"void_reason must be one of {VOID_REASONS}, got {event.void_reason!r}")
    note = event.void_note
    if note is not None and (not isinstance(note, str) or not note.strip() or len(note) > MAX_VOID_NOTE
                             or not note.isprintable()):
        raise ValueError(f"void_note must be 1 to {MAX_VOID_NOTE} printable characters, got {note!r}")
    if event.void_reason == "other" and note is None:
        raise ValueError("void_reason other needs a void_note saying why")
    out = {"voids": str(event.voids), "void_reason": event.void_reason}
    if note is not None:
        out["void_note"] = note
    return out


#: fields schema 2 added; a schema-1 payload has none of them
V2_FIELDS = ("check_in", "staff_id", "prev_hash", "sig")


def v1_payload(event: MealEvent, seq: int) -> dict[str, Any]:
    """The same meal as a kiosk before schema 2 sent it (unsigned, unchained). The district still accepts these
    while `[ingest] accept_unsigned` is on (a migration period); its tests and benchmark use them."""
    payload = build_payload(event, seq)
    payload["schema"] = SCHEMA_V1
    for key in V2_FIELDS:
        payload.pop(key, None)
    return payload


def dumps(payload: dict[str, Any]) -> str:
    """Canonical text: sorted keys, no spaces, UTF-8 as is. Stored once and published byte for byte."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


def event_topic(prefix: str, district: str, centre_id: str, kiosk_id: str) -> str:
    return f"{prefix}/{district}/{centre_id}/{kiosk_id}/events"


def status_topic(prefix: str, district: str, centre_id: str, kiosk_id: str) -> str:
    return f"{prefix}/{district}/{centre_id}/{kiosk_id}/status"


CLOCK_STATES = ("ok", "behind", "ahead")


def status_payload(
    state: str, centre_id: str, district: str, kiosk_id: str, reason: str, at: datetime | None = None,
    *, clock: str | None = None, newest_event: datetime | None = None, camera: str | None = None,
) -> bytes:
    """Retained kiosk status: `online` (birth, on every connect) or `offline` (clean stop or last will).
    `clock`: the clock guard's verdict (ok, behind, ahead) when the kiosk has one, with the newest meal
    event's time it was checked against. `camera`: ok or missing once the daemon has tried the camera (an
    online kiosk without a camera serves nobody)."""
    if state not in ("online", "offline"):
        raise ValueError(f"state must be online or offline, got {state!r}")
    obj: dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "state": state,
        "reason": reason,
        "centre_id": centre_id,
        "district": district,
        "kiosk_id": kiosk_id,
        "ts": iso(at or datetime.now(UTC)),
    }
    if clock is not None:
        if clock not in CLOCK_STATES:
            raise ValueError(f"clock must be one of {CLOCK_STATES}, got {clock!r}")
        obj["clock"] = {"state": clock, "newest_event": None if newest_event is None else iso(newest_event)}
    if camera is not None:
        obj["camera"] = camera
    return dumps(obj).encode("utf-8")
