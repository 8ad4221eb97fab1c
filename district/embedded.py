"""An embedded district for `meal-edge demo`: the same checks, store and settlement as `meal-district serve`,
in the demo's process, on a SQLite file.

    from district.embedded import settle_events, EmbeddedDistrict
    print(settle_events(payloads))                       # in-process, no broker
    with EmbeddedDistrict(tmp / "district.sqlite", broker=("127.0.0.1", 1883), district="xuhui") as d:
        ... publish ...
        d.wait_for(n_events)
        print(d.summary_line())
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, func, select

from district.config import Config
from district.db.engine import open_engine
from district.db.models import EventId
from district.report import settle, yuan
from district.store import BatchResult, BatchWriter, Incoming
from district.validate import classify
from district.watch import Watcher


def _bytes(ev: bytes | str | Mapping[str, Any]) -> bytes:
    if isinstance(ev, bytes):
        return ev
    if isinstance(ev, str):
        return ev.encode("utf-8")
    return json.dumps(dict(ev), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def summary_line(engine: Engine, district: str, day: date | None = None, totals: BatchResult | None = None) -> str:
    """One line: the day's settlement as the district computes it (the latest local date when none is given)."""
    with engine.connect() as conn:
        if day is None:
            day = conn.execute(select(func.max(EventId.local_date))).scalar()
        if day is None:
            return f"district {district}: no meal events received"
        s = settle(conn, day.strftime("%Y-%m"), district)
    lines = [ln for ln in s.lines if ln["local_date"] == day.isoformat()]
    sub = sum(ln["subsidy_fen"] for ln in lines)
    adj = sum(ln["adjustment_fen"] for ln in lines)
    flagged = sum(1 for ln in lines if ln["adjustment"])
    kiosks = len({(ln["centre_id"], ln["kiosk_id"]) for ln in lines})
    extra = ""
    if totals is not None and (totals.duplicates or totals.quarantined or totals.conflicts):
        extra = (f" ({totals.duplicates} duplicate copies ignored, {totals.conflicts} conflicting, "
                 f"{totals.quarantined} quarantined)")
    return (f"district {district}, {day}: {len(lines)} meals from {kiosks} kiosk{'s' * (kiosks != 1)}{extra}, "
            f"{sum(1 for ln in lines if ln['subsidy_fen'])} subsidised, subsidy {sub} fen, {flagged} flagged "
            f"({adj} fen), net payable CNY {yuan(sub - adj)}")


def settle_events(events: Iterable[bytes | str | Mapping[str, Any]], *, db_path: Path | None = None,
                  district: str | None = None, topic_prefix: str = "meal/v1", accept_unsigned: bool = True) -> str:
    """Store the kiosk payloads as the district would (each once, bad ones quarantined), then the day's
    settlement line. The topic of each payload is derived from its own ids, as its kiosk publishes it."""
    payloads = [_bytes(e) for e in events]
    objs = []
    for p in payloads:
        try:
            objs.append(json.loads(p))
        except ValueError:
            objs.append({})
    district = district or next((o.get("district") for o in objs if isinstance(o, dict) and o.get("district")),
                                "district")
    scratch = tempfile.TemporaryDirectory(prefix="meal-district-") if db_path is None else None
    path = db_path or Path(scratch.name if scratch else ".") / "district.sqlite"
    engine = open_engine(f"sqlite:///{path}")
    try:
        now = datetime.now(UTC)
        batch = []
        for p, o in zip(payloads, objs, strict=True):
            o = o if isinstance(o, dict) else {}
            topic = "/".join([topic_prefix, str(o.get("district", district)), str(o.get("centre_id", "?")),
                              str(o.get("kiosk_id", "?")), "events"])
            batch.append(Incoming(topic, p, classify(topic, p, prefix=topic_prefix, district=str(district),
                                                     max_bytes=16384, accept_unsigned=accept_unsigned), now))
        res = BatchWriter(engine).write(batch)
        w = Watcher(engine)
        w.check_kiosks(res.kiosks)
        w.reconcile(res.keys, res.voided)
        return summary_line(engine, str(district), totals=res)
    finally:
        engine.dispose()
        if scratch is not None:
            scratch.cleanup()


class EmbeddedDistrict:
    """`meal-district serve` in a thread, on a SQLite file, for a demo that publishes through a broker."""

    def __init__(self, db_path: Path, broker: tuple[str, int], district: str, topic_prefix: str = "meal/v1",
                 accept_unsigned: bool = True) -> None:
        from district.serve import Server

        self.cfg = Config.model_validate({
            "district": {"id": district, "topic_prefix": topic_prefix},
            "broker": {"host": broker[0], "port": broker[1], "client_id": f"meal-district-demo-{district}"},
            "database": {"url": f"sqlite:///{db_path}"},
            "ingest": {"accept_unsigned": accept_unsigned, "watch_interval": 0.2},
            "metrics": {"listen": ""},
        })
        self.engine = open_engine(self.cfg.database_url)
        self.server = Server(self.cfg, self.engine)
        self._thread = threading.Thread(target=self.server.run, name="embedded-district", daemon=True)

    def __enter__(self) -> EmbeddedDistrict:
        self._thread.start()
        if not self.server.connected.wait(10):
            self.close()
            raise RuntimeError(f"the embedded district could not reach the broker "
                               f"{self.cfg.broker.host}:{self.cfg.broker.port}")
        return self

    def wait_for(self, events: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.server.totals
            if t.stored + t.duplicates + t.quarantined >= events:
                time.sleep(0.3)  # one more look for gaps and double subsidies
                return True
            time.sleep(0.05)
        return False

    def summary_line(self, day: date | None = None) -> str:
        return summary_line(self.engine, self.cfg.district.id, day, self.server.totals)

    def close(self) -> None:
        self.server.stop()
        self._thread.join(10)
        self.engine.dispose()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
