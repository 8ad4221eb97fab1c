"""`meal-edge checkin`: check a senior in by hand (edge/meals/checkin.py), or find them first.

    meal-edge checkin S0001 --by w01           # your staff id; your PIN is asked for; the meal is recorded now
    meal-edge checkin --find wf                # who matches: name, pinyin initials, id or meal-card number
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from edge.config import need_config
from edge.meals.checkin import manual_checkin
from edge.meals.confirm import StoreNotFound, open_store, staff_by_pin
from edge.meals.search import Entry, search
from edge.store import Store

EXIT_OK, EXIT_REFUSED = 0, 1


def roster(store: Store) -> list[Entry]:
    return [Entry(*r) for r in store.roster()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "checkin",
        # no abbreviations: `--pin 1234` must be an error, not the file name of --pin-file
        allow_abbrev=False,
        help="check a senior in by hand (when the kiosk did not recognise them), or --find them",
        description="Record a meal for senior ID now, through the same rules, store and outbox as the kiosk "
        "(the event says check_in \"manual\" and who did it). A meal already had, a suspended senior or a time "
        "outside the meal windows records nothing and says why. Exit 0 recorded or answered, 1 refused.",
    )
    p.add_argument("senior_id", nargs="?", metavar="ID", help="the senior's id (find it with --find)")
    p.add_argument(
        "--by", metavar="STAFF_ID", help="your staff id (`meal-enroll staff list`); your PIN is asked for"
    )
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="read the PIN from the first line of FILE ('-': standard input) instead of a prompt",
    )
    p.add_argument("--find", metavar="TEXT", help="list seniors matching a name, pinyin initials (wf), id or card")
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if (args.senior_id is None) == (args.find is None):
        args.parser.error("give a senior ID (with --by STAFF_ID), or --find TEXT")
    if args.senior_id is not None and not (args.by or "").strip():
        args.parser.error("checkin ID needs --by STAFF_ID (who checks the senior in)")
    cfg = need_config(getattr(args, "config", None))
    try:
        store = open_store(cfg)
    except StoreNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if args.find is not None:
            found = search(roster(store), args.find)
            for f in found:
                print(f"{f.entry.senior_id:10}  {f.entry.name:12}  (by {f.how})", file=out)
            print(f"{len(found)} found" + (". Check in: meal-edge checkin ID --by STAFF_ID" if found else ""), file=out)
            return EXIT_OK
        staff_id = staff_by_pin(store, args.by, args.pin_file, f"senior:{args.senior_id}", "checkin")
        if staff_id is None:
            return EXIT_REFUSED
        r = manual_checkin(store, cfg, args.senior_id, staff_id)
    finally:
        store.close()
    if not r.ok:
        print(f"refused: {r.message}", file=sys.stderr)
        return EXIT_REFUSED
    print(r.message, file=out)
    if r.says:
        print(f"kiosk: {r.says}", file=out)
    return EXIT_OK
