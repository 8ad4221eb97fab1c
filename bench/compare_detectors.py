"""YuNet vs dlib HOG + shape_predictor_5, and SFace vs dlib, on the shared real faces (issue 10).

    python bench/compare_detectors.py [--part found|speed|pairs|int8|fit-dlib5 ...] [--threads 2]

found   faces found on every LFW photo (5,132) and on rmfrd_chinese (1,358 tight crops, padded by half
        their size on each side first): YuNet at its kiosk threshold, HOG as the kiosk runs it
        (upsample 0) and as the evaluation runs it (upsample 1).
speed   ms per frame at the kiosk's resolution: the sample clip's 640x360 frames, [detect] detect_width
        640: YuNet (onnxruntime 1 and 2 threads, cv2.FaceDetectorYN) vs HOG + shape_predictor_5 per face.
pairs   same/different-person separation on the LFW East Asian and elderly slices (../shared/data/faces/
        slices) after alignment: SFace with YuNet's landmarks, SFace with dlib's 5 points, dlib's
        descriptor. Only photos where both detectors found a face, so all three see the same photos.
int8    onnxruntime's int8 quantisation of the folded SFace (dynamic; static QDQ per channel, calibrated
        on chips of calibration-half identities outside the slices): speed and the pair figures.
fit-dlib5  the DLIB5_TEMPLATE in edge/recognition/align.py (see there).

Nothing here is tuned on what it reports except where said (fit-dlib5 uses identities outside the
slices; YuNet's score threshold was set before these runs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED, cpu_flags, machine, need  # noqa: E402

from edge.lab.faceset import list_photos, split_identities  # noqa: E402
from edge.recognition.align import ARCFACE_112, apply, dlib5_points, umeyama  # noqa: E402
from edge.recognition.detect import Detector, Face, load_image  # noqa: E402
from edge.recognition.embed.sface import SFaceEmbedder, sface_chip  # noqa: E402
from edge.recognition.yunet import YuNetDetector  # noqa: E402

FACES = SHARED / "data" / "faces"
LFW = FACES / "lfw_deepfunneled"
RMFRD = FACES / "rmfrd_chinese"
SLICES = FACES / "slices"


def slice_names() -> dict[str, set[str]]:
    east = set((SLICES / "lfw_east_asian.txt").read_text().split())
    elderly = {line.split(",")[0] for line in (SLICES / "lfw_elderly.csv").read_text().splitlines()[1:] if line}
    return {"lfw_east_asian": east, "lfw_elderly": elderly}


def pad_crop(rgb: np.ndarray) -> np.ndarray:
    """A tight face crop with half its size of black border on each side, so a detector sees a whole head."""
    h, w = rgb.shape[:2]
    return cv2.copyMakeBorder(rgb, h // 2, h // 2, w // 2, w // 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def nearest_centre(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    if not faces:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - cy) ** 2 + ((f.box[1] + f.box[3]) / 2 - cx) ** 2)


def part_found() -> None:
    yun = YuNetDetector(640, runner="onnxruntime")
    hog0, hog1 = Detector(640, upsample=0), Detector(640, upsample=1)
    print("\n## Faces found (photos with at least one face)\n")
    print("| set | photos | YuNet | HOG upsample 0 | HOG upsample 1 |")
    print("|---|---:|---:|---:|---:|")
    for label, root, prep in (("LFW (all)", LFW, None), ("rmfrd_chinese (padded)", RMFRD, pad_crop)):
        paths = [p for ps in list_photos(root).values() for p in ps]
        n = [0, 0, 0]
        missed: list[str] = []
        for p in paths:
            rgb = load_image(p)
            if prep is not None:
                rgb = prep(rgb)
            got = [bool(yun.detect(rgb)), bool(hog0.detect(rgb)), bool(hog1.detect(rgb))]
            n = [a + int(b) for a, b in zip(n, got, strict=True)]
            if not got[0]:
                missed.append(p.name)
        t = len(paths)
        print(f"| {label} | {t:,} | {n[0]:,} ({100 * n[0] / t:.2f}%) | {n[1]:,} ({100 * n[1] / t:.2f}%) "
              f"| {n[2]:,} ({100 * n[2] / t:.2f}%) |")
        if missed:
            print(f"  YuNet missed: {', '.join(missed[:10])}{' ...' if len(missed) > 10 else ''}")


def clip_frames(n: int = 120) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(SHARED / "data" / "video" / "short_hamilton_clip.mp4"))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    return out


def part_speed(threads: int) -> None:
    frames = clip_frames()
    hog = Detector(640, upsample=0)
    runs: dict[str, Callable[[np.ndarray], object]] = {
        "YuNet, onnxruntime 1 thread": YuNetDetector(640, runner="onnxruntime", threads=1).detect,
        f"YuNet, onnxruntime {threads} threads": YuNetDetector(640, runner="onnxruntime", threads=threads).detect,
        "YuNet, cv2.FaceDetectorYN": YuNetDetector(640, runner="opencv").detect,
        "HOG (upsample 0) + shape_predictor_5": hog.detect,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    faces: dict[str, float] = {}
    for name, fn in runs.items():
        faces[name] = float(np.mean([len(fn(f)) for f in frames]))  # type: ignore[arg-type]
    for _ in range(3):  # interleaved rounds: load changes on the shared machine hit every variant alike
        for name, fn in runs.items():
            for f in frames:
                t = time.perf_counter()
                fn(f)
                times[name].append((time.perf_counter() - t) * 1e3)
    h, w = frames[0].shape[:2]
    ref = statistics.median(times["HOG (upsample 0) + shape_predictor_5"])
    print(f"\n## Detection speed: {len(frames)} frames {w}x{h} of the sample clip, detect_width 640\n")
    print("| detector | median ms/frame | vs HOG | faces per frame |")
    print("|---|---:|---:|---:|")
    for name in runs:
        m = statistics.median(times[name])
        print(f"| {name} | {m:.1f} | {ref / m:.2f}x | {faces[name]:.2f} |")


# -- pairs ------------------------------------------------------------------------------------------------


def pair_metrics(emb: np.ndarray, labels: np.ndarray, *, cosine: bool) -> dict[str, float]:
    """Separation of same vs different pairs: ROC AUC, EER, and the false rejects at 0.1% / 1% false accepts."""
    n = len(emb)
    iu = np.triu_indices(n, 1)
    if cosine:
        sim = (emb @ emb.T)[iu]
    else:
        sq = (emb**2).sum(1)
        sim = -np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0))[iu]
    same = labels[iu[0]] == labels[iu[1]]
    pos, neg = np.sort(sim[same]), np.sort(sim[~same])
    # AUC: the probability that a same pair is more similar than a different pair
    ranks = np.searchsorted(neg, pos, side="left") + np.searchsorted(neg, pos, side="right")
    auc = float(ranks.sum() / 2 / (len(pos) * len(neg)))
    out = {"same": float(len(pos)), "diff": float(len(neg)), "auc": auc}
    for far in (0.001, 0.01):
        thr = neg[int(np.ceil((1 - far) * len(neg))) - 1]
        out[f"frr@far{far:g}"] = float(np.mean(pos <= thr))
    # EER: where false rejects equal false accepts
    thrs = np.unique(np.concatenate([pos, neg]))
    frr = np.searchsorted(pos, thrs, side="left") / len(pos)
    far_ = 1 - np.searchsorted(neg, thrs, side="left") / len(neg)
    i = int(np.argmin(np.abs(frr - far_)))
    out["eer"] = float((frr[i] + far_[i]) / 2)
    return out


def slice_photos() -> dict[str, list[tuple[str, Path]]]:
    photos = list_photos(LFW)
    return {s: [(n, p) for n in sorted(names) if n in photos for p in photos[n]] for s, names in slice_names().items()}


def collect(items: list[tuple[str, Path]], with_hog: bool = True) -> dict[str, Any]:
    """Chips of every photo where both detectors find a face: yunet-aligned and dlib5-aligned 112 chips,
    and dlib's 150 chip (with_hog=False: YuNet's chips of every photo where it finds a face)."""
    yun = YuNetDetector(640, runner="onnxruntime")
    hog = Detector(640, upsample=1)
    labels, cy, cd, c150 = [], [], [], []
    skipped = 0
    for name, p in items:
        rgb = load_image(p)
        fy = nearest_centre(yun.detect(rgb), rgb.shape)
        fh = nearest_centre(hog.detect(rgb), rgb.shape) if with_hog else None
        if fy is None or (with_hog and fh is None):
            skipped += 1
            continue
        labels.append(name)
        cy.append(sface_chip(rgb, fy.landmarks, "yunet5"))
        if fh is not None:
            cd.append(sface_chip(rgb, fh.landmarks, "dlib5"))
            c150.append(hog.chips(rgb, [fh])[0])
    out: dict[str, Any] = {"labels": np.array(labels), "yunet": np.stack(cy), "skipped": skipped}
    if with_hog:
        out |= {"dlib5": np.stack(cd), "c150": np.stack(c150)}
    return out


def print_pairs(rows: list[tuple[str, str, dict[str, float]]]) -> None:
    print("| slice | model | same / diff pairs | ROC AUC | EER | FRR @ FAR 0.1% | FRR @ FAR 1% |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for sl, name, m in rows:
        print(f"| {sl} | {name} | {int(m['same']):,} / {int(m['diff']):,} | {m['auc']:.5f} | {100 * m['eer']:.2f}% "
              f"| {100 * m['frr@far0.001']:.2f}% | {100 * m['frr@far0.01']:.2f}% |")


def part_pairs(threads: int) -> dict[str, dict[str, Any]]:
    from edge.recognition.embed.onnx_backend import OnnxEmbedder

    sface = SFaceEmbedder(threads=threads)
    dlib = OnnxEmbedder(threads=threads)
    data = {sl: collect(items) for sl, items in slice_photos().items()}
    print("\n## Pair separation after alignment (same photos for all three; cosine for SFace, L2 for dlib)\n")
    rows = []
    for sl, d in data.items():
        print(f"{sl}: {len(d['labels'])} photos of {len(set(d['labels']))} people "
              f"({d['skipped']} skipped: a detector found no face)")
        rows.append((sl, "SFace, YuNet landmarks", pair_metrics(sface.embed(d["yunet"]), d["labels"], cosine=True)))
        rows.append((sl, "SFace, dlib 5-point", pair_metrics(sface.embed(d["dlib5"]), d["labels"], cosine=True)))
        rows.append((sl, "dlib ResNet (plain)", pair_metrics(dlib.embed(d["c150"]), d["labels"], cosine=False)))
    print()
    print_pairs(rows)
    return data


def calibration_chips(n: int = 200) -> np.ndarray:
    """YuNet-aligned chips of one photo each of calibration-half identities outside the slices."""
    photos = list_photos(LFW)
    skip = set().union(*slice_names().values())
    calib, _ = split_identities(sorted(photos))
    yun = YuNetDetector(640, runner="onnxruntime")
    out = []
    for name in [c for c in calib if c not in skip]:
        rgb = load_image(photos[name][-1])
        f = nearest_centre(yun.detect(rgb), rgb.shape)
        if f is not None:
            out.append(sface_chip(rgb, f.landmarks, "yunet5"))
        if len(out) >= n:
            break
    return np.stack(out)


def quantised_models(folded: Path, calib: np.ndarray, tmp: Path) -> dict[str, bytes]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    quant_pre_process(str(folded), str(pre), skip_symbolic_shape=True)
    dyn = tmp / "dynamic.onnx"
    quantize_dynamic(str(pre), str(dyn), weight_type=QuantType.QInt8, per_channel=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"data": c[None].transpose(0, 3, 1, 2).astype(np.float32)} for c in calib])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    stat = tmp / "static.onnx"
    quantize_static(str(pre), str(stat), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return {"int8 dynamic": dyn.read_bytes(), "int8 static QDQ": stat.read_bytes()}


def part_int8(threads: int, data: dict[str, dict[str, Any]] | None) -> None:
    from edge.modelbuild.sface import load_verified
    from edge.modelbuild.zoo import SFACE
    from edge.paths import PROJECT_MODELS_DIR

    folded = load_verified(PROJECT_MODELS_DIR, SFACE)
    if data is None:
        data = {sl: collect(items) for sl, items in slice_photos().items()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "folded.onnx"
        src.write_bytes(folded)
        variants = {"fp32 folded": folded, **quantised_models(src, calibration_chips(), Path(tmp))}
    embs = {k: SFaceEmbedder(threads=threads, model_bytes=v) for k, v in variants.items()}
    chip = data["lfw_east_asian"]["yunet"][:16]
    times: dict[str, dict[int, list[float]]] = {k: {1: [], 16: []} for k in embs}
    for _ in range(3):
        for k, e in embs.items():
            for b in (1, 16):
                for _ in range(10 if b == 1 else 3):
                    t = time.perf_counter()
                    e.embed(chip[:b])
                    times[k][b].append((time.perf_counter() - t) * 1e3 / b)
    print(f"\n## SFace int8 (onnxruntime.quantization), {threads} threads\n")
    print("| variant | ms/face batch 1 | batch 16 | size MB |")
    print("|---|---:|---:|---:|")
    for k in embs:
        print(f"| {k} | {statistics.median(times[k][1]):.2f} | {statistics.median(times[k][16]):.2f} "
              f"| {len(variants[k]) / 1e6:.1f} |")
    rows = []
    for sl, d in data.items():
        ref = embs["fp32 folded"].embed(d["yunet"])
        for k, e in embs.items():
            v = e.embed(d["yunet"])
            m = pair_metrics(v, d["labels"], cosine=True)
            m["cos_to_fp32"] = float(np.min(np.sum(v * ref, axis=1)))
            rows.append((sl, k, m))
    print()
    print_pairs(rows)
    print("\nlowest cosine to the fp32 embedding of the same chip: "
          + ", ".join(f"{sl} {k} {m['cos_to_fp32']:.4f}" for sl, k, m in rows if k != "fp32 folded"))


def part_fit_dlib5() -> None:
    photos = list_photos(LFW)
    skip = set().union(*slice_names().values())
    calib, _ = split_identities(sorted(photos))
    yun, hog = YuNetDetector(640, runner="onnxruntime"), Detector(640, upsample=1)
    pts = []
    for name in [c for c in calib if c not in skip][:150]:
        rgb = load_image(photos[name][0])
        fy, fh = nearest_centre(yun.detect(rgb), rgb.shape), nearest_centre(hog.detect(rgb), rgb.shape)
        if fy is not None and fh is not None:
            pts.append(apply(umeyama(fy.landmarks, ARCFACE_112), dlib5_points(fh.landmarks)))
    p = np.array(pts)
    print(f"dlib5 template from {len(p)} faces (median):", np.round(np.median(p, 0), 3).tolist())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", action="append", choices=["found", "speed", "pairs", "int8", "fit-dlib5"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for path in (LFW, RMFRD, SLICES):
        need(path, "shared faces")
    parts = args.part or ["found", "speed", "pairs", "int8"]
    print(f"machine: {machine()}; CPU flags seen: {cpu_flags()}")
    data = None
    for part in parts:
        if part == "found":
            part_found()
        elif part == "speed":
            part_speed(args.threads)
        elif part == "pairs":
            data = part_pairs(args.threads)
        elif part == "int8":
            part_int8(args.threads, data)
        else:
            part_fit_dlib5()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
