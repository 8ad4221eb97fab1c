"""`meal-edge checkin`: check a senior in by hand (edge/meals/checkin.py), or find them first.

    meal-edge checkin S0001 --by 李娜          # record the meal now, through the kiosk's rules and store
    meal-edge checkin --find wf                # who matches: name, pinyin initials, id or meal-card number
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from edge.config import need_config
from edge.meals.checkin import manual_checkin
from edge.meals.confirm import StoreNotFound, open_store
from edge.meals.search import Entry, search
from edge.store import Store

EXIT_OK, EXIT_REFUSED = 0, 1


def roster(store: Store) -> list[Entry]:
    return [Entry(*r) for r in store.roster()]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "checkin",
        help="check a senior in by hand (when the kiosk did not recognise them), or --find them",
        description="Record a meal for senior ID now, through the same rules, store and outbox as the kiosk "
        "(the event says check_in \"manual\" and who did it). A meal already had, a suspended senior or a time "
        "outside the meal windows records nothing and says why. Exit 0 recorded or answered, 1 refused.",
    )
    p.add_argument("senior_id", nargs="?", metavar="ID", help="the senior's id (find it with --find)")
    p.add_argument("--by", metavar="NAME", help="who checks the senior in (published as the event's staff_id)")
    p.add_argument("--find", metavar="TEXT", help="list seniors matching a name, pinyin initials (wf), id or card")
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if (args.senior_id is None) == (args.find is None):
        args.parser.error("give a senior ID (with --by NAME), or --find TEXT")
    if args.senior_id is not None and not (args.by or "").strip():
        args.parser.error("checkin ID needs --by NAME (who checks the senior in)")
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
            print(f"{len(found)} found" + (". Check in: meal-edge checkin ID --by NAME" if found else ""), file=out)
            return EXIT_OK
        r = manual_checkin(store, cfg, args.senior_id, args.by)
    finally:
        store.close()
    if not r.ok:
        print(f"refused: {r.message}", file=sys.stderr)
        return EXIT_REFUSED
    print(r.message, file=out)
    if r.says:
        print(f"kiosk: {r.says}", file=out)
    return EXIT_OK
