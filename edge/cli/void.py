"""`meal-edge void`: a manager voids today's meal recorded by mistake (edge/meals/void.py).

    meal-edge events                                             # find the meal's event_id
    meal-edge void EVENT_ID --reason wrong_person --by m01       # your manager id; your PIN is asked for
    meal-edge void EVENT_ID --reason other --note "家属代领" --by m01
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from edge.config import need_config
from edge.delivery.events import VOID_REASONS
from edge.meals.confirm import StoreNotFound, open_store, staff_by_pin
from edge.meals.void import REASON_WORDS, void_meal

EXIT_OK, EXIT_REFUSED = 0, 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    reasons = ", ".join(f"{c} ({REASON_WORDS[c]['zh']}, {REASON_WORDS[c]['en'].lower()})" for c in VOID_REASONS)
    p = subparsers.add_parser(
        "void",
        # no abbreviations: `--pin 1234` must be an error, not the file name of --pin-file
        allow_abbrev=False,
        help="void today's meal recorded by mistake (a manager, with their PIN)",
        description="Reverse meal EVENT_ID (see `meal-edge events`) with a new void event naming it, signed, "
        "sequenced and sent to the district like a meal, which reverses its subsidy. Only a manager may void; "
        "only a meal of today, once. The senior may then check in again today. Exit 0 voided, 1 refused "
        "(nothing recorded; the attempt is audited).",
    )
    p.add_argument("event_id", metavar="EVENT_ID", help="the meal's event_id")
    p.add_argument("--reason", required=True, choices=VOID_REASONS, metavar="CODE", help=f"why: {reasons}")
    p.add_argument("--note", metavar="TEXT", help="a few words (needed with --reason other)")
    p.add_argument("--by", required=True, metavar="STAFF_ID", help="your manager staff id; your PIN is asked for")
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="read the PIN from the first line of FILE ('-': standard input) instead of a prompt",
    )
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not args.by.strip():
        args.parser.error("void needs --by STAFF_ID (the manager who voids)")
    cfg = need_config(getattr(args, "config", None))
    try:
        store = open_store(cfg)
    except StoreNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        staff_id = staff_by_pin(store, args.by, args.pin_file, f"event:{args.event_id}", "void")
        if staff_id is None:
            return EXIT_REFUSED
        r = void_meal(store, cfg, args.event_id, args.reason, args.note, staff_id)
    finally:
        store.close()
    if not r.ok:
        print(f"refused: {r.message}; nothing was recorded", file=sys.stderr)
        return EXIT_REFUSED
    print(r.message, file=out)
    return EXIT_OK
