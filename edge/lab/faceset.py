"""Labelled face folders (one sub-folder per person) -> cached embeddings, for `eval` and `calibrate`.

Each photo is detected and embedded as the chosen model runs at the kiosk (edge.lab.encoders: dlib with
HOG upsampled once, since LFW faces are ~100 px; SFace with YuNet). The face nearest the photo centre is
taken (LFW photos are centred on their subject; other faces in the background are bystanders). Photos
where no face is found are recorded as such and left out of the evaluation (a kiosk would not see a face
either: no decision).

Embeddings are cached per (model_id, detector settings, padding) in one .npz file (edge.lab.embedding),
keyed by absolute path, mtime and size, so a second run over the same folder costs only the file listing.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import mirror_by_default
from edge.lab.embedding import EmbeddingCache, cache_file, embed_photos
from edge.lab.encoders import MODELS, KioskEncoder, PhotoEncoder, make_encoder
from edge.lab.kioskframes import PAD_MODES
from edge.recognition.detect import readable_suffixes
from edge.recognition.embed.base import Embedder

log = logging.getLogger(__name__)

#: what OpenCV (which decodes every photo) can read in this installation
IMAGE_SUFFIXES = readable_suffixes()
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
    """The cache file of the dlib encoder with these HOG settings."""
    return cache_file(cache_dir, model_id, f"w{detect_width}-u{upsample}")


def load_faceset(
    root: Path,
    embedder: Embedder | None = None,
    *,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    identities: list[str] | None = None,
    batch: int = 32,
    mirror: bool = True,
    model: str = "sface",
    padding: float = 0.0,
    encoder: PhotoEncoder | None = None,
    detector: str | None = None,
    pad_mode: str = "constant",
) -> FaceSet:
    """Embed every photo under root (or only `identities`) with `model`'s detector and embedder (or
    `encoder`), reusing and extending the cache. `padding`: border added to each side first, as a
    fraction of the picture (tight face crops), black or the edge replicated (`pad_mode`). `embedder`: a dlib
    back-end to use instead of the default."""
    photos = list_photos(root)
    if identities is not None:
        missing = [n for n in identities if n not in photos]
        if missing:
            raise KeyError(f"{root}: no photos for {missing[:5]}")
        photos = {n: photos[n] for n in identities}
    if encoder is None:
        encoder = (
            KioskEncoder(model, mirror, detector, embedder=embedder)
            if embedder is not None
            else make_encoder(model, mirror, detector)
        )
    cache = (
        EmbeddingCache(
            cache_file(cache_dir, encoder.model_id, encoder.tag, padding, pad_mode=pad_mode), encoder.model_id
        )
        if cache_dir is not None
        else None
    )
    results = embed_photos(
        [p for plist in photos.values() for p in plist], encoder, cache, padding, batch, pad_mode=pad_mode
    )
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
    return FaceSet(Path(root), encoder.model_id, ids, embeddings, files, n_photos, n_no_face)


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
        mirror=mirror_of(args),
        model=args.model,
        padding=args.pad,
        detector=args.detector,
        pad_mode=args.pad_mode,
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
    p.add_argument(
        "--model",
        choices=MODELS,
        default="sface",
        help="face model: its own detector, landmarks and chips (sface, the kiosk's default: YuNet + ArcFace "
        "alignment; dlib: HOG)",
    )
    p.add_argument(
        "--detector",
        choices=("hog", "yunet"),
        default=None,
        help="face detector ([detect] detector); default: yunet for sface, hog for dlib",
    )
    p.add_argument(
        "--pad",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="add a black border of this fraction of each photo's size on every side before detection "
        "(tight face crops such as rmfrd_chinese: 0.5)",
    )
    p.add_argument(
        "--pad-mode",
        choices=PAD_MODES,
        default="constant",
        help="the --pad border: black (constant), or the photo's edge pixels repeated (replicate); "
        "--probes photos only",
    )
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help="embedding cache folder")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirrored descriptors or not (--no-mirror), as [recognition] mirror; default as the kiosk's \"auto\": "
        "on for dlib, off for sface",
    )


def mirror_of(args: argparse.Namespace) -> bool:
    """--mirror / --no-mirror, else the kiosk's `mirror = "auto"`: on for dlib, off for SFace."""
    return bool(args.mirror) if args.mirror is not None else mirror_by_default(args.model)


if __name__ == "__main__":  # pragma: no cover
    main()
