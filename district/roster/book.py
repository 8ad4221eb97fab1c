"""The district roster in the database: every write takes the roster lock and gets the next district-wide
version, so versions are handed out in commit order (a kiosk that has seen version N never later misses a
change below N). PostgreSQL: a transaction-scoped advisory lock; SQLite: a first write takes the database's
write lock before the version is read (its writers are serialised, but a deferred transaction that read first
would fail instead of waiting).

Change kinds: import (a new senior), fields, status, scope (the centres changed: kiosks that leave the scope
get `absent`), templates (an enrolment's upload), removed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from district.db.engine import is_postgres
from district.db.models import RosterChange, RosterErasure, RosterKiosk, RosterSenior, RosterTemplate
from district.roster.csvfile import DistrictRow
from district.users import audit
from district.validate import KioskKey
from edge.delivery import rosterwire as rw
from edge.security.atrest import AtRestError, TemplateCipher

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key of every roster write: "roster"
ROSTER_LOCK = 0x726F_7374_6572
#: PostgreSQL NOTIFY channel of every committed roster change: the link's pusher wakes at once
CHANNEL = "meal_roster"
_FIELDS = ("name", "birth_date", "hukou", "status", "card_no", "home_centre", "centres")


class RosterError(ValueError):
    """A roster command that cannot be done, phrased for the operator."""


def _orm(conn: Connection) -> Session:
    """ORM rows (Connection.execute returns plain rows) inside the caller's transaction."""
    return Session(bind=conn)


def in_scope(centres: Sequence[str] | None, centre_id: str) -> bool:
    return centres is None or centre_id in centres


def lock(conn: Connection) -> None:
    if is_postgres(conn):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ROSTER_LOCK})
    else:
        conn.execute(update(RosterSenior).where(text("1 = 0")).values(version=RosterSenior.version))


def max_version(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(RosterChange.version), 0))).scalar_one())


class _Versions:
    """Hands out versions inside one locked transaction."""

    def __init__(self, conn: Connection, actor: str) -> None:
        lock(conn)
        self.conn = conn
        self.actor = actor
        self.next = max_version(conn) + 1
        self.rows: list[dict[str, Any]] = []
        self.now = datetime.now(UTC)

    def take(self, senior_id: str, kind: str) -> int:
        v = self.next
        self.next += 1
        self.rows.append({"version": v, "senior_id": senior_id, "kind": kind, "at": self.now,
                          "actor": self.actor[:200]})
        return v

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(insert(RosterChange), self.rows)
            self.rows = []
            if is_postgres(self.conn):
                self.conn.execute(text(f"NOTIFY {CHANNEL}"))  # delivered when (and only if) this commits


# -- import, status, removal ---------------------------------------------------------------------------


@dataclass
class ImportTally:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    first_version: int | None = None
    last_version: int | None = None
    #: "row N ID: reason"
    problems: list[str] = field(default_factory=list)


def _row_values(r: DistrictRow) -> dict[str, Any]:
    return {"name": r.name, "birth_date": r.birth_date, "hukou": r.hukou, "status": r.status, "card_no": r.card_no,
            "home_centre": r.home_centre, "centres": list(r.centres) if r.centres is not None else None}


def _kind(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    changed = [f for f in _FIELDS if old[f] != new[f]]
    if not changed:
        return None
    if "centres" in changed:
        return "scope"
    return "status" if changed == ["status"] else "fields"


def import_rows(engine: Engine, rows: Sequence[DistrictRow], actor: str,
                step: Callable[[DistrictRow, str], None] | None = None, chunk: int = 500) -> ImportTally:
    """Add or update the seniors of good rows, `chunk` rows a transaction; step(row, state) after each."""
    t = ImportTally()
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        states: list[tuple[DistrictRow, str]] = []
        with engine.begin() as conn:
            vs = _Versions(conn, actor)
            ids = [r.senior_id for r in part]
            q = select(RosterSenior).where(RosterSenior.senior_id.in_(ids))
            old = {s.senior_id: s for s in _orm(conn).scalars(q)}
            for r in part:
                new = _row_values(r)
                o = old.get(r.senior_id)
                if o is None:
                    v = vs.take(r.senior_id, "import")
                    conn.execute(insert(RosterSenior).values(senior_id=r.senior_id, removed=False, version=v, **new))
                    t.added += 1
                    states.append((r, "added"))
                elif o.removed:
                    t.refused += 1
                    why = "was removed from the roster: a removed senior's id is not used again"
                    t.problems.append(f"row {r.row} {r.senior_id}: {why}")
                    states.append((r, f"REFUSED: {why}"))
                elif (kind := _kind({f: getattr(o, f) for f in _FIELDS}, new)) is None:
                    t.unchanged += 1
                    states.append((r, "unchanged"))
                else:
                    v = vs.take(r.senior_id, kind)
                    conn.execute(update(RosterSenior).where(RosterSenior.senior_id == r.senior_id)
                                 .values(version=v, **new))
                    t.updated += 1
                    states.append((r, f"updated ({kind})"))
            if vs.rows:
                t.first_version = t.first_version or vs.rows[0]["version"]
                t.last_version = vs.rows[-1]["version"]
            vs.flush()
            audit(conn, actor, "roster.import", f"rows {part[0].row}-{part[-1].row}: "
                  f"{sum(1 for _, s in states if s == 'added')} added, "
                  f"{sum(1 for _, s in states if s.startswith('updated'))} updated")
        if step is not None:
            for r, s in states:
                step(r, s)
    return t


def _get(conn: Connection, senior_id: str) -> RosterSenior:
    s = _orm(conn).scalars(select(RosterSenior).where(RosterSenior.senior_id == senior_id)).one_or_none()
    if s is None:
        raise RosterError(f"no senior {senior_id} in the district roster (meal-district roster import adds them)")
    return s


def set_status(engine: Engine, senior_id: str, status: str, actor: str) -> tuple[str, int | None]:
    """(previous status, the change's version or None when it was already so)."""
    if status not in rw.STATUSES:
        raise RosterError(f"status {status!r}: one of {', '.join(rw.STATUSES)}")
    with engine.begin() as conn:
        vs = _Versions(conn, actor)
        s = _get(conn, senior_id)
        if s.removed:
            raise RosterError(f"{senior_id} was removed from the roster: nothing to change")
        if s.status == status:
            return s.status, None
        v = vs.take(senior_id, "status")
        conn.execute(update(RosterSenior).where(RosterSenior.senior_id == senior_id).values(status=status, version=v))
        vs.flush()
        audit(conn, actor, "roster.set-status", f"{senior_id} {s.status} -> {status} (version {v})")
        return s.status, v


@dataclass(frozen=True)
class Removal:
    version: int
    templates_erased: int
    #: kiosks that must confirm the erasure
    kiosks: list[str]


def remove(engine: Engine, senior_id: str, actor: str) -> Removal:
    """Erase the senior's templates at the district, mark them removed (their fields stay: settled meal events
    name them), and expect an erasure receipt from every kiosk that may hold them."""
    with engine.begin() as conn:
        vs = _Versions(conn, actor)
        s = _get(conn, senior_id)
        if s.removed:
            raise RosterError(f"{senior_id} was already removed (version {s.version}); "
                              "`meal-district roster erasures` lists the kiosks that have not confirmed")
        n = conn.execute(delete(RosterTemplate).where(RosterTemplate.senior_id == senior_id)).rowcount
        v = vs.take(senior_id, "removed")
        conn.execute(update(RosterSenior).where(RosterSenior.senior_id == senior_id).values(removed=True, version=v))
        vs.flush()
        kiosks = [KioskKey(k.district, k.centre_id, k.kiosk_id) for k in _orm(conn).scalars(select(RosterKiosk))
                  if in_scope(s.centres, k.centre_id)]
        if kiosks:
            conn.execute(insert(RosterErasure), [
                {"senior_id": senior_id, "district": k.district, "centre_id": k.centre_id, "kiosk_id": k.kiosk_id,
                 "version": v, "confirmed_at": None, "templates_erased": None} for k in kiosks])
        audit(conn, actor, "roster.remove", f"{senior_id} (version {v}): {n} templates erased at the district, "
              f"{len(kiosks)} kiosks to confirm")
        return Removal(v, n, [str(k) for k in kiosks])


def show(conn: Connection, senior_id: str) -> dict[str, Any]:
    s = _get(conn, senior_id)
    templates = [{"model_id": m, "count": n} for m, n in conn.execute(
        select(RosterTemplate.model_id, func.count()).where(RosterTemplate.senior_id == senior_id)
        .group_by(RosterTemplate.model_id).order_by(RosterTemplate.model_id))]
    kiosks = []
    for k in _orm(conn).scalars(select(RosterKiosk).order_by(RosterKiosk.centre_id, RosterKiosk.kiosk_id)):
        if in_scope(s.centres, k.centre_id) and not s.removed:
            kiosks.append({"kiosk": f"{k.district}/{k.centre_id}/{k.kiosk_id}", "model_id": k.model_id,
                           "has_version": k.applied_version >= s.version, "applied_version": k.applied_version})
    erasures = [{"kiosk": f"{e.district}/{e.centre_id}/{e.kiosk_id}", "version": e.version,
                 "confirmed_at": e.confirmed_at.isoformat() if e.confirmed_at else None,
                 "templates_erased": e.templates_erased}
                for e in _orm(conn).scalars(select(RosterErasure).where(RosterErasure.senior_id == senior_id))]
    return {"senior_id": s.senior_id, "name": s.name, "birth_date": s.birth_date.isoformat(), "hukou": s.hukou,
            "status": s.status, "card_no": s.card_no, "home_centre": s.home_centre, "centres": s.centres,
            "removed": s.removed, "version": s.version, "templates": templates, "kiosks": kiosks,
            "erasures": erasures}


def pending_erasures(conn: Connection) -> list[dict[str, Any]]:
    q = select(RosterErasure).where(RosterErasure.confirmed_at.is_(None)).order_by(
        RosterErasure.version, RosterErasure.centre_id, RosterErasure.kiosk_id)
    return [{"senior_id": e.senior_id, "kiosk": f"{e.district}/{e.centre_id}/{e.kiosk_id}", "version": e.version}
            for e in conn.execute(q)]


def kiosks_status(conn: Connection) -> dict[str, Any]:
    """Every kiosk of the roster link: its model, the version it applied and the district's, erasures owed."""
    top = max_version(conn)
    owed: dict[str, int] = {}
    for e in pending_erasures(conn):
        owed[e["kiosk"]] = owed.get(e["kiosk"], 0) + 1
    rows = []
    for k in _orm(conn).scalars(select(RosterKiosk).order_by(RosterKiosk.centre_id, RosterKiosk.kiosk_id)):
        name = f"{k.district}/{k.centre_id}/{k.kiosk_id}"
        rows.append({"kiosk": name, "model_id": k.model_id, "applied_version": k.applied_version,
                     "sent_version": k.sent_version,
                     "last_sync_at": k.last_sync_at.isoformat() if k.last_sync_at else None,
                     "last_receipt_at": k.last_receipt_at.isoformat() if k.last_receipt_at else None,
                     "behind": max(0, top - k.applied_version), "erasures_owed": owed.get(name, 0)})
    return {"version": top, "kiosks": rows}


def summary(st: dict[str, Any]) -> dict[str, int]:
    """From kiosks_status: the version, kiosks synced, kiosks behind it, erasures still owed (status, dashboard)."""
    ks = st["kiosks"]
    return {"version": st["version"], "kiosks": len(ks), "kiosks_behind": sum(k["behind"] > 0 for k in ks),
            "erasures_owed": sum(k["erasures_owed"] for k in ks)}


# -- the link's side: template uploads, receipts, syncs ---------------------------------------------------


def _record_id(template_id: str) -> int:
    return uuid.UUID(template_id).int


def seal_at_rest(cipher: TemplateCipher, senior_id: str, template_id: str, vec: np.ndarray) -> bytes:
    return cipher.seal(np.asarray(vec, dtype="<f4").tobytes(), senior_id, _record_id(template_id), "roster-template")


def open_at_rest(cipher: TemplateCipher, senior_id: str, template_id: str, blob: bytes) -> np.ndarray:
    return np.frombuffer(cipher.open(blob, senior_id, _record_id(template_id), "roster-template"), dtype="<f4")


@dataclass(frozen=True)
class UploadVerdict:
    accepted: bool
    reason_code: str | None = None
    version: int | None = None
    added: int = 0


def accept_upload(engine: Engine, kiosk: KioskKey, msg: rw.TemplateUpload, transport: bytes,
                  cipher: TemplateCipher) -> UploadVerdict:
    """Store an enrolment's templates (a new version), or the reason they are refused. A template id already
    stored for this senior is not stored again (a re-sent upload gets the same answer)."""
    opened: list[tuple[rw.WireTemplate, np.ndarray]] = []
    for t in msg.templates:
        try:
            opened.append((t, rw.open_template(transport, msg.senior_id, t)))
        except rw.WireError as e:
            log.warning("template upload from %s: %s", kiosk, e)
            return UploadVerdict(False, "bad_template")
    with engine.begin() as conn:
        vs = _Versions(conn, f"kiosk:{kiosk}")
        s = _orm(conn).scalars(select(RosterSenior).where(RosterSenior.senior_id == msg.senior_id)).one_or_none()
        if s is None:
            return UploadVerdict(False, "unknown_senior")
        if s.removed:
            return UploadVerdict(False, "removed")
        if s.status == "deceased":
            return UploadVerdict(False, "deceased")
        if not in_scope(s.centres, kiosk.centre_id):
            return UploadVerdict(False, "not_in_scope")
        ids = [t.template_id for t, _ in opened]
        known = {tid: (sid, v) for tid, sid, v in conn.execute(
            select(RosterTemplate.template_id, RosterTemplate.senior_id, RosterTemplate.version)
            .where(RosterTemplate.template_id.in_(ids)))}
        if any(sid != msg.senior_id for sid, _ in known.values()):
            return UploadVerdict(False, "bad_template")
        new = [(t, vec) for t, vec in opened if t.template_id not in known]
        if not new:
            return UploadVerdict(True, None, max(v for _, v in known.values()), 0)
        v = vs.take(msg.senior_id, "templates")
        conn.execute(insert(RosterTemplate), [
            {"template_id": t.template_id, "senior_id": msg.senior_id, "model_id": t.model_id, "quality": t.quality,
             "embedding": seal_at_rest(cipher, msg.senior_id, t.template_id, vec), "from_kiosk": str(kiosk)[:200],
             "created_at": vs.now, "version": v} for t, vec in new])
        conn.execute(update(RosterSenior).where(RosterSenior.senior_id == msg.senior_id).values(version=v))
        vs.flush()
        audit(conn, f"kiosk:{kiosk}"[:64], "roster.templates", f"{msg.senior_id}: {len(new)} templates "
              f"({new[0][0].model_id}), version {v}")
        return UploadVerdict(True, None, v, len(new))


def kiosk_synced(conn: Connection, kiosk: KioskKey, model_id: str, now: datetime) -> str | None:
    """Record a kiosk's sync request; the model it had said before (None the first time)."""
    row = _orm(conn).scalars(select(RosterKiosk).where(*_kiosk_is(kiosk))).first()
    if row is None:
        conn.execute(insert(RosterKiosk).values(district=kiosk.district, centre_id=kiosk.centre_id,
                                                kiosk_id=kiosk.kiosk_id, model_id=model_id, applied_version=0,
                                                sent_version=0, last_sync_at=now))
        return None
    conn.execute(update(RosterKiosk).where(*_kiosk_is(kiosk)).values(model_id=model_id, last_sync_at=now))
    return row.model_id


def _kiosk_is(k: KioskKey) -> tuple[Any, ...]:
    return (RosterKiosk.district == k.district, RosterKiosk.centre_id == k.centre_id,
            RosterKiosk.kiosk_id == k.kiosk_id)


def set_sent(conn: Connection, kiosk: KioskKey, version: int) -> None:
    conn.execute(update(RosterKiosk).where(*_kiosk_is(kiosk)).values(sent_version=version))


def record_receipt(engine: Engine, kiosk: KioskKey, msg: rw.Receipt) -> int:
    """The kiosk's applied version and its erasure receipts; the number of erasures it confirmed."""
    now = datetime.now(UTC)
    confirmed = 0
    with engine.begin() as conn:
        row = _orm(conn).scalars(select(RosterKiosk).where(*_kiosk_is(kiosk))).one_or_none()
        if row is None:
            kiosk_synced(conn, kiosk, msg.model_id, now)
            applied = 0
        else:
            applied = row.applied_version
        conn.execute(update(RosterKiosk).where(*_kiosk_is(kiosk)).values(
            applied_version=max(applied, msg.version), last_receipt_at=now))
        for sid, n in sorted(msg.erased.items()):
            k = (RosterErasure.senior_id == sid, RosterErasure.district == kiosk.district,
                 RosterErasure.centre_id == kiosk.centre_id, RosterErasure.kiosk_id == kiosk.kiosk_id)
            e = _orm(conn).scalars(select(RosterErasure).where(*k)).one_or_none()
            if e is None:
                removed = conn.execute(select(RosterSenior.version).where(
                    RosterSenior.senior_id == sid, RosterSenior.removed.is_(True))).scalar_one_or_none()
                if removed is None:
                    continue  # out of scope, or never known: not an erasure the district waits for
                conn.execute(insert(RosterErasure).values(senior_id=sid, district=kiosk.district,
                                                          centre_id=kiosk.centre_id, kiosk_id=kiosk.kiosk_id,
                                                          version=removed, confirmed_at=now, templates_erased=n))
                confirmed += 1
            elif e.confirmed_at is None:
                conn.execute(update(RosterErasure).where(*k).values(confirmed_at=now, templates_erased=n))
                audit(conn, f"kiosk:{kiosk}"[:64], "roster.erasure-receipt", f"{sid}: {n} templates erased")
                confirmed += 1
    return confirmed


def roster_kiosks(conn: Connection) -> list[RosterKiosk]:
    return list(_orm(conn).scalars(select(RosterKiosk).where(RosterKiosk.model_id.is_not(None))))


# -- what a kiosk should receive -----------------------------------------------------------------------------


def _chunks(seq: Sequence[str], n: int = 900) -> Iterable[Sequence[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _states(conn: Connection, seniors: list[RosterSenior], model_id: str, transport: bytes,
            cipher: TemplateCipher) -> dict[str, rw.SeniorState]:
    """Each senior's state as a kiosk on `model_id` should hold it (templates re-sealed for transit)."""
    templates: dict[str, list[rw.WireTemplate]] = {}
    ids = [s.senior_id for s in seniors]
    for part in _chunks(ids):
        q = (select(RosterTemplate.senior_id, RosterTemplate.template_id, RosterTemplate.quality,
                    RosterTemplate.embedding)
             .where(RosterTemplate.senior_id.in_(part), RosterTemplate.model_id == model_id)
             .order_by(RosterTemplate.senior_id, RosterTemplate.created_at, RosterTemplate.template_id))
        for sid, tid, quality, blob in conn.execute(q):
            try:
                vec = open_at_rest(cipher, sid, tid, blob)
            except AtRestError as e:
                log.error("roster template %s does not open (%s): not sent", tid, e)
                continue
            templates.setdefault(sid, []).append(rw.WireTemplate(
                template_id=tid, model_id=model_id, quality=quality,
                sealed=rw.seal_template(transport, sid, model_id, tid, vec)))
    return {s.senior_id: rw.SeniorState(
        name=s.name, birth_date=s.birth_date, hukou=s.hukou, status=s.status, card_no=s.card_no,
        home_centre=s.home_centre, centres=list(s.centres) if s.centres is not None else None,
        templates=templates.get(s.senior_id, [])) for s in seniors}


def _seniors(conn: Connection, ids: Sequence[str]) -> dict[str, RosterSenior]:
    out: dict[str, RosterSenior] = {}
    for part in _chunks(list(ids)):
        q = select(RosterSenior).where(RosterSenior.senior_id.in_(part))
        out.update({s.senior_id: s for s in _orm(conn).scalars(q)})
    return out


def changes_since(conn: Connection, centre_id: str, model_id: str, after: int, upto: int, transport: bytes,
                  cipher: TemplateCipher) -> list[rw.Change]:
    """The changes (after, upto] for a kiosk of `centre_id` on `model_id`, compacted to each senior's latest
    state and ordered by version. A senior out of the kiosk's scope is sent as `absent` only when their scope
    changed in the range (the kiosk may have held them) or they were removed while in its scope."""
    latest = conn.execute(
        select(RosterChange.senior_id, func.max(RosterChange.version)).where(
            RosterChange.version > after, RosterChange.version <= upto).group_by(RosterChange.senior_id)).all()
    if not latest:
        return []
    rescoped = set(conn.execute(select(RosterChange.senior_id).where(
        RosterChange.version > after, RosterChange.version <= upto, RosterChange.kind == "scope")
        .distinct()).scalars())
    seniors = _seniors(conn, [sid for sid, _ in latest])
    keep: list[tuple[int, str, str | None]] = []  # (version, senior_id, why-absent or None for a state)
    for sid, v in latest:
        s = seniors.get(sid)
        if s is None:
            continue
        inside = in_scope(s.centres, centre_id)
        if s.removed:
            if inside or sid in rescoped:
                keep.append((int(v), sid, "removed" if inside else "out_of_scope"))
        elif inside:
            keep.append((int(v), sid, None))
        elif sid in rescoped:
            keep.append((int(v), sid, "out_of_scope"))
    keep.sort()
    states = _states(conn, [seniors[sid] for _, sid, why in keep if why is None], model_id, transport, cipher)
    return [rw.Change(version=v, senior_id=sid, op="absent", why=why) if why is not None
            else rw.Change(version=v, senior_id=sid, op="state", state=states[sid]) for v, sid, why in keep]


def snapshot(conn: Connection, centre_id: str, model_id: str, transport: bytes,
             cipher: TemplateCipher) -> tuple[int, list[rw.Change]]:
    """(the version it is at, every senior the kiosk should hold)."""
    upto = max_version(conn)
    seniors = [s for s in _orm(conn).scalars(select(RosterSenior).where(RosterSenior.removed.is_(False))
                                       .order_by(RosterSenior.version))
               if in_scope(s.centres, centre_id)]
    states = _states(conn, seniors, model_id, transport, cipher)
    return upto, [rw.Change(version=min(s.version, upto) or 1, senior_id=s.senior_id, op="state",
                            state=states[s.senior_id]) for s in seniors]
