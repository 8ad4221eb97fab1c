"""`meal-enroll import`, row by row: what each roster row did, said on one line of its own, and a tally.

A row whose senior is already enrolled is left alone unless `update`: a re-imported roster must not slip new
photos (maybe someone else's) onto an enrolled senior; with `update` they are checked against the senior's own
templates by the kiosk's rule (enroll/service.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from edge.store import Store, StoreError
from enroll.output import Progress
from enroll.roster import RosterRow, RowError
from enroll.service import Enroller


@dataclass
class Tally:
    enrolled: int = 0
    partly: int = 0
    unchanged: int = 0
    refused: int = 0
    warnings: int = 0
    templates: int = 0
    #: "row N ID NAME: reason" for every refusal, bad rows first
    rejected: list[str] = field(default_factory=list)


def import_rows(
    store: Store,
    enroller: Enroller | None,
    rows: list[RosterRow],
    bad: list[RowError],
    *,
    update: bool,
    force: bool,
    out: IO[str],
    err: IO[str],
) -> Tally:
    """Enrol the good rows; one line per row on `out`, progress on `err`."""
    t = Tally(rejected=[f"row {b.row}{' ' + b.senior_id if b.senior_id else ''}: {b.reason}" for b in bad])
    progress = Progress(len(rows), err)
    for b in bad:
        progress.note(f"row {b.row}: rejected: {b.reason}")
    for row in rows:
        assert enroller is not None
        label = f"row {row.row} {row.senior.senior_id} {row.senior.name}"
        if not update and store.get_senior(row.senior.senior_id) is not None:
            # A re-imported roster must not slip new photos (maybe someone else's) onto an enrolled
            # senior: only with --update, and then checked against the senior's own templates.
            problems = enroller.check_senior(row.senior)
            if problems:
                t.refused += 1
                progress.step(label, "REJECTED")
                print(f"{label}: REJECTED: {'; '.join(problems)}", file=out)
                t.rejected += [f"{label}: {r}" for r in problems]
                continue
            t.unchanged += 1
            n = store.template_count(row.senior.senior_id)
            state = f"already enrolled ({n} templates): not changed; --update adds this row's photos"
            progress.step(label, "unchanged")
            print(f"{label}: {state}", file=out)
            continue
        existed = store.get_senior(row.senior.senior_id) is not None
        res = enroller.enrol(row.senior, list(row.photos), force=force)
        if row.card_no is not None and res.enrolled:
            try:
                store.set_card_no(row.senior.senior_id, row.card_no)
            except StoreError as e:  # the senior is enrolled; only the card number is not kept
                t.rejected.append(f"{label}: meal card not recorded: {e}")
        t.warnings += len(res.all_warnings)
        t.templates += res.templates_added
        added = f"{res.templates_added} template(s) added"
        if existed and res.enrolled:
            added += f" ({res.templates_total} in all)"
        if res.enrolled and not res.rejected:
            t.enrolled += 1
            state = "ok" + (f" ({len(res.all_warnings)} warning(s))" if res.all_warnings else "")
            done = ("updated, " if existed else "enrolled, ") + added
        elif res.enrolled:
            t.partly += 1
            state = f"{'updated' if existed else 'enrolled'}, {len(res.rejected_photos)} photo(s) rejected"
            done = f"{state}, {added}"
        elif res.rejected:
            t.refused += 1
            state = done = "REJECTED"
        else:
            t.unchanged += 1
            state = "unchanged"
            done = f"unchanged: its photos are already enrolled ({res.templates_total} templates)"
        progress.step(label, state)
        if res.rejected:
            reasons = res.problems + [f"{p.label}: {p.reason}" for p in res.rejected_photos]
            t.rejected += [f"{label}: {r}" for r in reasons]
            done += ": " + "; ".join(reasons)
        print(f"{label}: {done}", file=out)
        if res.all_warnings:
            for w in res.all_warnings:
                print(f"warning: {label}: {w}", file=out)
    return t
