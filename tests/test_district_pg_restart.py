"""PostgreSQL restarted under a running serve, mid-stream: nothing acknowledged is lost, nothing is stored twice.
Needs its own throwaway cluster (initdb/pg_ctl in a temporary folder on a free port), since it stops it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MosquittoBroker
from district_support import (
    PgCluster,
    RawPublisher,
    make_config,
    new_database,
    payload,
    serve_process,
    stop_process,
    wait_until,
)
from district_support import topic as event_topic
from sqlalchemy import create_engine, func, select

from district.db.models import Event, EventId


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    c = PgCluster()
    try:
        yield c
    finally:
        c.destroy()


def count(url: str, model: type) -> int | None:
    eng = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with eng.connect() as c:
            return int(c.execute(select(func.count()).select_from(model)).scalar_one())
    except Exception:
        return None  # the server is down
    finally:
        eng.dispose()


@pytest.mark.slow
def test_postgresql_restarted_mid_stream(mosquitto_broker: MosquittoBroker, cluster: PgCluster,
                                         tmp_path: Path) -> None:
    url, _ = new_database(cluster.url)
    _, cfg_path = make_config(mosquitto_broker, url, tmp_path)
    log = tmp_path / "serve.log"
    proc = serve_process(cfg_path, log, "district-pg-restart")
    pub = RawPublisher(mosquitto_broker)
    events = [(event_topic(f"centre-{c:03d}"), payload(s, f"S{s:04d}", centre=f"centre-{c:03d}"))
              for s in range(1, 401) for c in (1, 2, 3)]
    try:
        wait_until(lambda: log.exists() and "subscribed to" in log.read_text(), 30, "serve subscribed")

        def stream() -> None:  # kiosks keep sending while the database goes away and comes back
            for i in range(0, len(events), 40):
                pub.send(events[i:i + 40])
                time.sleep(0.05)

        sender = threading.Thread(target=stream)
        sender.start()
        wait_until(lambda: (count(url, Event) or 0) > 100, 30, "serve storing")
        cluster.stop("immediate")  # a crash: no clean shutdown
        time.sleep(2.0)
        cluster.start()
        sender.join(60)
        wait_until(lambda: count(url, Event) == len(events), 90, f"all {len(events)} events after the restart")
        time.sleep(1.0)
        assert count(url, Event) == len(events) and count(url, EventId) == len(events)
    finally:
        pub.close()
        stop_process(proc)
    text = log.read_text()
    assert "database write failed" in text and "database is back" in text, text[-3000:]
