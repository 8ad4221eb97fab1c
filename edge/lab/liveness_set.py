"""The liveness evaluation set: bona fide windows of the real clip's tracks and rendered attacks from real LFW
photos (cached: rendering and detection are the slow part)."""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.lab.attack_render import (
    FRAME_H,
    FRAME_W,
    capture,
    decode,
    paper_texture,
    phone_texture,
    project,
    render_object,
    trajectory,
)
from edge.recognition.detect import Detector, Face, load_image, to_rgb

log = logging.getLogger(__name__)

ATTACK_TYPES = ("print", "print_bent", "screen", "screen_replay")
CLIP_REL = Path("data/video/short_hamilton_clip.mp4")
FACES_REL = Path("data/faces/lfw_deepfunneled")


def shared_dir() -> Path:
    env = os.environ.get("MEAL_EDGE_SHARED")
    if env:
        return Path(env)
    # ../shared beside the checkout (this file is <checkout>/edge/lab/liveness_set.py)
    return Path(__file__).resolve().parents[2].parent / "shared"


def read_clip(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(to_rgb(f, bgr=True))
    cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be read")
    return frames


def backgrounds(clip: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Static kiosk backgrounds: face-free frames of the clip (any face blurred out) and two plain walls."""
    det = Detector(upsample=1)
    out = []
    for i in (0, 12, 25):
        if i >= len(clip):
            continue
        f = clip[i].astype(np.float32).copy()
        for face in det.detect(clip[i]):
            t, r, b, left = face.box
            pad = int(0.3 * (r - left))
            y0, y1, x0, x1 = max(0, t - pad), b + pad, max(0, left - pad), r + pad
            f[y0:y1, x0:x1] = cv2.GaussianBlur(f[y0:y1, x0:x1], (0, 0), 8)
        out.append(f)
    for _ in range(3):
        base = rng.uniform(120, 210, 3).astype(np.float32)
        yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
        shade = 1 + 0.15 * (xx / FRAME_W - 0.5) - 0.1 * (yy / FRAME_H)
        wall = base[None, None, :] * shade[..., None]
        wall += cv2.GaussianBlur(rng.normal(0, 4, (FRAME_H, FRAME_W)).astype(np.float32), (0, 0), 2)[..., None]
        out.append(wall)
    return out


def clip_tracks(frames: Sequence[np.ndarray], det: Detector, min_len: int) -> list[tuple[list[int], list[Face]]]:
    """The pipeline's own tracker over the clip: [(frame indices, faces)] for tracks of >= min_len frames."""
    from edge.recognition.track import Tracker

    tracker = Tracker(iou_match=0.3, max_missing=8)
    done = []
    for i, f in enumerate(frames):
        faces = [x for x in det.detect(f) if x.width >= 60]
        _, ended = tracker.update(faces, i, i / 30.0)
        done.extend(ended)
    done.extend(tracker.flush())
    out = []
    for t in sorted(done, key=lambda t: t.first_frame):
        if len(t.observations) >= min_len:
            out.append(([o.frame_index for o in t.observations], [o.face for o in t.observations]))
    return out


@dataclass
class Presentation:
    kind: str  # "bona_fide" or one of ATTACK_TYPES
    identity: str
    #: JPEG bytes of each frame of the track (attacks) or clip frame indices (bona fide)
    jpegs: list[bytes] = field(default_factory=list)
    clip_index: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    rendered: int = 0  # frames rendered (attacks); the track may have fewer when the detector missed

    def frames(self, clip: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        if self.jpegs:
            return [decode(j) for j in self.jpegs]
        assert clip is not None
        return [clip[i] for i in self.clip_index]


def render_attack(
    kind: str,
    content: Sequence[np.ndarray],
    face_uv: Sequence[np.ndarray],
    face_w: float,
    background: np.ndarray,
    rng: np.random.Generator,
    n_frames: int,
    *,
    still: bool = False,
) -> tuple[list[bytes], list[np.ndarray]]:
    """Render one attack. `content` is one photo (print/screen) or one image per frame (replay); face_uv is the
    face centre in each content image. Returns per-frame JPEG bytes and the projected face centre per frame."""
    if kind in ("print", "print_bent"):
        tex, off = paper_texture(rng, content[0])
        scale = 2.0
        alpha = None
        texs = [tex]
    elif kind in ("screen", "screen_replay"):
        texs = []
        alpha = None
        tex0, alpha, off = phone_texture(rng, content[0])
        scale = 3.0
        if kind == "screen_replay":
            state = rng.bit_generator.state
            for c in content:
                rng.bit_generator.state = state  # same phone, same colour shift for every frame
                t, _, _ = phone_texture(rng, c)
                texs.append(t)
        else:
            texs = [tex0]
    else:
        raise ValueError(f"unknown attack type {kind!r}")
    th, tw = texs[0].shape[:2]
    ch, cw = content[0].shape[:2]

    def to_tex(uv: np.ndarray) -> np.ndarray:
        return off + (uv - np.array([cw / 2, ch / 2])) * scale

    bend = 0.0
    bend_var = 0.0
    if kind == "print_bent":
        # sagitta at the paper edge 3-10% of its width, flexing as it is held
        sag = rng.uniform(0.03, 0.10) * tw * rng.choice([-1, 1])
        bend = sag / (tw / 2) ** 2
        bend_var = 0.3 * bend
    poses = trajectory(
        rng, n_frames, (tw, th), to_tex(face_uv[0]), face_w * scale, bend=bend, bend_var=bend_var, still=still
    )
    blur = rng.uniform(0.3, 0.9)
    noise = rng.uniform(1.5, 4.0)
    q = int(rng.integers(70, 92))
    # lighting: a print is lit by the room (brightness follows its tilt); a screen emits its own light
    light = rng.normal(0, 1, 3)
    light = np.array([light[0] * 0.3, light[1] * 0.3 - 0.4, -1.0])
    light /= np.linalg.norm(light)
    glare_amp = rng.uniform(0, 80) if kind.startswith("screen") else 0.0
    jpegs, centres = [], []
    for i, pose in enumerate(poses):
        tex = texs[min(i, len(texs) - 1)]
        if kind.startswith("print"):
            normal = pose.rot @ np.array([0, 0, -1.0])
            shade = 0.75 + 0.35 * max(0.0, float(normal @ -light))
            tex_i = tex * shade
        else:
            tex_i = tex
        frame, mask = render_object(background, tex_i, pose, alpha)
        if glare_amp > 0:
            # a specular highlight sits where the light's reflection falls, so it slides over the screen as it tilts
            n = pose.rot @ np.array([0, 0, -1.0])
            gx = FRAME_W / 2 + 900 * n[0] + 60 * light[0]
            gy = FRAME_H / 2 + 900 * n[1] - 80
            yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
            blob = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * 70.0**2))
            frame = frame + (glare_amp * blob * mask)[..., None]
        uv = to_tex(face_uv[min(i, len(face_uv) - 1)])
        centres.append(project(uv[None, :], pose, (tw, th))[0])
        jpegs.append(capture(rng, frame, blur, noise, q))
    return jpegs, centres


def track_of(det: Detector, jpegs: Sequence[bytes], centres: Sequence[np.ndarray]) -> tuple[list[bytes], list[Face]]:
    """Detect each rendered frame and keep the face at the attack's projected face centre (the track)."""
    keep_j, keep_f = [], []
    for j, c in zip(jpegs, centres, strict=True):
        best = None
        for f in det.detect(decode(j)):
            cx, cy = (f.box[1] + f.box[3]) / 2, (f.box[0] + f.box[2]) / 2
            if math.hypot(cx - c[0], cy - c[1]) < 0.5 * f.width and f.width >= 60:
                best = f
                break
        if best is not None:
            keep_j.append(j)
            keep_f.append(best)
    return keep_j, keep_f


CACHE_VERSION = 2


def _photo_face(det: Detector, path: Path) -> tuple[np.ndarray, np.ndarray, float] | None:
    try:
        photo = load_image(path)
    except ValueError as e:
        log.warning("skipping %s", e)
        return None
    faces = det.detect(photo)
    if not faces:
        return None
    f = faces[0]
    return photo, np.array([(f.box[1] + f.box[3]) / 2, (f.box[0] + f.box[2]) / 2]), float(f.width)


def split_identities(names: Sequence[str], seed: int) -> tuple[set[str], set[str]]:
    """Seeded half/half split of identities: (calibration, test)."""
    order = list(np.random.default_rng(seed + 7919).permutation(sorted(names)))
    half = len(order) // 2
    return set(order[:half]), set(order[half:])


def bona_fide(clip: Sequence[np.ndarray], det: Detector, window: int) -> tuple[list[Presentation], int]:
    """Real tracks of the clip, cut into non-overlapping windows of `window` frames (a shorter tail of at
    least 8 frames is kept). Returns (windows, number of tracks)."""
    tracks = clip_tracks(clip, det, 8)
    out = []
    for k, (ix, faces) in enumerate(tracks):
        for s in range(0, len(ix), window):
            if len(ix) - s < 8:
                break
            out.append(
                Presentation(
                    "bona_fide",
                    f"clip_track{k}",
                    clip_index=ix[s : s + window],
                    faces=faces[s : s + window],
                    rendered=len(ix[s : s + window]),
                )
            )
    return out, len(tracks)


def build_attacks(
    faces_dir: Path,
    clip: Sequence[np.ndarray],
    bona: Sequence[Presentation],
    *,
    seed: int,
    per_type: int,
    n_frames: int,
    replays: int,
) -> list[Presentation]:
    rng = np.random.default_rng(seed)
    det = Detector()
    det_photo = Detector(upsample=1)  # LFW faces are ~100 px in a 250 px photo: upsampling finds more
    bgs = backgrounds(clip, rng)
    names = sorted(p.name for p in faces_dir.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{faces_dir}: no identity folders")
    order = list(rng.permutation(names))
    out: list[Presentation] = []
    kinds = [k for k in ATTACK_TYPES if k != "screen_replay"] + ["print_still"]
    counts = {k: (per_type if k != "print_still" else max(4, per_type // 3)) for k in kinds}
    t0 = time.monotonic()
    for kind in kinds:
        made = 0
        while made < counts[kind] and order:
            name = order.pop()
            photos = sorted((faces_dir / name).glob("*.jpg"))
            got = _photo_face(det_photo, photos[int(rng.integers(len(photos)))]) if photos else None
            if got is None:
                continue
            photo, uv, fw = got
            base = "print" if kind == "print_still" else kind
            bg = bgs[int(rng.integers(len(bgs)))]
            jpegs, centres = render_attack(base, [photo], [uv], fw, bg, rng, n_frames, still=kind == "print_still")
            kj, kf = track_of(det, jpegs, centres)
            out.append(Presentation(kind, name, jpegs=kj, faces=kf, rendered=n_frames))
            made += 1
        log.info("%s: %d sequences rendered (%.0f s so far)", kind, made, time.monotonic() - t0)
    # replay: the clip's own face frames shown on a phone (real head motion inside a planar screen)
    for r in range(min(replays, len(bona) * 3)):
        src = bona[r % len(bona)]
        frames = src.frames(clip)[:n_frames]
        faces = src.faces[:n_frames]
        cx = float(np.mean([(f.box[1] + f.box[3]) / 2 for f in faces]))
        cy = float(np.mean([(f.box[0] + f.box[2]) / 2 for f in faces]))
        fw = float(np.mean([f.width for f in faces]))
        half_w, half_h = 1.6 * fw, 2.0 * fw
        x0, y0 = int(max(0, cx - half_w)), int(max(0, cy - half_h))
        x1, y1 = int(min(FRAME_W, cx + half_w)), int(min(FRAME_H, cy + half_h))
        sc = 200 / (x1 - x0)
        content = [cv2.resize(f[y0:y1, x0:x1], None, fx=sc, fy=sc, interpolation=cv2.INTER_AREA) for f in frames]
        uvs = [np.array([((f.box[1] + f.box[3]) / 2 - x0) * sc, ((f.box[0] + f.box[2]) / 2 - y0) * sc]) for f in faces]
        bg = bgs[int(rng.integers(len(bgs)))]
        jpegs, centres = render_attack("screen_replay", content, uvs, fw * sc, bg, rng, len(content))
        kj, kf = track_of(det, jpegs, centres)
        out.append(Presentation("screen_replay", src.identity, jpegs=kj, faces=kf, rendered=len(content)))
    log.info("screen_replay: %d sequences (%.0f s)", min(replays, len(bona) * 3), time.monotonic() - t0)
    return out


def load_or_build(
    shared: Path, *, seed: int, per_type: int, n_frames: int, replays: int, cache: Path | None
) -> tuple[list[np.ndarray], list[Presentation], int, list[Presentation]]:
    clip = read_clip(shared / CLIP_REL)
    key = f"liveness_v{CACHE_VERSION}_s{seed}_n{per_type}_f{n_frames}_r{replays}.pkl"
    if cache is not None and (cache / key).exists():
        with open(cache / key, "rb") as fh:
            bona, n_tracks, attacks = pickle.load(fh)
        log.info("loaded %s", cache / key)
        return clip, bona, n_tracks, attacks
    bona, n_tracks = bona_fide(clip, Detector(), n_frames)
    attacks = build_attacks(
        shared / FACES_REL, clip, bona, seed=seed, per_type=per_type, n_frames=n_frames, replays=replays
    )
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / (key + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump((bona, n_tracks, attacks), fh)
        tmp.replace(cache / key)
    return clip, bona, n_tracks, attacks
