"""`meal-enroll staff add|list|remove`: the staff accounts that log in to the staff screen and confirm with
`meal-edge confirm` (edge.security.staffauth). The PIN is read from a prompt (twice), or the first line of
--pin-file (`-`: standard input), never from the command line. Each change is audited as the operating-system
user who ran the command."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import IO

from edge.config import Config
from edge.security.staffauth import AccountError, StaffAuth, read_secret
from edge.store import Store, StoreError
from edge.store.auditlog import AuditEntry, os_user
from enroll.output import print_table

EXIT_OK, EXIT_REJECTED = 0, 1  # as meal-enroll's


def cmd_staff(
    args: argparse.Namespace,
    cfg: Config,
    out: IO[str],
    store: Store,
) -> int:
    """Runs one staff sub-command on `store` (closed here)."""
    try:
        if args.staff_command == "list":
            accounts = store.list_staff()
            if not accounts:
                print("no staff accounts: add one with `meal-enroll staff add STAFF_ID --name NAME`", file=out)
                return EXIT_OK
            rows = [["id", "name", "role", "state"]]
            now = datetime.now(cfg.centre.tz)
            for acct in accounts:
                until = acct.locked_until
                state = f"locked until {until.astimezone(cfg.centre.tz):%H:%M}" if until and until > now else "ok"
                rows.append([acct.staff_id, acct.name, acct.role, state])
            print_table(rows, out)
            return EXIT_OK
        auth = StaffAuth(store)
        if args.staff_command == "remove":
            if not auth.remove(args.staff_id):
                print(f"no staff account {args.staff_id}: nothing removed", file=out)
                return EXIT_REJECTED
            store.audit(AuditEntry(os_user(), "staff_remove", f"staff:{args.staff_id}"))
            print(f"removed staff account {args.staff_id}", file=out)
            return EXIT_OK
        try:
            secret = read_secret(args.pin_file, f"PIN or password for {args.staff_id}: ", confirm=True)
            acct = auth.add(args.staff_id, args.name, args.role, secret)
        except (AccountError, StoreError) as e:
            print(f"not added: {e}", file=out)
            return EXIT_REJECTED
        store.audit(AuditEntry(os_user(), "staff_add", f"staff:{acct.staff_id}", {"role": acct.role}))
        print(f"added staff account {acct.staff_id} ({acct.role})", file=out)
        return EXIT_OK
    finally:
        store.close()
