"""`meal-edge`: the daemon and its tools. Every sub-command takes the same config file."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edge.app import answered, build_parts, make_clock_guard, make_pipeline
from edge.cli.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UsageError
from edge.cli.replay import cmd_replay
from edge.config import DEFAULT_CONFIG, Config, ConfigError, need_config
from edge.meals.awaiting import ConfirmWait
from edge.meals.feedback import Decision
from edge.modelbuild import ModelError
from edge.recognition.capture import SourceError
from edge.recognition.decide import CalibrationError
from edge.recognition.enrolled import unrecognisable
from edge.security.guards import StoreInUse, StoreLock
from edge.security.signing import KeyFileError
from edge.store import Store, StoreError
from edge.store.kioskstate import KioskStateWriter, state_path

if TYPE_CHECKING:
    from edge.screens.display import Display

log = logging.getLogger("edge")
#: extension modules `run` loads its models with: imported shielded from the stop signal (edge.cli.stopping)
NATIVE_MODULES = ("numpy", "cv2", "onnxruntime", "onnx", "dlib")



def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# -- run -----------------------------------------------------------------------------------------
def should_look(idle: bool, now: float, last_looked: float, idle_fps: float) -> bool:
    """Every frame while someone is in view; at most `idle_fps` a second while nobody is (HOG on every
    frame of an empty room would keep a core busy all day; a newcomer is still seen within 1/idle_fps s)."""
    return not idle or idle_fps <= 0 or now - last_looked >= 1.0 / idle_fps


#: no frame from the camera for this long: the kiosk screen says it is out of order
CAMERA_LOST_S = 5.0


def run_feedback(
    display: Display | None, waiter: ConfirmWait | None = None, state: KioskStateWriter | None = None
) -> Callable[[Decision], None]:
    """What `run` does with each decision: the log line and stdout, and the senior screen when it is on
    (edge/screens/display.py; its publish() never raises into the pipeline); a confirmation is waited on
    (`waiter`), so staff's answer comes back to the senior."""

    def show(d: Decision) -> None:
        if display is not None:  # first: the senior is waiting for it
            display.publish(d)
        if waiter is not None and d.kind == "confirm" and d.confirmation_id is not None and d.senior_id:
            waiter.watch(d.confirmation_id, d.senior_id)
        if state is not None:  # today's unknown faces and refusals, for the staff screen
            state.seen(d.kind, d.decided_at.date(), d.decided_at)
        # stdout goes to the journal: senior ids only, never a name (the message names the senior too)
        why = f" ({', '.join(d.reasons)})" if d.reasons else ""
        print(f"[{d.decided_at:%H:%M:%S}] {d.kind.upper():8} {d.senior_id or '-'} {d.meal or ''}{why}", flush=True)

    return show


def cmd_run(args: argparse.Namespace) -> int:
    cfg = need_config(args.config)
    # a stop asked for while the models load (systemctl stop during start) ends the run cleanly, lock released
    stop = threading.Event()

    def _early_stop(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d while starting: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)
    # one daemon per store, before the camera or the broker is touched: a second `run` would fight the first
    # over the MQTT client id, the camera and the sequence numbers
    try:
        lock = StoreLock(cfg.store_path).acquire()
    except StoreInUse as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        return _run_locked(cfg, stop)
    finally:
        lock.release()


def _run_locked(cfg: Config, stop: threading.Event) -> int:
    from edge.cli.keys import kiosk_key
    from edge.cli.roster import roster_link
    from edge.cli.sdnotify import notify, watchdog_interval
    from edge.cli.stopping import Stopper, StopRequested
    from edge.delivery.publish import Publisher
    from edge.recognition.capture import open_camera
    from edge.recognition.frameshare import FrameShareWriter
    from edge.screens.display import Display

    signing_key = kiosk_key(cfg)  # KeyFileError (exit 1, says `meal-edge keys init`) before anything starts
    stopper = Stopper()
    stopper.install()  # before anything slow: a SIGTERM during start-up stops it too
    if stop.is_set():  # a signal that came while the store lock was taken
        return EXIT_OK
    log.info("starting: loading the models (SIGTERM stops at any time)")
    try:
        source = open_camera(
            cfg.camera.source,
            width=cfg.camera.width,
            height=cfg.camera.height,
            reconnect_seconds=cfg.camera.reconnect_seconds,
            queue_size=cfg.camera.queue_size,
        )
        stopper.on_stop(source.request_stop)
        # the models' extension modules are imported where a signal cannot raise inside them (it would abort)
        stopper.preload(NATIVE_MODULES)
        parts = build_parts(cfg, signing_key=signing_key)
        stopper.started()
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except StopRequested:
        log.warning("stopped while starting")
        return EXIT_OK
    except StoreError as e:  # e.g. the store failed its integrity check, or its template key is missing
        source.close()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    tz = cfg.centre.tz
    publisher = Publisher(parts.store, cfg.mqtt_link, cfg.centre) if cfg.mqtt.enabled else None

    # the senior screen (and its voice); a port in use is logged and check-in goes on without it
    display = Display.from_config(cfg) if cfg.display.enabled else None
    waiter = ConfirmWait(parts.store, cfg.display.confirm_wait_seconds)
    kiosk_state = KioskStateWriter(state_path(cfg.store_path))
    show = run_feedback(display, waiter, kiosk_state)
    share = FrameShareWriter(cfg.store_path.parent)  # the staff screen's enrolment page borrows the camera's view
    pipeline = make_pipeline(
        cfg,
        parts,
        lambda _f: datetime.now(tz),
        on_decision=show,
        on_event=publisher.wake if publisher else None,
        clock_guard=make_clock_guard(cfg, parts.store, on_change=publisher.set_clock if publisher else None),
        on_hint=display.hint if display else None,
    )
    roster = roster_link(cfg, parts, pipeline.holder, publisher, signing_key)
    assert pipeline.clock_guard is not None
    # checked (and logged, and put in the retained status) now, not only when the first senior arrives
    start_clock = pipeline.clock_guard.check(datetime.now(tz))
    if not start_clock.ok:
        print(f"error: {start_clock.explain(pipeline.clock_guard.max_skew)}", file=sys.stderr)
    if pipeline.evidence is not None:
        pipeline.evidence.purge(datetime.now(tz).date())  # also when no meal has been served for a while
    if display:
        display.start()
    if publisher:
        publisher.start()
    if roster:
        roster.start()
    notify("READY=1\nSTATUS=checking in")
    ping = watchdog_interval()
    last_ping = time.monotonic()
    log.info("meal-edge running: centre %s kiosk %s", cfg.centre.id, cfg.centre.kiosk_id)
    stopper.step = "checking in"
    camera: str | None = None
    try:
        last_looked = 0.0
        last_frame = time.monotonic()
        while not stopper.requested:
            if publisher and source.state != camera:  # the retained status says whether the camera works
                camera = source.state
                publisher.set_camera(camera)
            frame = source.next_frame(timeout=0.5)
            if frame is not None:
                last_frame = time.monotonic()
            share.offer(frame.image if frame is not None else None)
            if frame is not None and should_look(pipeline.idle, time.monotonic(), last_looked, cfg.camera.idle_fps):
                last_looked = time.monotonic()
                pipeline.process(frame)
            camera_ok = time.monotonic() - last_frame < CAMERA_LOST_S
            if display:
                display.camera(camera_ok)
            kiosk_state.camera(camera_ok, datetime.now(tz), publisher.connected if publisher else None)
            for answer in waiter.poll():  # staff answered a confirmation on the staff screen (or did not in time)
                show(answered(cfg, parts.store, answer, datetime.now(tz)))
            # pinged from the main loop, camera or not: the watchdog guards against a hung loop,
            # while a missing camera is logged and retried without restarting the service
            if ping is not None and time.monotonic() - last_ping >= ping:
                notify("WATCHDOG=1")
                last_ping = time.monotonic()
    finally:
        # every step bounded, together well inside the Stopper's deadline
        notify("STOPPING=1")
        stopper.step = "closing the camera"
        source.close(timeout=1.0)
        share.close()
        stopper.step = "finishing decisions"
        pipeline.finish(None)
        if display:
            stopper.step = "stopping the senior screen"
            display.stop()
        if roster:
            stopper.step = "stopping the roster link"
            roster.stop(timeout=1.0)
        if publisher:
            stopper.step = "stopping the MQTT publisher"
            publisher.stop(timeout=2.0)
        stopper.step = "closing the store"
        parts.store.close()
    return EXIT_OK


# -- small commands --------------------------------------------------------------------------------
def cmd_events(args: argparse.Namespace) -> int:
    from edge.delivery.outbox import events_command
    from edge.meals.confirm import open_store

    cfg = need_config(args.config)
    store = open_store(cfg)  # a read-only look: never creates an empty store where the config points wrong
    try:
        return events_command(store, pending_only=args.pending, as_json=args.json)
    finally:
        store.close()


def cmd_evidence(args: argparse.Namespace) -> int:
    """Audit snapshots of meals (by event_id; a staff-confirmed meal's is its confirmation's) or of
    confirmations (by number): their paths, or copies under --out (a file for one id, a folder for several).
    Every id that has none is named; the others are still copied."""
    from edge.store.evidence import EvidenceKeeper, confirmation_name

    cfg = need_config(args.config)
    keeper = EvidenceKeeper(cfg.evidence_dir, cfg.evidence.retention_days)
    store = Store(cfg.store_path, key_file=cfg.template_key_path) if cfg.store_path.exists() else None
    missing: list[str] = []
    try:
        for ident in args.ids:
            by_confirmation = ident.isdigit()
            name = confirmation_name(int(ident)) if by_confirmation else ident
            found = keeper.find(name)
            if found is None and not by_confirmation and store is not None:
                c = store.confirmation_for_event(name)
                if c is not None:
                    found = keeper.find(confirmation_name(c.id))
            if found is None:
                missing.append(ident)
                continue
            if args.out is None:
                print(found)
                continue
            out = Path(args.out)
            try:
                if len(args.ids) > 1:
                    out.mkdir(parents=True, exist_ok=True)
                    out = out / f"{name}.jpg"
                shutil.copyfile(found, out)
            except OSError as e:
                where = "a folder (created if missing)" if len(args.ids) > 1 else "a file in an existing folder"
                print(f"error: cannot copy {found} to {out}: {e.strerror or e}; --out must be {where}",
                      file=sys.stderr)  # fmt: skip
                return EXIT_FAIL
            print(out)
    finally:
        if store is not None:
            store.close()
    for ident in missing:
        print(
            f"no audit snapshot for {ident!r} in {cfg.evidence_dir}: not a meal event_id or confirmation of this "
            f"kiosk, taken while [evidence] was off, or older than {cfg.evidence.retention_days} days and deleted",
            file=sys.stderr,
        )
    return EXIT_FAIL if missing else EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    """The file, then what `run` would trip over at start: thresholds for the configured model, and seniors
    the store holds only for another model (they would be turned away)."""
    from edge.recognition.calibration import load_policy
    from edge.recognition.embed.mirror import reference_model_id

    path = args.file or args.config  # `check-config FILE`, or the --config / $MEAL_EDGE_CONFIG every command takes
    cfg = need_config(path)
    print(f"{path}: OK (centre {cfg.centre.id}, kiosk {cfg.centre.kiosk_id}, {len(cfg.rules.meals)} meals)")
    model_id = reference_model_id(cfg.recognition.mirror, cfg.recognition.model)
    try:
        policy = load_policy(model_id, cfg.calibration_path)
    except CalibrationError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    print(f"recognition: model {model_id}, thresholds {policy.source}")
    from edge.recognition.refresh import scale_warning

    if w := scale_warning(cfg.recognition.refresh_templates, cfg.recognition.model):
        print(f"warning: {w}", file=sys.stderr)
    from edge.delivery.publish import link_check

    how, warnings = link_check(cfg.mqtt_link)
    print(f"mqtt: {cfg.mqtt.host}:{cfg.mqtt.port}, {how}")
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if cfg.roster.enabled:
        from edge.delivery.rostersync import problem

        why = problem(cfg)
        print("roster: syncs with the district roster" if why is None else f"WARNING: roster: does NOT sync: {why}",
              file=sys.stdout if why is None else sys.stderr)
    if cfg.store_path.exists():
        try:
            with Store(cfg.store_path, key_file=cfg.template_key_path) as store:
                others = store.seniors_only_in_other_models(model_id)
        except StoreError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAIL
        for other, n in others.items():
            print(f"warning: {cfg.store_path}: {unrecognisable(n, other, model_id)}", file=sys.stderr)
        if others:
            return EXIT_FAIL
    return EXIT_OK


def cmd_default_config(_args: argparse.Namespace) -> int:
    sys.stdout.write(DEFAULT_CONFIG)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.cli.demo import run_demo

    keep = Path(args.keep).resolve() if args.keep else None
    if keep is not None and keep.exists() and not keep.is_dir():
        raise UsageError(f"--keep {args.keep}: is a file; give a folder (it is created if missing)")
    return run_demo(keep=keep, broker=args.broker)


# -- parser ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meal-edge", description="Face-recognition meal check-in daemon")
    p.add_argument(
        "--config", "-c", metavar="FILE", default=os.environ.get("MEAL_EDGE_CONFIG"),
        help="TOML config, before or after the command (default: $MEAL_EDGE_CONFIG; see `meal-edge default-config`)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "run",
        help="run the check-in daemon on the configured camera",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("replay", help="run the same pipeline over a video file or image folder")
    s.add_argument("source", help="video file or folder of images (played in name order)")
    s.add_argument("--now", help="pin the clock: ISO 8601 time of the first frame (default: now)")
    s.add_argument("--json", action="store_true", help="one JSON object per decision")
    s.add_argument("--stats", action="store_true", help="print per-stage timings (JSON) to stderr")
    s.add_argument("--keep-store", metavar="PATH", help="keep the replay's scratch store at PATH")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("demo", help="enrol a few people, replay a short scene, show decisions and events")
    s.add_argument("--keep", metavar="DIR", help="keep the demo's files (config, store, scene) in DIR")
    s.add_argument("--broker", metavar="HOST:PORT", help="also publish the events to this MQTT broker")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("events", help="list local meal events and their delivery state")
    s.add_argument("--pending", action="store_true", help="only events not yet acknowledged by the broker")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_events)

    s = sub.add_parser("evidence", help="find the audit snapshot (JPEG) of a meal or a staff confirmation")
    s.add_argument("ids", nargs="+", metavar="ID", help="a meal's event_id, or a confirmation id (number)")
    s.add_argument(
        "--out", metavar="PATH", help="copy instead of printing paths: to the file PATH for one ID, into the folder "
        "PATH (created) for several"
    )
    s.set_defaults(func=cmd_evidence)

    s = sub.add_parser("check-config", help="validate a config file; names the bad line")
    s.add_argument("file", nargs="?", help="the config to check (default: --config or $MEAL_EDGE_CONFIG)")
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser("default-config", help="print a complete, commented config")
    s.set_defaults(func=cmd_default_config)

    # the tools register their own sub-commands (their heavy imports are deferred to when they run)
    from edge.cli import audit as audit_cli
    from edge.cli import checkin, keys, staff_screen, void
    from edge.cli import models as models_cli
    from edge.cli import roster as roster_cli
    from edge.lab import calibrate, dupcheck, evaluate, liveness_eval
    from edge.meals import confirm

    for tool in (keys, confirm, checkin, void, staff_screen, audit_cli, roster_cli, evaluate, calibrate, models_cli,
                 liveness_eval, dupcheck):
        tool.add_parser(sub)
    every_command_takes_config(sub)
    return p


def every_command_takes_config(sub: argparse._SubParsersAction) -> None:
    """--config also after the sub-command (SUPPRESS keeps one given before it), and `COMMAND --help` starts
    with what the command does (its one-line help, when it has no longer description)."""
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, p in sub.choices.items():
        if "--config" not in p._option_string_actions:
            p.add_argument("--config", "-c", metavar="FILE", default=argparse.SUPPRESS,
                           help="the TOML config (also accepted before the command)")  # fmt: skip
        if not p.description and helps.get(name):
            p.description = f"{helps[name][0].upper()}{helps[name][1:]}."


RUN_DESCRIPTION = """\
Run the check-in daemon: read the configured camera, recognise enrolled seniors, apply the meal and
subsidy rules, record each meal event in the local store and publish it over MQTT, and serve the
senior's screen ([display]). A missing camera, an unreachable broker or a display port in use is
logged and retried; check-in goes on. The retained MQTT status says online/offline and the camera's
state (ok/missing).

Stops within 5 s on SIGTERM or Ctrl-C, in every state (systemd: `systemctl stop meal-edge`); events
not yet sent stay in the store and are sent at the next start.
Exit codes: 0 stopped cleanly, 1 camera, model or store error at start, 2 config error.
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"config error:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceError, ModelError, CalibrationError, StoreError, KeyFileError) as e:
        # problems an operator can fix: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:
        # a file or folder problem no command foresaw (full disk, permissions): still no traceback
        log.debug("file error", exc_info=True)
        print(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e} (run with -vv for details)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
