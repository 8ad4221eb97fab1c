"""Labelled face folders (one sub-folder per person) -> cached embeddings, for `eval` and `calibrate`.

Each photo is detected with the kiosk's HOG detector (upsampled once, since LFW faces are ~100 px),
the face nearest the photo centre is taken (LFW photos are centred on their subject; other faces in
the background are bystanders), aligned, and embedded in batches. Photos where no face is found are
recorded as such and left out of the evaluation (a kiosk would not see a face either: no decision).

Embeddings are cached per (model_id, detector settings) in one .npz file, keyed by absolute path,
mtime and size, so a second run over the same folder costs only the file listing.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.recognition.detect import Face, FaceDetector, ImageError, load_image
from edge.recognition.detectors import make_detector
from edge.recognition.embed.base import EMBEDDING_DIM, Embedder
from edge.recognition.embed.mirror import reference_model_id

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_CACHE_DIR = Path("~/.cache/meal-edge").expanduser()

#: salt of the identity split; changing it invalidates every held-out figure ever reported
SPLIT_SALT = "meal-edge-identity-split-v1"


@dataclass(frozen=True)
class FaceSet:
    """Photos with a found face, grouped by identity (sorted names, photos sorted by file name)."""

    root: Path
    model_id: str
    identities: tuple[str, ...]
    #: identity -> float32 [n_i, 128] raw descriptors, in file-name order
    embeddings: dict[str, np.ndarray]
    #: identity -> file names (same order as embeddings)
    files: dict[str, tuple[str, ...]]
    n_photos: int
    n_no_face: int

    def subset(self, names: set[str] | frozenset[str]) -> FaceSet:
        ids = tuple(n for n in self.identities if n in names)
        return FaceSet(
            self.root,
            self.model_id,
            ids,
            {n: self.embeddings[n] for n in ids},
            {n: self.files[n] for n in ids},
            sum(len(self.files[n]) for n in ids),
            0,
        )


def list_photos(root: Path) -> dict[str, list[Path]]:
    """identity -> sorted photo paths; a clear error for a folder that is not one-folder-per-person."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder of face folders (expected FACES_DIR/<person>/<photo>.jpg)")
    out: dict[str, list[Path]] = {}
    # LFW ships as lfw_deepfunneled/<Person>/: accept the parent folder too.
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if len(subdirs) == 1 and not any(f.suffix.lower() in IMAGE_SUFFIXES for f in subdirs[0].iterdir()):
        subdirs = sorted(p for p in subdirs[0].iterdir() if p.is_dir())
    for d in subdirs:
        photos = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            out[d.name] = photos
    if not out:
        raise FileNotFoundError(f"{root}: no <person>/<photo> images found")
    return out


def in_holdout(identity: str) -> bool:
    """Fixed, seed-independent split of identities: about half are held out from calibration forever."""
    return hashlib.sha256(f"{SPLIT_SALT}:{identity}".encode()).digest()[0] >= 128


def split_identities(names: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(calibration identities, held-out identities)."""
    calib = [n for n in names if not in_holdout(n)]
    held = [n for n in names if in_holdout(n)]
    return calib, held


def cache_path(cache_dir: Path, model_id: str, detect_width: int, upsample: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_id)
    return cache_dir / f"embeddings-{safe}-w{detect_width}-u{upsample}.npz"


class EmbeddingCache:
    """(abs path, mtime_ns, size) -> descriptor, or 'no face found'. Saved atomically."""

    def __init__(self, path: Path, model_id: str) -> None:
        self.path = path
        self.model_id = model_id
        self._data: dict[tuple[str, int, int], np.ndarray | None] = {}
        self._dirty = 0
        if path.exists():
            try:
                z = np.load(path, allow_pickle=False)
                if str(z["model_id"]) != model_id:
                    log.warning("%s: cache for another model (%s); ignoring it", path, z["model_id"])
                else:
                    for p, m, s, ok, e in zip(z["paths"], z["mtimes"], z["sizes"], z["ok"], z["emb"], strict=True):
                        self._data[(str(p), int(m), int(s))] = e.astype(np.float32) if ok else None
            except (OSError, ValueError, KeyError) as e:
                log.warning("%s: unreadable embedding cache (%s); starting afresh", path, e)

    @staticmethod
    def key(photo: Path) -> tuple[str, int, int]:
        st = photo.stat()
        return (str(photo.resolve()), st.st_mtime_ns, st.st_size)

    def get(self, key: tuple[str, int, int]) -> tuple[bool, np.ndarray | None]:
        if key in self._data:
            return True, self._data[key]
        return False, None

    def put(self, key: tuple[str, int, int], emb: np.ndarray | None) -> None:
        self._data[key] = emb
        self._dirty += 1

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self._data)
        emb = np.zeros((len(keys), EMBEDDING_DIM), np.float32)
        ok = np.zeros(len(keys), bool)
        for i, k in enumerate(keys):
            v = self._data[k]
            if v is not None:
                emb[i] = v
                ok[i] = True
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            model_id=np.array(self.model_id),
            paths=np.array([k[0] for k in keys]),
            mtimes=np.array([k[1] for k in keys], np.int64),
            sizes=np.array([k[2] for k in keys], np.int64),
            ok=ok,
            emb=emb,
        )
        os.replace(tmp, self.path)
        self._dirty = 0


def _nearest_centre(faces: list[Face], shape: tuple[int, ...]) -> int:
    h, w = shape[:2]
    cy, cx = h / 2, w / 2

    def dist(f: Face) -> float:
        t, r, b, left = f.box
        return float(((t + b) / 2 - cy) ** 2 + ((left + r) / 2 - cx) ** 2)

    return min(range(len(faces)), key=lambda i: dist(faces[i]))


def default_embedder(mirror: bool = True, model: str = "dlib") -> Embedder:
    """dlib: the fastest verified back-end (ONNX, else dlib: same function, same model_id); or SFace."""
    from edge.recognition.embed.factory import make_embedder

    return make_embedder("auto", mirror=mirror, model=model)


def load_faceset(
    root: Path,
    embedder: Embedder | None = None,
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    identities: list[str] | None = None,
    detect_width: int = 640,
    upsample: int = 1,
    batch: int = 32,
    mirror: bool = True,
    progress: Callable[[int, int], None] | None = None,
    model: str = "dlib",
    detector_kind: str = "hog",
) -> FaceSet:
    """Embed every photo under root (or only `identities`), reusing and extending the cache."""
    photos = list_photos(root)
    if identities is not None:
        missing = [n for n in identities if n not in photos]
        if missing:
            raise KeyError(f"{root}: no photos for {missing[:5]}")
        photos = {n: photos[n] for n in identities}
    # Both back-ends share the reference model's id, so a cached run never needs to load a network.
    if embedder is not None:
        model_id = embedder.model_id
    else:
        model_id = reference_model_id(mirror, model)
    # the cache key names the detector too when it is not dlib's HOG (older caches keep their names)
    tag = "" if detector_kind == "hog" else f"-{detector_kind}"
    cache = (
        EmbeddingCache(cache_path(cache_dir, model_id + tag, detect_width, upsample), model_id)
        if cache_dir is not None
        else None
    )
    detector: FaceDetector | None = None
    results: dict[tuple[str, int, int], np.ndarray | None] = {}
    todo: list[tuple[tuple[str, int, int], Path]] = []
    for plist in photos.values():
        for p in plist:
            k = EmbeddingCache.key(p)
            hit, v = cache.get(k) if cache else (False, None)
            if hit:
                results[k] = v
            else:
                todo.append((k, p))
    if todo:
        log.info("embedding %d photos not in the cache (%d cached)", len(todo), len(results))
    t0 = time.monotonic()
    pending_keys: list[tuple[str, int, int]] = []
    pending_chips: list[np.ndarray] = []

    net: list[Embedder] = [embedder] if embedder is not None else []

    def embedder_() -> Embedder:
        if not net:
            net.append(default_embedder(mirror, model))
            if net[0].model_id != model_id:
                raise ValueError(f"embedder model {net[0].model_id!r} is not the reference {model_id!r}")
        return net[0]

    def flush() -> None:
        if not pending_chips:
            return
        embedder_()
        embs = net[0].embed(np.stack(pending_chips))
        for k, e in zip(pending_keys, embs, strict=True):
            results[k] = e
            if cache:
                cache.put(k, e)
        pending_keys.clear()
        pending_chips.clear()

    for i, (k, p) in enumerate(todo):
        if detector is None:
            detector = make_detector(detector_kind, detect_width, upsample)
        try:
            rgb = load_image(p)
        except ImageError as e:
            log.warning("%s", e)
            results[k] = None
            continue
        faces = detector.detect(rgb)
        if not faces:
            results[k] = None
            if cache:
                cache.put(k, None)
        else:
            f = faces[_nearest_centre(faces, rgb.shape)]
            pending_keys.append(k)
            pending_chips.append(embedder_().chips(rgb, [f])[0])
        if len(pending_chips) >= batch:
            flush()
        if (i + 1) % 256 == 0:
            flush()
            if cache:
                cache.save()
            rate = (i + 1) / max(time.monotonic() - t0, 1e-9)
            log.info("embedded %d/%d photos (%.1f/s)", i + 1, len(todo), rate)
        if progress:
            progress(i + 1, len(todo))
    flush()
    if cache:
        cache.save()

    embeddings: dict[str, np.ndarray] = {}
    files: dict[str, tuple[str, ...]] = {}
    n_photos = n_no_face = 0
    for name, plist in photos.items():
        vecs, names = [], []
        for p in plist:
            n_photos += 1
            v = results[EmbeddingCache.key(p)]
            if v is None:
                n_no_face += 1
                continue
            vecs.append(v)
            names.append(p.name)
        if vecs:
            embeddings[name] = np.stack(vecs).astype(np.float32)
            files[name] = tuple(names)
    ids = tuple(sorted(embeddings))
    return FaceSet(Path(root), model_id, ids, embeddings, files, n_photos, n_no_face)


def main() -> None:  # pragma: no cover - background cache warm-up: python -m edge.lab.faceset FACES_DIR [CACHE]

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cache = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_CACHE_DIR
    fs = load_faceset(Path(sys.argv[1]), cache_dir=cache)
    print(f"{len(fs.identities)} identities, {fs.n_photos} photos, {fs.n_no_face} without a detected face")


def restrict(fs: FaceSet, split: str) -> FaceSet:
    if split == "all":
        return fs
    keep = {n for n in fs.identities if in_holdout(n) == (split == "holdout")}
    return fs.subset(keep)


def faceset_from_args(args: argparse.Namespace) -> FaceSet:
    """The face set named by add_common's arguments, embedded as the kiosk would (mirror or not)."""
    fs = load_faceset(
        args.faces_dir,
        cache_dir=None if args.no_cache else args.cache,
        mirror=args.mirror,
        model=args.model,
        detector_kind=args.detector or ("yunet" if args.model == "sface" else "hog"),
    )
    return restrict(fs, args.split)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("faces_dir", metavar="FACES_DIR", type=Path, help="one sub-folder of photos per person")
    p.add_argument("--photos-per-person", "-k", type=int, default=3, help="enrolment photos per senior")
    p.add_argument(
        "--split",
        choices=("all", "calibration", "holdout"),
        default="all",
        help="identities to use: all, the calibration half, or the held-out half (fixed hash of the name)",
    )
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument(
        "--model",
        choices=("dlib", "sface"),
        default="dlib",
        help="face model: dlib (default here, as the earlier figures) or sface ([recognition] model)",
    )
    p.add_argument(
        "--detector",
        choices=("hog", "yunet"),
        default=None,
        help="face detector ([detect] detector); default: yunet for sface, hog for dlib",
    )
    p.add_argument(
        "--no-mirror",
        dest="mirror",
        action="store_false",
        help="plain descriptors, as the kiosk computes them with [recognition] mirror = false",
    )


if __name__ == "__main__":  # pragma: no cover
    main()
