"""Shared helpers for the district tests: real PostgreSQL (the local server, or a throwaway cluster), SQLite,
a raw MQTT publisher, event payloads, and meal-district serve in a thread or as a process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from conftest import MosquittoBroker, free_port, meal_event
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from district.config import DEFAULT_CONFIG, Config, parse_config
from edge.delivery.events import dumps, v1_payload

ROOT = Path(__file__).resolve().parents[1]
SH = ZoneInfo("Asia/Shanghai")
PREFIX = "meal/v1"
DISTRICT = "xuhui"


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- PostgreSQL ---------------------------------------------------------------------------------------


def pg_bin(name: str) -> str | None:
    if found := shutil.which(name):
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary folder on a free loopback port (trust auth).
    initdb refuses to run as root, so as root the cluster runs as the `postgres` system user."""

    def __init__(self) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql): tests need a real server")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="meal-district-pg-"))
        self.port = free_port()
        self.data = self.dir / "data"
        self.log = self.dir / "pg.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        self.start()

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self._as + cmd, capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}{r.stderr}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def _reachable(url: str) -> bool:
    u = make_url(url)
    try:
        with socket.create_connection((u.host or "127.0.0.1", u.port or 5432), timeout=1):
            pass
    except OSError:
        return False
    try:
        eng = create_engine(u)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


_cluster: PgCluster | None = None


def pg_server_url() -> str:
    """An admin URL: $MEAL_DISTRICT_TEST_PG, else the local server at 127.0.0.1:5432, else a throwaway cluster."""
    global _cluster
    url = os.environ.get("MEAL_DISTRICT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    if _reachable(url):
        return url
    if _cluster is None:
        _cluster = PgCluster()
        import atexit

        atexit.register(_cluster.destroy)
    return _cluster.url


def new_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    name = f"mdtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'district.sqlite'}"
        return
    url, drop = new_database(pg_server_url())
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, drop = new_database(pg_server_url())
    try:
        yield url
    finally:
        drop()


# -- events -------------------------------------------------------------------------------------------


def payload(seq: int, senior: str = "S0001", centre: str = "centre-001", kiosk: str = "kiosk-1",
            day: int = 30, hour: int = 11, minute: int = 45, subsidy: int = 300, **over: Any) -> bytes:
    """A schema-1 meal event, as a kiosk serialises it."""
    ev = meal_event(centre_id=centre, district=DISTRICT, kiosk_id=kiosk, senior_id=senior,
                    local_date=date(2026, 11, day), decided_at=datetime(2026, 11, day, hour, minute, tzinfo=SH),
                    subsidy_fen=subsidy, payable_fen=1000 - subsidy,
                    reasons=("subsidised",) if subsidy else ("daily_subsidy_used",))
    if over:
        ev = replace(ev, **over)
    return dumps(v1_payload(ev, seq)).encode("utf-8")


def topic(centre: str = "centre-001", kiosk: str = "kiosk-1", leaf: str = "events") -> str:
    return f"{PREFIX}/{DISTRICT}/{centre}/{kiosk}/{leaf}"


def status_payload(state: str, reason: str, centre: str = "centre-001", kiosk: str = "kiosk-1",
                   **extra: Any) -> bytes:
    import json

    obj = {"schema": "meal-edge/status/2" if extra else "meal-edge/status/1", "state": state, "reason": reason,
           "centre_id": centre, "district": DISTRICT, "kiosk_id": kiosk,
           "ts": (datetime(2026, 11, 30, 8, 0, tzinfo=SH) + timedelta(seconds=1)).isoformat(), **extra}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- MQTT and serve -----------------------------------------------------------------------------------


class RawPublisher:
    """Publishes raw bytes at QoS 1 and waits for the broker's PUBACKs."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "test-kiosks") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.c.max_inflight_messages_set(200)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()

    def send(self, items: list[tuple[str, bytes]], retain: bool = False, timeout: float = 20) -> None:
        infos = [self.c.publish(t, p, qos=1, retain=retain) for t, p in items]
        for i in infos:
            i.wait_for_publish(timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def config_text(broker: MosquittoBroker, db: str, **ingest: Any) -> str:
    text_ = (DEFAULT_CONFIG.replace("port = 1883", f"port = {broker.port}")
             .replace('url = ""                      # empty: SQLite', f'url = "{db}"  # empty: SQLite')
             .replace('listen = "127.0.0.1:9464"', 'listen = ""')
             .replace("accept_unsigned = false", "accept_unsigned = true")
             .replace("watch_interval = 2.0", "watch_interval = 0.3")
             .replace("keepalive = 30", "keepalive = 5"))
    for k, v in ingest.items():
        import re

        text_ = re.sub(rf"(?m)^{k} = .*$", f"{k} = {v}", text_)
    return text_


def make_config(broker: MosquittoBroker, db: str, tmp_path: Path, **ingest: Any) -> tuple[Config, Path]:
    path = tmp_path / "district.toml"
    path.write_text(config_text(broker, db, **ingest))
    cfg = parse_config(path.read_text(), path)
    assert cfg.broker.port == broker.port and cfg.database.url == db
    return cfg, path


class ServeThread:
    """meal-district serve inside the test process."""

    def __init__(self, cfg: Config, client_id: str = "district-test-1") -> None:
        from district.db.engine import open_engine
        from district.serve import Server

        self.engine = open_engine(cfg.database_url)
        self.server = Server(cfg, self.engine, client_id=client_id)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        assert self.server.connected.wait(10), "serve did not connect to the broker"

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(15)
        self.engine.dispose()


def serve_process(cfg_path: Path, log: Path, client_id: str) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "district", "--config", str(cfg_path), "serve", "--client-id",
                             client_id], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_process(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
