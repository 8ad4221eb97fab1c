"""`meal-edge replay`: the daemon's pipeline over a video file or image folder, on a scratch copy of the store
(split out of edge/cli/main.py, which registers it)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
import time
from argparse import Namespace
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.app import build_parts, make_clock_guard, make_pipeline, replay_clock
from edge.cli.errors import EXIT_FAIL, EXIT_OK, UsageError
from edge.cli.text import plural
from edge.config import Config, ConfigError, need_config
from edge.meals.feedback import Decision
from edge.store import StoreError


def _parse_now(text: str | None, cfg: Config) -> datetime:
    if not text:
        return datetime.now(cfg.centre.tz)
    try:
        now = datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"--now {text!r} is not ISO 8601 (e.g. 2026-11-30T11:45:00+08:00)") from e
    return now if now.tzinfo else now.replace(tzinfo=cfg.centre.tz)


def scratch_copy(db: Path, folder: Path) -> Path:
    """A consistent copy of the live store (sqlite backup API), so a replay never touches real events."""
    target = folder / "replay.sqlite"
    if db.exists():
        if not db.is_file():
            raise StoreError(f"{db}: is a folder, not a store file: check [store] path")
        try:
            src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            dst = sqlite3.connect(target)
            try:
                with dst:
                    src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.Error as e:
            raise StoreError(f"{db}: cannot copy the store for the replay: {e} (is it a meal-edge store?)") from e
    return target


def keep_store_path(text: str) -> Path:
    """--keep-store PATH: a new or existing file in an existing folder."""
    p = Path(text)
    if p.is_dir():
        raise UsageError(f"--keep-store {text}: is a folder; give a file name in it, e.g. {p / 'replay.sqlite'}")
    if not p.parent.is_dir():
        raise UsageError(f"--keep-store {text}: folder {p.parent} does not exist; create it first (mkdir {p.parent})")
    return p


def cmd_replay(args: Namespace) -> int:
    from edge.recognition.capture import VideoFileSource, open_source

    cfg = need_config(args.config)
    now0 = _parse_now(args.now, cfg)
    keep = keep_store_path(args.keep_store) if args.keep_store else None
    if not cfg.store_path.exists():
        print(f"error: store {cfg.store_path} not found: enrol seniors first with meal-enroll", file=sys.stderr)
        return EXIT_FAIL
    tmp = tempfile.mkdtemp(prefix="meal-edge-replay-")
    try:
        store_path = scratch_copy(cfg.store_path, Path(tmp))
        if keep is not None:
            shutil.copyfile(store_path, keep)
            store_path = keep
        # a throw-away key: replayed events never leave the scratch store, and a replay must never be a way
        # to have the kiosk's own key sign meals made up from a video
        parts = build_parts(cfg, store_path=store_path, signing_key=Ed25519PrivateKey.generate())
        guard = make_clock_guard(cfg, parts.store, start_check=False)
        if not guard.check(now0).ok:
            newest = guard.newest.isoformat(timespec="seconds") if guard.newest else "?"
            print(
                f"error: replay refused: --now {now0.isoformat(timespec='seconds')} is earlier than the newest meal "
                f"event in the store ({newest}); a replay would record meals dated before meals already recorded. "
                f"Give --now after {newest}.",
                file=sys.stderr,
            )
            parts.store.close()
            return EXIT_FAIL

        def emit(d: Decision) -> None:
            if args.json:
                print(json.dumps(d.to_json(), ensure_ascii=False), flush=True)
            else:
                money = ""
                if d.kind == "meal":
                    money = f" price {d.price_fen} subsidy {d.subsidy_fen} payable {d.payable_fen}"
                print(
                    f"{d.source_ts:7.2f}s {d.kind:8} {d.senior_id or '-':12} {d.meal or '-':7}{money}"
                    f"  [{', '.join(d.reasons)}] {d.message}",
                    flush=True,
                )

        # snapshots beside the scratch store: a replay never writes into the kiosk's real evidence
        pipeline = make_pipeline(
            cfg, parts, replay_clock(now0), on_decision=emit, evidence_dir=store_path.parent / "evidence",
            clock_guard=guard,
        )
        source = open_source(args.source)
        t0 = time.perf_counter()
        pipeline.run(source.frames())
        wall = time.perf_counter() - t0
        st = pipeline.stats
        print(
            f"replay: {plural(st.frames, 'frame')} in {wall:.1f} s ({st.frames / max(wall, 1e-9):.1f} fps), "
            f"{plural(st.decisions, 'decision')} {st.by_kind}, backend {parts.embedder.name}",
            file=sys.stderr,
        )
        if args.stats:
            print(json.dumps({"wall_s": wall, **st.as_dict()}), file=sys.stderr)
        parts.store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # A damaged video must not look like a complete replay: say what is missing and exit 1.
    short = source.shortfall() if isinstance(source, VideoFileSource) else None
    if short:
        print(f"warning: {short}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK
