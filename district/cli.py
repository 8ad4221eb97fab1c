"""meal-district: the district server's command line.

    meal-district default-config                       print a complete, commented config
    meal-district check-config FILE                    validate it (names the bad line)
    meal-district --config F serve [--instance N]      receive events over MQTT (runs until SIGTERM)
    meal-district --config F status [--json]           kiosks, open gaps, counts, the roster line
    meal-district --config F report --month YYYY-MM --out DIR
    meal-district --config F quarantine [--json]       the latest quarantined payloads and why
    meal-district --config F user add NAME [--password-file F]   (else the password is read from stdin)
    meal-district --config F kiosk register DISTRICT/CENTRE/KIOSK --key-file F
    meal-district --config F web                       the dashboard
    meal-district --config F migrate                   bring the database to the newest schema
    meal-district --config F roster import|set-status|show|remove|erasures   the district roster (docs/roster.md)
    meal-district --config F keys roster-init          make the roster keys; prints the kiosks' district_key
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sqlalchemy import Engine

from district.config import DEFAULT_CONFIG, Config, ConfigError, load_config, parse_listen
from district.db.engine import DatabaseError, open_engine

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meal-district", description="district server for meal-edge kiosks",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("default-config", help="print a complete, commented config")
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    s = sub.add_parser("serve", help="receive events over MQTT until SIGTERM")
    s.add_argument("--instance", type=int, default=1, help="number of this process on this machine (client id)")
    s.add_argument("--client-id", help="MQTT client id (default: from the config and --instance)")
    s.add_argument("--retire", action="store_true",
                   help="take this instance out for good: store what the broker kept for it, end its session")
    st = sub.add_parser("status", help="kiosks, open gaps, counts; the roster: version, kiosks behind, erasures owed")
    st.add_argument("--json", action="store_true")
    r = sub.add_parser("report", help="the month's settlement")
    r.add_argument("--month", required=True, help="YYYY-MM")
    r.add_argument("--out", required=True, help="folder for the files")
    q = sub.add_parser("quarantine", help="quarantined payloads")
    q.add_argument("--json", action="store_true")
    q.add_argument("--limit", type=int, default=50)
    u = sub.add_parser("user", help="dashboard accounts")
    usub = u.add_subparsers(dest="user_cmd", required=True)
    ua = usub.add_parser("add", help="add a user or set a password (read from stdin or --password-file)")
    ua.add_argument("name")
    ua.add_argument("--password-file", help="file holding the password (never pass it as an argument)")
    k = sub.add_parser("kiosk", help="kiosk registry")
    ksub = k.add_subparsers(dest="kiosk_cmd", required=True)
    kr = ksub.add_parser("register", help="register a kiosk's Ed25519 public key")
    kr.add_argument("kiosk", help="DISTRICT/CENTRE/KIOSK")
    kr.add_argument("--key-file", required=True, help="public key: PEM or base64 of the raw 32 bytes")
    w = sub.add_parser("web", help="the dashboard (uvicorn)")
    w.add_argument("--listen", help="HOST:PORT (default [web] listen)")
    sub.add_parser("migrate", help="bring the database to the newest schema")
    from district.roster.cli import add_parsers

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("district.serve.paho").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.cmd == "default-config":
        sys.stdout.write(DEFAULT_CONFIG)
        return 0
    try:
        if args.cmd == "check-config":
            cfg = load_config(args.file)
            print(f"{args.file}: OK (district {cfg.district.id}, broker {cfg.broker.host}:{cfg.broker.port}, "
                  f"database {cfg.database.url or 'SQLite in the state folder'})")
            return 0
        cfg = load_config(args.config)
        return _run(args, cfg)
    except (ConfigError, DatabaseError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _engine(cfg: Config) -> Engine:
    return open_engine(cfg.database_url)


def _run(args: argparse.Namespace, cfg: Config) -> int:
    if args.cmd == "serve":
        if args.retire:
            from district.serve import Server

            engine = _engine(cfg)
            t = Server(cfg, engine, instance=args.instance, client_id=args.client_id).retire()
            engine.dispose()
            print(f"retired: {t.stored} events stored from its queue, {t.duplicates} duplicates; session ended")
            return 0
        return serve(cfg, args.instance, args.client_id)
    if args.cmd == "web":
        from district.web.app import run_web

        host, port = parse_listen(args.listen or cfg.web.listen)
        return run_web(cfg, _engine(cfg), host, port)
    if args.cmd == "keys":
        from district.roster.cli import keys_init

        return keys_init(cfg, sys.stdout)
    engine = _engine(cfg)
    try:
        if args.cmd == "roster":
            from district.roster.cli import run as roster_run

            return roster_run(args, engine)
        if args.cmd == "migrate":
            print("database is at the newest schema")
            return 0
        if args.cmd == "status":
            return status(engine, args.json)
        if args.cmd == "report":
            return report(engine, cfg, args.month, Path(args.out))
        if args.cmd == "quarantine":
            return quarantine(engine, args.json, args.limit)
        if args.cmd == "user":
            return user_add(engine, args.name, args.password_file)
        if args.cmd == "kiosk":
            return kiosk_register(engine, args.kiosk, Path(args.key_file))
    finally:
        engine.dispose()
    raise AssertionError(args.cmd)


def serve(cfg: Config, instance: int = 1, client_id: str | None = None) -> int:
    from district.serve import Server

    engine = _engine(cfg)
    server = Server(cfg, engine, instance=instance, client_id=client_id)

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping (signal %d): finishing the current batch", signum)
        server.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if cfg.metrics.listen:
        from prometheus_client import start_http_server

        host, port = parse_listen(cfg.metrics.listen)
        start_http_server(port, host, registry=server.metrics.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)
    log.info("meal-district serve: district %s, database %s", cfg.district.id, engine.url.render_as_string())
    worker = threading.Thread(target=server.run, name="meal-district-serve")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    t = server.totals
    log.info("stopped: %d events stored, %d duplicates, %d conflicts, %d quarantined", t.stored, t.duplicates,
             t.conflicts, t.quarantined)
    engine.dispose()
    return 0


def status(engine: Engine, as_json: bool) -> int:
    from district import queries

    with engine.connect() as conn:
        st = queries.status(conn)
    if as_json:
        print(json.dumps(st, indent=2, ensure_ascii=False))
        return 0
    c = st["counts"]
    print(f"events {c['events']}  conflicts {c['conflicts']}  quarantined {c['quarantined']}  "
          f"open gaps {c['gaps_open']}  double subsidies {c['double_subsidies']}  voided {c['voided']}  "
          f"alerts {c['alerts']}")
    r = st["roster"]
    print(f"roster version {r['version']}  kiosks synced {r['kiosks']}  behind {r['kiosks_behind']}  "
          f"erasures owed {r['erasures_owed']}"
          + ("  (meal-district roster kiosks / roster erasures say which)" if r["kiosks_behind"] or r["erasures_owed"]
             else ""))
    print(f"\n{'kiosk':36} {'state':8} {'since (UTC)':26} {'backlog':>7} {'seq':>7} {'gaps':>5} {'missing':>7}  "
          "last event (UTC)")
    for k in st["kiosks"]:
        name = f"{k['district']}/{k['centre_id']}/{k['kiosk_id']}"
        state = k["state"] + ("" if k["state_reason"] in (None, "connected") else f" ({k['state_reason']})")
        print(f"{name:36} {state:8} {k['since'] or '-':26} {k['backlog'] if k['backlog'] is not None else '-':>7} "
              f"{k['max_seq']:>7} {k['open_gaps']:>5} {k['missing_events']:>7}  {k['last_event_at'] or '-'}")
    if st["gaps"]:
        print("\nopen gaps (events not received yet):")
        for g in st["gaps"]:
            print(f"  {g['kiosk']}: seq {g['first_seq']}-{g['last_seq']} ({g['missing']} events) "
                  f"since {g['opened_at']}")
    return 0


def report(engine: Engine, cfg: Config, month: str, out: Path) -> int:
    from district.report import ReportError, write_report, yuan

    try:
        with engine.connect() as conn:
            s = write_report(conn, month, out, cfg.district.id, cfg.report.daily_subsidy_cap_fen)
    except (ValueError, ReportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = s.totals
    print(f"{month}: {len(s.centres)} centres, {t['meals']} meals, subsidy {t['subsidy_fen']} fen, adjustments "
          f"{t['adjustments']} ({t['adjustment_fen']} fen), net {t['net_subsidy_fen']} fen "
          f"(CNY {yuan(t['net_subsidy_fen'])}); written to {out}")
    return 0


def quarantine(engine: Engine, as_json: bool, limit: int) -> int:
    from district import queries

    with engine.connect() as conn:
        rows = queries.quarantine(conn, limit)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("quarantine is empty")
    for q in rows:
        print(f"#{q['id']} {q['received_at']} {q['topic']} ({q['size']} bytes): {q['reason']}")
    return 0


def user_add(engine: Engine, name: str, password_file: str | None) -> int:
    from district.users import UserError, add_user

    if password_file:
        password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        add_user(engine, name, password)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {name} can log in to the dashboard")
    return 0


def kiosk_register(engine: Engine, kiosk: str, key_file: Path) -> int:
    from district import verify
    from district.store import register_kiosk

    parts = kiosk.split("/")
    if len(parts) != 3 or not all(parts):
        print(f"error: {kiosk!r} is not DISTRICT/CENTRE/KIOSK", file=sys.stderr)
        return 2
    try:
        key = verify.check_public_key(key_file.read_text(encoding="utf-8"))
    except (OSError, verify.KeyError_) as e:
        print(f"error: {key_file}: {e}", file=sys.stderr)
        return 2
    register_kiosk(engine, parts[0], parts[1], parts[2], key)
    print(f"registered the public key of {kiosk}")
    return 0
