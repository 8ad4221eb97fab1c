"""Cached descriptors of photos and of kiosk-like frames built from them, per model.

A cache file holds one model's descriptors for one detector setting and one padding
(`embeddings-<model id>-<detector tag>[-pad<f>].npz`), keyed by (absolute path, mtime, size) as
EmbeddingCache keeps them; a kiosk-like frame is keyed by its photo's key with
`#<variation tag>-s<seed>-f<i>` appended to the path, so a photo's frames are computed once and shared
by every trial, split and command that asks for them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edge.lab.encoders import PhotoEncoder
from edge.lab.kioskframes import Variation, kiosk_frames, pad, presence_rng
from edge.recognition.detect import ImageError, load_image
from edge.recognition.embed.base import EMBEDDING_DIM

log = logging.getLogger(__name__)

Key = tuple[str, int, int]


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


def cache_file(
    cache_dir: Path, model_id: str, tag: str, padding: float = 0.0, kind: str = "embeddings", pad_mode: str = "constant"
) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_id}-{tag}")
    suffix = f"-pad{padding:g}" if padding > 0 else ""
    if padding > 0 and pad_mode != "constant":
        suffix += f"-{pad_mode}"
    return Path(cache_dir) / f"{kind}-{safe}{suffix}.npz"


def photo_key(photo: Path) -> Key:
    return EmbeddingCache.key(photo)


def frame_key(photo: Key, variation: Variation, seed: int, index: int) -> Key:
    return (f"{photo[0]}#{variation.tag()}-s{seed}-f{index}", photo[1], photo[2])


def _load(path: Path, padding: float, pad_mode: str = "constant") -> np.ndarray | None:
    try:
        return pad(load_image(path), padding, pad_mode)
    except ImageError as e:
        log.warning("%s", e)
        return None


def _run(
    jobs: Sequence[tuple[Key, Callable[[], np.ndarray | None]]],
    encoder: PhotoEncoder,
    cache: EmbeddingCache | None,
    batch: int,
    what: str,
) -> dict[Key, np.ndarray | None]:
    """Encode each job's picture (made on demand, so at most `batch` pictures are in memory)."""
    out: dict[Key, np.ndarray | None] = {}
    todo = []
    for key, make in jobs:
        hit, v = cache.get(key) if cache is not None else (False, None)
        if hit:
            out[key] = v
        else:
            todo.append((key, make))
    if todo:
        log.info("%s: encoding %d pictures not in the cache (%d cached)", what, len(todo), len(out))
    t0 = time.monotonic()
    for start in range(0, len(todo), batch):
        part = todo[start : start + batch]
        pics = [make() for _, make in part]
        present = [i for i, p in enumerate(pics) if p is not None]
        encoded = encoder.encode([pics[i] for i in present])  # type: ignore[misc]
        for key, _ in part:
            out[key] = None
        for i, e in zip(present, encoded, strict=True):
            out[part[i][0]] = e
        if cache is not None:
            for key, _ in part:
                cache.put(key, out[key])
            if (start // batch) % 8 == 7:
                cache.save()
        done = start + len(part)
        if (start // batch) % 8 == 7 or done == len(todo):
            log.info("%s: %d/%d (%.1f/s)", what, done, len(todo), done / max(time.monotonic() - t0, 1e-9))
    if cache is not None:
        cache.save()
    return out


def embed_photos(
    photos: Sequence[Path],
    encoder: PhotoEncoder,
    cache: EmbeddingCache | None,
    padding: float = 0.0,
    batch: int = 32,
    pad_mode: str = "constant",
) -> dict[Key, np.ndarray | None]:
    """photo key -> descriptor of the face nearest the centre, or None (no face, unreadable photo)."""
    jobs = [(photo_key(p), lambda p=p: _load(p, padding, pad_mode)) for p in photos]
    return _run(jobs, encoder, cache, batch, "photos")


def embed_frames(
    photos: Sequence[Path],
    encoder: PhotoEncoder,
    cache: EmbeddingCache | None,
    variation: Variation,
    seed: int,
    frames: Sequence[int],
    padding: float = 0.0,
    batch: int = 32,
) -> dict[tuple[Key, int], np.ndarray | None]:
    """(photo key, frame index) -> descriptor of that kiosk-like frame (None: no face in it), for the
    given frame indices of each photo's presence. The whole presence is generated (its frames depend on
    one another) but only the asked frames are encoded."""
    memo: dict[Key, list[np.ndarray] | None] = {}

    def frame(p: Path, key: Key, i: int) -> np.ndarray | None:
        if key not in memo:
            memo.clear()  # one photo's frames at a time: jobs are grouped by photo
            rgb = _load(p, padding)
            # seeded by the photo's place in its set, not its absolute path: the same frames on every machine
            rng = presence_rng(seed, f"{p.parent.name}/{p.name}")
            memo[key] = None if rgb is None else kiosk_frames(rgb, rng, variation)
        fr = memo[key]
        return None if fr is None else fr[i]

    jobs = []
    index = {}
    for p in photos:
        key = photo_key(p)
        for i in frames:
            fk = frame_key(key, variation, seed, i)
            index[fk] = (key, i)
            jobs.append((fk, lambda p=p, key=key, i=i: frame(p, key, i)))
    got = _run(jobs, encoder, cache, batch, "kiosk frames")
    return {index[k]: v for k, v in got.items()}
