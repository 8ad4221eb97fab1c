"""`meal-edge demo`: the main job end to end, on a fresh machine, with no camera and no ../shared.

Faces come only from images that ship inside PyPI packages we already depend on:
- Grace Hopper: matplotlib's sample data `grace_hopper.jpg` (US Navy photo, public domain).
- Eileen Collins: scikit-image's `data.astronaut()` (NASA photo, public domain).
The scene is made here: the portraits are pasted onto a plain wall and moved in front of a virtual
kiosk camera, frame by frame, as people walk up to it.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import cv2
import matplotlib
import numpy as np

from edge.config import DEFAULT_CONFIG, load_config
from edge.recognition.detect import load_image, to_rgb

log = logging.getLogger(__name__)

FRAME_W, FRAME_H, FPS = 640, 360, 10.0


def hopper() -> np.ndarray:
    img = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    return np.ascontiguousarray(img[20:520, 40:500])  # head and shoulders, as a kiosk camera sees them


def collins() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(to_rgb(data.astronaut(), bgr=False)[0:330, 60:390])


def _wall(rng: np.random.Generator) -> np.ndarray:
    y = np.linspace(0, 1, FRAME_H, dtype=np.float32)[:, None, None]
    base = np.array([205, 198, 186], np.float32) * (0.9 + 0.1 * y)
    wall = np.broadcast_to(base, (FRAME_H, FRAME_W, 3)).copy()
    wall += rng.normal(0, 3, wall.shape).astype(np.float32)
    return np.clip(wall, 0, 255).astype(np.uint8)


def variant(img: np.ndarray, angle: float = 0.0, gain: float = 1.0, scale: float = 1.0) -> np.ndarray:
    """Another 'photo' of the same person: small rotation, exposure and scale changes."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, person: np.ndarray, cx: float, height: int) -> None:
    h, w = person.shape[:2]
    s = height / h
    p = cv2.resize(person, (max(1, round(w * s)), height), interpolation=cv2.INTER_AREA)
    x0 = round(cx - p.shape[1] / 2)
    y0 = FRAME_H - height
    xa, xb = max(0, x0), min(FRAME_W, x0 + p.shape[1])
    if xb > xa:
        frame[y0 : y0 + height, xa:xb] = p[:, xa - x0 : xb - x0]


@dataclass(frozen=True)
class Visit:
    person: str
    frames: int  # frames standing at the kiosk


def make_scene(folder: Path, visits: list[Visit], seed: int = 0) -> list[tuple[str, float, float]]:
    """Write the scene as numbered JPEG frames; returns (person, start_s, end_s) per visit."""
    rng = np.random.default_rng(seed)
    faces = {"hopper": hopper(), "collins": collins()}
    wall = _wall(rng)
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    spans = []

    def write(frame: np.ndarray) -> None:
        nonlocal i
        noisy = np.clip(frame.astype(np.int16) + rng.integers(-4, 5, frame.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"frame_{i:05d}.jpg"), noisy[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        i += 1

    for v in visits:
        for _ in range(6):  # empty kiosk between people
            write(wall.copy())
        start = i / FPS
        walk = 8
        for k in range(walk + v.frames + walk):
            frame = wall.copy()
            if k < walk:  # walking up from the left
                cx = FRAME_W * (0.1 + 0.4 * k / walk)
            elif k < walk + v.frames:
                cx = FRAME_W * 0.5 + rng.normal(0, 3)
            else:  # leaving to the right
                cx = FRAME_W * (0.5 + 0.45 * (k - walk - v.frames) / walk)
            _paste(frame, faces[v.person], cx, int(FRAME_H * 0.95 + rng.normal(0, 2)))
            write(frame)
        spans.append((v.person, start, i / FPS))
    for _ in range(12):
        write(wall.copy())
    return spans


HOPPER = ("S0001", "Grace Hopper", date(1946, 12, 9))


def _config_text(store: str, broker: str | None) -> str:
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', f'[store]\npath = "{store}"')
    if broker:
        host, _, port = broker.rpartition(":")
        text = text.replace('host = "127.0.0.1"', f'host = "{host or "127.0.0.1"}"').replace(
            "port = 1883", f"port = {int(port)}"
        )
    else:
        text = text.replace("[mqtt]\nenabled = true", "[mqtt]\nenabled = false")
    # The demo's "people" are still photos slid across the frame: exactly what the liveness check is
    # for, so it would (rightly) send every one of them to staff. It stays on in the default config.
    return text.replace(
        "[liveness]\nenabled = true ", "[liveness]\nenabled = false  # demo: the scene is made of photos\n#"
    )


def _show(d: object) -> None:
    from edge.meals.feedback import Decision

    assert isinstance(d, Decision)
    money = ""
    if d.kind == "meal":
        money = f"  price ¥{d.price_fen / 100:.2f}, subsidy ¥{d.subsidy_fen / 100:.2f}, pay ¥{d.payable_fen / 100:.2f}"
    who = d.name or "(not enrolled)"
    print(f"   t={d.source_ts:5.1f}s  {d.kind.upper():7} {who:16}{money}")
    print(f"             kiosk says: \"{d.message}\"   [{', '.join(d.reasons)}]")


def run_demo(keep: Path | None = None, broker: str | None = None) -> int:
    from edge.app import build_parts, make_pipeline, replay_clock
    from edge.meals.rules import Senior
    from edge.recognition.capture import ImageFolderSource
    from edge.recognition.detectors import make_detector
    from enroll.service import ENROL_DETECT_WIDTH, ENROL_UPSAMPLE, Enroller

    logging.basicConfig(level=logging.WARNING)
    work = keep or Path(tempfile.mkdtemp(prefix="meal-edge-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "meal-edge.toml").write_text(_config_text("meal-edge.sqlite", broker), encoding="utf-8")
    cfg = load_config(work / "meal-edge.toml")
    if cfg.store_path.exists():
        cfg.store_path.unlink()
    print(f"meal-edge demo in {work} (config {work / 'meal-edge.toml'})")
    print("Faces: Grace Hopper (matplotlib sample data) is enrolled; Eileen Collins (scikit-image sample")
    print("data) is not. Both photos are public domain and ship inside those PyPI packages.\n")

    parts = build_parts(cfg)
    store, embedder = parts.store, parts.embedder
    print(f"1. Enrolling (embedding back-end: {embedder.name})")
    photos = work / "photos"
    photos.mkdir(exist_ok=True)
    paths = []
    for k, (angle, gain, scale) in enumerate([(0, 1.0, 1.0), (4, 0.85, 0.95), (-5, 1.15, 1.05)]):
        p = photos / f"hopper_{k + 1}.jpg"
        cv2.imwrite(str(p), variant(hopper(), angle, gain, scale)[:, :, ::-1])
        paths.append(p)
    enroller = Enroller(store, make_detector(cfg.detect.detector, ENROL_DETECT_WIDTH, ENROL_UPSAMPLE), embedder)
    sid, name, born = HOPPER
    res = enroller.enrol(Senior(sid, name, born, cfg.centre.district), paths)
    for ph in res.photos:
        print(f"   {ph.label}: {'ok' if ph.accepted else ph.reason}")
    print(f"   {sid} {name}, born {born}, hukou {cfg.centre.district}: {res.templates_total} templates\n")
    if not res.enrolled:
        print("enrolment failed; see the reasons above", file=sys.stderr)
        return 1

    tz = cfg.centre.tz
    scenes = [
        ("Lunch, 11:45", datetime(2026, 11, 30, 11, 45, tzinfo=tz),
         [Visit("hopper", 20), Visit("collins", 20), Visit("hopper", 15)],
         "Hopper checks in, a visitor who is not enrolled walks up, Hopper comes back"),
        ("Dinner, 17:05", datetime(2026, 11, 30, 17, 5, tzinfo=tz), [Visit("hopper", 20)],
         "Hopper comes for dinner: the day's subsidised meal is already used"),
    ]
    for n, (title, start, visits, story) in enumerate(scenes, start=2):
        folder = work / f"scene{n - 1}"
        make_scene(folder, visits, seed=n)
        print(f"{n}. {title}: {story}")
        pipeline = make_pipeline(cfg, parts, replay_clock(start), on_decision=_show)
        t0 = time.perf_counter()
        source = ImageFolderSource(folder, fps=FPS)
        pipeline.run(source.frames())
        st = pipeline.stats
        print(f"   ({st.frames} frames in {time.perf_counter() - t0:.1f} s; {st.decisions} decisions, "
              f"one per presence)\n")

    pending = store.pending()
    print(f"{len(scenes) + 2}. Meal events in the outbox, as they are published (QoS 1) to")
    print(f"   {pending[0].topic if pending else '-'}")
    for ev in pending:
        print(json.dumps(json.loads(ev.payload), ensure_ascii=False, indent=2))
    if broker:
        from edge.delivery.publish import Publisher

        pub = Publisher(store, cfg.mqtt_link, cfg.centre)
        pub.start()
        deadline = time.monotonic() + 15
        while store.pending() and time.monotonic() < deadline:
            time.sleep(0.2)
        pub.stop(timeout=5)
        left = len(store.pending())
        print(f"   published to {broker}: {len(pending) - left} acknowledged, {left} still pending")
    else:
        print("   (not published: run `meal-edge demo --broker 127.0.0.1:1883` to send them to a broker)")
    store.close()
    snaps = sorted(cfg.evidence_dir.glob("*/*.jpg"))
    print(f"\n   audit snapshots kept on the kiosk (never published), one per meal: {len(snaps)}")
    for p in snaps:
        print(f"   {p.relative_to(work)}")
    print(f"\nDone. Files are in {work}" + ("" if keep else " (temporary)"))
    return 0
