"""Face descriptor speed: dlib's compute_face_descriptor vs our ONNX model vs SFace, side by side.

    python bench/bench_embed.py [--threads 2] [--repeat 30] [--variants]

SFace (the default model, issue 10) embeds the same photos' faces aligned its own way (YuNet landmarks,
ArcFace 112x112 chip); its columns give ms/face and the ratios to dlib and to our ONNX dlib.

Real aligned chips of LFW faces (the first 16 faces of bench/parity_onnx.py's sample). Both
back-ends are warmed up, then each configuration is timed `--repeat` times (fewer for dlib at
batch 16, which takes seconds a run) and the median is reported as ms per face:
- batch 1: one chip per call, as the kiosk embeds a tracked face;
- batch 16: sixteen chips per call, as bulk enrolment and re-embedding do (dlib batches 16 itself).
Targets (issue 3): ONNX >= 6x faster per face at batch 1, >= 10x at batch 16.

--variants also times ONNX session/graph options (threads, optimisation level and so the NCHWc
layout, spinning, affine folding) to show why the defaults are what they are.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_flags, machine, median_ms  # noqa: E402
from parity_onnx import LFW, lfw_chips, sample_photos  # noqa: E402

ROUNDS = 3


def sface_chips(n: int = 16) -> np.ndarray:
    """SFace's chips of the first faces of the same LFW sample (YuNet landmarks)."""
    from edge.recognition.detect import load_image
    from edge.recognition.embed.sface import sface_chip
    from edge.recognition.yunet import YuNetDetector

    det = YuNetDetector(640)
    out = []
    for p in sample_photos(LFW, 600):
        rgb = load_image(p)
        faces = det.detect(rgb)
        if faces:
            out.append(sface_chip(rgb, faces[0].landmarks, faces[0].scheme))
        if len(out) == n:
            break
    return np.stack(out)


def samples_ms(fn: Callable[[], object], repeat: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def ort_session(data: bytes, threads: int, level: str = "all", spin: bool = False):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    from edge.recognition.embed.onnx_backend import session_options

    so = session_options(threads, spin=spin)
    so.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(data, so, ["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (config: recognition.threads)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--variants", action="store_true", help="also time ONNX session and graph variants")
    args = ap.parse_args()

    import onnxruntime as ort

    from edge.recognition.embed.dlib_backend import DlibEmbedder
    from edge.recognition.embed.mirror import Mirrored
    from edge.recognition.embed.onnx_backend import OnnxEmbedder
    from edge.recognition.embed.sface import SFaceEmbedder

    chips, _, _ = lfw_chips(600)
    s16 = sface_chips(16)
    sface_emb = SFaceEmbedder(threads=args.threads)
    sface_mirror = Mirrored(sface_emb)
    chips16 = chips[:16]
    chip1 = chips[:1]

    dlib_emb = DlibEmbedder()
    onnx_emb = OnnxEmbedder(threads=args.threads)
    # the kiosk's default ([recognition] mirror): each face and its mirror image, one batch
    mirror_emb = Mirrored(onnx_emb)
    agree = np.abs(dlib_emb.embed(chips16[:2]) - onnx_emb.embed(chips16[:2])).max()

    print(f"machine: {machine()}")
    print(f"CPU flags seen: {cpu_flags()}")
    print(f"onnxruntime {ort.__version__}, intra-op threads {args.threads}, numpy {np.__version__}")
    print(f"chips: {len(chips16)} real LFW faces, 150x150; max |dlib - onnx| on 2 of them: {agree:.1e}\n")

    rows = []
    srows: list[tuple[int, float, float]] = []
    for batch, x in ((1, chip1), (16, chips16)):
        # interleaved rounds, all samples pooled: the machine is shared, so load changes during a
        # run hit both back-ends alike instead of whichever happened to be measured at the time
        rep_d = args.repeat if batch == 1 else max(6, args.repeat // 4)
        ds: list[float] = []
        os_: list[float] = []
        ms: list[float] = []
        ss: list[float] = []
        sm: list[float] = []
        sx = s16[:batch]
        for _ in range(ROUNDS):
            ss += samples_ms(lambda sx=sx: sface_emb.embed(sx), 2 * args.repeat // ROUNDS, warmup=3)
            sm += samples_ms(lambda sx=sx: sface_mirror.embed(sx), 2 * args.repeat // ROUNDS, warmup=3)
            ds += samples_ms(lambda x=x: dlib_emb.embed(x), rep_d // ROUNDS, warmup=1)
            os_ += samples_ms(lambda x=x: onnx_emb.embed(x), 2 * args.repeat // ROUNDS, warmup=3)
            ms += samples_ms(lambda x=x: mirror_emb.embed(x), 2 * args.repeat // ROUNDS, warmup=3)
        med = statistics.median
        rows.append((batch, med(ds) / batch, med(os_) / batch, med(ms) / batch))
        srows.append((batch, med(ss) / batch, med(sm) / batch))
    print(f"{'batch':>5} {'dlib ms/face':>13} {'onnx ms/face':>13} {'speed-up':>9} {'target':>7}", end="")
    print(f" {'mirrored ms/face':>17} {'speed-up':>9}")
    ok = True
    for batch, d, o, m in rows:
        target = 6 if batch == 1 else 10
        ok &= d / o >= target
        print(f"{batch:>5} {d:13.2f} {o:13.2f} {d / o:8.1f}x {target:>6}x {m:17.2f} {d / m:8.1f}x")
    print("PASS" if ok else "FAIL (below target)")
    print("\nSFace (112x112 ArcFace chips of the same photos, onnxruntime fp32 folded), side by side:")
    print(f"{'batch':>5} {'sface ms/face':>14} {'dlib/sface':>11} {'onnx-dlib/sface':>16} {'mirrored sface':>15}"
          f" {'mirrored dlib/mirrored sface':>29}")
    for (batch, d, o, m), (_, sf, sfm) in zip(rows, srows, strict=True):
        print(f"{batch:>5} {sf:14.2f} {d / sf:10.2f}x {o / sf:15.2f}x {sfm:15.2f} {m / sfm:28.2f}x")

    if args.variants:
        from edge.modelbuild.convert import build_model, serialize
        from edge.modelbuild.dlib_dat import parse_file
        from edge.modelbuild.manifest import load_verified
        from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT
        from edge.paths import PROJECT_MODELS_DIR, built_models_dir

        data, _ = load_verified(PROJECT_MODELS_DIR, FACE_RECOGNITION_DAT, onnx_dir=built_models_dir())
        unfolded = serialize(build_model(parse_file(FACE_RECOGNITION_DAT), fold=False))
        xs = {b: x.transpose(0, 3, 1, 2).astype(np.float32) for b, x in ((1, chip1), (16, chips16))}
        print(f"\nONNX variants (ms/face, median of {args.repeat}):")
        print(f"  {'variant':44} {'batch 1':>8} {'batch 16':>9}")
        variants: list[tuple[str, bytes, int, str, bool]] = [
            (f"default: folded, level all, {args.threads} threads, no spin", data, args.threads, "all", False),
            ("1 thread", data, 1, "all", False),
            ("threads 0 (onnxruntime default)", data, 0, "all", False),
            ("spinning threads", data, args.threads, "all", True),
            ("level extended (no NCHWc layout)", data, args.threads, "extended", False),
            ("level basic", data, args.threads, "basic", False),
            ("affine not folded (separate Mul/Add)", unfolded, args.threads, "all", False),
        ]
        for name, model, threads, level, spin in variants:
            s = ort_session(model, threads, level, spin)
            t = []
            for b, x in xs.items():
                t.append(median_ms(lambda s=s, x=x: s.run(None, {"input": x}), args.repeat, warmup=3) / b)
            print(f"  {name:44} {t[0]:8.2f} {t[1]:9.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
