"""Staff confirmation of uncertain matches: `meal-edge confirm`.

When the decision policy is not sure enough to pay (a close match without a clear margin, or liveness not
confirmed), the kiosk shows the candidate's name and the pipeline keeps a *pending confirmation* in the
store. Staff then accept or reject it:

- **accept** (`--yes`): the rules are applied again *as of the kiosk's decision* (its meal window, the
  senior's meals earlier recorded that local date, the senior's current status), so a confirmation later
  in the day pays what the kiosk would have paid. A `meal` becomes a meal event with `confirmed_by`
  "staff", recorded with its outbox row and the resolution in one transaction; the running daemon's
  publisher sends it on its next outbox poll. A `repeat` (served meanwhile), `refused` (suspended or
  deceased) or `closed` (outside the meal windows) resolves the confirmation without an event and says why.
  Only confirmations of today's local date can be accepted: no subsidy is ever back-dated.
- **reject** (`--no`): resolved as rejected; nothing is recorded.

Who resolved it is a staff account (edge.security.staffauth), kept in the local store with an audit line
in the same transaction, not published (the event says only "staff"). `meal-edge confirm ID --by STAFF_ID`
asks for that staff member's PIN (a prompt, or the first line of `--pin-file FILE`, `-` for standard input;
never an argument) and refuses without the right one; the staff screen needs a login. A confirmation whose
liveness was not confirmed (`needs_named_staff`: the person at the kiosk may be holding up a photo or a
phone) is accepted only with `staff_checked`: the staff member gave their PIN for this very confirmation
(the command always does; the screen asks for it again on that card), so a screen left logged in is not
enough.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from edge.config import Config, need_config
from edge.delivery.events import event_topic
from edge.meals.recorded import MealFields, meal_event, says_meal, says_not, subsidy_note, why_not, yuan
from edge.meals.rules import decide_meal
from edge.security.staffauth import STAFF_ID, AccountError, AuthError, StaffAuth, read_secret
from edge.store import AlreadyServed, Confirmation, Store, StoreError
from edge.store.auditlog import AuditEntry

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

#: the reason edge.app.Pipeline adds to a confirmation when liveness was not confirmed (a suspected photo or
#: phone screen, or too little motion to tell); the liveness checker's own reasons follow it
LIVENESS_NOT_CONFIRMED = "liveness_not_confirmed"


class StoreNotFound(StoreError):
    """The config's store file does not exist. `meal-edge confirm` and the staff screen never create one:
    an empty new store would only hide a wrong config."""


def open_store(cfg: Config) -> Store:
    """The daemon's existing store (StoreNotFound if the file is missing; other StoreErrors as Store raises)."""
    path = cfg.store_path
    if not path.exists():
        raise StoreNotFound(f"store {path} not found (is this the daemon's config?)")
    return Store(path, key_file=cfg.template_key_path)


def needs_named_staff(c: Confirmation) -> bool:
    """Accepting this confirmation needs a named staff member: liveness was not confirmed, so the person at
    the kiosk may be holding up a photo or a phone screen and must not be able to confirm themselves.
    (Rejecting never needs a name.)"""
    return LIVENESS_NOT_CONFIRMED in c.reasons


@dataclass(frozen=True)
class ConfirmResult(MealFields):
    """What `confirm` did. `ok` False: refused, nothing changed (`kind` says why)."""

    ok: bool
    confirmation_id: int
    #: ok: meal | repeat | refused | closed | rejected;
    #: not ok: not_found | already_resolved | no_name | needs_staff_name | not_today | not_enrolled | store_failed
    kind: str
    #: one line for the operator (English, like the other commands)
    message: str
    senior_id: str | None = None


def _refused(cid: int, kind: str, message: str, c: Confirmation | None = None) -> ConfirmResult:
    return ConfirmResult(False, cid, kind, message, senior_id=None if c is None else c.senior_id)


def _audit(by: str, action: str, c: Confirmation, **details: object) -> AuditEntry:
    """The audit line of a resolution: ids and the outcome, never the senior's name."""
    return AuditEntry(
        by, action, f"confirmation:{c.id}", {"senior_id": c.senior_id, "reasons": list(c.reasons), **details}
    )


def confirm(
    store: Store,
    cfg: Config,
    confirmation_id: int,
    accept: bool,
    by: str,
    *,
    now: datetime | None = None,
    staff_checked: bool = False,
) -> ConfirmResult:
    """Accept or reject one pending confirmation. `now` (aware; default: the wall clock) only decides
    which local date is "today"; the rules use the kiosk's original decision time.

    `by` is the staff id of whoever resolves it, authenticated by the caller; blank is refused (`no_name`).
    Accepting a confirmation that `needs_named_staff` also needs `staff_checked` (that staff member's PIN
    was given for this confirmation), else it is refused (`needs_staff_name`) and changes nothing."""
    tz = cfg.centre.tz
    lang = cfg.centre.language
    c = store.get_confirmation(confirmation_id)
    if c is None:
        return _refused(confirmation_id, "not_found", f"no confirmation with id {confirmation_id}")
    if c.state != "pending":
        at = c.resolved_at.astimezone(tz).isoformat(timespec="seconds") if c.resolved_at else "?"
        return _refused(
            confirmation_id,
            "already_resolved",
            f"confirmation {confirmation_id} was already {c.state} by {c.resolved_by} at {at}; nothing changed",
            c,
        )
    by = by.strip()
    if not by:
        return _refused(confirmation_id, "no_name", "say who you are with --by STAFF_ID", c)
    if accept and needs_named_staff(c) and not staff_checked:
        return _refused(
            confirmation_id,
            "needs_staff_name",
            f"confirmation {confirmation_id}: liveness was not confirmed (maybe a photo or a phone screen "
            "held up to the camera), so a staff member must check the person and enter their own PIN for it",
            c,
        )

    if not accept:
        try:
            store.resolve_confirmation(
                confirmation_id, "rejected", by, audit=_audit(by, "reject", c, staff_checked=staff_checked)
            )
        except StoreError as e:
            return _refused(confirmation_id, "store_failed", str(e), c)
        return ConfirmResult(
            True,
            confirmation_id,
            "rejected",
            f"confirmation {confirmation_id} rejected by {by}: no meal recorded for {c.senior_id}",
            senior_id=c.senior_id,
        )

    today = (now or datetime.now(tz)).astimezone(tz).date()
    if c.local_date != today:
        return _refused(
            confirmation_id,
            "not_today",
            f"confirmation {confirmation_id} is from {c.local_date} (today is {today}): only today's "
            "confirmations can be accepted, so no subsidy is back-dated; reject it with --no, or check "
            "the senior in by hand",
            c,
        )
    senior = store.get_senior(c.senior_id)
    if senior is None:
        return _refused(
            confirmation_id,
            "not_enrolled",
            f"senior {c.senior_id!r} is no longer enrolled: nothing can be recorded; reject it with --no",
            c,
        )

    decided_at = c.decided_at.astimezone(tz)
    prior = store.meals_on(senior.senior_id, c.local_date)
    r = decide_meal(senior, decided_at, prior, cfg.rules, cfg.centre.district, tz)
    who = f"{senior.name} ({senior.senior_id})"
    if r.kind != "meal":
        try:
            store.resolve_confirmation(
                confirmation_id, "confirmed", by,
                audit=_audit(by, "confirm", c, outcome=r.kind, staff_checked=staff_checked),
            )
        except StoreError as e:
            return _refused(confirmation_id, "store_failed", str(e), c)
        return ConfirmResult(
            True,
            confirmation_id,
            r.kind,
            f"confirmation {confirmation_id} confirmed by {by}, but no meal recorded for {who}: "
            f"{why_not(r)} ({r.kind} at {decided_at:%H:%M})",
            senior_id=senior.senior_id,
            meal=r.meal,
            reasons=r.reasons,
            says=says_not(r, lang),
        )

    c_cfg = cfg.centre
    event = meal_event(
        cfg, r, senior.senior_id, kiosk_id=c.kiosk_id, local_date=c.local_date, decided_at=decided_at,
        # the published contract allows null or "staff"; the staff member's name stays in the store
        confirmed_by="staff",
        match={
            "distance": round(c.distance, 4),
            "margin": round(c.margin, 4),
            "frames": c.frames,
            "confirmed": True,
        },
        source_ts=None,
    )
    topic = event_topic(cfg.mqtt.topic_prefix, c_cfg.district, c_cfg.id, c.kiosk_id)
    try:
        stored = store.record_confirmed_meal(
            confirmation_id, by, event, topic,
            audit=_audit(
                by, "confirm", c, outcome="meal", event_id=event.event_id, subsidy_fen=r.subsidy_fen,
                staff_checked=staff_checked,
            ),
        )
    except AlreadyServed:
        # served by the kiosk between our read and our write: a repeat after all
        return confirm(store, cfg, confirmation_id, accept, by, now=now, staff_checked=staff_checked)
    except StoreError as e:
        return _refused(confirmation_id, "store_failed", f"{e}; nothing was recorded", c)
    return ConfirmResult(
        True,
        confirmation_id,
        "meal",
        f"confirmation {confirmation_id} confirmed by {by}: {who} {r.meal} at {decided_at:%H:%M}, "
        f"pays {yuan(r.payable_fen)} yuan ({subsidy_note(r)}); event {stored.event_id} seq {stored.seq}",
        senior_id=senior.senior_id,
        meal=r.meal,
        price_fen=r.price_fen,
        subsidy_fen=r.subsidy_fen,
        payable_fen=r.payable_fen,
        reasons=r.reasons,
        event_id=stored.event_id,
        seq=stored.seq,
        says=says_meal(r, lang, senior.name),
    )


# -- command -------------------------------------------------------------------------------------------


def list_pending(store: Store, cfg: Config, out: TextIO, *, now: datetime | None = None) -> int:
    tz = cfg.centre.tz
    today = (now or datetime.now(tz)).astimezone(tz).date()
    pending = store.pending_confirmations()
    if not pending:
        print("no pending confirmations", file=out)
        return EXIT_OK
    print(f"{'id':>5}  {'time':16}  {'senior':10}  {'name':12}  reasons", file=out)
    for c in pending:
        senior = store.get_senior(c.senior_id)
        name = senior.name if senior is not None else "(not enrolled)"
        when = c.decided_at.astimezone(tz)
        if c.local_date != today:
            note = "  [not today: can only be rejected]"
        elif needs_named_staff(c):
            note = "  [maybe a photo or a phone screen: look at the person yourself before --yes]"
        else:
            note = ""
        print(
            f"{c.id:>5}  {when:%Y-%m-%d %H:%M}  {c.senior_id:10}  {name:12}  {', '.join(c.reasons) or '-'}{note}",
            file=out,
        )
    print(
        f"{len(pending)} pending. Accept: meal-edge confirm ID --yes --by STAFF_ID; "
        "reject: meal-edge confirm ID --no --by STAFF_ID (each asks for your PIN)",
        file=out,
    )
    return EXIT_OK


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "confirm",
        # no abbreviations: `--pin 1234` must be an error, not the file name of --pin-file
        allow_abbrev=False,
        help="list pending staff confirmations, or accept (--yes) / reject (--no) one",
        description="Without ID: list pending confirmations. With ID: accept it (--yes: the meal is recorded "
        "as the kiosk would have recorded it then) or reject it (--no). Exit 0 done, 1 refused.",
    )
    p.add_argument("id", nargs="?", type=int, help="confirmation id (from the list)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--yes", dest="accept", action="store_true", default=None, help="it is this senior: accept")
    g.add_argument("--no", dest="accept", action="store_false", help="it is not this senior: reject")
    p.add_argument(
        "--by", metavar="STAFF_ID", help="your staff id (`meal-enroll staff list`); your PIN is asked for"
    )
    p.add_argument(
        "--pin-file",
        metavar="FILE",
        help="read the PIN from the first line of FILE ('-': standard input) instead of a prompt",
    )
    p.set_defaults(func=run, parser=p)


def staff_by_pin(store: Store, by: str, pin_file: str | None, target: str, via: str) -> str | None:
    """The staff id `by` once its PIN is given (a prompt, or the first line of `pin_file`), for a command
    that acts as a staff member; None when refused: said on stderr, and a wrong PIN is audited (and counts
    towards the lockout)."""
    staff_id = by.strip()
    try:
        secret = read_secret(pin_file, f"PIN of {staff_id}: ")
        return StaffAuth(store).authenticate(staff_id, secret).staff_id
    except (AuthError, AccountError) as e:
        if isinstance(e, AuthError):
            who = staff_id if STAFF_ID.match(staff_id) else "?"
            store.audit(AuditEntry(who, "login_failed", target, {"via": via}))
        print(f"refused: {e}; nothing changed", file=sys.stderr)
        return None


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.id is None and (args.accept is not None or args.by):
        args.parser.error("--yes, --no and --by need a confirmation ID")
    if args.id is not None and (args.accept is None or not (args.by or "").strip()):
        args.parser.error("confirm ID needs --yes or --no, and --by STAFF_ID")
    cfg = need_config(args.config)
    try:
        store = open_store(cfg)
    except StoreNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if args.id is None:
            return list_pending(store, cfg, out)
        staff_id = staff_by_pin(store, args.by, args.pin_file, f"confirmation:{args.id}", "confirm")
        if staff_id is None:
            return EXIT_REFUSED
        # the PIN was given for this confirmation: enough for a suspected photo too (staff_checked)
        result = confirm(store, cfg, args.id, bool(args.accept), staff_id, staff_checked=True)
    finally:
        store.close()
    if not result.ok:
        print(f"refused: {result.message}", file=sys.stderr)
        return EXIT_REFUSED
    print(result.message, file=out)
    if result.says:
        print(f"kiosk: {result.says}", file=out)
    return EXIT_OK
