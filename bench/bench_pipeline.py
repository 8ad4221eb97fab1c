"""End-to-end benchmark: `replay` of the sample clip vs face_recognition's own per-frame loop, in one run.

    python bench/bench_pipeline.py [--clip PATH] [--backend auto|onnx|dlib] [--json]

The reference is face_recognition's video example: every frame, detect every face
(`face_locations`, HOG, upsample 1) and encode it (`face_encodings`), then `compare_faces` with the
default tolerance 0.6 against the two known faces (Lin-Manuel Miranda, Alex Lacamoire), first match
wins. It is installed for the benchmark only: `pip install --no-deps face_recognition` (it would
otherwise pull the source-only dlib).

Ours enrols the same two photos with `meal-enroll`'s service and runs the real pipeline
(`edge.app.Pipeline`, the code `replay` runs) over the same frames. "Decisions" are compared per
presence: the reference's per-frame names are grouped into presences with our tracker and each
presence takes its majority name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, cpu_flags, machine, need  # noqa: E402

from edge.config import DEFAULT_CONFIG, parse_config  # noqa: E402
from edge.recognition.capture import Frame, VideoFileSource  # noqa: E402
from edge.recognition.track import Tracker  # noqa: E402

KNOWN = {"lmm": "lin-manuel-miranda.png", "alex": "alex-lacamoire.png"}


def decode_all(clip: Path) -> tuple[list[Frame], float]:
    t = time.perf_counter()
    frames = list(VideoFileSource(clip).frames())
    return frames, time.perf_counter() - t


def reference(frames: list[Frame], samples: Path) -> dict[str, Any]:
    import face_recognition

    known = [face_recognition.face_encodings(face_recognition.load_image_file(samples / f))[0] for f in KNOWN.values()]
    names = list(KNOWN)
    t_det = t_enc = t_cmp = 0.0
    per_frame: list[list[tuple[tuple[int, int, int, int], str]]] = []
    t0 = time.perf_counter()
    for f in frames:
        t = time.perf_counter()
        locs = face_recognition.face_locations(f.image)
        t_det += time.perf_counter() - t
        t = time.perf_counter()
        encs = face_recognition.face_encodings(f.image, locs)
        t_enc += time.perf_counter() - t
        t = time.perf_counter()
        row = []
        for loc, e in zip(locs, encs, strict=True):
            m = face_recognition.compare_faces(known, e, tolerance=0.6)
            row.append((loc, next((n for n, ok in zip(names, m, strict=True) if ok), "unknown")))
        t_cmp += time.perf_counter() - t
        per_frame.append(row)
    wall = time.perf_counter() - t0
    return {"wall": wall, "detect": t_det, "embed": t_enc, "match": t_cmp, "per_frame": per_frame}


def presences(per_frame: list[list[tuple[tuple[int, int, int, int], str]]], min_frames: int) -> list[dict[str, Any]]:
    """Group per-frame labelled boxes into presences with the same tracker the pipeline uses."""
    from edge.recognition.detect import Face

    tr = Tracker(max_missing=8)
    labels: dict[int, list[str]] = {}
    spans: dict[int, list[int]] = {}
    for i, row in enumerate(per_frame):
        faces = [Face(box, np.zeros((5, 2), np.float32), 1.0) for box, _ in row]
        assigned, _ = tr.update(faces, i, i / 30)
        for t, obs in assigned:
            name = next(n for b, n in row if b == obs.face.box)
            labels.setdefault(t.id, []).append(name)
            spans.setdefault(t.id, []).append(i)
    out = []
    for tid, ls in labels.items():
        if len(ls) < min_frames:
            continue
        name, _ = Counter(ls).most_common(1)[0]
        out.append({"name": name, "first": spans[tid][0], "last": spans[tid][-1], "frames": len(ls)})
    return sorted(out, key=lambda p: p["first"])


#: OpenCV Zoo's SFace demo calls a pair the same person at cosine >= 0.363: 1.129 on the unit sphere
SFACE_TOLERANCE = 1.129


def ours(frames: list[Frame], samples: Path, backend: str, policy_name: str, model: str = "sface") -> dict[str, Any]:
    from edge.app import Parts, make_pipeline
    from edge.meals.rules import Senior
    from edge.recognition.calibration import load_policy
    from edge.recognition.decide import REFERENCE_TOLERANCE, tolerance_policy
    from edge.recognition.detectors import make_detector
    from edge.recognition.embed.factory import make_embedder
    from edge.store import Store
    from enroll.service import ENROL_DETECT_WIDTH, ENROL_UPSAMPLE, Enroller

    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    text = DEFAULT_CONFIG.replace('[store]\npath = ""', f'[store]\npath = "{tmp / "s.sqlite"}"')
    if model == "dlib":  # the earlier kiosk: dlib's model on HOG + shape_predictor_5
        text = text.replace('model = "sface"', 'model = "dlib"').replace('detector = "yunet"', 'detector = "hog"')
    cfg = parse_config(text)
    store = Store(cfg.store_path)
    r, d = cfg.recognition, cfg.detect
    embedder = make_embedder(backend, r.threads, mirror=r.mirror, model=r.model)
    enroller = Enroller(store, make_detector(d.detector, ENROL_DETECT_WIDTH, ENROL_UPSAMPLE), embedder)
    for sid, photo in KNOWN.items():
        res = enroller.enrol(Senior(sid, sid, datetime(1950, 1, 1).date(), cfg.centre.district), [samples / photo])
        assert res.enrolled, res
    tolerance = SFACE_TOLERANCE if r.model == "sface" else REFERENCE_TOLERANCE
    if policy_name == "calibrated":
        policy = load_policy(embedder.model_id)
    else:
        policy = tolerance_policy(embedder.model_id, tolerance)
    detector = make_detector(d.detector, d.detect_width, d.upsample)
    noon = datetime(2026, 11, 30, 11, 0, tzinfo=cfg.centre.tz)
    parts = Parts(store, embedder, policy, detector)
    p = make_pipeline(cfg, parts, lambda f: noon)
    t0 = time.perf_counter()
    decisions = p.run(frames)
    wall = time.perf_counter() - t0
    st = p.stats
    return {
        "wall": wall,
        "detect": st.t_detect,
        "embed": st.t_embed,
        "match": st.t_match,
        "embedded": st.embedded,
        "backend": embedder.name,
        "model": embedder.model_id,
        "policy": policy.source,
        "decisions": [
            {"name": d.senior_id or d.kind, "kind": d.kind, "ts": round(d.source_ts, 2), "frames": d.frames}
            for d in decisions
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=SHARED / "data/video/short_hamilton_clip.mp4")
    ap.add_argument("--samples", type=Path, default=SHARED / "data/samples")
    ap.add_argument("--backend", default="auto", choices=["auto", "onnx", "dlib"])
    ap.add_argument("--model", default="sface", choices=["sface", "dlib"], help="sface + YuNet (default) or dlib + HOG")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    need(args.clip, "sample clip")
    need(args.samples, "face_recognition sample photos")
    try:
        import face_recognition  # noqa: F401
    except ImportError:
        sys.exit("face_recognition is the reference: pip install --no-deps face_recognition")
    cv2.setNumThreads(1)

    frames, t_decode = decode_all(args.clip)
    n = len(frames)
    mine = ours(frames, args.samples, args.backend, "calibrated", args.model)
    same_rule = ours(frames, args.samples, args.backend, "tolerance", args.model)
    ref = reference(frames, args.samples)
    ref_presences = presences(ref["per_frame"], min_frames=3)

    fps_ours = n / (mine["wall"] + t_decode)
    fps_ref = n / (ref["wall"] + t_decode)
    result = {
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "frames": n,
        "decode_ms_per_frame": 1e3 * t_decode / n,
        "ours": {k: v for k, v in mine.items() if k != "wall"} | {"fps": fps_ours},
        "ours_tolerance_policy": {"decisions": same_rule["decisions"], "fps": n / (same_rule["wall"] + t_decode)},
        "reference": {"fps": fps_ref, "presences": ref_presences},
        "ratio_fps": fps_ours / fps_ref,
    }
    for side, r in (("ours", mine), ("reference", ref)):
        result[side]["ms_per_frame"] = {s: 1e3 * r[s] / n for s in ("detect", "embed", "match")}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    print(f"machine: {result['machine']}; CPU flags: {result['cpu_flags']}; {n} frames of {args.clip.name}")
    print(f"decode: {result['decode_ms_per_frame']:.1f} ms/frame (both sides)")
    print(f"{'stage (ms/frame)':18} {'ours':>8} {'reference':>10}")
    for s in ("detect", "embed", "match"):
        print(f"{s:18} {result['ours']['ms_per_frame'][s]:8.1f} {result['reference']['ms_per_frame'][s]:10.1f}")
    print(f"{'end-to-end fps':18} {fps_ours:8.1f} {fps_ref:10.1f}   ratio {result['ratio_fps']:.1f}x")
    print(f"ours ({mine['backend']} back-end, {mine['embedded']} faces embedded, liveness on), decisions with")
    for label, run in (
        (f"the calibrated policy ({mine['policy']})", mine),
        ("the reference's own rule (one fixed threshold ~ tolerance 0.6)", same_rule),
    ):
        print(f" {label}:")
        for d in run["decisions"]:
            print(f"  t={d['ts']:6.2f}s {d['kind']:8} {d['name']} ({d['frames']} frames fused)")
    print("reference presences (majority of per-frame compare_faces names):")
    for p in ref_presences:
        print(f"  frames {p['first']:3}-{p['last']:3} ({p['frames']:3} with a face) {p['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
