"""One MQTT message in, one verdict out: an event to store, a kiosk status, or a reason to quarantine.

Pure (no database, no network): signatures are checked later, in the batch, against the registered keys.
Every way a payload can be wrong ends in `Rejected(reason)`; nothing here raises on bad input.
The JSON schemas are the documented ones (docs/events.schema.json, docs/status.schema.json, linked into the
package) and the district's schema-2 ones; fastjsonschema checks them quickly, jsonschema words the error.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker

from district.paths import schema

EVENT_SCHEMAS = {"meal-edge/meal-event/1": "events.schema.json#v1", "meal-edge/meal-event/2": "events.schema.json#v2"}
STATUS_SCHEMAS = {"meal-edge/status/1": "status.schema.json", "meal-edge/status/2": "status-2.schema.json"}


@dataclass(frozen=True)
class KioskKey:
    district: str
    centre_id: str
    kiosk_id: str

    def __str__(self) -> str:
        return f"{self.district}/{self.centre_id}/{self.kiosk_id}"


@dataclass(frozen=True)
class Event:
    obj: dict[str, Any]
    raw: bytes
    sha256: str
    topic: str
    kiosk: KioskKey
    version: int
    local_date: date
    decided_at: datetime

    @property
    def event_id(self) -> str:
        return str(self.obj["event_id"])

    @property
    def seq(self) -> int:
        return int(self.obj["seq"])

    @property
    def signed(self) -> bool:
        return "sig" in self.obj

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def check_in(self) -> str:
        """v2 says it; v1 readers derive it from confirmed_by (Event contract v2)."""
        if "check_in" in self.obj:
            return str(self.obj["check_in"])
        return "face_confirmed" if self.obj.get("confirmed_by") == "staff" else "face"


@dataclass(frozen=True)
class Status:
    kiosk: KioskKey
    state: str
    reason: str
    ts: str
    backlog: int | None
    last_seq: int | None
    retained: bool


@dataclass(frozen=True)
class Rejected:
    reason: str


Verdict = Event | Status | Rejected


@cache
def _fast(name: str) -> Callable[[Any], bool]:
    """A quick yes/no. fastjsonschema compiles the schema to Python (about 20x faster than jsonschema) but does
    not know every 2020-12 keyword; a schema using one is checked by jsonschema itself."""
    s = schema(name)
    if "unevaluatedProperties" in json.dumps(s):
        return _slow(name).is_valid
    compiled = fastjsonschema.compile(s)

    def ok(obj: Any) -> bool:
        try:
            compiled(obj)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return ok


@cache
def _slow(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name), format_checker=FormatChecker())


def schema_error(name: str, obj: Any) -> str | None:
    """None if obj satisfies the schema, else the first problem in words (with the field's path)."""
    if _fast(name)(obj):
        return None
    errors = sorted(_slow(name).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if not errors:  # the two validators disagree: trust the stricter verdict, say so
        return "does not match the schema"
    e = errors[0]
    where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
    return f"{where}: {e.message}"[:300]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number in JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_topic(topic: str, prefix: str, district: str) -> tuple[KioskKey, str] | Rejected:
    head = f"{prefix}/"
    if not topic.startswith(head):
        return Rejected(f"topic {topic!r} is not under {prefix}/")
    parts = topic[len(head):].split("/")
    if len(parts) != 4 or not all(parts) or parts[3] not in ("events", "status"):
        return Rejected(f"topic {topic!r} is not {prefix}/<district>/<centre>/<kiosk>/events|status")
    if any(len(p) > 64 for p in parts):
        return Rejected(f"topic {topic[:200]!r} has a level longer than 64 characters")
    if parts[0] != district:
        return Rejected(f"topic {topic!r} belongs to district {parts[0]!r}, not {district!r}")
    return KioskKey(parts[0], parts[1], parts[2]), parts[3]


def decode(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejected:
    if len(payload) > max_bytes:
        return Rejected(f"oversized: {len(payload)} bytes (limit {max_bytes})")
    if payload.count(b"[") + payload.count(b"{") > 200:
        # an event has a handful; thousands only serve to make a parser recurse
        return Rejected("not JSON: nested too deeply (more than 200 objects and arrays)")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(f"not UTF-8 text: {e.reason} at byte {e.start}")
    try:
        obj = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        return Rejected("not JSON: nested too deeply")
    except ValueError as e:
        return Rejected(f"not JSON: {e}"[:300])
    if not isinstance(obj, dict):
        return Rejected(f"not a JSON object but a {type(obj).__name__}")
    return obj


def _aware(text: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.utcoffset() is not None else None


def check_event(obj: dict[str, Any], kiosk: KioskKey) -> str | None:
    """The rules a schema cannot say: the topic names the payload's kiosk, real dates, money adds up."""
    for field in ("district", "centre_id", "kiosk_id"):
        if obj[field] != getattr(kiosk, field):
            return f"{field} {obj[field]!r} does not match the topic ({getattr(kiosk, field)!r})"
    for field in ("seq", "price_fen", "subsidy_fen", "payable_fen"):
        # JSON Schema calls 300.0 an integer; money and sequence numbers must never pass through a float
        if type(obj[field]) is not int:
            return f"{field} must be written as an integer, not {obj[field]!r}"
    for field, limit in (("senior_id", 64), ("meal", 64), ("district", 64), ("centre_id", 64), ("kiosk_id", 64)):
        if len(obj[field]) > limit:
            return f"{field} is longer than {limit} characters"
    if obj.get("staff_id") is not None and len(obj["staff_id"]) > 64:
        return "staff_id is longer than 64 characters"
    if len(",".join(obj["reasons"])) > 300:
        return "reasons are longer than 300 characters in all"
    try:
        local = date.fromisoformat(obj["local_date"])
    except ValueError:
        return f"local_date {obj['local_date']!r} is not a real date"
    if not 2000 <= local.year <= 2199:
        return f"local_date {obj['local_date']!r} is outside the years 2000-2199"
    decided = _aware(obj["decided_at"])
    if decided is None:
        return f"decided_at {obj['decided_at']!r} is not a real time with a UTC offset"
    if decided.date() != local:
        return f"local_date {local} is not the date of decided_at {obj['decided_at']}"
    if obj["seq"] > 2**62 or max(obj["price_fen"], obj["subsidy_fen"], obj["payable_fen"]) > 2**31 - 1:
        return "seq or an amount is too large"
    if obj["payable_fen"] != obj["price_fen"] - obj["subsidy_fen"]:
        return f"payable_fen {obj['payable_fen']} != price_fen {obj['price_fen']} - subsidy_fen {obj['subsidy_fen']}"
    if obj["kind"] == "void" and obj["voids"] == obj["event_id"]:
        return "a void cannot void itself"
    for k, v in obj["match"].items():
        if isinstance(v, float) and not math.isfinite(v):
            return f"match.{k} is not finite"
    return None


def classify(topic: str, payload: bytes, *, prefix: str, district: str, max_bytes: int,
             accept_unsigned: bool, retained: bool = False) -> Verdict:
    where = parse_topic(topic, prefix, district)
    if isinstance(where, Rejected):
        return where
    kiosk, leaf = where
    obj = decode(payload, max_bytes)
    if isinstance(obj, Rejected):
        return obj
    name = obj.get("schema")
    if leaf == "status":
        sname = STATUS_SCHEMAS.get(name) if isinstance(name, str) else None
        if sname is None:
            return Rejected(f"unknown status schema {name!r}")
        if err := schema_error(sname, obj):
            return Rejected(f"status does not match {name}: {err}")
        if (obj["district"], obj["centre_id"], obj["kiosk_id"]) != (kiosk.district, kiosk.centre_id, kiosk.kiosk_id):
            return Rejected("status names another kiosk than its topic")
        return Status(kiosk, obj["state"], obj["reason"], obj["ts"], obj.get("backlog"), obj.get("last_seq"),
                      retained)
    ename = EVENT_SCHEMAS.get(name) if isinstance(name, str) else None
    if ename is None:
        return Rejected(f"unknown event schema {name!r} (known: {', '.join(EVENT_SCHEMAS)})")
    if err := schema_error(ename, obj):
        return Rejected(f"does not match {name}: {err}")
    if err := check_event(obj, kiosk):
        return Rejected(err)
    version = int(str(name).rsplit("/", 1)[1])
    if version == 1 and not accept_unsigned:
        return Rejected("unsigned schema-1 event; [ingest] accept_unsigned = true accepts them during the migration")
    decided = datetime.fromisoformat(obj["decided_at"])
    return Event(obj, payload, hashlib.sha256(payload).hexdigest(), topic, kiosk, version,
                 date.fromisoformat(obj["local_date"]), decided)
