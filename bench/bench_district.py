"""District ingest benchmark (not a test): a month of Erqi-sized meal events through a real Mosquitto into a real
PostgreSQL, with 1 and with 2 `meal-district serve` processes.

    .venv/bin/python bench/bench_district.py [--events 132212] [--pg postgresql+psycopg://postgres@127.0.0.1/postgres]

- 30 centres x 2 kiosks, 3,846 seniors, 132,212 meals in November 2026 (the seed's counts); each kiosk's events
  carry its own gap-free seq; ~0.5% of senior-days also eat (subsidised) at a second centre, so the district
  has double subsidies to flag. Schema-1 payloads as the kiosks send them today (accept_unsigned).
- Throughput run, per number of serve processes: a fresh database, serve started and subscribed, then the
  month published at QoS 1 as fast as one publisher can. Reported: events/s from the first publish to the last
  commit, and the publish -> commit delay (p50, p99), which here includes the queue the burst builds.
- Latency run: 1 process, events paced at --paced-rate per second (below capacity): the delay a live event sees.
- The settlement (meal-district report) must equal the totals computed here from the generated events.
A throwaway Mosquitto runs on a free port; PostgreSQL is --pg (a database per run is created and dropped).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine  # noqa: E402

from district.config import DEFAULT_CONFIG  # noqa: E402
from edge.delivery.events import MealEvent, dumps, v1_payload  # noqa: E402

SH = ZoneInfo("Asia/Shanghai")
DISTRICT = "erqi"
PREFIX = "meal/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the month -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    messages: list[tuple[str, bytes, str]]  # topic, payload, event_id, in publish order
    meals: int
    subsidised: int
    subsidy_fen: int
    payable_fen: int
    doubles: int


def generate(n_events: int, centres: int = 30, kiosks: int = 2, seniors: int = 3846, seed: int = 11) -> Generated:
    rng = random.Random(seed)
    home = {f"S{i:05d}": f"centre-{1 + i % centres:03d}" for i in range(seniors)}
    local = {s: rng.random() < 0.9 for s in home}  # hukou here: subsidised
    ids = sorted(home)
    days = [date(2026, 11, 1) + timedelta(d) for d in range(30)]
    per_day = n_events // len(days)
    extra = n_events - per_day * len(days)
    raw: list[tuple[datetime, str, str, str]] = []  # decided_at, senior, centre, kiosk
    for i, d in enumerate(days):
        k = per_day + (1 if i < extra else 0)
        for _ in range(k):
            s = rng.choice(ids)
            centre = home[s] if rng.random() > 0.005 else f"centre-{rng.randrange(1, centres + 1):03d}"
            hour, minute = (11, rng.randrange(0, 90)) if rng.random() < 0.7 else (17, rng.randrange(0, 60))
            at = datetime(d.year, d.month, d.day, hour + minute // 60, minute % 60, rng.randrange(60),
                          rng.randrange(10**6), tzinfo=SH)
            raw.append((at, s, centre, f"kiosk-{rng.randrange(1, kiosks + 1)}"))
    raw.sort()
    seq: dict[tuple[str, str], int] = defaultdict(int)
    used: set[tuple[str, str, date]] = set()  # a kiosk's own daily-subsidy rule, per centre
    granted: dict[tuple[str, date], int] = defaultdict(int)
    msgs = []
    subsidised = subsidy = payable = 0
    for at, s, centre, kiosk in raw:
        seq[(centre, kiosk)] += 1
        day = at.date()
        sub = 300 if local[s] and (s, centre, day) not in used else 0
        if sub:
            used.add((s, centre, day))
            granted[(s, day)] += 1
        reasons = ("subsidised",) if sub else (("daily_subsidy_used",) if local[s] else ("hukou_not_local",))
        ev = MealEvent(str(uuid.UUID(int=rng.getrandbits(128), version=4)), "meal", centre, DISTRICT, kiosk, s,
                       "lunch" if at.hour < 15 else "dinner", day, at, 1000, sub, 1000 - sub, reasons,
                       None if rng.random() < 0.97 else "staff",
                       {"distance": round(rng.uniform(0.2, 0.45), 4), "frames": 3, "model_id": "sface-int8",
                        "backend": "onnx"})
        body = dumps(v1_payload(ev, seq[(centre, kiosk)])).encode()
        msgs.append((f"{PREFIX}/{DISTRICT}/{centre}/{kiosk}/events", body, ev.event_id))
        subsidised += sub > 0
        subsidy += sub
        payable += 1000 - sub
    doubles = sum(n - 1 for n in granted.values() if n > 1)
    return Generated(msgs, len(msgs), subsidised, subsidy, payable, doubles)


# -- services ------------------------------------------------------------------------------------------


class Broker:
    def __init__(self, work: Path) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        (work / "mq").mkdir()
        conf = work / "mosquitto.conf"
        # max_queued_messages 0 ("no limit") has had bugs in Mosquitto 2.0 (upstream issues 1956, 2879, 3088)
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"user {getpass.getuser()}\nmax_queued_messages 1000000\nmax_inflight_messages 1000\n"
                        "log_type error\nlog_type warning\nlog_type notice\n"
                        f"log_dest file {work}/mosquitto.log\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def new_db(admin: str) -> tuple[str, str]:
    name = f"bench_district_{uuid.uuid4().hex[:8]}"
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False), name


def drop_db(admin: str, name: str) -> None:
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    eng.dispose()


def config(work: Path, port: int, db: str, group: str) -> Path:
    p = work / f"district-{uuid.uuid4().hex[:6]}.toml"
    # a shared-subscription group per run: the persistent sessions of an earlier run's (stopped) processes
    # would otherwise still be given their share of the stream, held for them until they come back
    p.write_text(DEFAULT_CONFIG.replace('group = "meal-district"', f'group = "{group}"')
                 .replace('id = "xuhui"', f'id = "{DISTRICT}"').replace("port = 1883", f"port = {port}")
                 .replace('url = ""                      # empty', f'url = "{db}"  # empty')
                 .replace("accept_unsigned = false", "accept_unsigned = true")
                 .replace('[metrics]\nlisten = "127.0.0.1:9464"', '[metrics]\nlisten = ""'))
    return p


def count(eng: object, sql: str = "SELECT count(*) FROM event_ids") -> int:
    with eng.connect() as c:  # type: ignore[attr-defined]
        return int(c.execute(text(sql)).scalar_one())


def publish(port: int, msgs: list[tuple[str, bytes, str]], rate: float | None) -> dict[str, float]:
    """QoS 1 as a fleet of kiosks would, from one client, at most 1000 unacknowledged; returns event_id -> publish
    wall time. Raises if any message was not acknowledged by the broker."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-kiosks-{uuid.uuid4().hex[:6]}", clean_session=False)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, keepalive=300)
    c.loop_start()
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    for start in range(0, len(msgs), 1000):
        infos = []
        for i in range(start, min(start + 1000, len(msgs))):
            topic, body, eid = msgs[i]
            if rate:
                wait = t0 + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            sent[eid] = time.time()
            infos.append(c.publish(topic, body, qos=1))
        for info in infos:
            info.wait_for_publish(300)
        if not all(info.is_published() for info in infos):
            raise SystemExit(f"the broker did not acknowledge {sum(not i.is_published() for i in infos)} messages")
    c.disconnect()
    c.loop_stop()
    return sent


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(work: Path, admin: str, port: int, gen: Generated, procs: int, rate: float | None,
        report: bool, broker_pid: int) -> dict[str, object]:
    url, name = new_db(admin)
    cfg = config(work, port, url, name)
    eng = create_engine(url)
    servers = []
    try:
        # migrate once first, so the serve processes start at the same time
        subprocess.run([sys.executable, "-m", "district", "--config", str(cfg), "migrate"], check=True,
                       capture_output=True, cwd=ROOT)
        for i in range(procs):
            log = (work / f"serve-{name}-{i}.log").open("w")
            servers.append(subprocess.Popen([sys.executable, "-m", "district", "--config", str(cfg), "serve",
                                             "--client-id", f"bench-{name}-{i}"], stdout=log,
                                            stderr=subprocess.STDOUT, cwd=ROOT))
        deadline = time.monotonic() + 120
        # publishing before a process has subscribed would lose messages (no session yet): wait for all of them
        while sum("subscribed to" in (work / f"serve-{name}-{i}.log").read_text() for i in range(procs)) < procs:
            if time.monotonic() > deadline:
                raise SystemExit("serve did not subscribe within 120 s")
            time.sleep(0.2)
        n = len(gen.messages)
        box: dict[str, object] = {}

        def send() -> None:
            try:
                box["sent"] = publish(port, gen.messages, rate)
            except BaseException as e:
                box["error"] = e

        pub = threading.Thread(target=send)
        cpu0 = {"serve": sum(cpu_seconds(p.pid) for p in servers), "broker": cpu_seconds(broker_pid),
                "publisher": time.process_time()}
        t0 = time.time()
        pub.start()
        while count(eng) < n:
            time.sleep(0.5)
            if "error" in box:
                raise SystemExit(f"publishing failed: {box['error']!r}")
            if time.time() - t0 > 900:
                raise SystemExit(f"only {count(eng)} of {n} events after 900 s")
        pub.join()
        # CPU time each part used for the run: on a machine shared with other work the wall-clock rate says
        # little, the CPU seconds per event say what the software costs
        with eng.connect() as c:
            backends = [r[0] for r in c.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))]
        cpu = {"serve": sum(cpu_seconds(p.pid) for p in servers) - cpu0["serve"],
               "broker": cpu_seconds(broker_pid) - cpu0["broker"],
               "publisher": time.process_time() - cpu0["publisher"],
               "postgres_backends": sum(cpu_seconds(b) for b in backends)}
        sent: dict[str, float] = box["sent"]  # type: ignore[assignment]
        with eng.connect() as c:
            rows = c.execute(text("SELECT event_id, ingested_at FROM events")).all()
        last_commit = max(r[1] for r in rows).replace(tzinfo=None)
        first_pub = datetime.utcfromtimestamp(min(sent.values()))
        secs = (last_commit - first_pub).total_seconds()
        delays = sorted((r[1].replace(tzinfo=None) - datetime.utcfromtimestamp(sent[r[0]])).total_seconds()
                        for r in rows)
        out: dict[str, object] = {
            "processes": procs, "events": n, "seconds": round(secs, 2), "events_per_s": round(n / secs),
            "delay_p50_ms": round(1000 * delays[len(delays) // 2], 1),
            "delay_p99_ms": round(1000 * delays[int(len(delays) * 0.99)], 1),
            "delay_max_ms": round(1000 * delays[-1], 1),
            "paced_rate": rate, "stored": count(eng), "duplicates_in_db": n - len(rows),
            "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
            "cpu_ms_per_event": {k: round(1000 * v / n, 3) for k, v in cpu.items()},
            "load_average": round(os.getloadavg()[0], 1),
        }
        if report:
            time.sleep(3)  # the watchers finish their last look
            r = subprocess.run([sys.executable, "-m", "district", "--config", str(cfg), "report", "--month",
                                "2026-11", "--out", str(work / f"report-{name}")], capture_output=True, text=True,
                               cwd=ROOT)
            if r.returncode:
                raise SystemExit(r.stderr)
            totals = {k: 0 for k in ("meals", "subsidised_meals", "subsidy_fen", "payable_fen", "adjustments")}
            for line in (work / f"report-{name}" / "centres.csv").read_text().splitlines()[1:]:
                f = line.split(",")
                for k, v in zip(("meals", "subsidised_meals", "subsidy_fen", "payable_fen", "adjustments"),
                                f[1:6], strict=True):
                    totals[k] += int(v)
            want = {"meals": gen.meals, "subsidised_meals": gen.subsidised, "subsidy_fen": gen.subsidy_fen,
                    "payable_fen": gen.payable_fen, "adjustments": gen.doubles}
            out["settlement"] = totals
            out["settlement_equals_generated"] = totals == want
            if totals != want:
                out["generated"] = want
            with eng.connect() as c:
                out["flagged_by_serve"] = int(c.execute(text("SELECT count(*) FROM adjustments")).scalar_one())
                out["gaps_open"] = int(c.execute(text("SELECT count(*) FROM gaps WHERE closed_at IS NULL"))
                                       .scalar_one())
        return out
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            try:
                s.wait(30)
            except subprocess.TimeoutExpired:
                s.kill()
        eng.dispose()
        drop_db(admin, name)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=132_212)
    p.add_argument("--pg", default=os.environ.get("MEAL_DISTRICT_TEST_PG",
                                                  "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--procs", default="1,2", help="serve processes per throughput run")
    p.add_argument("--paced-rate", type=float, default=500.0)
    p.add_argument("--paced-events", type=int, default=10_000)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, reports)")
    a = p.parse_args()
    t = time.perf_counter()
    gen = generate(a.events)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared with other work)")
    print(f"generated {gen.meals} events ({gen.subsidised} subsidised, {gen.doubles} double subsidies) in "
          f"{time.perf_counter() - t:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-district-"))
    broker = Broker(work)
    results = []
    try:
        for procs in [int(x) for x in a.procs.split(",")]:
            r = run(work, a.pg, broker.port, gen, procs, None, report=True, broker_pid=broker.proc.pid)
            results.append(r)
            print(json.dumps(r))
        if a.paced_events:
            sub = Generated(gen.messages[: a.paced_events], 0, 0, 0, 0, 0)
            r = run(work, a.pg, broker.port, sub, 1, a.paced_rate, report=False, broker_pid=broker.proc.pid)
            results.append(r)
            print(json.dumps(r))
    finally:
        broker.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\nprocesses  events   seconds  events/s  p50 ms  p99 ms  settlement")
    for r in results:
        paced = f" (paced at {r['paced_rate']:.0f}/s)" if r["paced_rate"] else ""
        ok = {True: "equals generated", False: "DIFFERS", None: "-"}[r.get("settlement_equals_generated")]  # type: ignore[index]
        print(f"{r['processes']:>9}  {r['events']:>6}  {r['seconds']:>8}  {r['events_per_s']:>8}  "
              f"{r['delay_p50_ms']:>6}  {r['delay_p99_ms']:>6}  {ok}{paced}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r.get("settlement_equals_generated", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
