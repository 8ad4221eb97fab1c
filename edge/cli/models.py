"""`meal-edge models build|verify`: convert dlib's face-recognition model to ONNX and check it.

build   parse the installed dlib .dat, write models/dlib_face_recognition_resnet_model_v1.onnx and pin
        its sha256 (and the .dat's) in models/manifest.toml. Deterministic: same .dat, same bytes.
verify  check both checksums against the manifest, load the model in onnxruntime, check the model
        contract (input/output names and shapes) and compare its descriptors with dlib's on a few
        synthetic chips (no photos needed). Exit 0 when everything holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.modelbuild import ModelError
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT
from edge.paths import PROJECT_MODELS_DIR

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAIL = 1

#: what `verify` accepts between the two back-ends on its synthetic chips (the issue's parity bar)
MAX_L2 = 0.01
MIN_COSINE = 0.9999


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "models",
        help="build or verify the ONNX face-embedding model (converted from dlib's)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["build", "verify"])
    p.add_argument("--models-dir", type=Path, default=PROJECT_MODELS_DIR, help="default: the repo's models/")
    p.add_argument("--dat", type=Path, default=FACE_RECOGNITION_DAT, help="dlib .dat (default: the installed one)")
    p.add_argument("--no-parity", action="store_true", help="verify: checksums and contract only, skip dlib")
    p.set_defaults(func=run)
    return p


def synthetic_chips(n: int = 4, seed: int = 0) -> np.ndarray:
    """Deterministic face-sized test patterns: smooth gradients plus noise, all pixel values used."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:150, 0:150].astype(np.float32)
    out = np.empty((n, 150, 150, 3), np.uint8)
    for i in range(n):
        base = np.stack(
            [
                127 + 100 * np.sin((xx + 7 * i) / (11 + i)),
                127 + 100 * np.cos((yy - 5 * i) / (13 + i)),
                127 + 90 * np.sin((xx + yy) / (17 + 2 * i)),
            ],
            axis=-1,
        )
        out[i] = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return out


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cosine": float(cos.min()), "max_l2": float(np.linalg.norm(a - b, axis=1).max())}


def cmd_build(args: argparse.Namespace) -> int:
    from edge.modelbuild.manifest import build

    res = build(args.models_dir, args.dat)
    m = res.manifest
    print(f"built {res.onnx_path} ({len(res.bytes):,} bytes)")
    print(f"  source   {args.dat} ({m.source_package} {m.source_version})")
    print(f"  sha256   source {m.source_sha256}")
    print(f"           onnx   {m.onnx_sha256}")
    print(f"  model_id {m.model_id}")
    print(f"manifest {Path(args.models_dir) / 'manifest.toml'}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from edge.recognition.embed.onnx_backend import OnnxEmbedder

    emb = OnnxEmbedder(models_dir=args.models_dir, dat=args.dat, build_missing=False, threads=0)
    m = emb.manifest
    print(f"ok  checksums: {args.dat.name} and {m.file} match {Path(args.models_dir) / 'manifest.toml'}")
    ok = True
    sess = emb._session
    ins, outs = sess.get_inputs(), sess.get_outputs()
    c = m.contract
    got = (ins[0].name, list(ins[0].shape), outs[0].name, list(outs[0].shape))
    want = (c["input_name"], c["input_shape"], c["output_name"], c["output_shape"])
    if len(ins) == 1 and len(outs) == 1 and got == want:
        print(f"ok  contract: {got[0]} {got[1]} -> {got[2]} {got[3]} (onnxruntime {ort.__version__})")
    else:
        ok = False
        print(f"BAD contract: model has {got}, manifest says {want}")
    if not args.no_parity:
        from edge.recognition.embed.dlib_backend import DlibEmbedder

        chips = synthetic_chips()
        r = compare(emb.embed(chips), DlibEmbedder(args.dat).embed(chips))
        good = r["min_cosine"] >= MIN_COSINE and r["max_l2"] <= MAX_L2
        ok &= good
        print(
            f"{'ok ' if good else 'BAD'} parity with dlib on {len(chips)} synthetic chips: "
            f"min cosine {r['min_cosine']:.7f}, max L2 {r['max_l2']:.2e}"
        )
    print("verified" if ok else "FAILED")
    return EXIT_OK if ok else EXIT_FAIL


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            return cmd_build(args)
        return cmd_verify(args)
    except ModelError as e:
        print(f"model error: {e}", file=sys.stderr)
        return EXIT_FAIL
