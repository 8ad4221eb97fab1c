"""`meal-edge audit`: the append-only log of staff actions (confirm, reject, enrol, status, remove, staff
accounts, logins), oldest first. The store's triggers refuse any change to it; this only reads."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from edge.config import need_config
from edge.store import Store, StoreError

EXIT_OK, EXIT_FAIL = 0, 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="list the audit log of staff actions (who confirmed, rejected, enrolled, removed, logged in)",
        description="The store's append-only audit log, oldest first: time, staff id, action, target, details.",
    )
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--last", type=int, metavar="N", help="only the newest N lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = need_config(args.config)
    if not cfg.store_path.exists():
        print(f"error: store {cfg.store_path} not found (is this the daemon's config?)", file=sys.stderr)
        return EXIT_FAIL
    try:
        with Store(cfg.store_path, key_file=cfg.template_key_path) as store:
            lines = store.audit_log(limit=args.last)
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    tz = cfg.centre.tz
    for r in lines:
        if args.json:
            print(json.dumps(r.to_json(), ensure_ascii=False, sort_keys=True), file=out)
        else:
            details = " ".join(f"{k}={v}" for k, v in sorted(r.details.items()))
            print(f"{r.at.astimezone(tz):%Y-%m-%d %H:%M:%S}  {r.staff_id:12}  {r.action:12}  {r.target}  {details}",
                  file=out)
    if not args.json:
        print(f"{len(lines)} line(s)", file=out)
    return EXIT_OK
