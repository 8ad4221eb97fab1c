"""The meal event payload against its documented JSON Schema (docs/events.schema.json)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from conftest import meal_event
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from edge.delivery.events import (
    SCHEMA,
    SCHEMA_V1,
    MealEvent,
    build_payload,
    dumps,
    event_topic,
    status_payload,
    status_topic,
)
from edge.security.signing import sign_event
from edge.store import Store

DOCS = Path(__file__).resolve().parents[1] / "docs"
SH = ZoneInfo("Asia/Shanghai")
KEY = Ed25519PrivateKey.generate()


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((DOCS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


EVENTS = validator("events.schema.json")
STATUS = validator("status.schema.json")


def meal(**kw: object) -> MealEvent:
    return meal_event(
        **{
            "decided_at": datetime(2026, 11, 30, 11, 45, 3, 250000, tzinfo=SH),
            "match": {"distance": 0.31, "margin": 0.12, "frames": 3, "model_id": "dlib-r1", "backend": "onnx"},
            **kw,
        }
    )


@pytest.mark.parametrize(
    "event",
    [
        meal(),
        meal(subsidy_fen=0, payable_fen=1000, reasons=("under_min_age", "hukou_not_local")),
        meal(confirmed_by="staff", source_ts=12.48),
        meal(match={}, meal="dinner", decided_at=datetime(2026, 11, 30, 9, 45, tzinfo=UTC)),
        meal(match={"distance": np.float32(0.25), "frames": np.int64(4), "liveness": True}),
    ],
)
def test_payload_validates_and_round_trips(event: MealEvent) -> None:
    payload = sign_event(build_payload(event, 7, "ab" * 32), KEY)
    EVENTS.validate(payload)
    text = dumps(payload)
    again = json.loads(text)
    EVENTS.validate(again)
    assert again == payload
    assert again["schema"] == SCHEMA and again["seq"] == 7 and again["event_id"] == event.event_id
    assert again["price_fen"] - again["subsidy_fen"] == again["payable_fen"]
    assert datetime.fromisoformat(again["decided_at"]) == event.decided_at
    assert again["currency"] == "CNY"


def version_fields(version: str) -> tuple[set[str], set[str]]:
    """(every property, the required ones) of version "v1" or "v2" of docs/events.schema.json."""
    defs = json.loads((DOCS / "events.schema.json").read_text())["$defs"]
    props = set(defs["common"]["properties"]) | set(defs[version]["properties"])
    return props, set(defs[version]["required"])


def test_payload_keys_are_exactly_the_schema_properties() -> None:
    payload = sign_event(build_payload(meal(), 1), KEY)
    props, required = version_fields("v2")
    assert set(payload) == required == props - {"voids", "void_reason", "void_note"}  # only for kind void
    v1_props, v1_required = version_fields("v1")
    assert v1_props == v1_required == required - {"check_in", "staff_id", "prev_hash", "sig"}


def test_version_1_events_are_still_accepted() -> None:
    v1 = {k: v for k, v in build_payload(meal(confirmed_by="staff"), 4).items()
          if k not in ("check_in", "staff_id", "prev_hash")}
    EVENTS.validate({**v1, "schema": SCHEMA_V1})
    with pytest.raises(ValidationError):  # a v1 event with v2 fields, or a v2 event without its signature
        EVENTS.validate({**v1, "schema": SCHEMA_V1, "sig": sign_event(v1, KEY)["sig"]})
    with pytest.raises(ValidationError):
        EVENTS.validate(build_payload(meal(), 4))


def test_check_in_and_staff_id() -> None:
    assert build_payload(meal(), 1)["check_in"] == "face"
    confirmed = build_payload(meal(confirmed_by="staff"), 1)
    assert (confirmed["check_in"], confirmed["staff_id"]) == ("face_confirmed", None)
    by = sign_event(build_payload(meal(confirmed_by="staff", staff_id="w01"), 1), KEY)
    EVENTS.validate(by)
    assert by["staff_id"] == "w01"
    with pytest.raises(ValueError, match="check_in"):
        build_payload(meal(check_in="by_magic"), 1)
    with pytest.raises(ValueError, match="staff_id"):
        build_payload(meal(staff_id=""), 1)
    with pytest.raises(ValueError, match="prev_hash"):
        build_payload(meal(), 2, "abc")


def test_dumps_is_canonical() -> None:
    p = build_payload(meal(), 3)
    assert dumps(p) == dumps(dict(reversed(list(p.items()))))
    assert " " not in dumps({"a": 1, "b": [1, 2]})
    assert dumps({"name": "张三"}) == '{"name":"张三"}'


@pytest.mark.parametrize(
    ("event", "seq", "match"),
    [
        (meal(decided_at=datetime(2026, 11, 30, 11, 45)), 1, "naive"),
        (meal(payable_fen=600), 1, "payable_fen"),
        (meal(subsidy_fen=300.0), 1, "subsidy_fen"),
        (meal(price_fen=True), 1, "price_fen"),
        (meal(price_fen=-1, subsidy_fen=0, payable_fen=-1), 1, "price_fen"),
        (meal(event_id="not-a-uuid"), 1, "UUID"),
        (meal(kind="repeat"), 1, "only meals"),
        (meal(confirmed_by="guard"), 1, "confirmed_by"),
        (meal(senior_id=""), 1, "senior_id"),
        (meal(match={"distance": float("nan")}), 1, "finite"),
        (meal(match={"emb": [1, 2]}), 1, "match.emb"),
        (meal(), 0, "seq"),
    ],
)
def test_invalid_events_are_refused(event: MealEvent, seq: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_payload(event, seq)


#: a void's own fields, on top of a meal's payload (the schema checks them; edge/meals/void.py makes them)
VOID = {"kind": "void", "voids": "6f1c2f4e-8d0b-4a4e-9d4b-0f7f3f0a9a51", "void_reason": "wrong_person",
        "check_in": "manual", "staff_id": "m01"}


def test_schema_accepts_a_void() -> None:
    EVENTS.validate({**sign_event(build_payload(meal(), 1), KEY), **VOID})
    EVENTS.validate({**sign_event(build_payload(meal(), 1), KEY), **VOID, "void_reason": "other", "void_note": "x"})


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"extra": 1}, "additional"),
        ({"price_fen": 10.5}, "integer"),
        ({"decided_at": "2026-11-30T11:45:00"}, "offset"),
        ({"seq": 0}, "minimum"),
        ({"event_id": "123"}, "uuid"),
        ({"kind": "repeat"}, "enum"),
        ({"kind": "void"}, "voids"),
        ({"voids": "6f1c2f4e-8d0b-4a4e-9d4b-0f7f3f0a9a51"}, "only for void"),
        ({"void_note": "x"}, "only for void"),
        ({**VOID, "void_reason": "served twice"}, "a reason code"),
        ({**VOID, "void_reason": "other"}, "other needs void_note"),
        ({**VOID, "check_in": "face", "staff_id": None}, "a void is made by a staff member"),
        ({**VOID, "void_note": ""}, "minLength"),
        ({"sig": "abc"}, "sig"),
        ({"prev_hash": "ABC"}, "prev_hash"),
        ({"check_in": "magic"}, "enum"),
        ({"currency": "USD"}, "const"),
        ({"kiosk_id": "a/b"}, "topic level"),
        ({"local_date": "2026-13-01"}, "date"),
    ],
)
def test_schema_rejects_bad_payloads(change: dict[str, object], why: str) -> None:
    good = sign_event(build_payload(meal(), 1), KEY)
    EVENTS.validate(good)
    bad = {**good, **change}
    with pytest.raises(ValidationError):
        EVENTS.validate(bad)


@pytest.mark.parametrize(
    "state,reason", [("online", "connected"), ("offline", "stopped"), ("offline", "connection_lost")]
)
def test_status_payload_validates(state: str, reason: str) -> None:
    obj = json.loads(status_payload(state, "centre-001", "xuhui", "kiosk-1", reason))
    STATUS.validate(obj)
    assert obj["state"] == state and obj["kiosk_id"] == "kiosk-1"
    assert datetime.fromisoformat(obj["ts"]).tzinfo is not None


def test_topics() -> None:
    assert (
        event_topic("meal/v1", "xuhui", "centre-001", "kiosk-1") == "meal/v1/xuhui/centre-001/kiosk-1/events"
    )
    assert (
        status_topic("meal/v1", "xuhui", "centre-001", "kiosk-1") == "meal/v1/xuhui/centre-001/kiosk-1/status"
    )


def test_stored_payload_is_the_built_payload(tmp_path: Path) -> None:
    ev = meal()
    with Store(tmp_path / "s.sqlite") as store:
        stored = store.record_meal(ev, "meal/v1/xuhui/centre-001/kiosk-1/events")
        [pending] = store.pending()
    assert pending.payload == stored.payload
    obj = json.loads(stored.payload)
    EVENTS.validate(obj)
    assert {k: v for k, v in obj.items() if k != "sig"} == build_payload(ev, stored.seq)


def test_docs_describe_every_field() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    fields = {"events.schema.json": version_fields("v2")[0],
              "status.schema.json": set(json.loads((DOCS / "status.schema.json").read_text())["properties"])}
    for name, names in fields.items():
        for field in names:
            assert re.search(rf"`{field}`", text), f"docs/events.md does not describe `{field}` of {name}"
    for word in ("QoS 1", "retain", "last will", "event_id", "seq", "gap"):
        assert word in text
