"""The district roster delivered to a kiosk over the roster link (issue 13), against doing the same locally.

    python bench/bench_roster.py [--seniors 5000] [--per 3] [--changes 5] [--json]

A real Mosquitto on a free loopback port, a real kiosk store (SQLite, templates sealed at rest), the kiosk's
real roster link (edge/delivery/rostersync.py) on the event publisher's connection, and the gallery the
daemon matches against (edge.recognition.enrolled.GalleryHolder,
reloaded in the background on each change). The district is
the scripted one of the tests (tests/roster_scripted.py, built only on edge.delivery.rosterwire): it answers
the kiosk's sync request with batches of 500 changes, as `meal-district serve` does.

Measured:
- time to first service: from the fresh kiosk's start to its gallery holding every senior (sync request,
  N x P templates opened from transit, re-sealed at rest, committed batch by batch, the gallery rebuilt).
  Reference: the same roster written into the store locally (Store.add_senior + add_templates per senior, what
  `meal-enroll import` does without the photos) plus one gallery load.
- one change: from the district's commit of a new senior (P templates) to the kiosk's gallery matching it;
  median of --changes. Reference: one gallery reload of the same store (the part of it the kiosk cannot skip).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import machine  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from roster_scripted import ScriptedDistrict, embedding  # noqa: E402

from edge.config import DEFAULT_CONFIG, parse_config  # noqa: E402
from edge.delivery.publish import Publisher  # noqa: E402
from edge.delivery.rostersync import RosterLink, load_keys  # noqa: E402
from edge.meals.rules import Senior  # noqa: E402
from edge.recognition.decide import default_policy  # noqa: E402
from edge.recognition.enrolled import GalleryHolder  # noqa: E402
from edge.security.signing import public_key_text  # noqa: E402
from edge.store import Store, TemplateIn  # noqa: E402

MODEL = "dlib_face_recognition_resnet_model_v1+mirror"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        sys.exit("mosquitto not found (apt-get install mosquitto)")
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
                    "max_queued_messages 100000\n")
    p = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return p, port
        except OSError:
            time.sleep(0.02)
    p.kill()
    sys.exit("mosquitto did not start")


def wait(cond: object, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():  # type: ignore[operator]
            return time.perf_counter() - t0
        time.sleep(0.002)
    raise SystemExit(f"timed out after {timeout} s")


def local_reference(path: Path, embs: dict[int, list[np.ndarray]]) -> tuple[float, float, float]:
    """The reference: the same roster written into a local store, then one gallery load and one reload (s each)."""
    ref = Store(path)
    t0 = time.perf_counter()
    for i, vecs in embs.items():
        sid = f"S{i:05d}"
        ref.add_senior(Senior(sid, f"老人{i}", date(1946, 3, 1), "本区"))
        ref.add_templates(sid, [TemplateIn(e, MODEL, 0.9, "district") for e in vecs])
    ref_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_holder = GalleryHolder(ref, default_policy(MODEL))
    ref_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_holder.reload()
    ref_reload = time.perf_counter() - t0
    ref.close()
    return ref_write, ref_load, ref_reload


def kiosk_config(port: int, district_key: str, transport_key_file: str) -> str:
    """A fresh kiosk's config text: the broker on `port`, a store beside it, the roster link on."""
    return (DEFAULT_CONFIG.replace("port = 1883", f"port = {port}")
            .replace('[store]\npath = ""', '[store]\npath = "store.sqlite"')
            .replace("over the [mqtt] connection.\nenabled = false", "over the [mqtt] connection.\nenabled = true")
            .replace('district_key = ""', f'district_key = "{district_key}"')
            .replace('transport_key_file = ""', f'transport_key_file = "{transport_key_file}"'))


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seniors", type=int, default=5000)
    ap.add_argument("--per", type=int, default=3)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-roster-"))
    broker, port = start_broker(tmp)
    d = ScriptedDistrict(model_id=MODEL)
    embs = {i: [embedding(i * 10 + k) for k in range(args.per)] for i in range(args.seniors)}
    for i in range(args.seniors):
        d.put(f"S{i:05d}", name=f"老人{i}", embeddings=embs[i], card_no=f"C{i}")
    d.serve("127.0.0.1", port, chunk=500)
    try:
        # -- reference: the same roster written locally, then one gallery load --
        ref_write, ref_load, ref_reload = local_reference(tmp / "ref" / "store.sqlite", embs)

        # -- ours: a fresh kiosk started against the district --
        kdir = tmp / "kiosk"
        kdir.mkdir()
        (kdir / "roster.key").write_text(d.tkey.hex())
        os.chmod(kdir / "roster.key", 0o600)
        text = kiosk_config(port, public_key_text(d.key.public_key()), "roster.key")
        (kdir / "meal-edge.toml").write_text(text)
        cfg = parse_config(text, kdir / "meal-edge.toml")
        key = Ed25519PrivateKey.generate()
        d.kiosk_keys[(cfg.centre.id, cfg.centre.kiosk_id)] = key.public_key()
        t0 = time.perf_counter()
        store = Store(cfg.store_path)
        holder = GalleryHolder(store, default_policy(MODEL))
        pub = Publisher(store, cfg.mqtt_link, cfg.centre, poll_interval=0.2)
        link = RosterLink(store, cfg, load_keys(cfg), key, MODEL, on_change=holder.poke)
        link.attach(pub)
        pub.start()
        link.start()
        applied = wait(lambda: store.roster_state().version == d.version, 300)
        first_service = wait(lambda: len(holder.current.gallery) == args.seniors, 300) + applied
        first_service = time.perf_counter() - t0

        # -- one change: a new senior with P templates, district commit to the kiosk's gallery --
        one: list[float] = []
        for n in range(args.changes):
            sid = f"N{n:03d}"
            before = d.version
            t0 = time.perf_counter()
            d.put(sid, embeddings=[embedding(10_000_000 + n * 10 + k) for k in range(args.per)])
            d.push(cfg.centre.id, cfg.centre.kiosk_id, before)
            wait(lambda sid=sid: sid in holder.current.gallery.senior_ids, 60)
            one.append(time.perf_counter() - t0)
            time.sleep(0.3)
        one_change = statistics.median(one)
        link.stop()
        pub.stop(timeout=1.0)
        store.close()
    finally:
        d.stop()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    ref_first = ref_write + ref_load
    res = {
        "machine": machine(),
        "seniors": args.seniors, "templates_per_senior": args.per,
        "first_service_s": round(first_service, 2),
        "ref_local_write_and_load_s": round(ref_first, 2),
        "ratio_first_service": round(first_service / ref_first, 2),
        "one_change_median_s": round(one_change, 3),
        "one_change_all_s": [round(x, 3) for x in one],
        "ref_gallery_reload_s": round(ref_reload, 3),
        "ratio_one_change": round(one_change / ref_reload, 2),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['machine']}")
        print(f"roster of {args.seniors} seniors x {args.per} templates to a fresh kiosk:")
        print(f"  time to first service {first_service:.1f} s (limit 60 s); reference local write + load "
              f"{ref_first:.1f} s; ratio {res['ratio_first_service']}")
        print(f"  one change, district commit -> kiosk gallery: median {one_change * 1e3:.0f} ms over {len(one)} "
              f"(limit 1 s); reference gallery reload {ref_reload * 1e3:.0f} ms; ratio {res['ratio_one_change']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
