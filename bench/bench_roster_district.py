"""The district roster delivered to a fresh kiosk by the real district (`meal-district serve` with the roster
link, PostgreSQL or SQLite), over a real Mosquitto, against the same roster written locally (issue 13).

    python bench/bench_roster_district.py [--seniors 5000] [--per 3] [--changes 5] [--pg URL | --sqlite] [--json]

bench/bench_roster.py measures the kiosk side against a scripted district; this one puts the real district in
front of the same kiosk (its store, its roster link on the event publisher's connection, the gallery the daemon
matches against, reloaded in the background on each change), so its numbers include the district's work:
reading the roster, opening every template sealed at rest, sealing it for transit, signing 500-change batches.

- time to first service: from the fresh kiosk's start to its gallery holding every senior.
  Reference: the same roster written into a store locally (add_senior + add_templates) plus one gallery load.
- one change: from the district's commit of a new senior's templates (an accepted enrolment upload) to the
  kiosk's gallery matching them; median of --changes. Reference: one gallery reload of the same store.
- the parts: commit -> the change applied in the kiosk's store (district + link + store), then the gallery.
- district snapshot: the time the district takes to build the kiosk's full snapshot (no network).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_roster import kiosk_config, local_reference, start_broker, wait  # noqa: E402
from common import machine  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from roster_scripted import embedding  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from district.config import DEFAULT_CONFIG as DISTRICT_CONFIG  # noqa: E402
from district.config import parse_config as parse_district_config  # noqa: E402
from district.db.engine import open_engine  # noqa: E402
from district.roster import book  # noqa: E402
from district.roster.csvfile import DistrictRow  # noqa: E402
from district.roster.keys import load_keys as district_keys  # noqa: E402
from district.roster.keys import roster_init, transport_key_path  # noqa: E402
from district.serve import Server  # noqa: E402
from district.store import register_kiosk  # noqa: E402
from district.validate import KioskKey  # noqa: E402
from edge.config import parse_config  # noqa: E402
from edge.delivery import rosterwire as rw  # noqa: E402
from edge.delivery.publish import Publisher  # noqa: E402
from edge.delivery.rostersync import RosterLink, load_keys  # noqa: E402
from edge.recognition.decide import default_policy  # noqa: E402
from edge.recognition.enrolled import GalleryHolder  # noqa: E402
from edge.security.signing import public_key_text  # noqa: E402
from edge.store import Store  # noqa: E402

MODEL = "dlib_face_recognition_resnet_model_v1+mirror"
ENROLLER = KioskKey("xuhui", "centre-001", "kiosk-enrol")


def upload(sid: str, vecs: list, tkey: bytes) -> rw.TemplateUpload:  # type: ignore[type-arg]
    ts = []
    for v in vecs:
        tid = rw.new_msg_id()
        ts.append(rw.WireTemplate(template_id=tid, model_id=MODEL, quality=0.9,
                                  sealed=rw.seal_template(tkey, sid, MODEL, tid, v)))
    return rw.TemplateUpload(msg_id=rw.new_msg_id(), district=ENROLLER.district, centre_id=ENROLLER.centre_id,
                             kiosk_id=ENROLLER.kiosk_id, sent_at=datetime.now(UTC), senior_id=sid, templates=ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seniors", type=int, default=5000)
    ap.add_argument("--per", type=int, default=3)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--pg", default=os.environ.get("MEAL_DISTRICT_TEST_PG",
                                                  "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--sqlite", action="store_true", help="the district on SQLite instead of PostgreSQL")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-roster-district-"))
    broker, port = start_broker(tmp)
    admin = None
    dbname = f"bench_roster_{os.getpid()}"
    if args.sqlite:
        db = f"sqlite:///{tmp / 'district.sqlite'}"
    else:
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{dbname}"'))
        db = make_url(args.pg).set(database=dbname).render_as_string(hide_password=False)
    keys_dir = tmp / "keys"
    dtext = (DISTRICT_CONFIG.replace("port = 1883", f"port = {port}")
             .replace('url = ""                      # empty: SQLite', f'url = "{db}"  # empty: SQLite')
             .replace('listen = "127.0.0.1:9464"', 'listen = ""')
             .replace("[roster]\nenabled = false", "[roster]\nenabled = true")
             .replace('signing_key_file = ""', f'signing_key_file = "{keys_dir / "sign.key"}"')
             .replace('transport_key_file = ""', f'transport_key_file = "{keys_dir / "transport.key"}"')
             .replace('template_key_file = ""', f'template_key_file = "{keys_dir / "template.key"}"'))
    (tmp / "district.toml").write_text(dtext)
    dcfg = parse_district_config(dtext, tmp / "district.toml")
    roster_init(dcfg)
    dkeys = district_keys(dcfg)
    engine = open_engine(dcfg.database_url)
    server = None
    try:
        embs = {i: [embedding(i * 10 + k) for k in range(args.per)] for i in range(args.seniors)}
        t0 = time.perf_counter()
        book.import_rows(engine, [DistrictRow(i + 2, f"S{i:05d}", f"老人{i}", date(1946, 3, 1), "本区", "active",
                                              "centre-001", f"C{i}", None) for i in range(args.seniors)], "bench")
        for i in range(args.seniors):
            up = upload(f"S{i:05d}", embs[i], dkeys.transport)
            assert book.accept_upload(engine, ENROLLER, up, dkeys.transport, dkeys.cipher).accepted
        setup = time.perf_counter() - t0
        with engine.connect() as conn:
            t0 = time.perf_counter()
            _, snap = book.snapshot(conn, "centre-001", MODEL, dkeys.transport, dkeys.cipher)
            snapshot_s = time.perf_counter() - t0
        assert len(snap) == args.seniors
        server = Server(dcfg, engine, client_id="bench-district")
        import threading

        threading.Thread(target=server.run, daemon=True).start()
        assert server.roster is not None and server.roster.connected.wait(10)

        # -- reference: the same roster written locally, then one gallery load --
        ref_write, ref_load, ref_reload = local_reference(tmp / "ref" / "store.sqlite", embs)

        # -- a fresh kiosk started against the real district --
        kdir = tmp / "kiosk"
        kdir.mkdir()
        ktext = kiosk_config(port, public_key_text(dkeys.signing.public_key()), str(transport_key_path(dcfg)))
        (kdir / "meal-edge.toml").write_text(ktext)
        cfg = parse_config(ktext, kdir / "meal-edge.toml")
        key = Ed25519PrivateKey.generate()
        register_kiosk(engine, "xuhui", cfg.centre.id, cfg.centre.kiosk_id, public_key_text(key.public_key()), "bench")
        with engine.connect() as conn:
            top = book.max_version(conn)
        t0 = time.perf_counter()
        store = Store(cfg.store_path)
        holder = GalleryHolder(store, default_policy(MODEL))
        pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.2)
        link = RosterLink(store, cfg, load_keys(cfg), key, MODEL, on_change=holder.poke)
        link.attach(pub)
        pub.start()
        link.start()
        wait(lambda: store.roster_state().version == top, 300)
        first_applied = time.perf_counter() - t0
        wait(lambda: len(holder.current.gallery) == args.seniors, 300)
        first_service = time.perf_counter() - t0

        # -- one change: a new senior's accepted enrolment, district commit -> the kiosk's gallery --
        one: list[float] = []
        applied: list[float] = []
        for n in range(args.changes):
            sid = f"N{n:03d}"
            book.import_rows(engine, [DistrictRow(2, sid, f"新{n}", date(1946, 3, 1), "本区", "active", "centre-001",
                                                  None, None)], "bench")
            up = upload(sid, [embedding(10_000_000 + n * 10 + k) for k in range(args.per)], dkeys.transport)
            wait(lambda sid=sid: store.get_senior(sid) is not None, 30)  # the record first: time the templates
            t0 = time.perf_counter()
            v = book.accept_upload(engine, ENROLLER, up, dkeys.transport, dkeys.cipher)  # the commit
            assert v.accepted and v.version is not None
            wait(lambda v=v.version: store.roster_state().version >= v, 60)
            applied.append(time.perf_counter() - t0)
            wait(lambda sid=sid: sid in holder.current.gallery.senior_ids, 60)
            one.append(time.perf_counter() - t0)
            time.sleep(0.3)
        one_change = statistics.median(one)
        link.stop()
        pub.stop(timeout=1.0)
        store.close()
    finally:
        if server is not None:
            server.stop()
            time.sleep(0.5)
        engine.dispose()
        if admin is not None:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            admin.dispose()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    ref_first = ref_write + ref_load
    res = {
        "machine": machine(), "district_db": "sqlite" if args.sqlite else "postgresql",
        "seniors": args.seniors, "templates_per_senior": args.per, "district_setup_s": round(setup, 1),
        "district_snapshot_s": round(snapshot_s, 2),
        "first_applied_s": round(first_applied, 2),
        "first_service_s": round(first_service, 2),
        "ref_local_write_and_load_s": round(ref_first, 2),
        "ratio_first_service": round(first_service / ref_first, 2),
        "one_change_median_s": round(one_change, 3),
        "one_change_all_s": [round(x, 3) for x in one],
        "one_change_applied_median_s": round(statistics.median(applied), 3),
        "ref_gallery_reload_s": round(ref_reload, 3),
        "ratio_one_change": round(one_change / ref_reload, 2),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(res["machine"])
        print(f"real district ({res['district_db']}), roster of {args.seniors} seniors x {args.per} templates to a "
              f"fresh kiosk:")
        print(f"  district builds the kiosk's snapshot in {snapshot_s:.2f} s")
        print(f"  the kiosk's store holds the whole roster after {first_applied:.1f} s (district + link + store)")
        print(f"  time to first service {first_service:.1f} s (limit 60 s); reference local write + load "
              f"{ref_first:.1f} s; ratio {res['ratio_first_service']}")
        print(f"  one change, district commit -> kiosk gallery: median {one_change * 1e3:.0f} ms over {len(one)} "
              f"(limit 1 s); reference gallery reload {ref_reload * 1e3:.0f} ms; ratio {res['ratio_one_change']}")
        print(f"  of which district commit -> applied in the kiosk's store: median "
              f"{res['one_change_applied_median_s'] * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
