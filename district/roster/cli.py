"""`meal-district roster ...` and `meal-district keys roster-init`: the district roster's commands.

    meal-district roster import ROSTER.csv      add or update seniors (per-row errors, progress on stderr)
    meal-district roster set-status ID active|suspended|deceased
    meal-district roster show ID [--json]       fields, templates per model, version, kiosks, erasure receipts
    meal-district roster remove ID [--yes]      erase the templates everywhere, keep the settled meals
    meal-district roster erasures [--json]      removals that kiosks have not confirmed yet
    meal-district roster kiosks [--json]        each kiosk's model, applied version, last sync and receipt
    meal-district keys roster-init              make the roster keys; prints the public key for the kiosks

Every command is audited (actor: the OS user). Names of seniors go to the terminal only, never to the log.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import IO, Any

from sqlalchemy import Engine

from district.roster import book
from district.roster.csvfile import DistrictRow, RosterError, read_district_roster
from district.users import audit
from enroll.progress import Progress


def add_parsers(sub: argparse._SubParsersAction[Any]) -> None:
    r = sub.add_parser("roster", help="the district roster: import, set-status, show, remove, erasures")
    rsub = r.add_subparsers(dest="roster_cmd", required=True)
    i = rsub.add_parser("import", help="add or update seniors from a CSV")
    i.add_argument("roster", metavar="ROSTER.csv",
                   help="columns senior_id,name,birth_date,hukou,status,home_centre and optionally card_no, "
                        "centres (';'-separated; empty: every centre)")
    s = rsub.add_parser("set-status", help="mark a senior active, suspended or deceased")
    s.add_argument("senior_id", metavar="ID")
    s.add_argument("status", choices=book.rw.STATUSES)
    sh = rsub.add_parser("show", help="one senior of the district roster")
    sh.add_argument("senior_id", metavar="ID")
    sh.add_argument("--json", action="store_true")
    rm = rsub.add_parser("remove", help="erase a senior's templates at the district and on every kiosk")
    rm.add_argument("senior_id", metavar="ID")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed when not run on a terminal)")
    e = rsub.add_parser("erasures", help="kiosks that have not confirmed a removal")
    e.add_argument("--json", action="store_true")
    ks = rsub.add_parser("kiosks", help="each kiosk's model, the version it applied, its last sync and receipt")
    ks.add_argument("--json", action="store_true")
    k = sub.add_parser("keys", help="the district's roster keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    ksub.add_parser("roster-init", help="make the roster signing, transport and template keys (never replaces one)")


def actor() -> str:
    try:
        return f"os:{getpass.getuser()}"
    except (KeyError, OSError):
        return "os:?"


def run(args: argparse.Namespace, engine: Engine, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        return _run(args, engine, out, err)
    except (book.RosterError, RosterError) as e:
        print(f"error: {e}", file=err)
        return 2


def _run(args: argparse.Namespace, engine: Engine, out: IO[str], err: IO[str]) -> int:
    cmd = args.roster_cmd
    if cmd == "import":
        return _import(engine, args.roster, out, err)
    if cmd == "set-status":
        old, v = book.set_status(engine, args.senior_id, args.status, actor())
        if v is None:
            print(f"{args.senior_id} is already {args.status}: nothing changed", file=out)
        else:
            print(f"{args.senior_id}: {old} -> {args.status} (roster version {v}); kiosks in scope get it within "
                  "seconds when online", file=out)
        return 0
    if cmd == "show":
        with engine.begin() as conn:
            rec = book.show(conn, args.senior_id)
            audit(conn, actor(), "roster.show", args.senior_id)  # a person's record was read
        if args.json:
            print(json.dumps(rec, ensure_ascii=False, indent=2), file=out)
        else:
            _print_show(rec, out)
        return 0
    if cmd == "remove":
        if not args.yes:
            if not sys.stdin.isatty():
                print("error: remove erases the senior's face templates everywhere; add --yes to confirm "
                      "(not run on a terminal)", file=err)
                return 2
            answer = input(f"erase every face template of {args.senior_id} at the district and on every kiosk? "
                           "[y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed", file=out)
                return 1
        rem = book.remove(engine, args.senior_id, actor())
        print(f"{args.senior_id}: removed (roster version {rem.version}); {rem.templates_erased} templates erased at "
              f"the district; {len(rem.kiosks)} kiosk(s) must confirm the erasure (meal-district roster erasures). "
              "Settled meal events are kept without biometric data (docs/privacy.md).", file=out)
        return 0
    if cmd == "erasures":
        with engine.connect() as conn:
            rows = book.pending_erasures(conn)
        if args.json:
            print(json.dumps(rows, indent=2), file=out)
        elif not rows:
            print("every kiosk has confirmed every removal", file=out)
        else:
            print(f"{len(rows)} erasure(s) not confirmed yet:", file=out)
            for r in rows:
                print(f"  {r['senior_id']}  {r['kiosk']}  (removed at version {r['version']})", file=out)
        return 1 if rows else 0
    if cmd == "kiosks":
        with engine.connect() as conn:
            st = book.kiosks_status(conn)
        if args.json:
            print(json.dumps(st, indent=2), file=out)
            return 0
        print(f"district roster at version {st['version']}; {len(st['kiosks'])} kiosk(s) have synced", file=out)
        for k in st["kiosks"]:
            behind = k["behind"]
            print(f"  {k['kiosk']:36} {k['model_id'] or '-':44} applied {k['applied_version']:>7} "
                  f"({'up to date' if behind <= 0 else f'{behind} behind'})  last sync {k['last_sync_at'] or '-'}  "
                  f"last receipt {k['last_receipt_at'] or '-'}  erasures owed {k['erasures_owed']}", file=out)
        return 0
    raise AssertionError(cmd)


def _import(engine: Engine, path: str, out: IO[str], err: IO[str]) -> int:
    rows, bad = read_district_roster(path)
    progress = Progress(len(rows), err)
    for b in bad:
        progress.note(f"row {b.row}: rejected: {b.reason}")
        print(f"row {b.row}{' ' + b.senior_id if b.senior_id else ''}: REJECTED: {b.reason}", file=out)

    def step(r: DistrictRow, state: str) -> None:
        label = f"row {r.row} {r.senior_id} {r.name}"
        progress.step(label, state)
        if state != "unchanged":
            print(f"{label}: {state}", file=out)

    t = book.import_rows(engine, rows, actor(), step)
    versions = f", versions {t.first_version}-{t.last_version}" if t.first_version else ""
    print(f"{path}: {t.added} added, {t.updated} updated, {t.unchanged} unchanged, {t.refused + len(bad)} rejected"
          f"{versions}", file=out)
    for line in [f"row {b.row}{' ' + b.senior_id if b.senior_id else ''}: {b.reason}" for b in bad] + t.problems:
        print(f"  rejected: {line}", file=out)
    return 1 if bad or t.refused else 0


def _print_show(rec: dict[str, Any], out: IO[str]) -> None:
    centres = "every centre" if rec["centres"] is None else ", ".join(rec["centres"])
    state = "REMOVED" if rec["removed"] else rec["status"]
    print(f"{rec['senior_id']} {rec['name']}  born {rec['birth_date']}  hukou {rec['hukou']}  {state}", file=out)
    print(f"  home centre {rec['home_centre']}; eats at {centres}; meal card {rec['card_no'] or '-'}", file=out)
    print(f"  roster version {rec['version']}", file=out)
    tm = ", ".join(f"{t['model_id']}: {t['count']}" for t in rec["templates"]) or "none"
    print(f"  templates: {tm}", file=out)
    if not rec["removed"]:
        print(f"  kiosks in scope: {len(rec['kiosks'])}", file=out)
        for k in rec["kiosks"]:
            have = "has this version" if k["has_version"] else f"at version {k['applied_version']}: not yet"
            print(f"    {k['kiosk']} ({k['model_id']}): {have}", file=out)
    for e in rec["erasures"]:
        done = f"confirmed {e['confirmed_at']} ({e['templates_erased']} templates)" if e["confirmed_at"] else "PENDING"
        print(f"  erasure at {e['kiosk']}: {done}", file=out)


def keys_init(cfg: Any, out: IO[str]) -> int:
    from district.roster.keys import RosterKeyError, roster_init

    try:
        r = roster_init(cfg)
    except RosterKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for m in r.made:
        print(f"made {m} (0600): back it up", file=out)
    for k in r.kept:
        print(f"kept {k}", file=out)
    print("\nEvery kiosk's config needs:\n  [roster]\n"
          f"  district_key = \"{r.public_key}\"\n"
          f"and a copy of {r.transport_path} as its transport_key_file (0600) or systemd credential "
          "meal-roster-key.", file=out)
    return 0
