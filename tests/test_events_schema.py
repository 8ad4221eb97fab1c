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
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from edge.delivery.events import (
    SCHEMA,
    MealEvent,
    build_payload,
    dumps,
    event_topic,
    status_payload,
    status_topic,
)
from edge.store import Store

DOCS = Path(__file__).resolve().parents[1] / "docs"
SH = ZoneInfo("Asia/Shanghai")


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
    payload = build_payload(event, 7)
    EVENTS.validate(payload)
    text = dumps(payload)
    again = json.loads(text)
    EVENTS.validate(again)
    assert again == payload
    assert again["schema"] == SCHEMA and again["seq"] == 7 and again["event_id"] == event.event_id
    assert again["price_fen"] - again["subsidy_fen"] == again["payable_fen"]
    assert datetime.fromisoformat(again["decided_at"]) == event.decided_at
    assert again["currency"] == "CNY"


def test_payload_keys_are_exactly_the_schema_properties() -> None:
    schema = json.loads((DOCS / "events.schema.json").read_text())
    payload = build_payload(meal(), 1)
    assert set(payload) == set(schema["properties"]) == set(schema["required"])


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


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"extra": 1}, "additional"),
        ({"price_fen": 10.5}, "integer"),
        ({"decided_at": "2026-11-30T11:45:00"}, "offset"),
        ({"seq": 0}, "minimum"),
        ({"event_id": "123"}, "uuid"),
        ({"kind": "repeat"}, "const"),
        ({"currency": "USD"}, "const"),
        ({"kiosk_id": "a/b"}, "topic level"),
        ({"local_date": "2026-13-01"}, "date"),
    ],
)
def test_schema_rejects_bad_payloads(change: dict[str, object], why: str) -> None:
    bad = {**build_payload(meal(), 1), **change}
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
    assert obj == build_payload(ev, stored.seq)


def test_docs_describe_every_field() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    for name in ("events.schema.json", "status.schema.json"):
        schema = json.loads((DOCS / name).read_text())
        for field in schema["properties"]:
            assert re.search(rf"`{field}`", text), f"docs/events.md does not describe `{field}` of {name}"
    for word in ("QoS 1", "retain", "last will", "event_id", "seq", "gap"):
        assert word in text
