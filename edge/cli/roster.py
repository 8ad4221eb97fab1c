"""`meal-edge roster status|resync`: where this kiosk is in the district roster (issue 13, docs/roster.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from edge.config import Config, need_config
from edge.delivery.rostersync import RosterLink, RosterSetupError, load_keys, problem
from edge.security.guards import StoreInUse, StoreLock
from edge.store import Store
from edge.store.rosterdb import RosterState, UploadInfo

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.app import Parts
    from edge.delivery.publish import Publisher
    from edge.recognition.enrolled import GalleryHolder

log = logging.getLogger(__name__)
EXIT_OK, EXIT_FAIL = 0, 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "roster",
        help="the district roster on this kiosk: `status` (version, last sync, uploads) or `resync`",
        description="The district owns the roster; this kiosk keeps in step with it (docs/roster.md).",
    )
    p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    sub = p.add_subparsers(dest="roster_command", required=True, metavar="ACTION")
    s = sub.add_parser("status", help="version reached, last sync, pending and refused uploads, erasures owed")
    s.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("resync", help="ask the district for the whole roster again (the running daemon does it)")
    s.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS, help="the daemon's TOML config")
    s.set_defaults(func=cmd_resync)


def roster_link(
    cfg: Config, parts: Parts, holder: GalleryHolder, publisher: Publisher | None, signing_key: Ed25519PrivateKey
) -> RosterLink | None:
    """The district roster link on the publisher's connection ([roster], docs/roster.md), or None (and why, in the
    log) when this kiosk does not sync. Every roster change reloads the gallery in the background at once."""
    parts.store.set_roster_uploads(cfg.roster.enabled)
    if not cfg.roster.enabled:
        return None
    try:
        keys = load_keys(cfg)
    except RosterSetupError as e:
        log.error("district roster: this kiosk does NOT sync: %s", e)
        return None
    assert publisher is not None  # load_keys refuses [mqtt] enabled = false
    link = RosterLink(parts.store, cfg, keys, signing_key, holder.model_id, on_change=holder.poke)
    link.attach(publisher)
    return link


def daemon_running(cfg: Config) -> bool:
    try:
        lock = StoreLock(cfg.store_path).acquire()
    except StoreInUse:
        return True
    lock.release()
    return False


def _ago(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "never"
    s = int((now - t).total_seconds())
    span = (f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h" if s < 172800
            else f"{s // 86400} days")
    return f"{t.astimezone(UTC).isoformat(timespec='seconds')} ({span} ago)"


def status_dict(cfg: Config, st: RosterState, ups: list[UploadInfo], running: bool) -> dict[str, Any]:
    why = problem(cfg)
    return {
        "syncing": why is None,
        "why_not": why,
        "daemon_running": running,
        "version": st.version,
        "model_id": st.model_id,
        "last_sync_at": st.last_sync_at.isoformat() if st.last_sync_at else None,
        "last_batch_at": st.last_batch_at.isoformat() if st.last_batch_at else None,
        "snapshot_in_progress": None if st.snapshot_to is None else {"to_version": st.snapshot_to,
                                                                      "next_part": st.snapshot_next},
        "resync_requested": st.resync_requested,
        "erasure_receipts_owed": sorted(st.erased_pending),
        "uploads": {k: sum(1 for u in ups if u.state == k) for k in ("pending", "accepted", "refused")},
        "pending": [{"upload_id": u.upload_id, "senior_id": u.senior_id, "templates": u.templates,
                     "created_at": u.created_at.isoformat(), "sent_at": u.sent_at.isoformat() if u.sent_at else None}
                    for u in ups if u.state == "pending"],
        "refused": [{"upload_id": u.upload_id, "senior_id": u.senior_id, "templates": u.templates,
                     "reason_code": u.reason_code, "reason": u.reason,
                     "answered_at": u.answered_at.isoformat() if u.answered_at else None}
                    for u in ups if u.state == "refused"],
    }


def cmd_status(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = need_config(args.config)
    if not cfg.store_path.exists():
        print(f"error: store {cfg.store_path} not found (is this the daemon's config?)", file=sys.stderr)
        return EXIT_FAIL
    with Store(cfg.store_path, key_file=cfg.template_key_path) as store:
        st, ups = store.roster_state(), store.uploads()
    d = status_dict(cfg, st, ups, daemon_running(cfg))
    if getattr(args, "json", False):
        print(json.dumps(d, ensure_ascii=False), file=out)
        return EXIT_OK
    now = datetime.now(UTC)
    if d["syncing"]:
        print(f"district roster: on ({'daemon running' if d['daemon_running'] else 'daemon NOT running'})", file=out)
    else:
        print(f"district roster: NOT syncing: {d['why_not']}", file=out)
    print(f"version: {st.version}" + (f" (model {st.model_id})" if st.model_id else ""), file=out)
    print(f"last sync: {_ago(st.last_sync_at, now)}", file=out)
    print(f"last change applied: {_ago(st.last_batch_at, now)}", file=out)
    if st.snapshot_to is not None:
        print(f"full snapshot in progress: up to version {st.snapshot_to}, waiting for part {st.snapshot_next}",
              file=out)
    if st.resync_requested:
        print("resync asked for: the daemon asks the district for the whole roster", file=out)
    u = d["uploads"]
    print(f"uploads: {u['pending']} pending, {u['accepted']} accepted, {u['refused']} refused", file=out)
    for p in d["pending"]:
        sent = f"sent {_ago(datetime.fromisoformat(p['sent_at']), now)}" if p["sent_at"] else "not sent yet"
        print(f"  pending  {p['senior_id']}: {p['templates']} template(s), {sent}", file=out)
    for r in d["refused"]:
        print(f"  REFUSED  {r['senior_id']}: {r['templates']} template(s) removed here: {r['reason']} "
              f"({r['reason_code']})", file=out)
    if st.erased_pending:
        print(f"erasure receipts owed to the district: {', '.join(sorted(st.erased_pending))}", file=out)
    return EXIT_OK


def cmd_resync(args: argparse.Namespace) -> int:
    cfg = need_config(args.config)
    if not cfg.store_path.exists():
        print(f"error: store {cfg.store_path} not found (is this the daemon's config?)", file=sys.stderr)
        return EXIT_FAIL
    why = problem(cfg)
    with Store(cfg.store_path, key_file=cfg.template_key_path) as store:
        store.request_resync()
    if why is not None:
        print(f"resync recorded, but this kiosk does not sync with the district: {why}", file=sys.stderr)
        return EXIT_FAIL
    if daemon_running(cfg):
        print(f"asked: the running daemon asks the district for the whole roster within {cfg.roster.poll_seconds:g} s "
              "(`meal-edge roster status` shows the progress)")
    else:
        print("recorded: the daemon is not running; it asks the district for the whole roster when it starts")
    return EXIT_OK
