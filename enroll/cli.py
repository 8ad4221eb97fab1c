"""`meal-enroll`: staff enrolment of seniors (add, import, capture, list, show, set-status, remove) and the
staff accounts that log in to the staff screen and `meal-edge confirm` (staff add, list, remove).

Every change is written to the store's audit log as done by the operating-system user who ran the command
(`os:<user>`): whoever can run meal-enroll can already read and write the store file.

Exit codes: 0 everything done, 1 something was rejected or not found, 2 usage or config error.
Staff never see a Python traceback for bad input: every message names the problem and the fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edge.config import Config, ConfigError, load_config
from edge.meals.rules import Senior, age_on, ineligibility
from edge.recognition.refresh import CHECKIN_SOURCE_PREFIX, is_checkin_source
from edge.store.auditlog import AuditEntry, os_user
from enroll.output import print_result, print_table
from enroll.parser import (
    UsageError,
    build_parser,
)

if TYPE_CHECKING:
    from edge.recognition.detect import FaceDetector
    from edge.recognition.embed.base import Embedder
    from edge.store import Store
    from enroll.service import Enroller

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


# -- argument parsing ----------------------------------------------------------------------------


# -- wiring ----------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None)
    if not path:
        raise UsageError("no config: give --config FILE (write one with `meal-edge default-config > FILE`)")
    try:
        return load_config(path)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _open_store(cfg: Config) -> Store:
    from edge.store import Store, StoreError

    path = cfg.store_path
    try:
        return Store(path, keep_photos=cfg.store.keep_photos, key_file=cfg.template_key_path)
    except StoreError as e:
        raise UsageError(f"{e}: check [store] path in {cfg.source_path}") from None


@lru_cache(maxsize=4)
def load_models(
    backend: str,
    threads: int,
    mirror: bool,
    model_dir: Path | None = None,
    model: str = "sface",
    detector: str = "yunet",
) -> tuple[FaceDetector, Embedder]:
    """The kiosk's detector and face model, so templates are aligned as the kiosk's probes are. model_dir: where
    the converted models are built and read (the config's state folder; default: the user's)."""
    # Cached: loading the models takes about a second, and tests call main() many times.
    from edge.recognition.detectors import make_detector
    from edge.recognition.embed.factory import make_embedder
    from enroll.service import ENROL_DETECT_WIDTH, ENROL_UPSAMPLE

    det = make_detector(detector, ENROL_DETECT_WIDTH, ENROL_UPSAMPLE, onnx_dir=model_dir)
    return det, make_embedder(backend, threads, mirror=mirror, model=model, onnx_dir=model_dir)


def make_enroller(cfg: Config, store: Store, actor: str | None = None) -> Enroller:
    """The enroller meal-enroll and the staff screen's enrolment page use: the kiosk's models and calibrated
    lookalike rule; `actor` (default: the operating-system user) is who the audit log names."""
    from edge.recognition.calibration import load_policy
    from edge.recognition.decide import CalibrationError
    from enroll.service import Enroller

    r = cfg.recognition
    detector, embedder = load_models(r.backend, r.threads, r.mirror, cfg.model_dir, r.model, cfg.detect.detector)
    try:
        policy = load_policy(embedder.model_id, cfg.calibration_path)
    except CalibrationError as e:
        # Enrolment still works; only the lookalike warning falls back to hand-set thresholds.
        log.warning("%s; lookalike warnings use default thresholds", e)
        policy = None
    return Enroller(
        store, detector, embedder, keep_photos=cfg.store.keep_photos, decision_policy=policy,
        actor=actor or os_user(), district_upload=cfg.roster.enabled,
    )


# -- commands -------------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace, cfg: Config, out: IO[str]) -> int:
    from enroll.roster import MAX_PHOTOS

    if len(args.photos) > MAX_PHOTOS:
        raise UsageError(f"{len(args.photos)} photos given, at most {MAX_PHOTOS}: keep the best {MAX_PHOTOS}")
    senior = Senior(args.senior_id.strip(), args.name.strip(), args.birth_date, args.hukou.strip())
    store = _open_store(cfg)
    try:
        res = make_enroller(cfg, store).enrol(senior, [Path(p) for p in args.photos], force=args.force)
    finally:
        store.close()
    print_result(res, out)
    if res.enrolled and cfg.roster.enabled:
        print(f"  sent to the district roster with the kiosk's next connection: `meal-enroll show {senior.senior_id}` "
              "says when the district accepts it (or why not)", file=out)
    return EXIT_REJECTED if res.rejected else EXIT_OK


def cmd_import(args: argparse.Namespace, cfg: Config, out: IO[str], err: IO[str]) -> int:
    from enroll.bulk import import_rows
    from enroll.roster import RosterError, read_roster

    if args.photos is not None and not Path(args.photos).is_dir():
        raise UsageError(f"--photos {args.photos}: no such folder")
    try:
        rows, bad = read_roster(args.roster, args.photos)
    except RosterError as e:
        raise UsageError(str(e)) from None
    store = _open_store(cfg)
    try:
        enroller = make_enroller(cfg, store) if rows else None
        t = import_rows(store, enroller, rows, bad, update=args.update, force=args.force, out=out, err=err)
    finally:
        store.close()
    n_rejected_rows = len(bad) + t.refused
    for line in t.rejected:
        print(f"rejected: {line}", file=out)
    summary = (
        f"{Path(args.roster).name}: {t.enrolled + t.partly} enrolled ({t.templates} templates), "
        f"{n_rejected_rows} rejected, {t.warnings} warning(s)"
    )
    if t.partly:
        summary += f"; {t.partly} enrolled with some photos rejected"
    if t.unchanged:
        summary += f"; {t.unchanged} already enrolled, unchanged" + ("" if args.update else " (--update adds photos)")
    print(summary, file=out)
    return EXIT_REJECTED if (n_rejected_rows or t.partly) else EXIT_OK


class _Status:
    """Capture prompts on stderr: on a terminal the waiting prompt is rewritten in place and news (a
    picture kept) stays; elsewhere (logs, tests) every message is its own line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.open_line = False

    def __call__(self, text: str, event: bool) -> None:
        if self.tty:
            print("\r\x1b[K" + text, end="\n" if event else "", file=self.stream, flush=True)
            self.open_line = not event
        else:
            print(text, file=self.stream, flush=True)

    def end(self) -> None:
        if self.open_line:
            print(file=self.stream, flush=True)
            self.open_line = False


def _capture_senior(args: argparse.Namespace, store: Store) -> Senior:
    """The senior to enrol: from the options as `add` builds it, or the enrolled record when none are given."""
    given = [args.name, args.birth_date, args.hukou]
    if all(v is not None for v in given):
        return Senior(args.senior_id.strip(), args.name.strip(), args.birth_date, args.hukou.strip())
    if any(v is not None for v in given):
        raise UsageError("give all of --name, --birth-date and --hukou (or none, for an enrolled senior)")
    existing = store.get_senior(args.senior_id.strip())
    if existing is None:
        raise UsageError(
            f"{args.senior_id.strip()} is not enrolled yet: give --name, --birth-date and --hukou "
            "to enrol a new senior (`meal-enroll list` shows who is enrolled)"
        )
    return existing


def cmd_capture(args: argparse.Namespace, cfg: Config, out: IO[str], err: IO[str]) -> int:
    from edge.recognition.capture import SourceError
    from enroll.capture import DONE, INTERRUPTED, TIMEOUT, capture, open_capture_source
    from enroll.photochecks import EnrolPolicy
    from enroll.service import EnrolResult

    # the enroller's own capacity (the Enroller below uses the default EnrolPolicy too)
    cap = EnrolPolicy().max_templates
    if not 1 <= args.photos <= cap:
        raise UsageError(f"--photos {args.photos}: give 1 to {cap} (a senior has at most {cap} photo templates)")
    store = _open_store(cfg)
    try:
        senior = _capture_senior(args, store)
        enroller = make_enroller(cfg, store)
        # Refuse before the camera is opened what enrolment would refuse anyway (bad details, id taken).
        problems = enroller.check_senior(senior)
        if problems:
            print_result(EnrolResult(senior, problems=problems), out)
            return EXIT_REJECTED
        src = args.source if args.source is not None else cfg.camera.source
        cam = cfg.camera
        try:
            source = open_capture_source(
                src,
                width=cam.width,
                height=cam.height,
                reconnect_seconds=cam.reconnect_seconds,
                queue_size=cam.queue_size,
            )
        except SourceError as e:
            raise UsageError(str(e)) from None
        status = _Status(err)
        status(
            f"{senior.senior_id} {senior.name}: look at the camera ({source.name}); "
            f"keeping {args.photos} picture(s), at most {args.seconds:g} s (Ctrl-C stops)",
            True,
        )
        try:
            result = capture(source, enroller.check_image, args.photos, args.seconds, say=status)
        except SourceError as e:
            raise UsageError(str(e)) from None
        finally:
            status.end()
            source.close()
        n = len(result.kept)
        log.info(
            "capture stopped (%s) after %.1f s: %d frames read, %d checked, %d kept",
            result.stopped, result.elapsed_s, result.frames_read, result.frames_checked, n,
        )
        if result.stopped == INTERRUPTED and not (args.partial and n):
            hint = f" ({n} picture(s) had been kept: --partial enrols them)" if n and not args.partial else ""
            print(f"interrupted: nothing enrolled{hint}", file=err)
            return EXIT_REJECTED
        if not n:
            why = f"no usable picture in {result.elapsed_s:.0f} s: {result.reason()}"
            print_result(EnrolResult(senior, problems=[why]), out)
            return EXIT_REJECTED
        if result.stopped != DONE:
            ended = {TIMEOUT: f"in {args.seconds:g} s", INTERRUPTED: "before Ctrl-C"}.get(
                result.stopped, f"before {source.name} ended"
            )
            print(
                f"only {n} of {args.photos} picture(s) kept {ended}; enrolling them "
                f"(most often: {result.reason()}); capture again later to add more",
                file=err,
            )
        res = enroller.enrol(senior, [k.photo() for k in result.kept], force=args.force)
    finally:
        store.close()
    print_result(res, out)
    if res.enrolled and cfg.roster.enabled:
        print(f"  sent to the district roster with the kiosk's next connection: `meal-enroll show {senior.senior_id}` "
              "says when the district accepts it (or why not)", file=out)
    return EXIT_REJECTED if res.rejected else EXIT_OK


def cmd_list(args: argparse.Namespace, cfg: Config, out: IO[str]) -> int:
    store = _open_store(cfg)
    try:
        seniors = store.list_seniors()
    finally:
        store.close()
    if args.status:
        seniors = [(s, n) for s, n in seniors if s.status == args.status]
    if not seniors:
        print("no seniors enrolled" + (f" with status {args.status}" if args.status else ""), file=out)
        return EXIT_OK
    rows = [["id", "name", "birth date", "hukou", "status", "templates"]]
    rows += [[s.senior_id, s.name, s.birth_date.isoformat(), s.hukou, s.status, str(n)] for s, n in seniors]
    print_table(rows, out)
    print(f"{len(seniors)} senior(s)", file=out)
    return EXIT_OK


def _template_summary(sources: list[str]) -> str:
    n_checkin = sum(is_checkin_source(src) for src in sources)
    if not n_checkin:
        return str(len(sources))
    return f"{len(sources)} ({len(sources) - n_checkin} from photos, {n_checkin} from check-ins)"


def cmd_show(args: argparse.Namespace, cfg: Config, out: IO[str]) -> int:
    store = _open_store(cfg)
    try:
        s = store.get_senior(args.senior_id)
        info = store.template_info(args.senior_id) if s is not None else []
        uploads = store.uploads(args.senior_id) if s is not None else []
    finally:
        store.close()
    if s is None:
        print(f"no senior {args.senior_id}: check the id (`meal-enroll list` shows everyone)", file=out)
        return EXIT_REJECTED
    today = datetime.now(cfg.centre.tz).date()
    why = ineligibility(s, today, cfg.rules, cfg.centre.district)
    if s.status != "active":
        why.insert(0, f"status {s.status}")
    print_table(
        [
            ["id", s.senior_id],
            ["name", s.name],
            ["birth date", f"{s.birth_date} (age {age_on(s.birth_date, today)})"],
            ["hukou", s.hukou],
            ["status", s.status],
            ["templates", _template_summary([src for _, _, _, src, _ in info])],
            ["subsidy today", "eligible" if not why else "not eligible: " + ", ".join(why)],
        ],
        out,
    )
    for tid, model_id, quality, source, has_photo in info:
        model = model_id.split(":")[0]
        if is_checkin_source(source):  # refreshed from a confident check-in ([recognition] refresh_templates)
            event_id = source[len(CHECKIN_SOURCE_PREFIX):]
            print(f"  template {tid}: from the check-in of meal event {event_id} (model {model})", file=out)
            continue
        photo = ", photo kept" if has_photo else ""
        print(f"  template {tid}: from {source} (quality {quality:.2f}, model {model}{photo})", file=out)
    for u in uploads:  # the district roster's answer to this kiosk's enrolments (docs/roster.md)
        when = u.created_at.astimezone(cfg.centre.tz).strftime("%Y-%m-%d %H:%M")
        if u.state == "pending":
            sent = "sent, waiting for the district's answer" if u.sent_at else "not sent yet (the kiosk is offline?)"
            print(f"  district: {u.templates} template(s) enrolled {when}: {sent}", file=out)
        elif u.state == "accepted":
            print(f"  district: {u.templates} template(s) enrolled {when}: accepted (roster version {u.version})",
                  file=out)
        else:
            print(f"  district: {u.templates} template(s) enrolled {when}: REFUSED, removed from this kiosk: "
                  f"{u.reason}", file=out)
    return EXIT_OK


def cmd_set_status(args: argparse.Namespace, cfg: Config, out: IO[str]) -> int:
    from edge.store import StoreError

    store = _open_store(cfg)
    try:
        store.set_status(
            args.senior_id, args.status,
            audit=AuditEntry(os_user(), "status", f"senior:{args.senior_id}", {"status": args.status}),
        )
    except StoreError as e:
        print(f"not changed: {e}: check the id (`meal-enroll list` shows everyone)", file=out)
        return EXIT_REJECTED
    finally:
        store.close()
    print(f"{args.senior_id}: status {args.status}", file=out)
    return EXIT_OK


def _confirm_removal(senior: Senior, n_templates: int, out: IO[str]) -> bool:
    """Ask on the terminal; without one (a script, a pipe) removal needs --yes, said before anything is read."""
    if not sys.stdin.isatty():
        raise UsageError(f"remove {senior.senior_id}: erasing a senior cannot be undone; add --yes to confirm "
                         "(no terminal to ask on)")  # fmt: skip
    print(f"Remove {senior.senior_id} {senior.name} (born {senior.birth_date}, hukou {senior.hukou}) and erase "
          f"their {n_templates} face template(s) for good? [y/N] ", end="", file=out, flush=True)  # fmt: skip
    try:
        answer = input()
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes")


def cmd_remove(args: argparse.Namespace, cfg: Config, out: IO[str]) -> int:
    from edge.store import StoreError

    store = _open_store(cfg)
    try:
        senior = store.get_senior(args.senior_id)
        if senior is None:
            print(
                f"no senior {args.senior_id}: nothing removed (`meal-enroll list` shows everyone)", file=out
            )
            return EXIT_REJECTED
        if not args.yes and not _confirm_removal(senior, store.template_count(senior.senior_id), out):
            print(f"{senior.senior_id}: not removed", file=out)
            return EXIT_REJECTED
        rep = store.remove_senior(args.senior_id, audit=AuditEntry(os_user(), "remove", f"senior:{args.senior_id}"))
    except StoreError as e:
        print(f"not removed: {e}", file=out)
        return EXIT_REJECTED
    finally:
        store.close()
    line = f"removed {rep.senior_id} {rep.name}: {rep.templates_erased} templates erased"
    if rep.photos_erased:
        line += f", {rep.photos_erased} photos erased"
    print(line, file=out)
    if cfg.roster.enabled:
        print(f"  on this kiosk only: the district roster still has {rep.senior_id} and sends them again with "
              f"their next change; to erase them everywhere: `meal-district roster remove {rep.senior_id}` "
              "(docs/roster.md)", file=out)
    return EXIT_OK


def run(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run a parsed command (from `build_parser` or `add_parser`); returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    command = args.command
    try:
        cfg = _load(args)
        if command == "add":
            return cmd_add(args, cfg, out)
        if command == "import":
            return cmd_import(args, cfg, out, err)
        if command == "capture":
            return cmd_capture(args, cfg, out, err)
        if command == "list":
            return cmd_list(args, cfg, out)
        if command == "show":
            return cmd_show(args, cfg, out)
        if command == "set-status":
            return cmd_set_status(args, cfg, out)
        if command == "remove":
            return cmd_remove(args, cfg, out)
        if command == "staff":
            from enroll.staff import cmd_staff

            return cmd_staff(args, cfg, out, _open_store(cfg))
        raise UsageError(f"unknown command {command!r}")
    except UsageError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help / --version
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: what was enrolled so far is saved", file=sys.stderr)
        return EXIT_REJECTED
    except Exception as e:
        # A bug, not bad input; still no traceback for staff unless they ask for it.
        log.debug("unexpected error", exc_info=True)
        print(f"error: unexpected {e.__class__.__name__}: {e} (run with -v for details)", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
